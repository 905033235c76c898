"""Notebook tooling, not library: the headless papermill runner (:mod:`.runner`), the report
writer (:mod:`.report`) and the student-version generator (:mod:`.student`).

The lessons' own helpers live in :mod:`vtagml_core.notebooks`; this package runs notebooks
and writes about them, and nothing in the library imports it.
"""
