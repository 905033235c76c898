"""The assembled VTAGML model (paper Sec. 3, Fig. 2): backbone -> adapters -> decoders -> heads.

What is checked here, on the kit's tiny Swin V2 at 64 px (stage maps 16/8/4/2 tokens wide, so
every test stays small on a CPU):

- shapes of the per-task outputs for the paper's task sets (Sec. 4: S-D, S-D-N, S-D-N-E);
- a real training step (forward with per-task gradient tracking, :class:`MultiTaskLoss`,
  backward, TROA update, Adam step) leaves the frozen backbone bit-identical (Sec. 3.1);
- TROA (Sec. 3.2.1, Algorithm 1): omega rows stay distributions and follow the mirror-descent
  equation; with TROA off omega stays uniform;
- each ablation switch (paper supplementary) changes exactly the parameters it should;
- the decoder wiring of Sec. 3.3 (which adapter output or backbone map feeds which stride);
- the NaN/inf guard stops a step before any weight changes;
- the cheap per-task gradients TROA uses equal separate autograd gradients;
- the parameter report (Table 6) and the paper-scale Swin-B V2 configuration.
"""
from __future__ import annotations

import gc
import math
import re

import pytest
import torch
import torch.nn.functional as F

from vtagml_core.model.adapter import AdapterConfig
from vtagml_core.model.backbone import BackboneConfig
from vtagml_core.model.decoder import DecoderConfig
from vtagml_core.model.heads import SHARED_KEY
from vtagml_core.model.params import TOTAL_ROW, format_parameter_table
from vtagml_core.model.troa import gradient_cosine_similarity, uniform_affinity
from vtagml_core.model.vtagml import ModelConfig, VTAGML, tsn_init_params
from vtagml_core.tasks import IGNORE_INDEX, parse_tasks, task_channels
from vtagml_core.train.losses import MultiTaskLoss, check_finite

#: Image side for the tiny model: the smallest the tiny Swin V2 accepts (multiple of 32).
IMG = 64
#: Segmentation classes of the test model (any small number works).
NUM_CLASSES = 5
#: Seed used before building every model, so that two configs can be compared weight by weight.
SEED = 0
#: Adam learning rate of the test training steps.
LEARNING_RATE = 1e-3
#: Fraction of pixels marked valid (depth/normals defined) in the random batches.
VALID_FRACTION = 0.8
#: Fraction of seg pixels set to the ignore index in the random batches.
IGNORED_FRACTION = 0.1
#: Depth range (scene units) of the random depth targets.
DEPTH_MIN, DEPTH_MAX = 0.5, 10.0
#: Backbone component name in :meth:`VTAGML.parameter_report`.
BACKBONE_ROW = "backbone (frozen)"
#: torch threads while this module runs. The tensors here are tiny (64 px, batch 1-2), so a
#: second thread gains little, and on a shared 2-core machine OpenMP threads that wait for a
#: descheduled peer made this file 7x slower (430 s with 2 threads, 64 s with 1, load ~9).
TEST_THREADS = 1
#: Swin-B V2 without its classifier has ~86.9M parameters (timm ``swinv2_base_window8_256``).
SWIN_B_V2_PARAMS = 86.9e6
SWIN_B_V2_TOLERANCE = 0.1e6

PAPER_TASK_SETS = ("S-D", "S-D-N", "S-D-N-E")

# Trainable parameters that get an exactly-zero gradient on the *first* step, by design:
# the adapter FFN acts only through TSN's FiLM maps, which start at zero (adapter.py docstring),
# and every decoder Swin block starts as the identity (zero residual post-norms, decoder.py).
ZERO_GRAD_AT_INIT = re.compile(
    r"^adapter\.layers\.\d+\.(norm_ffn|ffn)\."
    r"|^decoder\.decoders\.\w+\.stages\.\d+\.\d+\.(attn|mlp)\."
)


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True, scope="module")
def _few_threads():
    """Run this module with :data:`TEST_THREADS` torch threads, then restore the setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    yield
    torch.set_num_threads(previous)


def _build(tasks: str = "S-D-N-E", adapter: dict | None = None, backbone: dict | None = None,
           decoder: dict | None = None) -> VTAGML:
    """Tiny VTAGML at :data:`IMG` px, built right after ``torch.manual_seed(SEED)``."""
    torch.manual_seed(SEED)
    return VTAGML(ModelConfig(
        tasks=tasks,
        num_classes=NUM_CLASSES,
        backbone=BackboneConfig(img_size=IMG, **(backbone or {})),
        adapter=AdapterConfig(**(adapter or {})),
        decoder=DecoderConfig(**(decoder or {})),
    ))


def _batch(tasks: tuple[str, ...], batch: int = 2, seed: int = 1) -> dict:
    """Random batch following the kit's data contract (already collated, B first)."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, 1, IMG, IMG)
    valid = torch.rand(shape, generator=g) < VALID_FRACTION
    out = {"image": torch.rand(batch, 3, IMG, IMG, generator=g), "valid": valid}
    if "seg" in tasks:
        seg = torch.randint(0, NUM_CLASSES, (batch, IMG, IMG), generator=g)
        ignored = torch.rand(batch, IMG, IMG, generator=g) < IGNORED_FRACTION
        out["seg"] = seg.masked_fill(ignored, IGNORE_INDEX)
    if "depth" in tasks:
        depth = DEPTH_MIN + (DEPTH_MAX - DEPTH_MIN) * torch.rand(shape, generator=g)
        out["depth"] = depth * valid
    if "normals" in tasks:
        normals = F.normalize(torch.randn(batch, 3, IMG, IMG, generator=g), dim=1)
        out["normals"] = normals * valid
    if "edges" in tasks:
        out["edges"] = torch.rand(shape, generator=g)
    return out


def _optimiser(model: VTAGML) -> torch.optim.Adam:
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE)


def _train_step(model: VTAGML, criterion: MultiTaskLoss, optimiser: torch.optim.Optimizer,
                batch: dict) -> torch.Tensor | None:
    """One training step in the documented order; returns TROA's ``sim`` (or None).

    forward (keeping per-task gradients) -> losses -> ``check_finite`` -> backward ->
    ``update_affinity`` (TROA, Algorithm 1) -> Adam step.
    """
    model.train()
    optimiser.zero_grad(set_to_none=True)
    outputs = model(batch["image"], track_task_grads=True)
    total, losses = criterion(outputs, batch)
    check_finite(losses)  # before backward/step: a diverged loss must not touch the weights
    total.backward()
    sim = model.update_affinity()
    optimiser.step()
    return sim


def _shapes(model: VTAGML) -> dict[str, tuple[int, ...]]:
    """``{parameter name: shape}`` of every parameter (frozen ones included)."""
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def _snapshot(model: VTAGML) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _capture_decoder_inputs(model: VTAGML) -> tuple[dict, object]:
    """Forward pre-hook recording what :class:`MultiTaskDecoder` receives."""
    seen: dict = {}

    def hook(_module, args):
        seen["inputs"] = args[0]  # {task: (deep, [skip at 1/16, 1/8, 1/4])}

    return seen, model.decoder.register_forward_pre_hook(hook)


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("spec", PAPER_TASK_SETS)
def test_forward_returns_one_full_resolution_map_per_task(spec):
    model = _build(spec).eval()
    images = torch.rand(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(images)
    tasks = parse_tasks(spec)
    assert tuple(out) == tasks  # canonical order S, D, N, E
    for task in tasks:
        assert out[task].shape == (2, task_channels(task, NUM_CLASSES), IMG, IMG)
        assert out[task].dtype == torch.float32 and torch.isfinite(out[task]).all()


@pytest.mark.parametrize("spec, bad", [("S-D-X", "X"), ("seg,albedo", "albedo")])
def test_unknown_task_name_is_refused_by_name(spec, bad):
    with pytest.raises(ValueError, match=rf"unknown task '{bad}'.*valid tasks: seg, depth"):
        VTAGML(ModelConfig(tasks=spec, num_classes=NUM_CLASSES,
                           backbone=BackboneConfig(img_size=IMG)))


# --------------------------------------------------------------------------- frozen backbone


def test_training_step_keeps_backbone_bit_identical_and_trains_the_rest():
    model = _build()
    batch = _batch(model.tasks)
    before = _snapshot(model)
    optimiser = _optimiser(model)
    _train_step(model, MultiTaskLoss(model.tasks), optimiser, batch)

    assert not model.backbone.training  # model.train() does not reach the frozen backbone
    after = model.state_dict()
    backbone_keys = [k for k in before if k.startswith("backbone.")]
    assert backbone_keys and all(torch.equal(after[k], before[k]) for k in backbone_keys)
    assert all(p.grad is None for p in model.backbone.parameters())

    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    for part in ("adapter.", *(f"decoder.decoders.{t}." for t in model.tasks),
                 *(f"decoder.heads.{t}." for t in model.tasks)):
        assert any(n.startswith(part) for n in changed), f"nothing under {part} trained"
    # Every adapter layer's attention, TAA bias and TSN moved; the skip merge too.
    for i in range(len(model.adapter.layers)):
        for name in ("taa.qkv.weight", "taa.bias_fn.A", "tsn.weight", "tsn.film_scale.weight"):
            assert f"adapter.layers.{i}.{name}" in changed
    # What did not move is exactly what sits behind a zero-initialised gate on step one.
    still = {n for n, p in model.named_parameters() if p.requires_grad and n not in changed}
    assert still and all(ZERO_GRAD_AT_INIT.search(n) for n in still), sorted(still)[:5]
    assert all(model.get_parameter(n).grad.abs().max() == 0 for n in still)


# --------------------------------------------------------------------------- TROA


def test_troa_step_follows_mirror_descent_and_keeps_rows_distributions():
    model = _build()
    n = len(model.tasks)
    assert torch.equal(model.omega, uniform_affinity(n))
    sim = _train_step(model, MultiTaskLoss(model.tasks), _optimiser(model), _batch(model.tasks))

    omega = model.omega
    assert sim is not None and sim.shape == (n, n)
    assert torch.allclose(omega.sum(dim=1), torch.ones(n), atol=1e-6)
    assert (omega > 0).all() and not torch.allclose(omega, uniform_affinity(n))
    # Algorithm 1 from uniform rows, kappa = 1, sign +1: omega[t] = softmax(sim[t]).
    assert torch.allclose(omega, torch.softmax(sim, dim=1), atol=1e-6)
    # sim[t, t] = 1 is every row's largest entry, so each task's strongest affinity is itself
    # (the paper's reading of Fig. 4).
    assert torch.equal(omega.argmax(dim=1), torch.arange(n))
    assert int(model.adapter.troa.num_updates) == 1
    assert torch.equal(model.state_dict()["adapter.troa.omega"], omega)  # checkpoints carry it


def test_troa_off_keeps_omega_uniform_and_same_parameters():
    default, off = _build(), _build(adapter={"troa": False})
    assert not off.tracks_task_grads and default.tracks_task_grads
    # Same seed, same parameters (names, shapes and values): TROA owns no learned weight.
    assert _shapes(off) == _shapes(default)
    assert all(torch.equal(p, default.get_parameter(n)) for n, p in off.named_parameters())

    sim = _train_step(off, MultiTaskLoss(off.tasks), _optimiser(off), _batch(off.tasks))
    assert sim is None and off.update_affinity() is None
    assert torch.equal(off.omega, uniform_affinity(len(off.tasks)))
    assert int(off.adapter.troa.num_updates) == 0


# --------------------------------------------------------------------------- ablations


def _rename(shapes: dict, old: str, new: str) -> dict:
    return {new + n[len(old):]: s for n, s in shapes.items() if n.startswith(old)}


def _expected_taa_off(default: dict) -> dict:
    return {n: s for n, s in default.items() if ".taa.bias_fn." not in n}


def _expected_tsn_off(default: dict) -> dict:
    return {n: s for n, s in default.items() if ".tsn." not in n}


def _expected_adapters_off(default: dict) -> dict:
    return {n: s for n, s in default.items() if not n.startswith("adapter.")}


def _expected_stage4_taps_only(default: dict) -> dict:
    # Layers 4 and 5 (stage-4 taps) become layers 0 and 1; no stage change, so no skip merge.
    kept = {n: s for n, s in default.items() if not n.startswith("adapter.")}
    kept.update(_rename(default, "adapter.layers.4.", "adapter.layers.0."))
    kept.update(_rename(default, "adapter.layers.5.", "adapter.layers.1."))
    return kept


def _expected_shared_decoder(default: dict) -> dict:
    kept = {n: s for n, s in default.items() if not n.startswith("decoder.decoders.")}
    kept.update(_rename(default, "decoder.decoders.seg.", f"decoder.decoders.{SHARED_KEY}."))
    return kept


ABLATIONS = {
    "taa_off": ({"adapter": {"taa_bias": "none"}}, _expected_taa_off),
    "tsn_off": ({"adapter": {"tsn": False}}, _expected_tsn_off),
    "adapters_off": ({"adapter": {"enabled": False}}, _expected_adapters_off),
    "stage4_taps_only": ({"backbone": {"taps": [(3, 0), (3, 1)]}}, _expected_stage4_taps_only),
    "shared_decoder": ({"decoder": {"shared": True}}, _expected_shared_decoder),
}


@pytest.fixture(scope="module")
def default_model() -> VTAGML:
    return _build()


@pytest.mark.parametrize("switch", list(ABLATIONS))
def test_ablation_switch_changes_exactly_its_parameters(default_model, switch):
    overrides, expected = ABLATIONS[switch]
    model = _build(**overrides)
    default = _shapes(default_model)
    want = expected(default)
    assert want != default  # the switch must remove or rename something
    assert _shapes(model) == want
    # The frozen backbone is built first from the same seed: identical whatever the switch.
    ref = default_model.backbone.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.backbone.state_dict().items())


def test_tsn_off_is_the_fixed_backbone_layer_norm():
    model = _build(adapter={"tsn": False})
    for layer, norm in zip(model.adapter.layers, model.backbone.norm_layers_at_taps()):
        weight, bias = tsn_init_params(norm)
        buffers = dict(layer.tsn.named_buffers())
        assert torch.equal(buffers["weight"], weight) and torch.equal(buffers["bias"], bias)
        assert not list(layer.tsn.parameters())


def test_taa_off_makes_outputs_independent_of_omega():
    """TAA is where omega enters the network (Sec. 3.2.2): without it omega changes nothing."""
    images = torch.rand(1, 3, IMG, IMG, generator=torch.Generator().manual_seed(3))
    onehot = torch.eye(4)  # a far-from-uniform affinity matrix
    for taa_bias, should_differ in (("none", False), ("film", True)):
        model = _build(adapter={"taa_bias": taa_bias}).eval()
        with torch.no_grad():
            for p in model.adapter.parameters():  # move the zero-initialised FiLM maps
                p.add_(0.05 * torch.randn_like(p))
            uniform = model(images)
            model.adapter.troa.omega.copy_(onehot)
            sharp = model(images)
        differs = any(not torch.allclose(uniform[t], sharp[t]) for t in model.tasks)
        assert differs == should_differ, taa_bias


# --------------------------------------------------------------------------- decoder wiring


def test_decoder_inputs_follow_sec_3_3_wiring():
    """Deepest adapter output -> input; stage-3 adapter output at 1/16; backbone at 1/8, 1/4."""
    model = _build().eval()
    images = torch.rand(1, 3, IMG, IMG, generator=torch.Generator().manual_seed(4))
    seen, handle = _capture_decoder_inputs(model)
    with torch.no_grad():
        model(images)
        feats = model.encode(images)
        adapted = model.adapter(feats.taps)
    handle.remove()
    stage3_end, stage4_end = model.adapter.stage_ends
    for t, task in enumerate(model.tasks):
        deep, skips = seen["inputs"][task]
        assert torch.equal(deep, adapted[stage4_end][t])
        assert torch.equal(skips[0], adapted[stage3_end][t])
        assert torch.equal(skips[1], feats.stages[1]) and torch.equal(skips[2], feats.stages[0])
        assert not torch.allclose(deep, feats.stages[-1])  # the adapters did something


def test_adapters_off_decoder_reads_the_backbone_stage_maps():
    model = _build(adapter={"enabled": False}).eval()
    images = torch.rand(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(5))
    seen, handle = _capture_decoder_inputs(model)
    with torch.no_grad():
        out = model(images)
        feats = model.encode(images)
        direct = model.decoder({t: (feats.stages[-1], feats.stages[-2::-1]) for t in model.tasks},
                               images)
    handle.remove()
    assert len(model.adapter.layers) == 0 and not list(model.adapter.parameters())
    for task in model.tasks:
        deep, skips = seen["inputs"][task]
        assert torch.equal(deep, feats.stages[-1])  # stride 32: the last stage map
        assert all(torch.equal(s, m) for s, m in zip(skips, feats.stages[-2::-1]))
        assert torch.equal(out[task], direct[task])
    # The last stage map is timm's forward_features before its final LayerNorm.
    bb = model.backbone
    with torch.no_grad():
        timm_features = bb.model.forward_features((images - bb.pixel_mean) / bb.pixel_std)
        assert torch.equal(bb.model.norm(feats.stages[-1]), timm_features)


# --------------------------------------------------------------------------- NaN guard


def _corrupt(batch: dict, task: str, value: float) -> dict:
    """Put ``value`` into ``task``'s target at the first valid pixel."""
    bad = dict(batch)
    target = batch[task].clone()
    b, _, y, x = batch["valid"].nonzero()[0].tolist()
    target[b, :, y, x] = value
    bad[task] = target
    return bad


@pytest.mark.parametrize("task, value", [("depth", math.inf), ("edges", math.nan)])
def test_non_finite_loss_stops_the_step_before_any_weight_changes(task, value):
    model = _build()
    criterion, optimiser = MultiTaskLoss(model.tasks), _optimiser(model)
    batch = _corrupt(_batch(model.tasks), task, value)
    before = _snapshot(model)  # parameters, omega and its update counter
    with pytest.raises(FloatingPointError, match=rf"non-finite loss for task\(s\): {task} "):
        _train_step(model, criterion, optimiser, batch)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not optimiser.state  # Adam never stepped
    assert all(p.grad is None for p in model.parameters())  # backward never ran


def test_nan_image_pixel_is_caught_and_would_poison_the_weights_unguarded():
    """Why the order matters: a NaN input pixel spreads through the backbone to every task;
    the guard names them all, and the same step taken without the guard writes NaN weights."""
    model = _build("S-E")
    criterion, optimiser = MultiTaskLoss(model.tasks), _optimiser(model)
    batch = _batch(model.tasks)
    batch["image"] = batch["image"].clone()
    batch["image"][0, 0, 0, 0] = math.nan
    with pytest.raises(FloatingPointError, match=r"task\(s\): seg \(nan\), edges \(nan\)"):
        _train_step(model, criterion, optimiser, batch)
    total, _ = criterion(model(batch["image"], track_task_grads=True), batch)
    total.backward()  # no guard: what a trainer without check_finite would do
    optimiser.step()
    assert not all(torch.isfinite(p).all() for p in model.adapter.parameters())


def test_nan_depth_label_at_a_valid_pixel_is_caught():
    model = _build("S-D")
    batch = _corrupt(_batch(model.tasks), "depth", math.nan)
    _, losses = MultiTaskLoss(model.tasks)(model(batch["image"]), batch)
    with pytest.raises(FloatingPointError, match="depth"):
        check_finite(losses)


# --------------------------------------------------------------------------- TROA gradients


def test_per_task_gradients_equal_separate_autograd_grads():
    """One backward of sum_t lambda_t L_t leaves lambda_t dL_t/dtheta_t on every stream's leaf."""
    model = _build("S-D-N").train()
    lambdas = {"seg": 1.0, "depth": 0.5, "normals": 2.0}
    criterion = MultiTaskLoss(model.tasks, weights=lambdas)
    batch = _batch(model.tasks, batch=1)
    total, losses = criterion(model(batch["image"], track_task_grads=True), batch)
    leaves = model.adapter._leaves  # per-task copies of every tap, (T, B, h, w, C) each

    rows = []
    for t, task in enumerate(model.tasks):
        grads = torch.autograd.grad(lambdas[task] * losses[task], leaves, retain_graph=True)
        rows.append(torch.cat([g[t].reshape(-1) for g in grads]))
        others = [g[s] for g in grads for s in range(len(model.tasks)) if s != t]
        assert all(torch.count_nonzero(o) == 0 for o in others)  # L_t reads only stream t
    expected = torch.stack(rows)
    assert (expected.norm(dim=1) > 0).all()

    total.backward()
    got = model.adapter.task_gradients()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-9)
    sim = model.update_affinity()
    torch.testing.assert_close(sim, gradient_cosine_similarity(expected), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- parameter report


@pytest.mark.parametrize("decoder", [{}, {"shared": True}])
def test_parameter_report_parts_add_up(decoder):
    model = _build(decoder=decoder)
    rows = {r["component"]: r for r in model.parameter_report()}
    keys = list(model.decoder.decoders)
    assert list(rows) == [BACKBONE_ROW, "adapters", *(f"decoder[{k}]" for k in keys), "heads",
                          TOTAL_ROW]
    assert rows[BACKBONE_ROW]["trainable"] == 0 and rows[BACKBONE_ROW]["total"] > 0
    parts = [r for name, r in rows.items() if name != TOTAL_ROW]
    assert rows[TOTAL_ROW]["total"] == sum(r["total"] for r in parts)
    assert rows[TOTAL_ROW]["trainable"] == sum(r["trainable"] for r in parts)
    assert rows[TOTAL_ROW]["total"] == sum(p.numel() for p in model.parameters())
    assert rows[TOTAL_ROW]["trainable"] == sum(
        p.numel() for p in model.parameters() if p.requires_grad)


def test_paper_scale_swin_b_v2_config_builds_on_cpu():
    """Sec. 3.1 / Table 6 scale: Swin-B V2 at 256 px, six taps, backbone ~86.9M (frozen)."""
    torch.manual_seed(SEED)
    model = VTAGML(ModelConfig(
        num_classes=NUM_CLASSES,
        backbone=BackboneConfig(name="swinv2_base_window8_256", img_size=256, pretrained=False),
    ))
    try:
        assert model.backbone.tap_blocks == [(2, 14), (2, 15), (2, 16), (2, 17), (3, 0), (3, 1)]
        assert model.adapter.tap_channels == [512] * 4 + [1024] * 2
        assert model.adapter.tap_grids == [(16, 16)] * 4 + [(8, 8)] * 2
        report = model.parameter_report()
        print("\n" + format_parameter_table(report))
        rows = {r["component"]: r for r in report}
        assert abs(rows[BACKBONE_ROW]["total"] - SWIN_B_V2_PARAMS) < SWIN_B_V2_TOLERANCE
        assert rows[BACKBONE_ROW]["trainable"] == 0
        assert rows[TOTAL_ROW]["trainable"] == rows[TOTAL_ROW]["total"] - rows[BACKBONE_ROW]["total"]
    finally:
        del model
        gc.collect()
