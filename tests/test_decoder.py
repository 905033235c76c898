"""Tests of the VTAGML decoder and task heads (paper Sec. 3.3; docs/method.md, docs/benchmark.md)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from vtagml_core.model.decoder import DecoderConfig, PatchExpand, SwinDecoder
from vtagml_core.model.heads import SHARED_KEY, MultiTaskDecoder, TaskHead, build_heads
from vtagml_core.tasks import TASKS

# Tiny kit sizes (Swin V2 tiny at 128 px): decoder input stride 32, skips at 16/8/4.
TINY_IMG = 128
TINY_IN = 256
TINY_SKIPS = [128, 64, 32]
NUM_CLASSES = 10
BATCH = 2
EXPECTED_K = {"seg": NUM_CLASSES, "depth": 1, "normals": 3, "edges": 1}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_inputs(batch: int = BATCH, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Deep (B,4,4,256) and skips [(B,8,8,128), (B,16,16,64), (B,32,32,32)], NHWC."""
    g = torch.Generator().manual_seed(seed)
    deep = torch.randn(batch, 4, 4, TINY_IN, generator=g)
    skips = [torch.randn(batch, TINY_IMG // s, TINY_IMG // s, c, generator=g)
             for s, c in zip((16, 8, 4), TINY_SKIPS)]
    return deep, skips


def tiny_image(batch: int = BATCH, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, TINY_IMG, TINY_IMG, generator=torch.Generator().manual_seed(seed))


def tiny_decoder(**cfg_kwargs) -> SwinDecoder:
    torch.manual_seed(0)
    return SwinDecoder(DecoderConfig(**cfg_kwargs), TINY_IN, TINY_SKIPS, TINY_IMG)


def test_output_shapes_all_tasks_per_task_mode():
    model = MultiTaskDecoder(TASKS, DecoderConfig(), TINY_IN, TINY_SKIPS, TINY_IMG, NUM_CLASSES)
    inputs = {t: tiny_inputs(seed=i) for i, t in enumerate(TASKS)}
    out = model(inputs, tiny_image())
    assert list(out) == list(TASKS)
    for t in TASKS:
        assert out[t].shape == (BATCH, EXPECTED_K[t], TINY_IMG, TINY_IMG)
        assert torch.isfinite(out[t]).all()


def test_decoder_stage_layout_halves_channels_and_doubles_resolution():
    dec = tiny_decoder()
    assert dec.dims == [256, 128, 64, 32]
    assert dec.feature_sizes == [(4, 4), (8, 8), (16, 16), (32, 32)]
    assert dec.heads == [8, 4, 2, 1]  # 32 channels per head, as Swin
    assert dec.out_channels == 32
    out = dec(*tiny_inputs(), tiny_image())
    assert out.shape == (BATCH, dec.out_channels, TINY_IMG, TINY_IMG)


def test_shared_has_one_decoder_per_task_has_n():
    kw = dict(in_channels=TINY_IN, skip_channels=TINY_SKIPS, img_size=TINY_IMG,
              num_classes=NUM_CLASSES)
    shared = MultiTaskDecoder(TASKS, DecoderConfig(shared=True), **kw)
    per_task = MultiTaskDecoder(TASKS, DecoderConfig(shared=False), **kw)
    one = n_params(tiny_decoder())
    assert list(shared.decoders) == [SHARED_KEY]
    assert n_params(shared.decoders) == one
    assert n_params(per_task.decoders) == len(TASKS) * one
    # heads are per task in both modes: (C_dec + 1) * K each
    expected_heads = sum((32 + 1) * k for k in EXPECTED_K.values())
    assert n_params(shared.heads) == n_params(per_task.heads) == expected_heads
    assert shared.decoder_for("seg") is shared.decoder_for("edges")
    assert per_task.decoder_for("seg") is not per_task.decoder_for("edges")


def test_shared_mode_batched_equals_one_task_at_a_time():
    model = MultiTaskDecoder(TASKS, DecoderConfig(shared=True), TINY_IN, TINY_SKIPS, TINY_IMG,
                             NUM_CLASSES).eval()
    inputs = {t: tiny_inputs(seed=i) for i, t in enumerate(TASKS)}
    image = tiny_image()
    with torch.no_grad():
        batched = model(inputs, image)  # tasks stacked along the batch
        for t in TASKS:
            single = model({t: inputs[t]}, image)[t]  # one task alone: no stacking
            torch.testing.assert_close(batched[t], single, rtol=1e-4, atol=1e-5)
    # different task inputs through the same weights give different outputs
    assert not torch.allclose(batched["depth"], batched["edges"])


def test_blocks_alternate_regular_and_shifted_windows():
    window = 8
    dec = tiny_decoder(window_size=window)
    for stage, (h, w) in zip(dec.stages, dec.feature_sizes):
        regular, shifted = stage[0], stage[1]
        assert regular.target_shift_size == (0, 0)
        assert shifted.target_shift_size == (window // 2, window // 2)
        assert regular.shift_size == (0, 0) and regular.attn_mask is None
        if h > window:  # several windows: the shift is real and masked
            assert shifted.shift_size == (window // 2, window // 2)
            assert shifted.attn_mask is not None
        else:  # one window covers the map (timm clamps): nothing to shift
            assert shifted.window_size == (h, w) and shifted.shift_size == (0, 0)
    # the tiny 16x16 and 32x32 stages do shift, so the shifted block computes something else
    stage = dec.stages[2]
    x = torch.randn(1, 16, 16, 64)
    for blk in stage:
        nn.init.ones_(blk.norm1.weight)  # undo the identity init to see the attention output
    weights = stage[1].state_dict()
    stage[0].load_state_dict(weights)  # same weights, only the shift differs
    assert not torch.allclose(stage[0](x), stage[1](x), atol=1e-5)


def test_zero_init_residual_makes_every_block_the_identity():
    dec = tiny_decoder(zero_init_residual=True)
    for stage, (h, w), dim in zip(dec.stages, dec.feature_sizes, dec.dims):
        x = torch.randn(BATCH, h, w, dim)
        torch.testing.assert_close(stage(x), x)


def test_gradients_reach_all_decoder_and_head_parameters():
    torch.manual_seed(0)
    model = MultiTaskDecoder(("seg", "edges"), DecoderConfig(zero_init_residual=False),
                             TINY_IN, TINY_SKIPS, TINY_IMG, NUM_CLASSES)
    deep, skips = tiny_inputs()
    deep.requires_grad_(True)
    out = model({"seg": (deep, skips), "edges": (deep, skips)}, tiny_image())
    sum(o.square().mean() for o in out.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert deep.grad is not None and deep.grad.abs().sum() > 0


def test_default_init_trains_the_residual_norms_first():
    # With Swin V2's zero-init the block outputs start at zero, so the first gradient lands on
    # the residual post-norm weights; they must receive it, or the blocks could never learn.
    dec = tiny_decoder()
    dec(*tiny_inputs(), tiny_image()).square().mean().backward()
    for stage in dec.stages:
        for blk in stage:
            assert blk.norm1.weight.grad.abs().sum() > 0
            assert blk.norm2.weight.grad.abs().sum() > 0


def test_wrong_input_sizes_raise_clear_errors():
    dec = tiny_decoder()
    deep, skips = tiny_inputs()
    image = tiny_image()
    with pytest.raises(ValueError, match=r"deep: expected NHWC shape \(B, 4, 4, 256\).*img_size"):
        dec(torch.randn(BATCH, 8, 8, TINY_IN), skips, image)
    with pytest.raises(ValueError, match="permute"):
        dec(deep.permute(0, 3, 1, 2), skips, image)
    with pytest.raises(ValueError, match=r"skips\[1\]"):
        dec(deep, [skips[0], torch.randn(BATCH, 16, 16, 48), skips[2]], image)
    with pytest.raises(ValueError, match="expected 3 skips"):
        dec(deep, skips[:2], image)
    with pytest.raises(ValueError, match="image_skip_channels=0"):
        dec(deep, skips, torch.randn(BATCH, 3, 64, 64))
    with pytest.raises(ValueError, match="image_skip_channels=0"):
        dec(deep, skips, None)


def test_bad_configuration_raises_clear_errors():
    with pytest.raises(ValueError, match="multiple of the decoder input stride 32"):
        SwinDecoder(DecoderConfig(), TINY_IN, TINY_SKIPS, 100)
    with pytest.raises(ValueError, match="embed_dims"):
        SwinDecoder(DecoderConfig(embed_dims=[256, 128]), TINY_IN, TINY_SKIPS, TINY_IMG)
    # the paper's 48/24/12/6 heads do not divide Swin-B V2's 1024/512/256/128 channels
    with pytest.raises(ValueError, match="num_heads"):
        SwinDecoder(DecoderConfig(num_heads=[48, 24, 12, 6]), 1024, [512, 256, 128], 256)
    with pytest.raises(ValueError, match="image_skip_channels"):
        SwinDecoder(DecoderConfig(image_skip_channels=-1), TINY_IN, TINY_SKIPS, TINY_IMG)
    model = MultiTaskDecoder("S-D", DecoderConfig(), TINY_IN, TINY_SKIPS, TINY_IMG, NUM_CLASSES)
    with pytest.raises(KeyError, match="normals"):
        model({"normals": tiny_inputs()}, tiny_image())


def test_image_fuse_kernel_sets_the_full_resolution_fusion():
    one = tiny_decoder(image_fuse_kernel=1).eval()
    conv = one.image_fuse[0]
    assert conv.kernel_size == (1, 1) and conv.padding == (0, 0)
    with torch.no_grad():
        out = one(*tiny_inputs(), tiny_image())
    assert out.shape == (tiny_image().shape[0], one.out_channels, TINY_IMG, TINY_IMG)
    assert tiny_decoder().image_fuse[0].kernel_size == (3, 3)  # the default
    with pytest.raises(ValueError, match="image_fuse_kernel"):
        tiny_decoder(image_fuse_kernel=2)


def test_no_image_path_when_image_skip_channels_is_zero():
    dec = tiny_decoder(image_skip_channels=0).eval()
    assert dec.image_skip is None and dec.image_fuse is None
    assert not any("image" in name for name, _ in dec.named_parameters())
    feats = tiny_inputs()
    with torch.no_grad():
        a = dec(*feats, tiny_image(seed=1))
        b = dec(*feats, tiny_image(seed=2))
        c = dec(*feats, None)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    # contrast: with the path on, the image reaches the output at full resolution
    on = tiny_decoder(image_skip_channels=16).eval()
    with torch.no_grad():
        assert not torch.allclose(on(*feats, tiny_image(seed=1)), on(*feats, tiny_image(seed=2)))


def test_patch_expand_is_a_pixel_shuffle():
    # identity expansion: token (i, j) channel block k = 2p + q lands on pixel (2i+p, 2j+q)
    out_dim, scale = 3, 2
    pe = PatchExpand(scale * scale * out_dim, out_dim, scale)
    nn.init.eye_(pe.expand.weight)
    pe.norm = nn.Identity()
    x = torch.randn(1, 2, 3, scale * scale * out_dim)
    y = pe(x)
    assert y.shape == (1, 4, 6, out_dim)
    for i in range(2):
        for j in range(3):
            for p in range(scale):
                for q in range(scale):
                    k = p * scale + q
                    torch.testing.assert_close(y[0, scale * i + p, scale * j + q],
                                               x[0, i, j, k * out_dim:(k + 1) * out_dim])


def test_task_head_is_pointwise_linear():
    head = TaskHead(5, 3)
    x = torch.randn(2, 5, 4, 4)
    expected = torch.einsum("kc,bchw->bkhw", head.proj.weight[:, :, 0, 0], x)
    expected = expected + head.proj.bias.view(1, 3, 1, 1)
    torch.testing.assert_close(head(x), expected)
    heads = build_heads("S-D-N-E", 32, NUM_CLASSES)
    assert {t: h.out_channels for t, h in heads.items()} == EXPECTED_K
    with pytest.raises(ValueError, match="positive"):
        TaskHead(0, 3)


def test_paper_scale_decoder_builds_and_runs():
    # Swin-B V2 at 256 px: 1024/512/256/128 channels at 8/16/32/64
    torch.manual_seed(0)
    dec = SwinDecoder(DecoderConfig(), 1024, [512, 256, 128], 256).eval()
    assert dec.heads == [32, 16, 8, 4]
    assert dec.feature_sizes == [(8, 8), (16, 16), (32, 32), (64, 64)]
    deep = torch.randn(1, 8, 8, 1024)
    skips = [torch.randn(1, s, s, c) for s, c in ((16, 512), (32, 256), (64, 128))]
    with torch.no_grad():
        out = dec(deep, skips, torch.randn(1, 3, 256, 256))
    assert out.shape == (1, 128, 256, 256)
    assert torch.isfinite(out).all()


def test_shared_image_path_is_computed_once_and_equals_per_task_copies_of_it():
    """share_image_skip: one ImageSkip in MultiTaskDecoder; each task decoder keeps its fusion.
    With the per-task copies set to the shared weights, the outputs are the same."""
    torch.manual_seed(0)
    shared = MultiTaskDecoder(TASKS, DecoderConfig(share_image_skip=True), TINY_IN, TINY_SKIPS,
                              TINY_IMG, NUM_CLASSES)
    per_task = MultiTaskDecoder(TASKS, DecoderConfig(), TINY_IN, TINY_SKIPS, TINY_IMG, NUM_CLASSES)
    assert shared.image_skip is not None and per_task.image_skip is None
    assert all(d.image_skip is None and d.image_fuse is not None for d in shared.decoders.values())
    state = {k: v for k, v in shared.state_dict().items() if not k.startswith("image_skip.")}
    for t in TASKS:  # the per-task model gets the shared image path's weights in every task
        state.update({f"decoders.{t}.image_skip.{k}": v
                      for k, v in shared.image_skip.state_dict().items()})
    per_task.load_state_dict(state)
    calls = []
    shared.image_skip.register_forward_hook(lambda *a: calls.append(1))
    inputs = {t: tiny_inputs(seed=i) for i, t in enumerate(TASKS)}
    a, b = shared(inputs, tiny_image()), per_task(inputs, tiny_image())
    assert len(calls) == 1  # once per forward, not once per task
    for t in TASKS:
        torch.testing.assert_close(a[t], b[t])
    assert n_params(per_task) - n_params(shared) == (len(TASKS) - 1) * n_params(shared.image_skip)


def test_shared_image_path_needs_the_image_or_its_features():
    torch.manual_seed(0)
    shared = MultiTaskDecoder(("seg", "depth"), DecoderConfig(share_image_skip=True), TINY_IN,
                              TINY_SKIPS, TINY_IMG, NUM_CLASSES)
    inputs = {t: tiny_inputs() for t in ("seg", "depth")}
    with pytest.raises(ValueError, match="shared full-resolution image path"):
        shared(inputs, None)
    with pytest.raises(ValueError, match="share_image_skip is on"):
        shared.decoders["seg"](*tiny_inputs(), tiny_image())  # the image alone is not enough
