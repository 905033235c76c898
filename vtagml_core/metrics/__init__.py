"""Evaluation: prediction post-processing, split-level metrics and delta_m (paper Sec. 4).

- :mod:`vtagml_core.metrics.predictions` turns raw head outputs into predictions (argmax-ready
  logits, non-negative depth, unit normals, edge probabilities).
- :mod:`vtagml_core.metrics.multitask` accumulates mIoU / RMSE / angular error / odsF over a whole
  split (never averaged per batch).
- :mod:`vtagml_core.metrics.delta_m` gives the relative multitask performance against
  single-task models.
"""
