"""Real-dataset readers and shared transforms: each reader reads back a tiny tree written in its
on-disk layout (tests/fixtures_real.py) and must return exactly the decoded values; bad input
must fail with an error naming the offending path."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fixtures_real import (
    cityscapes_path,
    make_cityscapes_tree,
    make_nyud_tree,
    make_taskonomy_tree,
    taskonomy_path,
)
from vtagml_core.data.readers import CityscapesDataset, NYUDv2Dataset, TaskonomyDataset, open_reader
from vtagml_core.data.readers.cityscapes import CITYSCAPES_ID_TO_TRAIN_ID
from vtagml_core.data.transforms import resize_sample, to_contract_tensors
from vtagml_core.tasks import IGNORE_INDEX

#: Mean absolute RGB error allowed after a JPEG round trip (quality 95, smooth images).
JPEG_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def nyud(tmp_path_factory):
    return make_nyud_tree(tmp_path_factory.mktemp("nyud") / "NYUD_MT")


@pytest.fixture(scope="module")
def taskonomy(tmp_path_factory):
    return make_taskonomy_tree(tmp_path_factory.mktemp("taskonomy"))


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    return make_cityscapes_tree(tmp_path_factory.mktemp("cityscapes"))


def _check_contract(sample: dict, tasks: tuple[str, ...], hw: tuple[int, int]) -> None:
    h, w = hw
    assert sample["image"].shape == (3, h, w) and sample["image"].dtype == torch.float32
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
    assert sample["valid"].shape == (1, h, w) and sample["valid"].dtype == torch.bool
    expected_keys = {"image", "valid", "name", "domain", *tasks}
    assert set(sample) == expected_keys
    if "seg" in tasks:
        assert sample["seg"].shape == (h, w) and sample["seg"].dtype == torch.int64
    if "depth" in tasks:
        assert sample["depth"].shape == (1, h, w)
        assert torch.all(sample["depth"][~sample["valid"]] == 0)
    if "normals" in tasks:
        n = sample["normals"]
        assert n.shape == (3, h, w)
        lengths = n.norm(dim=0, keepdim=True)
        assert torch.allclose(lengths[sample["valid"]], torch.ones(1), atol=1e-5)
        assert torch.all(n[:, ~sample["valid"][0]] == 0)
    if "edges" in tasks:
        assert sample["edges"].shape == (1, h, w)
        assert 0.0 <= float(sample["edges"].min()) and float(sample["edges"].max()) <= 1.0


# ----------------------------------------------------------------------------- NYUD-v2


def test_nyud_reads_back_what_was_written(nyud):
    ds = NYUDv2Dataset(nyud["root"], split="train")
    assert len(ds) == len(nyud["splits"]["train"]) and ds.name == "nyud"
    assert len(ds.class_names) == 40 and ds.class_colors.shape == (40, 3)
    for i, sid in enumerate(nyud["splits"]["train"]):
        s, ref = ds[i], nyud["samples"][sid]
        _check_contract(s, ("seg", "depth", "normals", "edges"), ref["depth"].shape)
        assert s["name"] == sid and s["domain"] == "nyud"
        img = s["image"].permute(1, 2, 0).numpy()
        assert np.abs(img - ref["image"] / 255.0).mean() < JPEG_TOLERANCE
        # seg: value 0 -> ignore, value v -> class v - 1
        seg = s["seg"].numpy()
        raw = ref["seg_raw"]
        assert np.all(seg[raw == 0] == IGNORE_INDEX)
        assert np.array_equal(seg[raw > 0], raw[raw > 0].astype(np.int64) - 1)
        assert seg[0, 1] == 0 and seg[0, 2] == 39
        # valid = depth > 0 and normal present
        expected_valid = (ref["depth"] > 0) & (np.linalg.norm(ref["normals"], axis=2) > 0)
        assert np.array_equal(s["valid"][0].numpy(), expected_valid)
        np.testing.assert_allclose(s["depth"][0].numpy()[expected_valid], ref["depth"][expected_valid], rtol=1e-6)
        # normals were stored with length 2: renormalised back to the unit vectors written
        np.testing.assert_allclose(
            s["normals"].permute(1, 2, 0).numpy()[expected_valid], ref["normals"][expected_valid], atol=1e-5
        )
        assert np.array_equal(s["edges"][0].numpy(), ref["edges"])


def test_nyud_valid_mask_follows_requested_tasks(nyud):
    sid = nyud["splits"]["val"][0]
    ref = nyud["samples"][sid]
    depth_only = NYUDv2Dataset(nyud["root"], split="val", tasks="D")[0]
    assert set(depth_only) == {"image", "depth", "valid", "name", "domain"}
    assert np.array_equal(depth_only["valid"][0].numpy(), ref["depth"] > 0)
    seg_only = NYUDv2Dataset(nyud["root"], split="val", tasks=["seg"])[0]
    assert bool(seg_only["valid"].all())


def test_nyud_resize_subset_and_unlabelled(nyud):
    ds = NYUDv2Dataset(nyud["root"], split="train", tasks="S-N", size=(24, 32))
    s = ds[1]
    _check_contract(s, ("seg", "normals"), (24, 32))
    raw_classes = set((nyud["samples"][s["name"]]["seg_raw"].astype(int) - 1).ravel()) | {IGNORE_INDEX}
    raw_classes.discard(-1)
    assert set(s["seg"].unique().tolist()) <= raw_classes  # nearest: no invented class ids

    unl = NYUDv2Dataset(nyud["root"], split="train", unlabelled=True)
    u = unl[0]
    assert set(u) == {"image", "name", "domain"}


def test_nyud_unlabelled_needs_only_images(nyud, tmp_path):
    root = tmp_path / "NYUD_MT"
    (root / "gt_sets").mkdir(parents=True)
    (root / "images").mkdir()
    sid = nyud["splits"]["train"][0]
    (root / "gt_sets" / "train.txt").write_text(sid + "\n")
    (root / "images" / f"{sid}.jpg").write_bytes((nyud["root"] / "images" / f"{sid}.jpg").read_bytes())
    assert NYUDv2Dataset(root, unlabelled=True)[0]["image"].shape[0] == 3
    with pytest.raises(FileNotFoundError, match="segmentation"):
        NYUDv2Dataset(root, tasks="seg")


def test_dataloader_collates_a_batch(nyud):
    ds = NYUDv2Dataset(nyud["root"], split="train", size=(16, 16))
    batch = next(iter(DataLoader(ds, batch_size=2, shuffle=False, num_workers=0)))
    assert batch["image"].shape == (2, 3, 16, 16)
    assert batch["seg"].shape == (2, 16, 16) and batch["seg"].dtype == torch.int64
    assert batch["normals"].shape == (2, 3, 16, 16) and batch["valid"].shape == (2, 1, 16, 16)
    assert batch["name"] == nyud["splits"]["train"][:2] and batch["domain"] == ["nyud", "nyud"]


# ----------------------------------------------------------------------------- Taskonomy


def test_taskonomy_reads_back_what_was_written(taskonomy):
    ds = TaskonomyDataset(taskonomy["root"])
    assert len(ds) == len(taskonomy["records"]) and len(ds.class_names) == 17
    assert ds.sample_ids == list(taskonomy["samples"])
    for i, (sid, ref) in enumerate(taskonomy["samples"].items()):
        s = ds[i]
        _check_contract(s, ("seg", "depth", "normals", "edges"), ref["seg_raw"].shape)
        assert s["name"] == sid and s["domain"] == "taskonomy"
        assert np.array_equal(np.rint(s["image"].permute(1, 2, 0).numpy() * 255).astype(np.uint8), ref["rgb"])
        # depth in metres (1/512 m per unit), 65535 invalid
        invalid = ref["depth_raw"] == 65535
        assert np.array_equal(s["valid"][0].numpy(), ~invalid)
        np.testing.assert_allclose(s["depth"][0].numpy()[~invalid], ref["depth_raw"][~invalid] / 512.0, rtol=1e-6)
        assert np.all(s["depth"][0].numpy()[invalid] == 0)
        # normals: value/255*2-1, z flipped to the OpenCV frame, unit length
        decoded = ref["normal_raw"].astype(np.float64) / 255.0 * 2.0 - 1.0
        decoded[..., 2] *= -1.0
        decoded /= np.linalg.norm(decoded, axis=2, keepdims=True)
        np.testing.assert_allclose(s["normals"].permute(1, 2, 0).numpy()[~invalid], decoded[~invalid], atol=1e-5)
        # pixel (h-1, 0) faces the camera in Taskonomy's encoding: in the kit's frame z ~ -1
        assert bool(s["valid"][0, -1, 0]) and float(s["normals"][2, -1, 0]) < -0.99
        np.testing.assert_allclose(s["edges"][0].numpy(), ref["edge_raw"] / 65535.0, rtol=1e-6)
        seg, raw = s["seg"].numpy(), ref["seg_raw"]
        assert np.all(seg[raw == 0] == IGNORE_INDEX)
        assert np.array_equal(seg[raw > 0], raw[raw > 0].astype(np.int64) - 1)


def test_taskonomy_buildings_and_unlabelled(taskonomy):
    ds = TaskonomyDataset(taskonomy["root"], buildings=["beechwood"], tasks="seg", size=(16, 20))
    assert all(name.startswith("beechwood/") for name in ds.sample_ids) and len(ds) == 2
    _check_contract(ds[0], ("seg",), (16, 20))
    assert bool(ds[0]["valid"].all())  # no geometry requested: nothing to mask
    u = TaskonomyDataset(taskonomy["root"], unlabelled=True)[3]
    assert set(u) == {"image", "name", "domain"}


def test_taskonomy_facing_camera_pixel_after_conversion(taskonomy):
    ds = TaskonomyDataset(taskonomy["root"], tasks="normals")
    s = ds[2]
    assert bool(s["valid"][0, -1, 0])  # the fixture's camera-facing pixel (h-1, 0)
    view_dir = torch.tensor([0.0, 0.0, 1.0])  # OpenCV: z forward, into the scene
    assert float(s["normals"][:, -1, 0] @ view_dir) < 0


# ----------------------------------------------------------------------------- Cityscapes


def test_cityscapes_reads_back_what_was_written(cityscapes):
    ds = CityscapesDataset(cityscapes["root"], split="val")
    assert ds.tasks == ("seg", "depth") and len(ds.class_names) == 19
    assert len(ds) == len(cityscapes["samples"])
    lut = np.full(256, IGNORE_INDEX)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    for i, (base, ref) in enumerate(sorted(cityscapes["samples"].items())):
        s = ds[i]
        _check_contract(s, ("seg", "depth"), ref["label_ids"].shape)
        assert s["name"] == base and s["domain"] == "cityscapes"
        seg = s["seg"].numpy()
        assert np.array_equal(seg, lut[ref["label_ids"]])
        assert seg[0, 0] == 0 and seg[0, 1] == 18 and seg[0, 2] == IGNORE_INDEX  # road, bicycle, unlabelled
        # depth = baseline * fx / d with d = (p - 1) / 256; p = 0 and p = 1 are invalid
        p = ref["disparity_raw"].astype(np.float64)
        valid = p > 1
        assert np.array_equal(s["valid"][0].numpy(), valid)
        expected = ref["baseline"] * ref["fx"] / ((p[valid] - 1.0) / 256.0)
        np.testing.assert_allclose(s["depth"][0].numpy()[valid], expected, rtol=1e-5)
        assert np.all(s["depth"][0].numpy()[~valid] == 0)


def test_cityscapes_subset_resize_and_registry(cityscapes):
    ds = open_reader("Cityscapes", cityscapes["root"], split="val", tasks="seg", size=(16, 32))
    assert isinstance(ds, CityscapesDataset)
    _check_contract(ds[0], ("seg",), (16, 32))
    with pytest.raises(ValueError, match="known"):
        open_reader("kitti", cityscapes["root"])


@pytest.mark.parametrize("tasks", ["S-D-N", ("seg", "edges")])
def test_cityscapes_refuses_tasks_it_has_no_labels_for(cityscapes, tasks):
    with pytest.raises(ValueError, match=r"provides \('seg', 'depth'\)"):
        CityscapesDataset(cityscapes["root"], split="val", tasks=tasks)


# ----------------------------------------------------------------------------- transforms


def test_resize_sample_renormalises_normals_and_keeps_labels_nearest():
    h, w = 8, 8
    normals = np.zeros((h, w, 3), dtype=np.float32)
    normals[..., 0] = 1.0
    normals[:, w // 2:] = (0.0, 0.0, -1.0)
    valid = np.ones((h, w), dtype=bool)
    valid[:2] = False
    seg = np.zeros((h, w), dtype=np.int64)
    seg[:, w // 2:] = 3
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[:, w // 2:] = 255
    s = to_contract_tensors(image, name="x", domain="d", seg=seg, depth=np.full((h, w), 2.0), normals=normals, valid=valid)
    r = resize_sample(s, (4, 4))
    assert set(r["seg"].unique().tolist()) == {0, 3}
    assert torch.allclose(r["normals"].norm(dim=0)[r["valid"][0]], torch.ones(1))
    assert torch.all(r["depth"][~r["valid"]] == 0) and torch.all(r["depth"][r["valid"]] == 2.0)
    # anti-aliased bilinear: 2x2 blocks of 0/255 average, the image stays in [0, 1]
    assert r["image"].min() >= 0 and r["image"].max() <= 1
    assert r["image"][0, 0, 0] == 0 and r["image"][0, 0, -1] == 1
    assert s["image"].shape == (3, 8, 8)  # input untouched
    with pytest.raises(ValueError, match="positive"):
        resize_sample(s, (0, 4))
    with pytest.raises(ValueError, match="does not know"):
        resize_sample({**s, "flow": torch.zeros(2, h, w)}, (4, 4))


def test_to_contract_tensors_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="spatial size"):
        to_contract_tensors(np.zeros((4, 4, 3), np.uint8), name="x", domain="d", seg=np.zeros((4, 5)))


# ----------------------------------------------------------------------------- bad input


def test_missing_roots_and_splits_name_the_path(tmp_path, nyud, taskonomy, cityscapes):
    missing = tmp_path / "nowhere"
    for cls in (NYUDv2Dataset, TaskonomyDataset, CityscapesDataset):
        with pytest.raises(FileNotFoundError, match=str(missing)):
            cls(missing)
    with pytest.raises(FileNotFoundError, match=r"gt_sets.test\.txt.*Available splits: \['train', 'val'\]"):
        NYUDv2Dataset(nyud["root"], split="test")
    with pytest.raises(FileNotFoundError, match="leftImg8bit.train"):
        CityscapesDataset(cityscapes["root"], split="train")
    with pytest.raises(FileNotFoundError, match="hanson"):
        TaskonomyDataset(taskonomy["root"], buildings=["hanson"])
    with pytest.raises(ValueError, match="unknown task"):
        NYUDv2Dataset(nyud["root"], tasks="seg,flow")


def test_missing_label_file_is_reported_at_construction(tmp_path):
    tree = make_nyud_tree(tmp_path / "NYUD_MT", n_train=2, n_val=1)
    victim = tree["root"] / "depth" / f"{tree['splits']['train'][1]}.npy"
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=str(victim)):
        NYUDv2Dataset(tree["root"], split="train")
    NYUDv2Dataset(tree["root"], split="train", tasks="S-N-E")  # depth not requested: fine

    tk = make_taskonomy_tree(tmp_path / "tk", buildings=("allensville",), points_per_building=1)
    victim = taskonomy_path(tk["root"], "depth_zbuffer", "allensville", 0, 1)
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=str(victim)):  # normals need depth for the mask
        TaskonomyDataset(tk["root"], tasks="normals")


def test_corrupt_files_raise_value_error_naming_the_file(tmp_path):
    tree = make_nyud_tree(tmp_path / "NYUD_MT", n_train=2, n_val=1)
    sid0, sid1 = tree["splits"]["train"]
    seg_png = tree["root"] / "segmentation" / f"{sid0}.png"
    seg_png.write_bytes(seg_png.read_bytes()[:60])  # truncated PNG
    ds = NYUDv2Dataset(tree["root"], split="train")
    with pytest.raises(ValueError, match=str(seg_png)):
        ds[0]
    bad_npy = tree["root"] / "normals" / f"{sid1}.npy"
    bad_npy.write_bytes(b"this is not a numpy file")
    with pytest.raises(ValueError, match=str(bad_npy)):
        ds[1]
    # a segmentation value outside NYUv2-40 (0..40)
    seg_png1 = tree["root"] / "segmentation" / f"{sid1}.png"
    Image.fromarray(np.full(tree["samples"][sid1]["seg_raw"].shape, 41, np.uint8)).save(seg_png1)
    with pytest.raises(ValueError, match=rf"{seg_png1}.*label 41"):
        NYUDv2Dataset(tree["root"], split="train", tasks="seg")[1]
    # a label map of the wrong size
    np.save(tree["root"] / "depth" / f"{sid1}.npy", np.ones((5, 5), np.float32))
    with pytest.raises(ValueError, match=r"depth.*0001\.npy.*size"):
        NYUDv2Dataset(tree["root"], split="train", tasks="depth")[1]


def test_camera_json_without_keys_raises(tmp_path):
    tree = make_cityscapes_tree(tmp_path / "cs", cities=("frankfurt",), n_per_city=1)
    base = next(iter(tree["samples"]))
    cam = cityscapes_path(tree["root"], "camera", "val", base, "_camera.json")
    cam.write_text(json.dumps({"extrinsic": {"baseline": 0.2}, "intrinsic": {"fy": 2000.0}}))
    ds = CityscapesDataset(tree["root"], split="val")
    with pytest.raises(ValueError, match=r"camera\.json has no field 'intrinsic\.fx'"):
        ds[0]
    assert "seg" in CityscapesDataset(tree["root"], split="val", tasks="seg")[0]  # seg does not need it
    cam.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ds[0]
