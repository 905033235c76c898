"""The VTAGML model (paper Sec. 3, Fig. 2): frozen backbone -> adapters -> decoders -> heads.

Modules (one concept each):

- :mod:`~vtagml_core.model.backbone`: the frozen timm vision transformer and the taps the adapter
  layers read (Sec. 3.1, "Encoder Module").
- :mod:`~vtagml_core.model.backbone_weights`: building the timm model (the kit's tiny CPU Swin V2
  or any timm name) and loading its weights from timm's hub or a local file.
- :mod:`~vtagml_core.model.params`: parameter counts per component (Table 6).
"""
