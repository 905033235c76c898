"""Look at backbone features: the first three principal components of a feature map as RGB.

Used by notebook 01 (paper Sec. 3.1, the frozen encoder and where the adapters attach) to show
what each tapped block hands to its adapter layer: a ``(h, w, C)`` map is projected on its
three main directions of variation, each rescaled to [0, 255], so tokens with similar features
get similar colours.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from .samples import _image_trace, image_to_rgb

#: Principal components shown (as R, G, B).
PCA_COMPONENTS: int = 3
#: Pixel size of one panel.
PANEL_PX: int = 220


def feature_pca_rgb(feature: Tensor) -> np.ndarray:
    """``(h, w, C)`` features -> ``(h, w, 3)`` uint8 of their first three principal components.

    Components are found by SVD of the centred ``(h*w, C)`` matrix; each is min-max scaled to
    [0, 255]. With fewer than three channels or tokens the missing components are black.
    """
    if feature.dim() != 3:
        raise ValueError(f"feature must be one (h, w, C) map, got {tuple(feature.shape)}")
    h, w, c = feature.shape
    x = feature.detach().double().reshape(h * w, c).cpu()
    x = x - x.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    k = min(PCA_COMPONENTS, vh.shape[0])
    proj = x @ vh[:k].T                                           # (h*w, k)
    lo, hi = proj.min(dim=0).values, proj.max(dim=0).values
    proj = (proj - lo) / (hi - lo).clamp_min(1e-12)
    rgb = torch.zeros(h * w, PCA_COMPONENTS, dtype=torch.float64)
    rgb[:, :k] = proj
    return (rgb.reshape(h, w, PCA_COMPONENTS).numpy() * 255).round().astype(np.uint8)


def tap_feature_figure(image: Tensor, features: Sequence[Tensor], labels: Sequence[str],
                       title: str = "What each tapped block hands to its adapter") -> go.Figure:
    """The image and the PCA colouring of each ``(h, w, C)`` feature map, in one row."""
    if len(features) != len(labels):
        raise ValueError(f"need one label per feature map, got {len(features)} and {len(labels)}")
    cols = 1 + len(features)
    fig = make_subplots(rows=1, cols=cols, subplot_titles=["image", *labels],
                        horizontal_spacing=0.02)
    fig.add_trace(_image_trace(image_to_rgb(image), "image"), 1, 1)
    for i, feat in enumerate(features, start=2):
        rgb = feature_pca_rgb(feat)
        big = np.kron(rgb, np.ones((max(1, 64 // rgb.shape[0]),) * 2 + (1,), dtype=np.uint8))
        fig.add_trace(_image_trace(big, labels[i - 2]), 1, i)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(title=title, width=PANEL_PX * cols, height=PANEL_PX + 90,
                      margin=dict(l=10, r=10, t=80, b=10))
    return fig


__all__ = ["feature_pca_rgb", "tap_feature_figure"]
