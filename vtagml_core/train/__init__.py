"""Training: multitask losses (paper Sec. 3.3, "Task Heads and Training"), trainer, checkpoints.

Everything that turns model outputs and labels into a number to minimise lives here; the
matching evaluation code (metrics, delta_m) lives in :mod:`vtagml_core.metrics`.
"""
