"""Support for the numbered teaching notebooks in ``notebooks/`` (DESIGN.md sections 1-2).

The notebooks teach and call the library; they never carry a copy of its logic. What they
need beyond the model, data and training modules lives here:

* :mod:`.params` -- the ``parameters`` cell: presets ``smoke`` / ``quick`` / ``paper``, type
  checks with errors that list the valid values, environment overrides for nbval;
* :mod:`.widgets` -- ipywidgets explorers in a live kernel, static plotly figures headless;
* :mod:`.display` -- markdown tables and computed summary sentences;
* :mod:`.training` -- the short, cached training run the mechanism lessons (02-04) share;
* :mod:`.troa_lab`, :mod:`.taa_lab`, :mod:`.tsn_lab` -- small experiments of lessons 02-04;
* :mod:`.runner` -- headless papermill run of every notebook plus ``report.md`` / ``.html``;
* :mod:`.student` -- student versions with the reference answers removed.

Modules are imported explicitly (``from vtagml_core.notebooks.params import resolve``) so a
notebook only pays for what it uses.
"""
