"""Plotly figures of the kit: dataset sample grids, affinity matrices, attention maps,
prediction grids and training curves.

Modules are imported explicitly (``from vtagml_core.viz.samples import sample_grid``) so that
importing one figure type does not pull in the others.
"""
