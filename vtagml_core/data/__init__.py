"""Datasets of the kit: the built-in synthetic multitask benchmark and real-dataset readers.

All datasets return the shared sample contract (``image``, per-task labels, ``valid``,
``name``, ``domain``); see docs/benchmark.md and :mod:`vtagml_core.data.dataset`.
"""
