"""Frozen backbone, taps, weight loading and parameter counting (paper Sec. 3.1, Table 6).

Every tap/stage comparison is against an *independent* timm model built with the same seed, read
through forward hooks on timm's own modules, and must match bit for bit.
"""
from __future__ import annotations

import timm
import torch
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import save_file
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from vtagml_core.model.backbone import BackboneConfig, FrozenBackbone
from vtagml_core.model.backbone_weights import TINY_CONFIGS, TinySwinV2Spec
from vtagml_core.model.params import count_parameters, format_parameter_table, parameter_table

TINY = "swinv2_tiny_cpu"
SEED = 0


def _normalise(images: torch.Tensor, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD) -> torch.Tensor:
    return (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _record(modules: dict[str, nn.Module]) -> tuple[dict[str, torch.Tensor], list]:
    """Forward hooks storing each module's output under its key."""
    seen: dict[str, torch.Tensor] = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, out, key=key: seen.__setitem__(key, out))
        for key, m in modules.items()
    ]
    return seen, handles


def _seeded_backbone(**kwargs) -> FrozenBackbone:
    torch.manual_seed(SEED)
    return FrozenBackbone(BackboneConfig(**kwargs))


# ---------------------------------------------------------------- Swin V2 (the paper's backbone)

def test_swin_taps_and_stages_equal_independent_timm_model():
    bb = _seeded_backbone(name=TINY, img_size=128)
    torch.manual_seed(SEED)
    ref = TINY_CONFIGS[TINY].build(128).eval()
    ref_state = ref.state_dict()
    assert all(torch.equal(v, ref_state[k]) for k, v in bb.model.state_dict().items())

    blocks = {f"{s}.{b}": ref.layers[s].blocks[b] for s, b in bb.tap_blocks}
    stages = {f"stage{s}": stage for s, stage in enumerate(ref.layers)}
    seen, handles = _record({**blocks, **stages})
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = ref.forward_features(_normalise(images))
    for h in handles:
        h.remove()

    out = bb(images)
    assert len(out.taps) == 6 and len(out.stages) == 4
    for tap, (s, b) in zip(out.taps, bb.tap_blocks):
        assert torch.equal(tap, seen[f"{s}.{b}"])
    for s, stage in enumerate(out.stages):
        assert torch.equal(stage, seen[f"stage{s}"])
    # timm's forward_features is the last stage followed by the final LayerNorm.
    assert torch.equal(ref.norm(out.stages[-1]), features)


def test_swin_default_placement_shapes_and_metadata():
    bb = FrozenBackbone()  # swinv2_tiny_cpu at 128 px
    # Sec. 3.1: last four blocks of stage 3 (6 blocks here) and both blocks of stage 4.
    assert bb.tap_blocks == [(2, 2), (2, 3), (2, 4), (2, 5), (3, 0), (3, 1)]
    assert bb.tap_channels == [128] * 4 + [256] * 2
    assert bb.tap_strides == [16] * 4 + [32] * 2
    assert bb.stage_channels == [32, 64, 128, 256]
    assert bb.stage_strides == [4, 8, 16, 32]
    assert bb.num_heads_at_taps() == [8] * 4 + [16] * 2
    # stride 8 x window 8 on the 16x16 stage-2 map; deeper maps fit in one window
    assert bb.patch_grid_multiple == 64
    norms = bb.norm_layers_at_taps()
    assert all(isinstance(n, nn.LayerNorm) for n in norms)
    assert [n.normalized_shape[0] for n in norms] == bb.tap_channels
    assert norms[0] is bb.model.layers[2].blocks[2].norm1  # Swin V2 post-norm of the attention branch

    out = bb(torch.rand(1, 3, 128, 128))
    assert [tuple(t.shape) for t in out.stages] == [(1, 32, 32, 32), (1, 16, 16, 64), (1, 8, 8, 128), (1, 4, 4, 256)]
    assert [tuple(t.shape) for t in out.taps] == [(1, 8, 8, 128)] * 4 + [(1, 4, 4, 256)] * 2


@pytest.mark.parametrize(
    "depths, expected",
    [
        ((2, 2, 18, 2), [(2, 14), (2, 15), (2, 16), (2, 17), (3, 0), (3, 1)]),  # Swin-B: blocks 15-18
        ((1, 1, 2, 1), [(2, 0), (2, 1), (3, 0)]),  # stage 3 shorter than 4 blocks: all of it
    ],
)
def test_swin_default_placement_follows_stage_depths(monkeypatch, depths, expected):
    monkeypatch.setitem(TINY_CONFIGS, "swinv2_layout_test", TinySwinV2Spec(embed_dim=16, depths=depths))
    bb = FrozenBackbone(BackboneConfig(name="swinv2_layout_test", img_size=64))
    assert bb.tap_blocks == expected
    assert len(bb(torch.rand(1, 3, 64, 64)).taps) == len(expected)


def test_custom_taps_and_invalid_taps():
    bb = FrozenBackbone(BackboneConfig(img_size=64, taps=[[1, 0], [3, 1]]))
    out = bb(torch.rand(1, 3, 64, 64))
    assert [tuple(t.shape) for t in out.taps] == [(1, 8, 8, 64), (1, 2, 2, 256)]
    with pytest.raises(ValueError, match=r"\(4, 0\) is not a block.*stage 2: blocks 0-5"):
        FrozenBackbone(BackboneConfig(img_size=64, taps=[(4, 0)]))
    with pytest.raises(ValueError, match="forward order"):
        FrozenBackbone(BackboneConfig(img_size=64, taps=[(3, 0), (2, 5)]))


# ---------------------------------------------------------------- frozen

def test_backbone_is_frozen_through_training_step():
    bb = FrozenBackbone(BackboneConfig(img_size=64))
    head = nn.Linear(sum(bb.tap_channels), 3)

    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.head = bb, head

        def forward(self, x):
            pooled = [t.mean(dim=(1, 2)) for t in self.backbone(x).taps]
            return self.head(torch.cat(pooled, dim=1))

    parent = Parent().train()
    assert not any(p.requires_grad for p in bb.parameters())
    assert not bb.training and not any(m.training for m in bb.modules())
    assert head.training

    before = {k: v.clone() for k, v in bb.state_dict().items()}
    head_before = head.weight.clone()
    optimiser = torch.optim.AdamW(parent.parameters(), lr=0.1, weight_decay=0.1)
    loss = parent(torch.rand(2, 3, 64, 64)).square().mean()
    loss.backward()
    optimiser.step()
    assert all(torch.equal(v, before[k]) for k, v in bb.state_dict().items())
    assert not torch.equal(head.weight, head_before)  # the step did train something


# ---------------------------------------------------------------- image size and names

def test_wrong_image_size_is_refused_with_a_clear_message():
    bb = FrozenBackbone()  # built for 128 px
    with pytest.raises(ValueError, match=r"100x100.*multiples of 64.*data\.size"):
        bb(torch.rand(1, 3, 100, 100))
    with pytest.raises(ValueError, match=r"256x256.*built for 128x128.*backbone\.img_size"):
        bb(torch.rand(1, 3, 256, 256))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        bb(torch.rand(1, 1, 128, 128))
    with pytest.raises(ValueError, match=r"100x100"):
        FrozenBackbone(BackboneConfig(img_size=100))


def test_unknown_model_name_is_refused():
    with pytest.raises(ValueError, match=r"'swinv2_gigantic_nonexistent'.*timm\.list_models\(\"swinv2\*\"\)"):
        BackboneConfig(name="swinv2_gigantic_nonexistent")


# ---------------------------------------------------------------- weights

def _source_model() -> nn.Module:
    """A tiny Swin V2 with a classifier head, as a user's training script would save it."""
    torch.manual_seed(7)
    spec = TINY_CONFIGS[TINY]
    return timm.models.swin_transformer_v2.SwinTransformerV2(
        img_size=64, embed_dim=spec.embed_dim, depths=spec.depths, num_heads=spec.num_heads,
        window_size=spec.window_size, num_classes=10,
    ).eval()


def test_weights_files_load_and_give_identical_taps(tmp_path):
    state = _source_model().state_dict()
    assert "head.fc.weight" in state  # classifier keys in the file are ignored
    st_path, pt_path, own_path = tmp_path / "b.safetensors", tmp_path / "b.pt", tmp_path / "own.pth"
    save_file(state, str(st_path))
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, pt_path)

    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    from_st = FrozenBackbone(BackboneConfig(img_size=64, weights=str(st_path)))
    from_pt = FrozenBackbone(BackboneConfig(img_size=64, weights=str(pt_path)))
    torch.save(from_pt.state_dict(), own_path)  # FrozenBackbone's own keys: "model.<timm key>"
    from_own = FrozenBackbone(BackboneConfig(img_size=64, weights=str(own_path)))
    random_init = _seeded_backbone(img_size=64)

    taps = [bb(images).taps for bb in (from_st, from_pt, from_own, random_init)]
    for other in taps[1:3]:
        assert all(torch.equal(a, b) for a, b in zip(taps[0], other))
    assert not torch.equal(taps[0][0], taps[3][0])
    assert torch.equal(from_st.model.layers[2].blocks[0].mlp.fc1.weight, state["layers.2.blocks.0.mlp.fc1.weight"])


def test_weights_file_that_does_not_fit_is_refused(tmp_path):
    state = _source_model().state_dict()
    key = "layers.2.blocks.0.mlp.fc1.weight"
    wrong = dict(state, **{key: torch.zeros(3, 3)})
    path = tmp_path / "wrong_shape.safetensors"
    save_file(wrong, str(path))
    with pytest.raises(ValueError, match=rf"wrong_shape\.safetensors.*shape mismatches: {key}: file \(3, 3\)"):
        FrozenBackbone(BackboneConfig(img_size=64, weights=str(path)))

    missing = {k: v for k, v in state.items() if k != key}
    path = tmp_path / "missing.pt"
    torch.save(missing, path)
    with pytest.raises(ValueError, match=rf"missing\.pt.*1 missing keys: {key}"):
        FrozenBackbone(BackboneConfig(img_size=64, weights=str(path)))
    with pytest.raises(FileNotFoundError, match="backbone.weights"):
        FrozenBackbone(BackboneConfig(img_size=64, weights=str(tmp_path / "absent.safetensors")))


def test_pretrained_offline_gives_helpful_message(monkeypatch):
    def no_network(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr(timm, "create_model", no_network)
    with pytest.raises(RuntimeError, match=r"no internet.*local weights file.*backbone\.weights"):
        FrozenBackbone(BackboneConfig(name="swinv2_base_window8_256", img_size=256, pretrained=True))
    with pytest.raises(ValueError, match="no hub weights"):
        FrozenBackbone(BackboneConfig(name=TINY, pretrained=True))
    with pytest.raises(ValueError, match="not both"):
        FrozenBackbone(BackboneConfig(name="swinv2_base_window8_256", pretrained=True, weights="w.pt"))


# ---------------------------------------------------------------- other families

def test_vit_tiny_four_taps_on_patch_grid():
    torch.manual_seed(SEED)
    bb = FrozenBackbone(BackboneConfig(name="vit_tiny_patch16_224", img_size=64))
    torch.manual_seed(SEED)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64).eval()
    assert bb.tap_blocks == [(0, 5), (0, 7), (0, 9), (0, 11)]  # 1/2, 2/3, 5/6 and all of depth 12
    assert bb.tap_channels == [192] * 4 and bb.tap_strides == [16] * 4
    assert bb.patch_grid_multiple == 16 and bb.built_size == (64, 64)
    assert bb.norm_layers_at_taps()[0] is bb.model.blocks[5].norm1

    seen, handles = _record({str(b): ref.blocks[b] for _, b in bb.tap_blocks})
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    mean, std = ref.pretrained_cfg["mean"], ref.pretrained_cfg["std"]
    with torch.no_grad():
        ref.forward_features(_normalise(images, mean, std))
    for h in handles:
        h.remove()

    out = bb(images)
    for tap, (_, b) in zip(out.taps, bb.tap_blocks):
        assert tap.shape == (2, 4, 4, 192)
        assert torch.equal(tap, seen[str(b)][:, ref.num_prefix_tokens:].reshape(2, 4, 4, 192))
    assert [tuple(s.shape[1:3]) for s in out.stages] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert torch.equal(out.stages[2], out.taps[-1])  # stride 16 = the deepest tap itself


def test_pvt_v2_b0_taps_are_stage_outputs():
    torch.manual_seed(SEED)
    bb = FrozenBackbone(BackboneConfig(name="pvt_v2_b0", img_size=64))
    torch.manual_seed(SEED)
    ref = timm.create_model("pvt_v2_b0", pretrained=False, num_classes=0).eval()
    assert bb.tap_blocks == [(2, 1), (3, 1)] and bb.tap_channels == [160, 256]
    assert bb.stage_channels == [32, 64, 160, 256] and bb.patch_grid_multiple == 32

    seen, handles = _record({str(s): stage for s, stage in enumerate(ref.stages)})
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        features = ref.forward_features(_normalise(images))
    for h in handles:
        h.remove()

    out = bb(images)
    for s, stage in enumerate(out.stages):
        assert torch.equal(stage, seen[str(s)].permute(0, 2, 3, 1))  # timm's NCHW -> NHWC
    assert torch.equal(out.stages[-1], features.permute(0, 2, 3, 1))
    assert torch.equal(out.taps[0], out.stages[2]) and torch.equal(out.taps[1], out.stages[3])
    assert bb(torch.rand(1, 3, 96, 96)).stages[-1].shape == (1, 3, 3, 256)  # any multiple of 32
    with pytest.raises(ValueError, match=r"80x80.*multiples of 32"):
        bb(torch.rand(1, 3, 80, 80))


# ---------------------------------------------------------------- parameter counts (Table 6)

def test_count_parameters_known_answers():
    layer = nn.Linear(3, 4)  # 12 weights + 4 biases
    assert count_parameters(layer) == (16, 16)
    layer.weight.requires_grad_(False)
    assert count_parameters(layer) == (16, 4)

    shared = nn.Linear(2, 2)  # 6 parameters, used by both components below
    rows = parameter_table({"a": nn.Sequential(shared, nn.Linear(2, 1)), "b": nn.Sequential(shared)})
    assert rows == [
        {"component": "a", "total": 9, "trainable": 9},
        {"component": "b", "total": 6, "trainable": 6},
        {"component": "total", "total": 9, "trainable": 9},  # the shared layer counts once
    ]
    text = format_parameter_table(rows)
    assert "| a | 0.00 | 0.00 | 9 | 9 |" in text and text.splitlines()[-1].startswith("| total |")
    with pytest.raises(ValueError, match="reserved"):
        parameter_table({"total": layer})


def test_parameter_counts_tiny_and_swin_b_v2():
    tiny = FrozenBackbone()
    swin_b = FrozenBackbone(BackboneConfig(name="swinv2_base_window8_256", img_size=256))
    # Sec. 3.1 placement on Swin-B: blocks 15-18 of stage 3 (18 blocks) and both blocks of stage 4.
    assert swin_b.tap_blocks == [(2, 14), (2, 15), (2, 16), (2, 17), (3, 0), (3, 1)]
    assert swin_b.tap_channels == [512] * 4 + [1024] * 2
    rows = parameter_table({TINY: tiny, "swinv2_base_window8_256": swin_b})
    print("\n" + format_parameter_table(rows))
    tiny_total, swin_total = rows[0]["total"], rows[1]["total"]
    assert rows[0]["trainable"] == rows[1]["trainable"] == 0
    assert 3.0e6 < tiny_total < 3.3e6
    # Headless Swin-B V2 is ~87M; Table 6's 105.7M adds adapters, decoders and heads on top.
    assert 85e6 < swin_total < 89e6


@pytest.mark.parametrize("preset", ["paper", "paper-nyud", "paper-taskonomy"])
def test_paper_presets_count_the_papers_parameters_within_five_percent(preset, capsys):
    """Table 6: 105.7M for Swin-B V2 + adapters + decoders; the presets' adapter placement and
    decoder widths are chosen to match (configs/presets/paper.yaml). Printed by the CLI."""
    from vtagml_core.cli import main
    from vtagml_core.commands.params import PAPER_TOTAL_M

    assert main(["params", "--preset", preset]) == 0
    out = capsys.readouterr().out
    total = next(line for line in out.splitlines() if line.startswith("| total"))
    millions = float(total.split("|")[2])
    assert abs(millions - PAPER_TOTAL_M) / PAPER_TOTAL_M <= 0.05, total
    assert "swinv2_base_window8_256" in out


def test_a_timm_state_dict_given_by_config_gives_timm_s_own_tap_features(tmp_path):
    """model.backbone.weights=<file> (a timm state dict, classifier included, as a user saves
    it): the VTAGML model built from the config taps exactly what timm's own model computes."""
    from vtagml_core.model.vtagml import VTAGML
    from vtagml_core.train.config import load_kit_config

    source = _source_model()
    path = tmp_path / "swinv2_user.safetensors"
    save_file(source.state_dict(), str(path))
    cfg = load_kit_config(preset="smoke", overrides=[f"model.backbone.weights={path}"])
    model = VTAGML(cfg.model).eval()
    assert model.config.backbone.describe_weights() == "weights swinv2_user.safetensors"
    bb = model.backbone
    seen, handles = _record({f"{s}.{b}": source.layers[s].blocks[b] for s, b in bb.tap_blocks})
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        source.forward_features(_normalise(images))
        taps = bb(images).taps
    for h in handles:
        h.remove()
    assert len(taps) == len(bb.tap_blocks) > 0
    for tap, (s, b) in zip(taps, bb.tap_blocks):
        assert torch.equal(tap, seen[f"{s}.{b}"]), (s, b)
