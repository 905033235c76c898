"""The trainer (docs/method.md, docs/layout.md): schedule, data order, files, determinism, resume, faults.

Every run here is tiny (64 px, S-D, 8 training scenes, batch 4, a narrow decoder), so two
epochs are four optimizer steps. Run A (a module fixture) is the uninterrupted reference that
the checkpoint, resume and corruption tests reuse.
"""
from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vtagml_core.train.config import load_kit_config
from vtagml_core.baselines.factory import load_model
from vtagml_core.model.checkpoint import WEIGHTS_FILE
from vtagml_core.train.logging import LOG_FILE, read_log
from vtagml_core.train.schedule import EpochBatchSampler, WarmupCosine, build_scheduler
from vtagml_core.train.run_lock import RunFolderBusy, read_owner
from vtagml_core.train.state import PREVIOUS_STATE_FILE, STATE_FILE, CheckpointError, RunFolderError
from vtagml_core.train.trainer import (BEST_DIR, LAST_DIR, RESULTS_FILE, RUN_CONFIG_FILE, Trainer,
                                       selection_score)

ROOT = Path(__file__).resolve().parents[1]
#: Tiny run: 64 px, two tasks, 8 training scenes at batch 4 -> 2 steps per epoch, 2 epochs.
TINY = ["data.size=64", "model.backbone.img_size=64", "model.tasks=S-D",
        "model.decoder.embed_dims=[32,16,16,8]", "model.decoder.depth_per_stage=1",
        "data.train_count=8", "data.val_count=4", "data.batch_size=4", "train.epochs=2",
        "train.warmup_steps=1", "train.save_every_steps=1", "train.progress=false",
        "train.lr=0.002"]
STEPS_PER_EPOCH, EPOCHS = 2, 2
#: Step after whose checkpoint the interrupted run kills itself (the middle of epoch 2).
KILL_AT_STEP = 3

#: Torch threads of every run in this file, in this process and in the killed subprocess: float
#: reductions (and so the last bits of the weights) depend on the thread count, and an earlier
#: test may have left this process with another count than a fresh subprocess has.
THREADS = 1

KILL_SCRIPT = f"""
import os, signal, sys
from pathlib import Path
import torch
torch.set_num_threads({THREADS})
from vtagml_core.train.config import load_kit_config
from vtagml_core.train.trainer import Trainer

class KilledTrainer(Trainer):
    def save_checkpoint(self):
        super().save_checkpoint()
        if self.progress.global_step == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: as hard as a crash

KilledTrainer(load_kit_config(preset="quick", overrides=sys.argv[3:]), Path(sys.argv[1])).fit()
"""


def tiny_cfg(*extra: str):
    return load_kit_config(preset="quick", overrides=TINY + list(extra))


@pytest.fixture(scope="module", autouse=True)
def same_threads():
    """:data:`THREADS` torch threads for the whole module (the subprocess sets the same)."""
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One synthetic-data cache for the module (also seen by subprocesses via the env var)."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("cache")
        mp.setenv("VTAGML_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def run_a(cache, tmp_path_factory):
    """Uninterrupted reference run: 2 epochs, 4 steps, a checkpoint after every step."""
    out = tmp_path_factory.mktemp("run") / "a"
    result = Trainer(tiny_cfg(), out).fit()
    return out, result


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in (LOG_FILE, ".lock", ".lock.owner")}


def _untimed(records: list[dict]) -> list[dict]:
    """Log records without their wall-clock fields (the only ones allowed to differ)."""
    # TROA's logged gradient cosine is a float32 reduction whose last bits depend on the
    # thread schedule; it is compared with a tolerance in the resume test instead.
    timing = {"seconds", "epoch_seconds", "val_seconds", "similarity"}
    return [{k: v for k, v in r.items() if k not in timing} for r in records]


def _approx(value):
    """``value`` with every float wrapped in ``pytest.approx`` (nested dicts and lists kept).

    Validation metrics are float reductions whose last bits depend on the thread schedule of
    the process that computed them; the weights, which decide everything later, are compared
    bit for bit instead.
    """
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_approx(v) for v in value]
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-6, abs=1e-9)
    return value


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / WEIGHTS_FILE))


# --------------------------------------------------------------------------- schedule, order


def test_lr_warms_up_then_decays_to_min_ratio():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=0.01)
    sched = build_scheduler(opt, warmup_steps=4, total_steps=20, min_lr_ratio=0.1)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(20):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert lrs[:4] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])   # linear warm-up to the peak
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))             # then never increases
    assert lrs[4] == pytest.approx(0.01) and lrs[-1] == pytest.approx(0.001, rel=1e-12)
    midpoint = 4 + (20 - 4) // 2                                      # cosine: halfway between
    assert lrs[midpoint] == pytest.approx(0.001 + 0.5 * (0.01 - 0.001))
    with pytest.raises(ValueError, match="min_lr_ratio"):
        WarmupCosine(2, 10, 1.5)


def test_epoch_order_is_a_function_of_seed_and_epoch_and_shards_into_global_batches():
    single = list(EpochBatchSampler(10, batch_size=4, seed=3, epoch=1))
    assert len(single) == 2 and len({i for b in single for i in b}) == 8   # rest dropped
    assert single == list(EpochBatchSampler(10, 4, seed=3, epoch=1))
    assert single != list(EpochBatchSampler(10, 4, seed=3, epoch=2))
    assert single[1:] == list(EpochBatchSampler(10, 4, seed=3, epoch=1, start_batch=1))
    ranks = [list(EpochBatchSampler(10, 2, seed=3, epoch=1, rank=r, world_size=2)) for r in (0, 1)]
    for step, batch in enumerate(single):   # K ranks of batch b == one process of batch K*b
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(batch)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        EpochBatchSampler(3, 4, seed=0, epoch=0)


def test_train_config_budget_fields_and_no_steps_alias():
    preset_epochs = load_kit_config(preset="quick").train.epochs
    cfg = load_kit_config(preset="quick", overrides=["train.max_steps=3"])
    assert (cfg.train.max_steps, cfg.train.epochs) == (3, preset_epochs)
    with pytest.raises(ValueError, match="unknown key 'steps'.*max_steps"):  # one name per field
        load_kit_config(preset="quick", overrides=["train.steps=3"])
    with pytest.raises(ValueError, match="min_lr_ratio must be in"):
        load_kit_config(preset="quick", overrides=["train.min_lr_ratio=2"])


def test_selection_score_is_the_mean_signed_relative_change():
    ref = {"seg": {"mIoU": 0.4}, "depth": {"rmse": 2.0}}
    now = {"seg": {"mIoU": 0.5}, "depth": {"rmse": 1.5}}   # +25% and 25% lower error
    assert selection_score(now, ref) == pytest.approx(0.25)
    assert selection_score(ref, ref) == 0.0


# --------------------------------------------------------------------------- files of a run


def test_run_writes_loadable_checkpoints_log_and_results(run_a):
    out, result = run_a
    steps, epochs = read_log(out / LOG_FILE, "step"), read_log(out / LOG_FILE, "epoch")
    assert [r["step"] for r in steps] == list(range(1, STEPS_PER_EPOCH * EPOCHS + 1))
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert set(steps[0]["losses"]) == {"seg", "depth"} and steps[0]["lr"] > 0
    assert all(math.isfinite(r["loss"]) and r["seconds"] > 0 for r in steps)
    assert set(epochs[-1]["val"]) == {"seg", "depth"} and epochs[-1]["epoch_seconds"] > 0
    last, best = load_model(out / LAST_DIR), load_model(out / BEST_DIR)
    for key, value in result.model.state_dict().items():
        assert torch.equal(last.state_dict()[key], value.cpu()), key
    assert not torch.allclose(last.omega, torch.full_like(last.omega, 0.5))  # TROA moved
    assert len(last.adapter.troa.history) == STEPS_PER_EPOCH * EPOCHS + 1
    assert best.tasks == ("seg", "depth")
    results = json.loads((out / RESULTS_FILE).read_text())
    assert results["last"]["metrics"] == result.last_metrics == epochs[-1]["val"]
    assert results["best"]["epoch"] in (1, 2) and results["seconds_per_epoch"] > 0
    assert results["parameters"][-1]["component"] == "total"
    assert json.loads((out / RUN_CONFIG_FILE).read_text())["config"]["train"]["epochs"] == EPOCHS


def test_new_run_refuses_a_folder_with_checkpoints(run_a):
    out, _ = run_a
    before = _files(out)
    with pytest.raises(CheckpointError, match="already holds a training run.*--resume"):
        Trainer(tiny_cfg(), out)
    assert _files(out) == before


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_numbers_other_seed_other_numbers(cache, tmp_path):
    logs = {}
    for name, seed, steps in (("a", 0, 2), ("b", 0, 2), ("c", 1, 1)):  # c: one step shows it
        Trainer(tiny_cfg("train.epochs=1", f"train.seed={seed}", f"train.max_steps={steps}"),
                tmp_path / name).fit()
        logs[name] = read_log(tmp_path / name / LOG_FILE)
    losses = {k: [(r["loss"], r["losses"]) for r in v if r["kind"] == "step"] for k, v in logs.items()}
    assert len(losses["a"]) == 2 and losses["a"] == losses["b"]
    assert logs["a"][-1]["val"] == logs["b"][-1]["val"]
    assert losses["a"][0] != losses["c"][0]   # another seed: another initialisation


# --------------------------------------------------------------------------- exact resume


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(run_a, tmp_path):
    out_a, result_a = run_a
    out_b = tmp_path / "b"
    script = tmp_path / "kill_run.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(out_b), str(KILL_AT_STEP), *TINY],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [r["step"] for r in read_log(out_b / LOG_FILE, "step")][-1] == KILL_AT_STEP
    assert not (out_b / RESULTS_FILE).exists()

    result_b = Trainer(tiny_cfg(), out_b, resume=True).fit()
    assert _untimed(read_log(out_b / LOG_FILE)) == _approx(_untimed(read_log(out_a / LOG_FILE)))
    sims = [[torch.tensor(r["similarity"]) for r in read_log(o / LOG_FILE, "step")] for o in (out_a, out_b)]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*sims)) and len(sims[0]) == len(sims[1])
    assert result_b.best_metrics == _approx(result_a.best_metrics)
    assert result_b.last_metrics == _approx(result_a.last_metrics)
    wa, wb = _weights(out_a / LAST_DIR), _weights(out_b / LAST_DIR)
    assert wa.keys() == wb.keys()
    for key in wa:  # weights, omega and TROA's history
        assert torch.equal(wa[key], wb[key]), key


def _copy_run(run_a, dest: Path) -> Path:
    shutil.copytree(run_a[0], dest)
    return dest


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _same_as_run_a(run_a, out: Path) -> None:
    assert json.loads((out / RESULTS_FILE).read_text())["best"] == \
        json.loads((run_a[0] / RESULTS_FILE).read_text())["best"]
    wa, wb = _weights(run_a[0] / LAST_DIR), _weights(out / LAST_DIR)
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_a_truncated_state_falls_back_to_the_previous_generation(run_a, tmp_path):
    out = _copy_run(run_a, tmp_path / "r")
    assert (out / PREVIOUS_STATE_FILE).is_file()   # every save keeps the one it replaced
    _truncate(out / STATE_FILE)
    messages = []
    Trainer(tiny_cfg(), out, resume=True, log=messages.append).fit()
    assert any("Resuming from the previous training state" in m for m in messages)
    _same_as_run_a(run_a, out)   # the steps after the fallback are trained again, exactly


def test_a_truncated_state_without_fallback_gives_advice_that_works(run_a, tmp_path):
    out = _copy_run(run_a, tmp_path / "r")
    (out / PREVIOUS_STATE_FILE).unlink()
    _truncate(out / STATE_FILE)
    before = _files(out)
    with pytest.raises(CheckpointError, match=rf"{out / STATE_FILE} is corrupt or truncated.*"
                                              rf"delete the folder {out}"):
        Trainer(tiny_cfg(), out, resume=True)
    assert _files(out) == before   # nothing replaced
    shutil.rmtree(out)             # the advice, followed: the run trains again from the start
    Trainer(tiny_cfg(), out).fit()
    _same_as_run_a(run_a, out)


def test_resume_from_the_state_alone_when_model_folders_or_config_are_lost(run_a, tmp_path):
    out = _copy_run(run_a, tmp_path / "r")
    _truncate(out / LAST_DIR / WEIGHTS_FILE)
    (out / RUN_CONFIG_FILE).unlink()
    messages = []
    Trainer(tiny_cfg(), out, resume=True, log=messages.append).fit()
    assert (out / f"{LAST_DIR}.broken").is_dir() and (out / RUN_CONFIG_FILE).is_file()
    assert any("restored it from the training state" in m for m in messages)
    _same_as_run_a(run_a, out)


def test_orphan_temporary_files_of_a_killed_save_are_removed(run_a, tmp_path):
    out = _copy_run(run_a, tmp_path / "r")
    orphans = [out / f".{STATE_FILE}.abc123.tmp", out / LAST_DIR / ".model.safetensors.x.tmp"]
    for path in orphans:
        path.write_bytes(b"\0" * 1024)
    Trainer(tiny_cfg(), out, resume=True, log=lambda m: None).fit()
    assert not any(p.exists() for p in orphans)


def test_resume_with_nothing_to_resume_says_to_start_without_it(cache, tmp_path):
    with pytest.raises(CheckpointError, match="holds no training run to resume; start the run without --resume"):
        Trainer(tiny_cfg(), tmp_path / "empty", resume=True)


HOLD_SCRIPT = """
import sys, time
from vtagml_core.train.run_lock import RunLock
lock = RunLock(sys.argv[1]).acquire()  # kept: a dropped lock is released
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(cache, tmp_path):
    out = tmp_path / "busy"
    script = tmp_path / "hold.py"
    script.write_text(HOLD_SCRIPT)
    holder = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderBusy, match=rf"{out} is in use by PID {holder.pid} "):
            Trainer(tiny_cfg(), out)
        assert not (out / RUN_CONFIG_FILE).exists()   # refused before writing anything
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: the OS freed the lock, its owner record is stale.
    assert read_owner(out)["pid"] == holder.pid
    messages = []
    Trainer(tiny_cfg("train.epochs=1", "train.max_steps=1"), out, log=messages.append).fit()
    assert any(f"taking over the lock of PID {holder.pid}" in m for m in messages)
    assert read_owner(out) is None   # released at the end of fit()


def test_a_write_error_mid_run_names_the_path_and_resume_works_after_the_fix(run_a, tmp_path, monkeypatch):
    """A full or read-only disk (simulated: root ignores permission bits) stops the run with a
    clear error; nothing saved before is lost and --resume finishes it exactly."""
    import errno

    from vtagml_core.train import trainer as trainer_mod

    out = tmp_path / "r"
    real_save = trainer_mod.save_training_state

    def failing_save(state, out_dir):
        if state["counters"]["global_step"] == KILL_AT_STEP:
            raise OSError(errno.ENOSPC, "No space left on device", str(out_dir / STATE_FILE))
        return real_save(state, out_dir)

    monkeypatch.setattr(trainer_mod, "save_training_state", failing_save)
    with pytest.raises(RunFolderError, match=rf"cannot write {out / STATE_FILE}: No space left on "
                                             rf"device.*free disk space.*--resume") as info:
        Trainer(tiny_cfg(), out).fit()
    assert isinstance(info.value, ValueError)   # the CLI prints it and exits 2, no traceback
    assert read_owner(out) is None               # the lock was released
    monkeypatch.setattr(trainer_mod, "save_training_state", real_save)   # the cause fixed
    Trainer(tiny_cfg(), out, resume=True).fit()
    _same_as_run_a(run_a, out)


def test_resume_refuses_another_config(run_a, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(run_a[0], out)
    with pytest.raises(CheckpointError, match=r"train.lr: saved 0.002 vs now 0.001"):
        Trainer(tiny_cfg("train.lr=0.001"), out, resume=True)


# --------------------------------------------------------------------------- faults


class PoisonedTrainer(Trainer):
    """Puts an infinite depth label into the first step of epoch 2 (after best/ and last/ exist)."""

    snapshot: dict[str, bytes] = {}

    def training_step(self, batch: dict) -> dict:
        if self.progress.global_step == STEPS_PER_EPOCH:
            PoisonedTrainer.snapshot = _files(self.out_dir)
            batch = {**batch, "depth": torch.full_like(batch["depth"], float("inf"))}
        return super().training_step(batch)


def test_infinite_loss_stops_naming_the_task_and_writes_no_checkpoint(cache, tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(FloatingPointError, match=r"task\(s\): .*depth"):
        PoisonedTrainer(tiny_cfg(), out).fit()
    assert (out / BEST_DIR / WEIGHTS_FILE).is_file() and (out / STATE_FILE).is_file()
    assert _files(out) == PoisonedTrainer.snapshot
    assert [r["step"] for r in read_log(out / LOG_FILE, "step")] == [1, 2]


class OutOfMemoryTrainer(Trainer):
    def training_step(self, batch: dict) -> dict:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_names_the_batch_size_to_lower(cache, tmp_path):
    with pytest.raises(torch.cuda.OutOfMemoryError, match=r"batch size 4 .*data\.batch_size=2"):
        OutOfMemoryTrainer(tiny_cfg(), tmp_path / "oom").fit()
    assert not (tmp_path / "oom" / STATE_FILE).exists()


def test_partial_labels_train_without_troa_updates(cache, tmp_path):
    """Zero-shot fine-tuning: only seg in the loss -> TROA is skipped, omega keeps its value."""
    trainer = Trainer(tiny_cfg("train.max_steps=1"), tmp_path / "zs", loss_tasks=("seg",))
    omega = trainer.model.omega.clone()
    result = trainer.fit()
    assert not trainer.track_troa and torch.equal(result.model.omega, omega)
    assert int(result.model.adapter.troa.num_updates) == 0
    assert set(read_log(tmp_path / "zs" / LOG_FILE, "step")[0]["losses"]) == {"seg"}
    assert set(result.last_metrics) == {"seg", "depth"}   # still evaluated on every task
    assert "depth" not in trainer.train_set[0]
