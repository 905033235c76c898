"""The method registry and the baselines of paper Sec. 4 (docs/settings.md, The methods).

Checked on the kit's tiny Swin V2 at 64 px with a slim decoder (every test stays small on a CPU):

- every registered method builds, runs one real training step through ``train_step`` and
  round-trips through ``save_model``/``load_model`` (weights, omega, outputs, method, config);
- the frozen/trained backbone contract: finetune_mtl's backbone moves after one step, the frozen
  methods' backbones stay bit-identical, ``model.backbone.frozen`` says which;
- vanilla_mtl has no adapter parameters and its decoders read the backbone's stage maps;
- single_task: one task only (clear error otherwise), TROA trivially [[1]];
- parameter reports (Table 6): finetune_mtl's trainable count includes the backbone; vanilla_mtl's
  trainable count is VTAGML's minus exactly its adapters;
- checkpoints: old files without "method" load as VTAGML; method and config mismatches are named.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from vtagml_core.baselines.registry import (
    METHODS,
    build_model,
    effective_config,
    method_names,
    single_task_configs,
)
from vtagml_core.baselines.simple import FROZEN_BACKBONE_ROW, TRAINED_BACKBONE_ROW
from vtagml_core.model.backbone import BackboneConfig
from vtagml_core.baselines.factory import load_model
from vtagml_core.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, save_model
from vtagml_core.model.decoder import DecoderConfig
from vtagml_core.model.params import TOTAL_ROW, count_parameters
from vtagml_core.model.vtagml import VTAGML, ModelConfig
from vtagml_core.train.losses import MultiTaskLoss
from vtagml_core.train.step import train_step

#: Image side: the smallest the tiny Swin V2 accepts.
IMG = 64
#: Segmentation classes of the test models.
NUM_CLASSES = 5
SEED = 0
LEARNING_RATE = 1e-3
BATCH = 1
#: A slim decoder (the full one dominates CPU time); every method gets the same one.
SLIM_DECODER = {"embed_dims": [32, 16, 16, 16], "depth_per_stage": 1, "image_skip_channels": 4}

#: (case id, method, task set) of every model the module trains once.
CASES = [
    ("vtagml", "vtagml", "S-D"),
    ("vanilla_mtl", "vanilla_mtl", "S-D"),
    ("finetune_mtl", "finetune_mtl", "S-D"),
    ("single_task-seg", "single_task", "seg"),
    ("single_task-depth", "single_task", "depth"),
]
FROZEN_CASES = ["vtagml", "vanilla_mtl", "single_task-seg", "single_task-depth"]


def _cfg(tasks: str = "S-D") -> ModelConfig:
    return ModelConfig(tasks=tasks, num_classes=NUM_CLASSES, backbone=BackboneConfig(img_size=IMG),
                       decoder=DecoderConfig(**SLIM_DECODER))


def _batch(seed: int = 1) -> dict:
    """A collated batch following the data contract (all four tasks' labels)."""
    g = torch.Generator().manual_seed(seed)
    shape = (BATCH, 1, IMG, IMG)
    return {"image": torch.rand(BATCH, 3, IMG, IMG, generator=g),
            "seg": torch.randint(0, NUM_CLASSES, (BATCH, IMG, IMG), generator=g),
            "depth": torch.rand(shape, generator=g) * 5 + 0.5,
            "normals": F.normalize(torch.randn(BATCH, 3, IMG, IMG, generator=g), dim=1),
            "edges": torch.rand(shape, generator=g),
            "valid": torch.ones(shape, dtype=torch.bool)}


def _step(model: torch.nn.Module) -> float:
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE)
    return train_step(model, _batch(), MultiTaskLoss(model.tasks), opt).loss


def _report(model: torch.nn.Module) -> dict[str, dict]:
    return {row["component"]: row for row in model.parameter_report()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``{case: (model, state before the step, loss, checkpoint folder)}``, one step each."""
    root = tmp_path_factory.mktemp("methods")
    out = {}
    for case, method, tasks in CASES:
        torch.manual_seed(SEED)
        model = build_model(method, _cfg(tasks))
        before = {k: v.clone() for k, v in model.state_dict().items()}
        loss = _step(model)
        out[case] = (model, before, loss, save_model(model, root / case, meta={"case": case}))
    return out


# --------------------------------------------------------------------------- registry
def test_registry_lists_the_settings_methods_and_refuses_unknown_ones():
    assert {"vtagml", "single_task", "vanilla_mtl", "finetune_mtl"} <= set(METHODS)
    with pytest.raises(ValueError, match="unknown method 'mtl'; valid methods: .*finetune_mtl, "
                                         ".*single_task, vanilla_mtl, vtagml"):
        build_model("mtl", _cfg())


def test_builders_transform_a_copy_and_record_method_and_effective_config(trained):
    cfg = _cfg()
    cfg.decoder.shared = True
    effective = effective_config("vanilla_mtl", cfg)
    assert cfg.adapter.enabled and cfg.decoder.shared  # the caller's config is untouched
    assert not effective.adapter.enabled and not effective.decoder.shared  # per-task decoders
    assert effective_config("vanilla_mtl", effective) == effective  # idempotent
    assert effective_config("finetune_mtl", cfg).backbone.frozen is False
    model = trained["vanilla_mtl"][0]
    assert model.method == "vanilla_mtl" and model.config == effective_config("vanilla_mtl", _cfg())
    assert set(model.decoder.decoders) == {"seg", "depth"}


def test_single_task_needs_exactly_one_task_and_gives_per_task_configs():
    with pytest.raises(ValueError, match=r"exactly one task.*'S-D' \(2 tasks: seg, depth\)"
                                         r".*single_task_configs"):
        build_model("single_task", _cfg("S-D"))
    configs = single_task_configs(_cfg("S-D-N"))
    assert list(configs) == ["seg", "depth", "normals"]
    assert [c.tasks for c in configs.values()] == ["S", "D", "N"]
    assert all(not c.adapter.troa for c in configs.values())
    assert configs["seg"] == effective_config("single_task", _cfg("seg"))


def test_frozen_methods_refuse_a_trainable_backbone():
    cfg = _cfg()
    cfg.backbone.frozen = False
    with pytest.raises(ValueError, match="backbone.frozen=false.*finetune_mtl"):
        build_model("vtagml", cfg)
    with pytest.raises(ValueError, match="must be true or false"):
        BackboneConfig(img_size=IMG, frozen="no")


# --------------------------------------------------------------------------- training + checkpoints
@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_each_method_trains_a_step_and_round_trips_through_a_checkpoint(trained, case):
    model, _, loss, folder = trained[case]
    assert torch.isfinite(torch.tensor(loss))
    assert json.loads((folder / CONFIG_FILE).read_text())["method"] == model.method
    loaded = load_model(folder)
    assert type(loaded) is type(model) and loaded.method == model.method
    assert loaded.config == model.config and loaded.tasks == model.tasks
    saved, restored = model.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys()
    for k in saved:
        assert torch.equal(saved[k], restored[k]), k
    model.eval(), loaded.eval()
    x = _batch(seed=2)["image"]
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert set(a) == set(model.tasks)
    for t in a:
        assert torch.equal(a[t], b[t]), t
    assert loaded.backbone.frozen == model.backbone.frozen


def test_finetune_backbone_trains_while_frozen_backbones_stay_bit_identical(trained):
    model, before, _, _ = trained["finetune_mtl"]
    assert model.backbone.frozen is False
    after = model.state_dict()
    moved = [k for k in before if k.startswith("backbone.") and not torch.equal(before[k], after[k])]
    assert "backbone.model.patch_embed.proj.weight" in moved
    # Every trainable backbone weight got a gradient (DDP needs that); timm's closing norm, which
    # the taps never reach, is the only part kept fixed.
    fixed = {n for n, p in model.backbone.named_parameters() if not p.requires_grad}
    assert fixed == {"model.norm.weight", "model.norm.bias"}
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)
    model.train()
    assert model.backbone.training and all(m.training for m in model.backbone.modules())
    assert model.encode(_batch()["image"]).stages[-1].requires_grad
    for case in FROZEN_CASES:
        frozen, before, _, _ = trained[case]
        assert frozen.backbone.frozen is True
        frozen.train()
        assert not frozen.backbone.training  # train() does not reach a frozen backbone
        after = frozen.state_dict()
        keys = [k for k in before if k.startswith("backbone.")]
        assert keys and all(torch.equal(before[k], after[k]) for k in keys), case
        assert all(p.grad is None and not p.requires_grad for p in frozen.backbone.parameters())


def test_finetune_refuses_cached_features_while_training(trained):
    model = trained["finetune_mtl"][0]
    x = _batch()["image"]
    features = model.encode(x)
    model.train()
    with pytest.raises(ValueError, match="feature cache off for finetune_mtl"):
        model(x, features=features)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x, features=features)["depth"], model(x)["depth"])


def test_checkpoint_without_method_loads_as_vtagml(trained, tmp_path):
    _, _, _, folder = trained["vtagml"]
    data = json.loads((folder / CONFIG_FILE).read_text())
    del data["method"]
    old = tmp_path / "old"
    old.mkdir()
    (old / CONFIG_FILE).write_text(json.dumps(data))
    (old / WEIGHTS_FILE).write_bytes((folder / WEIGHTS_FILE).read_bytes())
    loaded = load_model(old)
    assert type(loaded) is VTAGML and loaded.method == "vtagml"
    assert torch.equal(loaded.omega, trained["vtagml"][0].omega)


def test_load_checks_method_and_compares_configs_after_the_methods_transformation(trained):
    _, _, _, folder = trained["vanilla_mtl"]
    with pytest.raises(ValueError, match="holds a 'vanilla_mtl' model, not 'vtagml'"):
        load_model(folder, method="vtagml")
    with pytest.raises(ValueError, match="not 'cpu'.*known methods"):
        load_model(folder, None, "cpu")
    # The kit config that trained the model (adapters on) loads it: compared after transformation.
    assert load_model(folder, config=_cfg("S-D"), method="vanilla_mtl").method == "vanilla_mtl"
    with pytest.raises(ValueError, match="tasks: checkpoint 'S-D' vs config 'S-D-N'"):
        load_model(folder, config=_cfg("S-D-N"))


def test_load_ignores_where_the_backbone_weights_were_read_from(trained):
    """A store imported into another cache names the same pretrained backbone at another path
    (fine-tuning warm-starts from such a run): the checkpoint carries the backbone's tensors, so
    the path is not compared; an architecture field still is."""
    model, _, _, folder = trained["vtagml"]
    elsewhere = _cfg("S-D")
    elsewhere.backbone.weights = "/another/cache/backbones/swinv2_tiny_cpu-128-s0.safetensors"
    loaded = load_model(folder, config=elsewhere, method="vtagml")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 model.state_dict().values()))
    elsewhere.backbone.img_size = IMG * 2
    with pytest.raises(ValueError, match="img_size: checkpoint"):
        load_model(folder, config=elsewhere, method="vtagml")


# --------------------------------------------------------------------------- architecture
def test_vanilla_mtl_has_no_adapters_and_decodes_the_backbone_stage_maps(trained):
    model = trained["vanilla_mtl"][0]
    vtagml = trained["vtagml"][0]
    assert count_parameters(model.adapter) == (0, 0)
    assert not any(k.startswith("adapter.layers") for k in model.state_dict())
    assert not model.tracks_task_grads and model.update_affinity() is None
    x = _batch(seed=3)["image"]

    def decoder_inputs(m: torch.nn.Module) -> dict:
        seen = []
        handle = m.decoder.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
        m.eval()
        with torch.no_grad():
            m(x)
        handle.remove()
        return seen[0]

    stages = model.encode(x).stages  # strides 4, 8, 16, 32
    for task, (deep, skips) in decoder_inputs(model).items():
        assert torch.equal(deep, stages[-1]), task
        assert len(skips) == 3 and all(torch.equal(s, f) for s, f in zip(skips, stages[-2::-1]))
    # Contrast: VTAGML's decoders read adapter outputs at strides 32 and 16, not the stage maps.
    deep, skips = decoder_inputs(vtagml)["seg"]
    vt_stages = vtagml.encode(x).stages
    assert not torch.equal(deep, vt_stages[-1]) and not torch.equal(skips[0], vt_stages[-2])
    assert torch.equal(skips[1], vt_stages[1]) and torch.equal(skips[2], vt_stages[0])


def test_single_task_troa_is_trivially_one_and_a_one_task_troa_step_is_harmless(trained):
    for task in ("seg", "depth"):
        model = trained[f"single_task-{task}"][0]
        assert model.tasks == (task,) and model.task == task
        assert not model.tracks_task_grads and model.update_affinity() is None
        assert torch.equal(model.omega, torch.ones(1, 1))
    # A plain one-task VTAGML with TROA on: the mirror-descent step runs and leaves [[1]].
    torch.manual_seed(SEED)
    plain = VTAGML(_cfg("depth"))
    assert plain.tracks_task_grads
    plain.train()
    opt = torch.optim.Adam([p for p in plain.parameters() if p.requires_grad], lr=LEARNING_RATE)
    result = train_step(plain, _batch(), MultiTaskLoss(plain.tasks), opt)
    assert torch.allclose(result.similarity, torch.ones(1, 1))
    assert torch.allclose(plain.omega, torch.ones(1, 1))


# --------------------------------------------------------------------------- parameter reports
def test_parameter_reports_count_what_each_method_trains(trained):
    vt = _report(trained["vtagml"][0])
    van = _report(trained["vanilla_mtl"][0])
    ft_model = trained["finetune_mtl"][0]
    ft = _report(ft_model)
    backbone_total, backbone_trained = count_parameters(ft_model.backbone)
    closing_norm, _ = count_parameters(ft_model.backbone.model.norm)  # never reached by the taps
    assert ft[TRAINED_BACKBONE_ROW]["trainable"] == backbone_trained == backbone_total - closing_norm
    assert ft[TOTAL_ROW]["trainable"] == ft[TOTAL_ROW]["total"] - closing_norm
    assert van[FROZEN_BACKBONE_ROW]["trainable"] == 0 and "adapters" not in van
    assert van[TOTAL_ROW]["trainable"] < vt[TOTAL_ROW]["trainable"]
    # Same decoders and heads: vanilla = VTAGML minus exactly its adapters.
    assert van[TOTAL_ROW]["trainable"] == vt[TOTAL_ROW]["trainable"] - vt["adapters"]["trainable"]
    assert ft[TOTAL_ROW]["trainable"] == van[TOTAL_ROW]["trainable"] + backbone_trained
    st = _report(trained["single_task-seg"][0])
    assert set(st) == {FROZEN_BACKBONE_ROW, "adapters", "decoder[seg]", "heads", TOTAL_ROW}
    assert method_names() == sorted(METHODS)
