"""The frozen-backbone feature cache gives exactly the numbers of the uncached path."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import DataLoader

from vtagml_core.data.dataset import SyntheticDataset
from vtagml_core.model.backbone import BackboneConfig, FrozenBackbone
from vtagml_core.model.vtagml import VTAGML, ModelConfig
from vtagml_core.train.feature_cache import FEATURES_KEY, CachedFeatureDataset, features_from_batch
from vtagml_core.train.losses import MultiTaskLoss
from vtagml_core.train.step import train_step

SIZE = 64
COUNT = 8
#: Loader batch = cache batch: identical backbone calls, so bit-identical features by construction.
BATCH = 4
TRAIN_STEPS = 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> SyntheticDataset:
    return SyntheticDataset("indoor", "train", tasks="S-D-N-E", count=COUNT, size=SIZE, seed=0,
                            root=tmp_path_factory.mktemp("cache"), progress=False)


@pytest.fixture(scope="module")
def model() -> VTAGML:
    torch.manual_seed(0)
    return VTAGML(ModelConfig(tasks="S-D-N-E", backbone=BackboneConfig(img_size=SIZE)))


@pytest.fixture(scope="module")
def cached(dataset, model) -> CachedFeatureDataset:
    return CachedFeatureDataset(dataset, model.backbone, batch_size=BATCH, progress=False)


def _cached_train_step(model, batch, loss_fn, optimizer):
    """:func:`train_step`'s sequence, with the batch's cached features handed to the forward."""
    outputs = model(batch["image"], features=features_from_batch(batch), track_task_grads=True)
    total, per_task = loss_fn(outputs, batch)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    model.update_affinity()
    optimizer.step()
    return float(total.detach()), {t: float(v.detach()) for t, v in per_task.items()}


def test_samples_keep_their_labels_and_carry_the_backbone_features(dataset, model, cached):
    images = torch.stack([dataset[i]["image"] for i in range(COUNT)])
    direct = [model.backbone(images[i:i + BATCH]) for i in range(0, COUNT, BATCH)]
    for i in range(COUNT):
        sample, plain = cached[i], dataset[i]
        assert set(sample) == set(plain) | {FEATURES_KEY}
        for key in ("image", "seg", "depth", "normals", "edges", "valid"):
            assert torch.equal(sample[key], plain[key]), key
        ref = direct[i // BATCH]
        feats = sample[FEATURES_KEY]
        assert len(feats["taps"]) == len(ref.taps) and len(feats["stages"]) == len(ref.stages)
        for got, want in zip(feats["taps"] + feats["stages"], ref.taps + ref.stages):
            assert got.shape == want.shape[1:] and got.dtype == torch.float32
            assert torch.equal(got, want[i % BATCH])


def test_model_outputs_are_identical_with_the_cache(dataset, model, cached):
    model.eval()
    with torch.no_grad():
        for plain, fast in zip(DataLoader(dataset, batch_size=BATCH), DataLoader(cached, batch_size=BATCH)):
            feats = features_from_batch(fast)
            assert feats.taps[0].shape == (BATCH, *cached[0][FEATURES_KEY]["taps"][0].shape)
            ref, out = model(plain["image"]), model(fast["image"], features=feats)
            for task in model.tasks:
                assert torch.equal(ref[task], out[task]), task


def test_training_steps_give_identical_losses_weights_and_affinity(dataset, model, cached):
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    a.train(), b.train()
    opt_a = torch.optim.Adam([p for p in a.parameters() if p.requires_grad], lr=1e-3)
    opt_b = torch.optim.Adam([p for p in b.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = MultiTaskLoss(model.tasks)
    batches = zip(DataLoader(dataset, batch_size=BATCH), DataLoader(cached, batch_size=BATCH))
    for _, (plain, fast) in zip(range(TRAIN_STEPS), batches):
        ref = train_step(a, plain, loss_fn, opt_a)  # the uncached reference: the kit's train step
        total, per_task = _cached_train_step(b, fast, loss_fn, opt_b)
        assert ref.loss == total and ref.task_losses == per_task
    assert not torch.equal(a.omega, torch.full_like(a.omega, 1 / len(model.tasks)))  # TROA moved
    state_a, state_b = a.state_dict(), b.state_dict()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


def test_memory_footprint_counts_each_stored_map_once(dataset, model, cached):
    probe = model.backbone(dataset[0]["image"][None])
    # Swin: the last tapped block of stages 3 and 4 *is* that stage's output; stored once.
    shared = sum(1 for t in probe.taps for s in probe.stages if t.data_ptr() == s.data_ptr())
    assert shared == 2
    distinct = probe.stages + [t for t in probe.taps if all(t.data_ptr() != s.data_ptr() for s in probe.stages)]
    assert cached.nbytes == COUNT * sum(t.numel() * 4 for t in distinct)
    feats = cached[3][FEATURES_KEY]
    assert feats["taps"][-1] is feats["stages"][-1]


def test_cache_over_the_cap_is_refused_with_what_to_do(dataset, model, cached):
    with pytest.raises(ValueError, match=r"data\.train_count.*train\.feature_cache=false"):
        CachedFeatureDataset(dataset, model.backbone, max_bytes=cached.nbytes - 1, progress=False)


def test_trainable_backbone_is_refused(dataset):
    trainable = FrozenBackbone(BackboneConfig(img_size=SIZE, frozen=False))
    with pytest.raises(ValueError, match="trainable"):
        CachedFeatureDataset(dataset, trainable, progress=False)


def test_features_from_batch_without_features_and_with_a_bad_entry():
    assert features_from_batch({"image": torch.zeros(1, 3, SIZE, SIZE)}) is None
    with pytest.raises(ValueError, match="'taps' and 'stages'"):
        features_from_batch({FEATURES_KEY: {"taps": []}})
