"""Evaluation: prediction post-processing, split-level metrics and delta_m (paper Sec. 4).

- :mod:`vtagml_core.eval.predictions` turns raw head outputs into predictions (argmax-ready
  logits, non-negative depth, unit normals, edge probabilities).
- :mod:`vtagml_core.eval.metrics` accumulates mIoU / RMSE / angular error / odsF over a whole
  split (never averaged per batch).
- :mod:`vtagml_core.eval.delta_m` gives the relative multitask performance against
  single-task models.
"""
