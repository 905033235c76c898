"""The sample-grid figure and its numpy colouring helpers, on a tiny in-memory dataset that obeys
the kit's sample contract (no renderer, no files)."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from vtagml_core.tasks import IGNORE_INDEX
from vtagml_core.viz.samples import (
    DEPTH_COLOR_TABLE,
    colorize_seg,
    depth_to_rgb,
    edges_to_rgb,
    normals_to_rgb,
    sample_grid,
)

H, W = 6, 8


class TinyDataset(torch.utils.data.Dataset):
    """Three contract samples; seg uses classes 0 ("sky") and 2 ("box") plus ignored pixels."""

    name, class_names = "tiny", ["sky", "floor", "box"]
    class_colors = np.array([(10, 20, 30), (40, 50, 60), (70, 80, 90)], dtype=np.uint8)

    def __init__(self, tasks=("seg", "depth", "normals", "edges")):
        self.tasks = tuple(tasks)

    def __len__(self):
        return 3

    def __getitem__(self, i):
        seg = torch.zeros(H, W, dtype=torch.int64)
        seg[:, W // 2:] = 2
        seg[0, 0] = IGNORE_INDEX
        valid = torch.ones(1, H, W, dtype=torch.bool)
        valid[..., 0] = False  # first column has no geometry
        normals = torch.zeros(3, H, W)
        normals[2] = -1.0
        labels = {"seg": seg, "depth": torch.full((1, H, W), 1.0 + i) * valid,
                  "normals": normals * valid, "edges": torch.rand(1, H, W)}
        return {"image": torch.rand(3, H, W), "valid": valid, "name": f"s{i}", "domain": "tiny",
                **{t: labels[t] for t in self.tasks}}


def _traces(fig, kind):
    return [t for t in fig.data if isinstance(t, kind)]


def test_grid_has_one_cell_per_sample_and_modality_and_a_class_legend():
    fig = sample_grid(TinyDataset(), n=2, title="tiny grid")
    assert len(_traces(fig, go.Image)) == 2 * 4  # image, seg, normals, edges per row
    assert len(_traces(fig, go.Heatmap)) == 2  # depth with its colour bar
    legend = [t.name for t in fig.data if isinstance(t, go.Scatter) and t.showlegend]
    assert legend == ["sky", "box"]  # classes present, in id order; "floor" absent, ignore not listed
    assert fig.layout.title.text == "tiny grid"
    depth = _traces(fig, go.Heatmap)[0]
    assert np.isnan(np.asarray(depth.z, dtype=float)[:, 0]).all()  # invalid depth left blank
    assert depth.colorbar.title.text == "depth"


def test_grid_columns_follow_the_dataset_tasks_and_indices():
    fig = sample_grid(TinyDataset(tasks=("seg",)), indices=[2, 0])
    assert len(_traces(fig, go.Image)) == 2 * 2 and not _traces(fig, go.Heatmap)
    assert "tiny" in fig.layout.title.text and "[2, 0]" in fig.layout.title.text
    with pytest.raises(IndexError, match="out of range"):
        sample_grid(TinyDataset(), indices=[5])
    with pytest.raises(ValueError, match="at least 1"):
        sample_grid(TinyDataset(), n=0)


def test_colorize_seg_uses_the_table_and_blacks_out_ignore():
    colors = TinyDataset.class_colors
    seg = np.array([[0, 2], [IGNORE_INDEX, 7]])
    rgb = colorize_seg(seg, colors)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert tuple(rgb[0, 0]) == (10, 20, 30) and tuple(rgb[0, 1]) == (70, 80, 90)
    assert tuple(rgb[1, 0]) == (0, 0, 0) and tuple(rgb[1, 1]) == (0, 0, 0)  # ignore, unknown id
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        colorize_seg(seg, np.zeros((3, 4)))


def test_normals_to_rgb_maps_minus_one_one_to_0_255_either_layout():
    n = np.zeros((3, 1, 3), dtype=np.float32)  # (3, H=1, W=3): channels first
    n[:, 0, 0] = (1.0, 0.0, 0.0)
    n[:, 0, 1] = (0.0, 0.0, -1.0)
    rgb = normals_to_rgb(n, valid=np.array([[True, True, False]]))
    assert tuple(rgb[0, 0]) == (255, 128, 128) and tuple(rgb[0, 1]) == (128, 128, 0)
    assert tuple(rgb[0, 2]) == (0, 0, 0)  # invalid
    assert np.array_equal(normals_to_rgb(torch.from_numpy(np.moveaxis(n, 0, -1).copy())), normals_to_rgb(n))


def test_depth_to_rgb_spans_viridis_and_blacks_out_invalid():
    depth = np.array([[0.0, 5.0, 10.0, 10.0]])
    rgb = depth_to_rgb(depth, valid=None, vmax=10.0)
    table = DEPTH_COLOR_TABLE.astype(float)
    assert len(table) == 10 and tuple(rgb[0, 0]) == (0, 0, 0)  # depth 0 = invalid
    # half-way = position 4.5 of the 10-entry table: the mean of entries 4 and 5
    assert tuple(rgb[0, 1]) == tuple(np.rint((table[4] + table[5]) / 2).astype(np.uint8))
    assert tuple(rgb[0, 3]) == tuple(DEPTH_COLOR_TABLE[-1])  # vmax -> top of the scale
    assert tuple(depth_to_rgb(np.array([[0.5, 10.0]]), vmax=10.0, vmin=0.5)[0, 0]) == tuple(DEPTH_COLOR_TABLE[0])
    masked = depth_to_rgb(depth, valid=np.array([[True, True, True, False]]))
    assert tuple(masked[0, 3]) == (0, 0, 0) and tuple(masked[0, 2]) == tuple(DEPTH_COLOR_TABLE[-1])


def test_edges_to_rgb_is_grey():
    rgb = edges_to_rgb(torch.tensor([[[0.0, 0.5, 1.0]]]))
    assert rgb.shape == (1, 3, 3) and tuple(rgb[0, 2]) == (255, 255, 255) and tuple(rgb[0, 1]) == (128, 128, 128)
