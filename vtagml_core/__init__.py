"""vtagml_core: Vision Transformer Adapters for Generalizable Multitask Learning (ICCV 2023).

Subpackages: ``data`` (synthetic benchmark, real-dataset readers), ``model`` (frozen backbone,
TROA/TAA/TSN adapters, decoder, heads), ``train`` (losses), ``eval`` (metrics, delta_m),
``viz`` (plotly figures). See README.md and docs/.
"""
__version__ = "0.1.0"
