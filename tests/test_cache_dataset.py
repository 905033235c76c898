"""Tests of the on-disk split cache and the torch datasets over it."""
from __future__ import annotations

import hashlib
import json
import os
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vtagml_core.data import cache
from vtagml_core.data.cache import (SPLITS, CacheError, default_cache_root, ensure_split,
                                    load_split, scene_seeds, split_statistics)
from vtagml_core.data.classes import NUM_CLASSES, class_names
from vtagml_core.data.dataset import PretextDataset, SyntheticDataset
from vtagml_core.data.synthetic.render import render_scene
from vtagml_core.tasks import IGNORE_INDEX

SIZE = 24


class RenderCounter:
    """Wraps cache.render_scene to count calls (optionally failing after ``fail_after``)."""

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        return render_scene(*args, **kwargs)


@pytest.fixture
def counter(monkeypatch) -> RenderCounter:
    c = RenderCounter()
    monkeypatch.setattr(cache, "render_scene", c)
    return c


def render(tmp_path, domain="indoor", split="train", count=3, **kw):
    return ensure_split(domain, split, count, SIZE, root=tmp_path, workers=1, progress=False, **kw)


# ----------------------------------------------------------------------------- layout
def test_split_folder_arrays_and_manifest(tmp_path):
    path = render(tmp_path, "street", "val", count=3, seed=5)
    assert path == tmp_path / "data" / "street" / f"val-{SIZE}x{SIZE}-n3-s5"
    split = load_split(path)
    m = split.manifest
    assert (m["domain"], m["split"], m["seed"], m["size"], m["count"]) == (
        "street", "val", 5, [SIZE, SIZE], 3)
    assert m["generator_version"] == cache.GENERATOR_VERSION
    assert [c["name"] for c in m["class_table"]] == class_names()
    assert m["scene_seeds"] == scene_seeds("street", "val", 3, seed=5) and m["created"]
    expected = {"image": (np.uint8, (3, SIZE, SIZE, 3)), "seg": (np.uint8, (3, SIZE, SIZE)),
                "depth": (np.float32, (3, SIZE, SIZE)), "normals": (np.float32, (3, SIZE, SIZE, 3)),
                "edges": (np.float32, (3, SIZE, SIZE)), "valid": (np.bool_, (3, SIZE, SIZE))}
    assert set(split.arrays) == set(expected)
    for key, (dtype, shape) in expected.items():
        arr = split.arrays[key]
        assert isinstance(arr, np.memmap) and arr.dtype == dtype and arr.shape == shape
        assert m["files"][key]["shape"] == list(shape)
    # the cache holds exactly what render_scene gives for the recorded seeds
    again = render_scene("street", m["scene_seeds"][2], SIZE)
    for key in expected:
        assert np.array_equal(split.arrays[key][2], again[key]), key
    assert len(split) == 3 and split.size == (SIZE, SIZE)


def test_pretext_split_has_albedo_and_texture(tmp_path):
    split = load_split(render(tmp_path, "mixed", "pretext", count=2))
    assert split.arrays["albedo"].shape == (2, SIZE, SIZE, 3)
    assert split.arrays["texture"].dtype == np.uint8


# ----------------------------------------------------------------------------- seeds, splits
def test_scene_seeds_disjoint_across_splits_and_domains():
    seen: set[int] = set()
    for domain in ("indoor", "indoor_shift", "street", "comic", "mixed"):
        for split in SPLITS:
            seeds = set(scene_seeds(domain, split, 200))
            assert len(seeds) == 200 and not seeds & seen
            seen |= seeds
    assert scene_seeds("indoor", "train", 5) == scene_seeds("indoor", "train", 9)[:5]
    assert scene_seeds("indoor", "train", 5, seed=1) != scene_seeds("indoor", "train", 5)


def test_no_identical_images_across_splits(tmp_path):
    digests = []
    for split in ("train", "val", "test"):
        images = load_split(render(tmp_path, "indoor", split, count=4)).arrays["image"]
        digests += [hashlib.sha1(im.tobytes()).hexdigest() for im in images]
    images = load_split(render(tmp_path, "mixed", "pretext", count=4)).arrays["image"]
    digests += [hashlib.sha1(im.tobytes()).hexdigest() for im in images]
    assert len(set(digests)) == len(digests) == 16


def test_output_does_not_depend_on_worker_count(tmp_path, monkeypatch):
    contexts = []
    get_context = cache.multiprocessing.get_context
    monkeypatch.setattr(cache.multiprocessing, "get_context",
                        lambda method: contexts.append(method) or get_context(method))
    n = 2 * cache.MIN_SCENES_PER_PROCESS  # enough scenes to start two rendering processes
    one = ensure_split("comic", "test", n, 16, root=tmp_path / "a", workers=1, progress=False)
    assert contexts == []
    two = ensure_split("comic", "test", n, 16, root=tmp_path / "b", workers=2, progress=False)
    assert contexts == ["spawn"]
    a, b = load_split(one).arrays, load_split(two).arrays
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key


# ----------------------------------------------------------------------------- reuse, repair
def test_second_call_reuses_cache(tmp_path, counter):
    path = render(tmp_path)
    assert counter.calls == 3
    stamp = (path / "manifest.json").stat().st_mtime_ns
    assert render(tmp_path) == path
    assert counter.calls == 3 and (path / "manifest.json").stat().st_mtime_ns == stamp


def test_generator_version_change_rerenders(tmp_path, counter, monkeypatch):
    path = render(tmp_path)
    monkeypatch.setattr(cache, "GENERATOR_VERSION", "test-bumped")
    render(tmp_path)
    assert counter.calls == 6
    assert load_split(path).manifest["generator_version"] == "test-bumped"


@pytest.mark.parametrize("damage", ["truncate", "delete", "manifest"])
def test_damaged_cache_is_rendered_again(tmp_path, counter, damage):
    path = render(tmp_path)
    before = np.array(load_split(path).arrays["depth"])
    if damage == "truncate":
        data = (path / "depth.npy").read_bytes()
        (path / "depth.npy").write_bytes(data[: len(data) // 2])
    elif damage == "delete":
        (path / "seg.npy").unlink()
    else:
        (path / "manifest.json").write_text("{ not json")
    assert render(tmp_path) == path
    assert counter.calls == 6
    assert np.array_equal(load_split(path).arrays["depth"], before)


def test_stale_temp_folder_is_removed(tmp_path, counter):
    final = cache.split_dir(tmp_path, "indoor", "train", 3, (SIZE, SIZE), 0)
    final.parent.mkdir(parents=True)
    stale = final.parent / f".{final.name}{cache.TEMP_MARKER}999999999-dead"
    (stale / "sub").mkdir(parents=True)
    (stale / "images.npy").write_bytes(b"half written")
    odd = final.parent / f".{final.name}{cache.TEMP_MARKER}garbage"
    odd.mkdir()
    live = final.parent / f".{final.name}{cache.TEMP_MARKER}{os.getpid()}-live"
    live.mkdir()  # a render in progress in a running process is left alone
    assert render(tmp_path) == final
    assert not stale.exists() and not odd.exists() and live.exists()
    assert load_split(final).manifest["count"] == 3


def test_interrupted_render_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "render_scene", RenderCounter(fail_after=2))
    with pytest.raises(KeyboardInterrupt):
        render(tmp_path, count=4)
    parent = tmp_path / "data" / "indoor"
    assert list(parent.iterdir()) == []


def test_load_split_errors_name_the_file_and_the_fix(tmp_path):
    path = render(tmp_path)
    (path / "edges.npy").unlink()
    with pytest.raises(CacheError, match="edges.npy") as err:
        load_split(path)
    assert "python -m vtagml_core data render" in str(err.value)
    (path / "manifest.json").unlink()
    with pytest.raises(CacheError, match="manifest.json"):
        load_split(path)


@pytest.mark.parametrize("kwargs, bad", [
    ({"domain": "kitchen"}, "'kitchen'"), ({"split": "holdout"}, "'holdout'"),
    ({"size": 0}, "0"), ({"size": (16, -2)}, "-2"), ({"count": 0}, "0"),
    ({"seed": -3}, "-3"), ({"workers": 0}, "0")])
def test_bad_arguments_name_the_value(tmp_path, kwargs, bad):
    args = {"domain": "indoor", "split": "train", "count": 2, "size": SIZE, **kwargs}
    with pytest.raises(ValueError, match=bad):
        ensure_split(root=tmp_path, progress=False, **args)
    folder = tmp_path / "data" / "indoor"
    assert not folder.exists() or not any(folder.iterdir())


def test_default_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("VTAGML_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_root() == tmp_path / "elsewhere"
    monkeypatch.delenv("VTAGML_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_root() == tmp_path / ".cache" / "vtagml"


def test_split_statistics_match_direct_computation(tmp_path):
    path = render(tmp_path, "street", count=3)
    a = load_split(path).arrays
    stats = split_statistics(path, chunk=2)
    assert stats["count"] == 3 and stats["size"] == [SIZE, SIZE]
    assert sum(stats["class_fraction"].values()) == pytest.approx(1.0)
    assert stats["class_fraction"]["sky"] == pytest.approx(np.mean(a["seg"] == 0))
    d = a["depth"][a["valid"]]
    assert stats["depth_min"] == pytest.approx(d.min())
    assert stats["depth_max"] == pytest.approx(d.max())
    assert stats["depth_mean"] == pytest.approx(d.mean(dtype=np.float64), rel=1e-6)
    assert stats["valid_fraction"] == pytest.approx(a["valid"].mean())
    assert stats["edge_mean"] == pytest.approx(a["edges"].mean(dtype=np.float64), rel=1e-6)
    np.testing.assert_allclose(stats["image_mean_rgb"], a["image"].reshape(-1, 3).mean(0) / 255)
    json.dumps(stats)  # plain types only


# ----------------------------------------------------------------------------- datasets
def test_dataset_contract_for_a_task_subset(tmp_path):
    ds = SyntheticDataset("indoor", "train", tasks="S-N", count=3, size=SIZE, root=tmp_path,
                          progress=False)
    assert ds.tasks == ("seg", "normals") and len(ds) == 3 and ds.name == "indoor"
    assert ds.class_names == class_names() and ds.class_colors.shape == (NUM_CLASSES, 3)
    s = ds[1]
    assert set(s) == {"image", "seg", "normals", "valid", "name", "domain"}
    assert s["image"].dtype == torch.float32 and s["image"].shape == (3, SIZE, SIZE)
    assert 0.0 <= s["image"].min() and s["image"].max() <= 1.0 and s["image"].is_contiguous()
    assert s["seg"].dtype == torch.int64 and s["seg"].shape == (SIZE, SIZE)
    assert ((s["seg"] < NUM_CLASSES) | (s["seg"] == IGNORE_INDEX)).all()
    assert s["normals"].dtype == torch.float32 and s["normals"].shape == (3, SIZE, SIZE)
    assert s["valid"].dtype == torch.bool and s["valid"].shape == (1, SIZE, SIZE)
    assert s["name"] == "indoor/train/00001" and s["domain"] == "indoor"
    a = load_split(ds.path).arrays
    expected = torch.from_numpy(a["image"][1].transpose(2, 0, 1) / 255.0).float()
    assert torch.allclose(s["image"], expected, atol=1e-7)
    assert torch.equal(s["normals"].permute(1, 2, 0), torch.from_numpy(np.array(a["normals"][1])))
    assert ds[-1]["name"] == "indoor/train/00002"
    with pytest.raises(IndexError):
        ds[3]


def test_dataset_all_tasks_unlabelled_and_collate(tmp_path):
    ds = SyntheticDataset("street", "val", count=5, size=SIZE, root=tmp_path, progress=False)
    s = ds[0]
    assert s["depth"].shape == (1, SIZE, SIZE) and s["edges"].shape == (1, SIZE, SIZE)
    assert torch.equal(s["depth"] > 0, s["valid"])
    unl = SyntheticDataset("street", "val", count=5, size=SIZE, root=tmp_path, unlabelled=True,
                           progress=False)
    assert set(unl[0]) == {"image", "name", "domain"}
    assert torch.equal(unl[0]["image"], s["image"])
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=0)))
    assert batch["image"].shape == (4, 3, SIZE, SIZE) and batch["seg"].shape == (4, SIZE, SIZE)
    assert batch["normals"].shape == (4, 3, SIZE, SIZE) and batch["valid"].dtype == torch.bool
    assert batch["name"][3] == "street/val/00003" and batch["domain"] == ["street"] * 4
    ubatch = next(iter(DataLoader(unl, batch_size=5)))
    assert set(ubatch) == {"image", "name", "domain"}
    with pytest.raises(ValueError, match="'height'"):
        SyntheticDataset("street", "val", tasks=("seg", "height"), count=5, size=SIZE,
                         root=tmp_path, progress=False)


def test_dataset_pickles_without_memmaps(tmp_path):
    ds = SyntheticDataset("indoor", "test", count=2, size=SIZE, root=tmp_path, progress=False)
    ds[0]  # opens the memory maps
    blob = pickle.dumps(ds)
    assert len(blob) < 4096
    assert torch.equal(pickle.loads(blob)[1]["image"], ds[1]["image"])


def test_pretext_dataset(tmp_path):
    ds = PretextDataset(count=3, size=SIZE, root=tmp_path, progress=False)
    s = ds[2]
    assert set(s) == {"image", "albedo", "texture", "name", "domain"}
    assert s["albedo"].dtype == torch.float32 and s["albedo"].shape == (3, SIZE, SIZE)
    assert s["texture"].dtype == torch.int64 and s["texture"].shape == (SIZE, SIZE)
    assert int(s["texture"].max()) < len(ds.texture_names)
    assert ds.domain == "mixed" and ds.path.name.startswith("pretext-")
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["albedo"].shape == (3, 3, SIZE, SIZE)
