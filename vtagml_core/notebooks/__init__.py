"""Support for the numbered teaching notebooks in ``notebooks/`` (docs/README.md).

The notebooks teach and call the library; they never carry a copy of its logic. What they
need beyond the model, data and training modules lives here:

* :mod:`.params` -- the ``parameters`` cell: a preset (a file of ``configs/presets``) and
  ``key=value`` overrides resolved exactly as the CLI does, type checks with errors that list
  the valid values, environment overrides for nbval;
* :mod:`.widgets` -- ipywidgets explorers in a live kernel, static plotly figures headless;
* :mod:`.display` -- markdown tables and computed summary sentences;
* :mod:`.training` -- the short run the mechanism lessons (02-04) share, trained by the kit's
  trainer and stored like every other run;
* :mod:`.troa_lab`, :mod:`.taa_lab`, :mod:`.tsn_lab` -- small experiments of lessons 02-04;

The tooling that runs notebooks rather than teaching in them (the papermill runner, the report,
student versions) is :mod:`vtagml_core.nbtools`.

Modules are imported explicitly (``from vtagml_core.notebooks.params import resolve``) so a
notebook only pays for what it uses.
"""
