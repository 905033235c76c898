"""Training augmentations of the real datasets (vtagml_core/data/augment.py): every label follows
the image through random scale, crop and flip, the normals' x flips with the image, the draws
are a pure function of the seed, and only a real training split augments (never the synthetic
benchmark, never with the trainer's feature cache)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fixtures_real import make_nyud_tree
from vtagml_core.config import to_dict
from vtagml_core.data.augment import AugmentedDataset, AugmentParams, augment_sample, flip_sample
from vtagml_core.data.config import DataConfig, build_dataset
from vtagml_core.data.dataset import SyntheticDataset
from vtagml_core.data.readers.nyud import NYUDv2Dataset
from vtagml_core.data.transforms import to_contract_tensors
from vtagml_core.experiments.runs import key_config
from vtagml_core.tasks import IGNORE_INDEX
from vtagml_core.train.config import load_kit_config
from vtagml_core.train.schedule import epoch_seed
from vtagml_core.train.trainer import Trainer

#: Native size of the position-coded sample, and the model's size it is augmented to.
NATIVE_HW = (40, 60)
OUT_HW = (32, 32)


def _position_sample() -> dict:
    """A sample whose every map is a function of the source pixel (y, x): image channels are
    x and y ramps, seg is the row, depth encodes (y, x) exactly, edges are x / (W - 1), normals
    point along (x - W/2, y - H/2, 10), and the left third is invalid (depth / normals 0)."""
    h, w = NATIVE_HW
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.stack([xx / (w - 1), yy / (h - 1), np.full_like(xx, 0.5)], axis=2)
    normals = np.stack([xx - w / 2, yy - h / 2, np.full_like(xx, 10.0)], axis=2)
    return to_contract_tensors(image, name="pos", domain="test", seg=yy.astype(np.int64),
                               depth=1 + yy * w + xx, normals=normals, edges=xx / (w - 1),
                               valid=xx >= w // 3)


def _source_of(depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, x) of the source pixel a depth value of :func:`_position_sample` came from."""
    code = depth[0].round().long() - 1
    return code // NATIVE_HW[1], code % NATIVE_HW[1]


def _check_aligned(out: dict, params: AugmentParams) -> None:
    """Every label of ``out`` comes from the source pixel that geometry says, and agrees with
    the image (which is resampled bilinearly, hence within a pixel)."""
    h, w = NATIVE_HW
    sh, sw = params.scaled
    ii, jj = torch.meshgrid(torch.arange(OUT_HW[0]), torch.arange(OUT_HW[1]), indexing="ij")
    jj_src = OUT_HW[1] - 1 - jj if params.flip else jj
    # Continuous source coordinate of each output pixel centre (pixel-centre convention).
    y_exp = (ii + params.top + 0.5) * h / sh - 0.5
    x_exp = (jj_src + params.left + 0.5) * w / sw - 0.5
    valid = out["valid"][0]
    y_src, x_src = _source_of(out["depth"])
    assert ((y_src - y_exp).abs()[valid] <= 0.5 + 1e-4).all() and ((x_src - x_exp).abs()[valid] <= 0.5 + 1e-4).all()
    # valid follows the same source pixel as the labels: its left third is invalid, depth 0 there.
    x_nearest = (x_exp + 0.5).floor().clamp(0, w - 1)
    assert torch.equal(valid, x_nearest >= w // 3)
    assert (out["depth"][0][~valid] == 0).all() and (out["normals"][:, ~valid] == 0).all()
    # seg and edges: the same source pixel as depth where it is known, and the geometry everywhere.
    assert torch.equal(out["seg"][valid], y_src[valid])
    assert torch.allclose(out["edges"][0][valid], x_src[valid].float() / (w - 1), atol=1e-5)
    assert ((out["seg"] - y_exp).abs() <= 0.5 + 1e-4).all()
    # The image: its x / y ramps decode to the same position within a source pixel (interior).
    inner = (slice(2, -2), slice(2, -2))
    assert ((out["image"][0] * (w - 1) - x_exp)[inner].abs() <= 1.0).all()
    assert ((out["image"][1] * (h - 1) - y_exp)[inner].abs() <= 1.0).all()
    # Normals: unit length where valid, x sign follows the flip, (x, y) ratios the position.
    n = out["normals"][:, valid]
    assert torch.allclose(n.norm(dim=0), torch.ones(n.shape[1]), atol=1e-5)
    sign = -1.0 if params.flip else 1.0
    assert torch.allclose(n[0] / n[2], sign * (x_src[valid].float() - w / 2) / 10, atol=1e-4)
    assert torch.allclose(n[1] / n[2], (y_src[valid].float() - h / 2) / 10, atol=1e-4)


def test_flip_mirrors_every_label_and_negates_the_normals_x():
    sample = _position_sample()
    flipped = flip_sample(sample)
    for key in ("image", "depth", "edges", "valid"):
        assert torch.equal(flipped[key], sample[key].flip(-1)), key
    assert torch.equal(flipped["seg"], sample["seg"].flip(-1))
    assert torch.equal(flipped["normals"][0], -sample["normals"][0].flip(-1))
    assert torch.equal(flipped["normals"][1:], sample["normals"][1:].flip(-1))
    assert flipped["name"] == "pos" and torch.equal(flip_sample(flipped)["normals"], sample["normals"])


@pytest.mark.parametrize("params", [
    AugmentParams(scaled=(32, 32), top=0, left=0, flip=False),   # scale 1: the plain resize
    AugmentParams(scaled=(42, 45), top=7, left=11, flip=False),  # scale up, crop inside
    AugmentParams(scaled=(48, 48), top=16, left=3, flip=True),   # scale up, crop and flip
])
def test_scale_crop_and_flip_keep_image_and_labels_aligned(params):
    out = augment_sample(_position_sample(), OUT_HW, params)
    assert out["image"].shape == (3, *OUT_HW) and out["seg"].shape == OUT_HW and out["seg"].dtype == torch.int64
    _check_aligned(out, params)


def test_a_scale_below_one_pads_with_pixels_that_score_nothing():
    params = AugmentParams(scaled=(20, 24), top=-5, left=-4, flip=False)
    out = augment_sample(_position_sample(), OUT_HW, params)
    pad = torch.ones(OUT_HW, dtype=torch.bool)
    pad[5:25, 4:28] = False
    assert (out["seg"][pad] == IGNORE_INDEX).all() and not out["valid"][0][pad].any()
    assert (out["depth"][0][pad] == 0).all() and (out["image"][:, pad] == 0).all()
    assert (out["normals"][:, pad] == 0).all() and (out["edges"][0][pad] == 0).all()
    assert (out["seg"][~pad] != IGNORE_INDEX).all() and out["valid"][0][~pad].any()


@pytest.fixture(scope="module")
def nyud(tmp_path_factory):
    root = tmp_path_factory.mktemp("aug") / "NYUD_MT"
    make_nyud_tree(root, n_train=4, n_val=2, size=(48, 64))
    return root


def test_the_same_seed_gives_the_same_augmentation(nyud):
    data = DataConfig(dataset="nyud", root=str(nyud), size=32, scale_range=(1.0, 2.0))
    first, second = (build_dataset(data, "train", "S-D-N-E", augment=True) for _ in range(2))
    assert isinstance(first, AugmentedDataset) and first.augments_images and first[0]["image"].shape == (3, 32, 32)
    for ds in (first, second):
        ds.set_seed(epoch_seed(3, 1))
    for i in range(len(first)):
        a, b = first[i], second[i]
        assert all(torch.equal(a[k], b[k]) for k in ("image", "seg", "depth", "normals", "edges", "valid"))
    # Loader workers get a copy of the dataset: the same draws as in the main process.
    from_workers = next(iter(DataLoader(second, batch_size=len(second), num_workers=2)))
    assert torch.equal(from_workers["image"], torch.stack([first[i]["image"] for i in range(len(first))]))
    draws = {first.params(i) for i in range(len(first))}
    first.set_seed(epoch_seed(3, 2))
    assert {first.params(i) for i in range(len(first))} != draws  # another epoch, other draws
    first.set_seed(epoch_seed(3, 1))
    assert {first.params(i) for i in range(len(first))} == draws  # and back (a resumed epoch)


def test_only_a_real_training_split_augments(nyud):
    data = DataConfig(dataset="nyud", root=str(nyud), size=32)
    train = build_dataset(data, "train", "S-D", augment=True)
    assert isinstance(train, AugmentedDataset) and train.tasks == ("seg", "depth") and train.name == "nyud"
    assert len(train.class_names) == 40 and train.ignore_index == IGNORE_INDEX
    assert train.scale_range == (1.0, 1.5) and train.flip  # the defaults
    assert isinstance(build_dataset(data, "train", "S-D"), NYUDv2Dataset)  # not asked: plain
    off = DataConfig(dataset="nyud", root=str(nyud), size=32, augment=False)
    assert isinstance(build_dataset(off, "train", "S-D", augment=True), NYUDv2Dataset)
    with pytest.raises(ValueError, match="augment=True is for the training split"):
        build_dataset(data, "val", "S-D", augment=True)
    with pytest.raises(ValueError, match=r"0 < low <= high"):
        build_dataset(DataConfig(dataset="nyud", root=str(nyud), scale_range=(1.5, 1.0)), "train", "S", augment=True)
    synthetic = DataConfig(size=32, train_count=2, val_count=1, test_count=1)
    assert isinstance(build_dataset(synthetic, "train", "S", augment=True, progress=False), SyntheticDataset)
    with pytest.raises(ValueError, match="data.augment is set but data.dataset is synthetic"):
        build_dataset(DataConfig(augment=False), "train", "S", progress=False)


def test_augmentation_keys_leave_synthetic_run_keys_alone():
    cfg = load_kit_config(preset="smoke")
    assert not {"augment", "scale_range", "flip"} & set(to_dict(cfg)["data"])
    assert to_dict(cfg, complete=True)["data"]["scale_range"] == [1.0, 1.5]
    real = load_kit_config(preset="smoke", overrides=["data.dataset=nyud", "data.root=/x",
                                                      "data.scale_range=[1.0,1.2]", "data.flip=false"])
    assert real.data.scale_range == (1.0, 1.2) and real.data.flip is False
    assert key_config(real, 0)["data"]["scale_range"] == [1.0, 1.2]


def test_the_trainer_augments_real_data_per_epoch_without_the_feature_cache(nyud, tmp_path):
    overrides = ["data.dataset=nyud", f"data.root={nyud}", "train.feature_cache=true", "train.progress=false"]
    cfg = load_kit_config(preset="smoke", overrides=overrides)
    trainer = Trainer(cfg, tmp_path / "aug", log=lambda _: None)
    try:
        assert isinstance(trainer.train_data, AugmentedDataset) and not trainer.use_feature_cache
        trainer.train_loader(epoch=2)
        assert trainer.train_data.seed == epoch_seed(cfg.train.seed, 2)
        assert not getattr(trainer.val_data, "augments_images", False)
    finally:
        trainer.release_lock()
    plain = load_kit_config(preset="smoke", overrides=[*overrides, "data.augment=false"])
    trainer = Trainer(plain, tmp_path / "plain", log=lambda _: None)
    try:
        assert trainer.use_feature_cache  # the same run without augmentation caches features
    finally:
        trainer.release_lock()
