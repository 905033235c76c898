"""The parameter-efficient peers: MTLoRA and per-task LayerNorms (docs/settings.md, The methods).

Checked on the kit's tiny Swin V2 at 64 px (the smoke preset's size):

- both start exactly as the frozen backbone: LoRA's B is zero, the per-task norms are copies
  (``torch.equal`` on the shared features; the task streams, run stacked on the batch, match to
  the last bit of a differently blocked matrix product);
- MTLoRA's trainable count is the closed form ``sum over adapted layers r (C_in + C_out)`` (TA-LoRA)
  ``+ T sum over task-specific layers r_t (C_in + C_out)`` (TS-LoRA) plus the decoders and heads,
  with the layer sizes taken from the Swin V2 architecture, not from the LoRA modules;
- norm_only trains only per-task gamma/beta and the decoders (names checked), T copies of every
  LayerNorm the backbone runs;
- after a few ``train_step`` calls the task streams differ (each task has its own features) while
  every pretrained weight is bit-identical;
- ``backbone.frozen`` is False (the trainer never caches their features), cached features are
  refused while training, and both round-trip through ``save_model`` / ``load_model``;
- the registry, the comparison's defaults and ``python -m vtagml_core params --method`` know them.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vtagml_core.baselines.factory import load_model
from vtagml_core.baselines.mtlora import (
    MTLoRA,
    MTLoRAConfig,
    TA_LORA_ROW,
    TS_LORA_ROW,
    LoRA,
    LoRALinear,
    TaskLoRALinear,
)
from vtagml_core.baselines.norm_only import TASK_NORMS_ROW, TaskLayerNorm
from vtagml_core.baselines.registry import build_model, effective_config, method_names, method_revision
from vtagml_core.baselines.simple import FROZEN_BACKBONE_ROW
from vtagml_core.cli import main as cli_main
from vtagml_core.experiments.compare import DEFAULT_METHODS, PEER_LABELS
from vtagml_core.model.backbone import BackboneConfig, FrozenBackbone
from vtagml_core.model.backbone_weights import TINY_CONFIGS
from vtagml_core.model.checkpoint import CONFIG_FILE, save_model
from vtagml_core.model.params import TOTAL_ROW
from vtagml_core.model.vtagml import ModelConfig
from vtagml_core.train.config import load_kit_config
from vtagml_core.train.losses import MultiTaskLoss
from vtagml_core.train.state import backbone_frozen, mutable_model_state
from vtagml_core.train.step import train_step

METHODS = ("mtlora", "norm_only")
#: The smoke preset's model config: tiny Swin V2 at 64 px, slim decoders, S-D-N-E.
SMOKE = load_kit_config(preset="smoke").model
IMG = SMOKE.backbone.img_size
TASKS = "S-D-N-E"
NUM_TASKS = 4
BATCH = 2
SEED = 0
#: A learning rate large enough that three Adam steps move every LoRA B and norm visibly.
LEARNING_RATE = 1e-2
STEPS = 3
#: Tolerance of the task streams against the shared stream at step 0: the same arithmetic on a
#: T-times larger batch, which a matrix-product kernel may block differently (last-bit changes).
STREAM_ATOL = 1e-5


def _cfg(tasks: str = TASKS, weights: Path | None = None) -> ModelConfig:
    cfg = load_kit_config(preset="smoke").model
    cfg.tasks = tasks
    cfg.backbone.weights = None if weights is None else str(weights)
    return cfg


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A "pretrained" tiny Swin V2 weights file: random weights, every LayerNorm weight 1.

    A never-trained timm Swin V2 has residual post-norms of weight 0 (``init_respostnorm``), so
    every block is the identity and LoRA inside a block gets no gradient; a trained backbone
    (ImageNet, the kit's pretext one) has non-zero norms, which this file imitates.
    """
    torch.manual_seed(SEED)
    backbone = FrozenBackbone(SMOKE.backbone)
    with torch.no_grad():
        for m in backbone.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.fill_(1.0)
    path = tmp_path_factory.mktemp("weights") / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(path))
    return path


def _batch(b: int = BATCH, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    shape = (b, 1, IMG, IMG)
    num_classes = SMOKE.resolved_num_classes()
    return {"image": torch.rand(b, 3, IMG, IMG, generator=g),
            "seg": torch.randint(0, num_classes, (b, IMG, IMG), generator=g),
            "depth": torch.rand(shape, generator=g) * 5 + 0.5,
            "normals": F.normalize(torch.randn(b, 3, IMG, IMG, generator=g), dim=1),
            "edges": torch.rand(shape, generator=g),
            "valid": torch.ones(shape, dtype=torch.bool)}


def _build(method: str, weights: Path | None = None, seed: int = SEED, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kw:
        return MTLoRA(effective_config(method, _cfg(weights=weights)), **kw)
    return build_model(method, _cfg(weights=weights))


def _task_streams(model: torch.nn.Module, images: torch.Tensor) -> list[list[torch.Tensor]]:
    """Per task, the four stage maps its decoder reads (eval, no grad)."""
    model.eval()
    with torch.no_grad():
        return model.task_stage_maps(model.encode(images), images.shape[0])


def _rows(model: torch.nn.Module) -> dict[str, dict]:
    return {r["component"]: r for r in model.parameter_report()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, weights):
    """``{method: (model, state before, streams before, losses, checkpoint folder)}`` after STEPS steps."""
    root = tmp_path_factory.mktemp("peft")
    out = {}
    images = _batch()["image"]
    for method in METHODS:
        model = _build(method, weights)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        streams = _task_streams(model, images)
        model.train()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE)
        losses = [train_step(model, _batch(seed=k), MultiTaskLoss(model.tasks), opt).loss for k in range(STEPS)]
        out[method] = (model, before, streams, losses, save_model(model, root / method))
    return out


# --------------------------------------------------------------------------- LoRA algebra


def test_lora_is_a_low_rank_update_that_starts_at_zero_and_merges_into_the_weight():
    torch.manual_seed(SEED)
    base = torch.nn.Linear(6, 10)
    layer = LoRALinear(base, rank=2, alpha=4.0)
    x = torch.randn(3, 5, 6)
    assert layer.lora.A.shape == (2, 6) and layer.lora.B.shape == (10, 2)
    assert layer.lora.A.abs().sum() > 0 and not layer.lora.B.any()       # A random, B zero
    assert torch.equal(layer(x), base(x)) and torch.equal(layer.weight, base.weight)
    with torch.no_grad():
        layer.lora.B.normal_()
    delta = (4.0 / 2) * layer.lora.B @ layer.lora.A                      # (alpha / r) B A
    assert torch.allclose(layer(x), base(x) + x @ delta.T, atol=1e-6)   # W x + b + (alpha/r) B A x
    # The merged weight gives the same function (timm's Swin V2 attention reads qkv.weight).
    assert torch.allclose(F.linear(x, layer.weight, layer.bias), layer(x), atol=1e-6)


def test_task_lora_linear_gives_each_stacked_task_stream_its_own_update():
    torch.manual_seed(SEED)
    layer = TaskLoRALinear(torch.nn.Linear(4, 4), num_tasks=3, cfg=MTLoRAConfig(rank=2, task_rank=1))
    with torch.no_grad():
        for p in itertools.chain(layer.lora.parameters(), layer.task_loras.parameters()):
            p.normal_()
    x = torch.randn(2, 4)
    assert torch.allclose(layer(x), layer.base(x) + layer.lora(x))        # shared stream: TA-LoRA
    layer.task_streams = True
    y = layer(x.repeat(3, 1)).unflatten(0, (3, 2))                        # (T, B, C_out)
    for t in range(3):                                                    # task t: W x + TS-LoRA_t
        assert torch.allclose(y[t], layer.base(x) + layer.task_loras[t](x), atol=1e-6)


# --------------------------------------------------------------------------- step 0


@pytest.mark.parametrize("method", METHODS)
def test_both_start_exactly_as_the_frozen_backbone(method, weights):
    frozen = FrozenBackbone(_cfg(weights=weights).backbone)    # the same pretrained weights
    model = _build(method, weights)
    images = _batch()["image"]
    with torch.no_grad():
        ref = frozen(images)
    streams = _task_streams(model, images)
    if method == "mtlora":
        with torch.no_grad():
            feats = model.encode(images)
        for a, b in zip(ref.stages + ref.taps, feats.stages + feats.taps):   # the shared stream
            assert torch.equal(a, b)
        assert sorted(feats.task_stages) == [0, 1, 2, 3]    # every stage splits per task (paper)
    assert len(streams) == NUM_TASKS
    for task_maps in streams:
        for a, b in zip(ref.stages, task_maps):
            assert a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=STREAM_ATOL)


# --------------------------------------------------------------------------- parameter counts


def _swin_layer_sizes(cfg: MTLoRAConfig) -> tuple[int, int]:
    """Closed form ``(TA-LoRA, TS-LoRA)`` parameter counts for the tiny Swin V2, from its spec."""
    spec = TINY_CONFIGS["swinv2_tiny_cpu"]
    depths = spec.depths
    dims = [spec.embed_dim * 2 ** s for s in range(len(depths))]                 # C_s: 32, 64, 128, 256
    stages = range(len(depths)) if cfg.task_specific_stages is None else cfg.task_specific_stages
    ta = ts = 0
    for s, (depth, c) in enumerate(zip(depths, dims)):
        hidden = int(c * spec.mlp_ratio)
        sizes = {"qkv": (c, 3 * c), "proj": (c, c), "fc1": (c, hidden), "fc2": (hidden, c)}
        if s > 0 and "reduction" in cfg.targets:
            ta += cfg.rank * (4 * dims[s - 1] + c)                               # patch merging 4C -> 2C
        for b in range(depth):
            for name in (t for t in cfg.targets if t in sizes):
                fan = sum(sizes[name])                                           # C_in + C_out
                task_specific = s in stages and b == depth - 1 and name != "qkv"
                if task_specific:
                    ts += NUM_TASKS * cfg.task_rank * fan                        # one TS-LoRA per task
                if not (task_specific and s == len(depths) - 1):                 # deepest: no TA there
                    ta += cfg.rank * fan
    return ta, ts


@pytest.mark.parametrize("options", [
    MTLoRAConfig(),
    MTLoRAConfig(rank=2, alpha=2.0, task_rank=3, task_alpha=6.0,
                 targets=["qkv", "proj", "fc1", "fc2", "reduction"], task_specific_stages=[1, 3]),
    MTLoRAConfig(rank=16, task_rank=16, targets=["fc1"], task_specific_stages=[]),
], ids=["default", "all-targets", "plain-lora"])
def test_mtlora_trainable_parameters_match_the_closed_form(options):
    model = _build("mtlora", options=options)
    rows = _rows(model)
    ta, ts = _swin_layer_sizes(options)
    assert rows[TA_LORA_ROW]["trainable"] == rows[TA_LORA_ROW]["total"] == ta
    assert rows[TS_LORA_ROW]["trainable"] == rows[TS_LORA_ROW]["total"] == ts
    assert rows[FROZEN_BACKBONE_ROW]["trainable"] == 0
    # Same decoders and heads as vanilla_mtl: MTLoRA = vanilla MTL + exactly the LoRA matrices.
    torch.manual_seed(SEED)
    vanilla = _rows(build_model("vanilla_mtl", _cfg()))
    assert rows[TOTAL_ROW]["trainable"] == vanilla[TOTAL_ROW]["trainable"] + ta + ts
    assert rows[FROZEN_BACKBONE_ROW]["total"] == vanilla[FROZEN_BACKBONE_ROW]["total"]
    assert rows[TOTAL_ROW]["total"] == vanilla[TOTAL_ROW]["total"] + ta + ts


def test_mtlora_trains_only_lora_matrices_and_decoders():
    model = _build("mtlora")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if n.startswith("backbone.") and n.rsplit(".", 1)[-1] in ("A", "B")}
    assert lora and all(".lora." in n or ".task_loras." in n for n in lora)
    assert trainable - lora == {n for n, _ in model.decoder.named_parameters(prefix="decoder")}
    wrapped = [p for n, p in model.named_parameters() if n.split(".")[-2] == "base"]   # the W inside LoRA
    assert wrapped and not any(p.requires_grad for p in wrapped)


def test_norm_only_trains_only_per_task_norms_and_decoders():
    model = _build("norm_only")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    norms = {f"{name}.{p}" for name, m in model.named_modules() if isinstance(m, TaskLayerNorm)
             for p in ("weight", "bias")}
    assert norms and trainable == norms | {n for n, _ in model.decoder.named_parameters(prefix="decoder")}
    # T copies of every LayerNorm the walk runs: patch embedding, two per block, patch merging;
    # timm's closing norm stays the shared, frozen nn.LayerNorm.
    spec = TINY_CONFIGS["swinv2_tiny_cpu"]
    dims = [spec.embed_dim * 2 ** s for s in range(len(spec.depths))]
    per_task = 2 * dims[0] + sum(2 * 2 * c * d for c, d in zip(dims, spec.depths)) + sum(2 * c for c in dims[1:])
    assert _rows(model)[TASK_NORMS_ROW]["trainable"] == NUM_TASKS * per_task
    closing = model.backbone.base.model.norm
    assert type(closing) is torch.nn.LayerNorm and not closing.weight.requires_grad
    assert all(m.weight.shape[0] == NUM_TASKS for m in model.modules() if isinstance(m, TaskLayerNorm))


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("method", METHODS)
def test_task_streams_differ_after_a_few_steps_while_pretrained_weights_stay(trained, method):
    model, before, streams0, losses, _ = trained[method]
    assert all(torch.isfinite(torch.tensor(v)) for v in losses)
    after = model.state_dict()
    trained_params = {n for n, p in model.named_parameters() if p.requires_grad}
    pretrained = [k for k in before if k.startswith("backbone.") and k not in trained_params]
    assert pretrained and all(torch.equal(before[k], after[k]) for k in pretrained)
    moved = [k for k in trained_params if k.startswith("backbone.") and not torch.equal(before[k], after[k])]
    assert moved                                          # LoRA B / per-task norms learned
    streams = _task_streams(model, _batch()["image"])
    for t, u in itertools.combinations(range(NUM_TASKS), 2):
        assert torch.allclose(streams0[t][-1], streams0[u][-1], rtol=0, atol=STREAM_ATOL)
        assert not torch.allclose(streams[t][-1], streams[u][-1]), (method, t, u)
        assert not torch.allclose(streams[t][0], streams[u][0]), (method, t, u)


@pytest.mark.parametrize("method", METHODS)
def test_features_change_so_the_backbone_is_not_frozen_for_the_trainer(trained, method):
    model = trained[method][0]
    assert model.backbone.frozen is False and backbone_frozen(model) is False   # no feature cache
    assert model.config.backbone.frozen is True                                 # no pretrained weight trains
    # the training state keeps the trained tensors inside the backbone, not the frozen weights
    kept = {k for k in mutable_model_state(model) if k.startswith("backbone.")}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert kept and kept <= trainable
    model.train()
    assert not model.backbone.training and not any(m.training for m in model.backbone.modules())
    images = _batch()["image"]
    assert model.encode(images).stages[-1].requires_grad
    with pytest.raises(ValueError, match=f"feature cache off for {method}"):
        model(images, features=model.encode(images))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(images, features=model.encode(images))["depth"], model(images)["depth"])


@pytest.mark.parametrize("method", METHODS)
def test_smoke_config_forward_backward_reaches_every_trainable_parameter(method):
    torch.manual_seed(SEED)
    model = build_model(method, load_kit_config(preset="smoke").model)
    model.train()
    out = model(_batch()["image"])
    assert {t: o.shape[-2:] for t, o in out.items()} == {t: (IMG, IMG) for t in model.tasks}
    sum(o.square().mean() for o in out.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


@pytest.mark.parametrize("method", METHODS)
def test_save_and_load_through_the_factory(trained, method, weights):
    model, _, _, _, folder = trained[method]
    assert json.loads((folder / CONFIG_FILE).read_text())["method"] == method
    loaded = load_model(folder)
    assert type(loaded) is type(model) and loaded.method == method and loaded.config == model.config
    saved, restored = model.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys() and all(torch.equal(saved[k], restored[k]) for k in saved)
    model.eval(), loaded.eval()
    images = _batch(seed=5)["image"]
    with torch.no_grad():
        a, b = model(images), loaded(images)
    assert all(torch.equal(a[t], b[t]) for t in model.tasks)
    assert load_model(folder, config=_cfg(weights=weights), method=method).method == method


# --------------------------------------------------------------------------- errors and wiring


def test_clear_errors_for_configs_the_methods_cannot_use():
    cfg = _cfg()
    cfg.backbone.frozen = False
    for method in METHODS:
        with pytest.raises(ValueError, match="backbone.frozen=false.*finetune_mtl"):
            build_model(method, cfg)
    pvt = _cfg()
    pvt.backbone = BackboneConfig(name="pvt_v2_b0", img_size=IMG)
    with pytest.raises(ValueError, match="needs a Swin V2 backbone.*pvt_v2_b0.*norm_only"):
        build_model("mtlora", pvt)
    for bad, match in [(MTLoRAConfig(rank=0), "rank must be an integer >= 1"),
                       (MTLoRAConfig(alpha=0.0), "alpha must be > 0"),
                       (MTLoRAConfig(targets=["qkv", "k"]), r"targets must be distinct names from \['qkv'"),
                       (MTLoRAConfig(task_specific_stages=[4]), "stages in 0-3")]:
        with pytest.raises(ValueError, match=match):
            _build("mtlora", options=bad)


def test_norm_only_runs_on_a_non_swin_family():
    cfg = _cfg("S-D")
    cfg.backbone = BackboneConfig(name="pvt_v2_b0", img_size=IMG)
    torch.manual_seed(SEED)
    model = build_model("norm_only", cfg)
    out = model(_batch()["image"])
    assert out["depth"].shape == (BATCH, 1, IMG, IMG)


def test_registry_compare_and_params_command_know_both(capsys):
    for method in METHODS:
        assert method in method_names() and method in DEFAULT_METHODS and method in PEER_LABELS
        assert method_revision(method) == 1
        eff = effective_config(method, _cfg())
        assert effective_config(method, eff) == eff                     # idempotent
        assert not eff.adapter.enabled and not eff.decoder.shared and eff.backbone.frozen
    assert cli_main(["params", "--preset", "smoke", "--method", "mtlora,norm_only"]) == 0
    out = capsys.readouterr().out
    assert "method mtlora" in out and TA_LORA_ROW in out and TS_LORA_ROW in out
    assert "method norm_only" in out and TASK_NORMS_ROW in out
    assert cli_main(["params", "--preset", "smoke"]) == 0                # default: VTAGML, as before
    assert capsys.readouterr().out.startswith("VTAGML, backbone")
    assert cli_main(["params", "--preset", "smoke", "--method", "lora"]) == 2
    assert "valid methods" in capsys.readouterr().err


def test_mtlora_options_are_reached_by_set():
    """``--set model.mtlora.*`` reaches the options (they are part of the config, hence the key)."""
    cfg = load_kit_config(preset="smoke", overrides=["model.mtlora.rank=2", "model.mtlora.alpha=8",
                                                     "model.mtlora.targets=[qkv]"])
    assert (cfg.model.mtlora.rank, cfg.model.mtlora.targets) == (2, ["qkv"])
    small = build_model("mtlora", cfg.model).parameter_report()[-1]["trainable"]
    default = build_model("mtlora", load_kit_config(preset="smoke").model).parameter_report()[-1]["trainable"]
    assert small < default


def test_lora_module_scaling_is_alpha_over_rank():
    assert LoRA(8, 8, rank=4, alpha=16.0).scaling == 4.0
    assert MTLoRA.method == "mtlora"
