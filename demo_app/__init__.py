"""The kit's Gradio demo (issue 6): per-task predictions, TROA affinities, TAA attention.

It imports :mod:`vtagml_core`; the package never imports it. Entry points:
:func:`demo_app.app.build_app`, :func:`demo_app.app.main` (``python -m vtagml_core demo``).
The handlers live in :mod:`demo_app.service` (no Gradio there, so tests call them directly).
"""
