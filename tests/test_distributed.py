"""The trainer under ``torchrun`` (2 CPU processes, gloo) equals one process with the global batch.

docs/layout.md: multi-GPU through ``torchrun`` is the same code path. Two processes with
a per-rank batch of 2 see, at every step, exactly the 4 samples that one process with batch 4
sees (:class:`vtagml_core.train.schedule.EpochBatchSampler`); DDP averages their gradients and
TROA all-reduces the Gram matrix of the per-task gradients
(:func:`vtagml_core.train.distributed.troa_update`).

The task set is S-E without class weights, whose losses are plain means over pixels with the
same pixel count in every image, so the mean over ranks of per-rank means *is* the global mean
(depth and normals average over each image's valid pixels, which would make the two runs
differ by design, see :mod:`vtagml_core.train.distributed`). What remains is floating-point
summation order (gradient all-reduce, per-rank batches of 2 vs one of 4 in the matrix
multiplies), hence a relative tolerance instead of equality.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vtagml_core.train.config import load_kit_config
from vtagml_core.model.checkpoint import WEIGHTS_FILE
from vtagml_core.train.logging import LOG_FILE, read_log
from vtagml_core.train.trainer import LAST_DIR, RESULTS_FILE, Trainer

ROOT = Path(__file__).resolve().parents[1]
PROCESSES, PER_RANK_BATCH = 2, 2
#: Peak learning rate of the runs (each Adam step moves a weight by at most ~LR).
LR = 2e-3
COMMON = ["data.size=64", "model.backbone.img_size=64", "model.tasks=S-E",
          "model.decoder.embed_dims=[32,16,16,8]", "model.decoder.depth_per_stage=1",
          "data.train_count=8", "data.val_count=4", "train.epochs=1", "train.warmup_steps=1",
          "train.save_every_steps=0", "train.progress=false", "train.class_weight_power=0",
          f"train.lr={LR}"]
STEPS = 8 // (PROCESSES * PER_RANK_BATCH)
#: Relative tolerance for losses, metrics and weights (float summation order only).
RTOL = 1e-4
#: Absolute tolerance for weights: 1% of one Adam step. Adam divides each gradient entry by
#: its own magnitude (m / (sqrt(v) + eps), eps = 1e-8), so for entries whose gradient is near
#: eps (the zero-initialised FiLM layers of TSN in their first steps) a last-bit difference in
#: the gradient changes the update by ~|dg| / eps * LR: measured up to 7e-6 = 0.35% of a step.
ATOL = 0.01 * LR


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_global_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("VTAGML_CACHE", str(tmp_path / "cache"))
    single = tmp_path / "single"
    result = Trainer(load_kit_config(
        preset="quick", overrides=COMMON + [f"data.batch_size={PROCESSES * PER_RANK_BATCH}"]),
        single).fit()

    ddp = tmp_path / "ddp"
    overrides = [a for o in COMMON + [f"data.batch_size={PER_RANK_BATCH}"] for a in ("--set", o)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={PROCESSES}", "-m", "vtagml_core", "train", "--out", str(ddp),
           *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("trained vtagml for") == 1          # only rank 0 reports

    steps_1, steps_k = read_log(single / LOG_FILE, "step"), read_log(ddp / LOG_FILE, "step")
    assert [r["step"] for r in steps_k] == list(range(1, STEPS + 1))   # rank 0 logs, once
    for a, b in zip(steps_1, steps_k):
        assert b["loss"] == pytest.approx(a["loss"], rel=RTOL)
        assert b["losses"] == pytest.approx(a["losses"], rel=RTOL)

    summary = json.loads((ddp / RESULTS_FILE).read_text())
    assert summary["world_size"] == PROCESSES and summary["steps"] == STEPS
    for task, values in result.last_metrics.items():   # all-reduced: the whole val split
        for name, value in values.items():
            assert summary["last"]["metrics"][task][name] == pytest.approx(value, rel=RTOL), name

    w1, wk = load_file(str(single / LAST_DIR / WEIGHTS_FILE)), load_file(str(ddp / LAST_DIR / WEIGHTS_FILE))
    assert w1.keys() == wk.keys()
    for key in w1:   # weights, TROA's omega and its history
        torch.testing.assert_close(wk[key], w1[key], rtol=RTOL, atol=ATOL, msg=key)
    omega = wk["adapter.troa.omega"]
    assert not torch.allclose(omega, torch.full_like(omega, 0.5))   # TROA did move
    torch.testing.assert_close(omega, w1["adapter.troa.omega"], rtol=RTOL, atol=1e-7)


def test_gram_factor_reproduces_the_cosines_of_the_gradients_it_stands_for():
    """TROA under DDP only sees the all-reduced Gram matrix; its factor must give the same sim."""
    from vtagml_core.model.troa import gradient_cosine_similarity
    from vtagml_core.train.distributed import gram_factor

    g = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g[3] = 0.0                                   # a task without gradient (no valid pixel)
    halves = g[:, :500] @ g[:, :500].T + g[:, 500:] @ g[:, 500:].T   # what all_reduce sums
    rows = gram_factor(halves)
    torch.testing.assert_close(rows @ rows.T, g @ g.T)
    torch.testing.assert_close(gradient_cosine_similarity(rows), gradient_cosine_similarity(g))
    assert gradient_cosine_similarity(rows)[3].abs().sum() == 0   # zero-gradient convention kept
