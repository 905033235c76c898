"""The evaluation settings (paper Sec. 4, Tables 2-6) in smoke size, run keying and reuse, UDA.

Every run here is tiny: 64 px, S-D, 8 training scenes at batch 4 (2 steps, 1 epoch), 4 val and
4 test scenes, a narrow decoder, a random frozen backbone (no pretraining). The numbers are
meaningless; what is checked is what the settings do: the runs they train, share and reuse, the
shape of their results, the equations in their cells, and what UDA and zero-shot training touch.
All settings share one runs root (module fixture), as they do on the command line.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from vtagml_core.baselines.registry import METHOD_REVISIONS
from vtagml_core.cli import main
from vtagml_core.data import cache
from vtagml_core.experiments.settings import build_context, run_setting, write_setting
from vtagml_core.experiments.runs import RUN_INFO_FILE, RunSpec, key_config, run_dir, train_or_reuse
from vtagml_core.experiments.seeds import parse_seeds, summarize
from vtagml_core.train.config import load_kit_config
from vtagml_core.baselines.factory import load_model
from vtagml_core.train.adversarial import (STATE_KEY, AdversarialConfig, AdversarialTrainer,
                                           TaskDiscriminators, discriminator_input, generator_losses)
from vtagml_core.train.state import STATE_FILE
from vtagml_core.train.trainer import Trainer

TINY = ["data.size=64", "model.backbone.img_size=64", "model.decoder.embed_dims=[32,16,16,8]",
        "model.decoder.depth_per_stage=1", "data.train_count=8", "data.val_count=4",
        "data.test_count=4", "data.batch_size=4", "train.epochs=1", "train.warmup_steps=1",
        "train.save_every_steps=0", "train.progress=false"]
SETTINGS = ["task_sets=[S-D]", "zero_shot_task_sets=[S-D]", "methods=[vtagml]",
            "novel_domains=[comic]", "efficiency_tasks=S-D",
            "efficiency_methods=[vtagml,vanilla_mtl,finetune_mtl,single_task]",
            "efficiency_steps=1", "efficiency_warmup_steps=1", "pretrained_backbone=false",
            "adversarial.disc_channels=8", "adversarial.lambda_adv=0.01"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One data cache and one settings root for the whole module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VTAGML_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield tmp_path_factory.mktemp("settings")


def context(root: Path, *extra_settings: str):
    return build_context("quick", overrides=TINY, root=root, store=root,
                         settings_overrides=[*SETTINGS, *extra_settings], log=lambda _: None)


@pytest.fixture(scope="module")
def mtl_doc(env):
    ctx = context(env)
    doc = run_setting("mtl", ctx)
    write_setting(ctx, doc)
    return doc


def _cell(doc: dict, row_label_start: str, key: str) -> dict:
    row = next(r for r in doc["rows"] if r["label"].startswith(row_label_start))
    return row["cells"][key]


class FitCounter:
    """Counts Trainer.fit calls (monkeypatched in) to prove that a second run trains nothing."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = Trainer.fit

        def counting(trainer):
            self.calls += 1
            return original(trainer)

        monkeypatch.setattr(Trainer, "fit", counting)


# --------------------------------------------------------------------------- keys, seeds


def test_run_key_follows_what_changes_the_numbers(env, tmp_path, monkeypatch):
    cfg = load_kit_config(preset="quick", overrides=TINY)
    base = RunSpec("a", cfg, "vtagml")
    same = RunSpec("another role", load_kit_config(preset="quick", overrides=TINY + [
        "train.progress=true", "train.save_every_steps=7", "data.test_count=99"]), "vtagml")
    assert run_dir(env, base) == run_dir(env, same)          # role, logging, test size: same run
    assert run_dir(env, base).parent == env           # the store holds the run folders
    assert run_dir(env, base).name.startswith("vtagml-")
    other_seed = RunSpec("a", load_kit_config(preset="quick", overrides=TINY + ["train.seed=1"]), "vtagml")
    assert len({run_dir(env, s) for s in (base, other_seed, RunSpec("a", cfg, "vanilla_mtl"),
                                          RunSpec("a", cfg, "vtagml", loss_tasks=("seg",)),
                                          RunSpec("a", cfg, "vtagml", extra={"uda_target": "street"}))}) == 5
    assert "method_revision" not in base.key_payload()       # unrevised methods: keys unchanged
    peer = RunSpec("a", cfg, "mtformer")
    monkeypatch.setitem(METHOD_REVISIONS, "mtformer", 7)
    assert peer.key_payload()["method_revision"] == 7
    bumped = run_dir(env, peer)
    monkeypatch.setitem(METHOD_REVISIONS, "mtformer", 8)      # new code: a new run, not a reuse
    assert run_dir(env, peer) != bumped
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"one")
    cfg.model.backbone.weights = str(weights)
    first = key_config(cfg, 0)["model"]["backbone"]["weights"]
    weights.write_bytes(b"two!")                               # same path, other bytes: other key
    assert key_config(cfg, 0)["model"]["backbone"]["weights"] != first
    assert set(first) == {"sha256"}
    # A task's own loss option keys only the runs that have that task.
    cfg.model.tasks = "S-D"
    other = copy.deepcopy(cfg)
    other.train.normals_loss = "l1_unit"
    assert key_config(other, 0) == key_config(cfg, 0)                  # this model has no normals
    cfg.model.tasks = other.model.tasks = "S-D-N"
    assert key_config(other, 0) != key_config(cfg, 0)


def test_summarize_and_seed_parsing_give_known_answers():
    s = summarize([1.0, 2.0, 3.0])
    assert (s["mean"], s["std"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 1.0, 3.0, 3)
    assert summarize([5.0])["std"] == 0.0
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    for bad in ("", "0,0", "a", "-1"):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)
    with pytest.raises(ValueError, match="at least one"):
        summarize([])


def test_settings_config_presets_overrides_and_errors(tmp_path, monkeypatch):
    from vtagml_core.experiments.settings.context import load_settings_config, resolve_backbone
    from vtagml_core.train.pretrain import default_pretrained_path

    quick = load_settings_config(preset="quick")
    assert quick.uda_target == "indoor_shift"
    assert quick.task_sets == ["S-D", "S-D-N", "S-D-N-E"] and quick.remote_domains == ["street", "comic"]
    assert load_settings_config(preset="paper").adversarial.disc_channels == 64
    ctx = build_context("quick", overrides=TINY, root=tmp_path, store=tmp_path, methods=["vanilla_mtl"],
                        settings_overrides=["pretrained_backbone=false"], log=lambda _: None)
    assert ctx.settings.methods == ["vanilla_mtl"] and ctx.cfg.data.size == 64
    with pytest.raises(ValueError, match="unknown synthetic domain .mars."):
        load_settings_config(overrides=["uda_target=mars"])
    with pytest.raises(ValueError, match="unknown method"):
        load_settings_config(overrides=["methods=[vtagml,nope]"])
    # quick preset: the pretext-pretrained backbone at the default path fills backbone.weights
    monkeypatch.setenv("VTAGML_CACHE", str(tmp_path / "cache"))
    cfg = load_kit_config(preset="quick", overrides=TINY)
    target = default_pretrained_path(cfg.model.backbone.name, 64, 0)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"stand-in weights")      # present, so nothing is pretrained here
    resolved = resolve_backbone(cfg, quick, log=lambda _: None)
    assert resolved.model.backbone.weights == str(target) and cfg.model.backbone.weights is None
    off = load_settings_config(overrides=["pretrained_backbone=false"])
    assert resolve_backbone(cfg, off, log=lambda _: None).model.backbone.weights is None


# --------------------------------------------------------------------------- MTL


def test_mtl_table_shape_provenance_and_delta_m_equation(env, mtl_doc):
    doc = mtl_doc
    assert [c["key"] for c in doc["columns"]] == ["S-D/seg", "S-D/depth", "S-D/delta_m"]
    assert [r["kind"] for r in doc["rows"]] == ["method", "reference", "trivial"]
    w = doc["where"]
    assert w["dataset"] == "synthetic/indoor" and w["resolution"] == "64x64" and w["seeds"] == [0]
    assert w["generator"] == cache.GENERATOR_VERSION
    assert "test" in w["split"] and "RANDOM" in w["backbone"]
    # delta_m = mean over tasks of (-1)^l (M_mtl - M_stl) / M_stl * 100: mIoU up, RMSE down.
    miou, rmse = _cell(doc, "VTAGML", "S-D/seg")["mean"], _cell(doc, "VTAGML", "S-D/depth")["mean"]
    s_miou, s_rmse = _cell(doc, "single-task", "S-D/seg")["mean"], _cell(doc, "single-task", "S-D/depth")["mean"]
    expected = ((miou - s_miou) / s_miou - (rmse - s_rmse) / s_rmse) / 2 * 100
    assert _cell(doc, "VTAGML", "S-D/delta_m")["mean"] == pytest.approx(expected)
    assert _cell(doc, "single-task", "S-D/delta_m")["mean"] == 0.0
    assert {c["task"]: c["beats_trivial"] in (True, False) for c in doc["sanity"]["checks"]} == {
        "seg": True, "depth": True}
    md = (env / "setting_results" / "mtl.md").read_text()
    assert "synthetic/indoor" in md and "Table 2" in md and "not comparable" in md
    assert json.loads((env / "setting_results" / "mtl.json").read_text())["setting"] == "mtl"


def test_second_mtl_run_trains_nothing(env, mtl_doc, monkeypatch):
    counter = FitCounter(monkeypatch)
    doc = run_setting("mtl", context(env))
    assert counter.calls == 0
    assert doc["runs"] and all(r["reused"] for r in doc["runs"])
    assert doc["rows"][0]["cells"] == mtl_doc["rows"][0]["cells"]


def test_resume_of_a_partial_run_folder(env, monkeypatch):
    """A run folder with a state.pt but no results is resumed, not restarted or refused."""
    cfg = load_kit_config(preset="quick", overrides=TINY + ["train.epochs=2", "model.tasks=depth"])
    spec = RunSpec("partial", cfg, "single_task")
    folder = run_dir(env, spec)
    trainer = Trainer(cfg, folder, method="single_task")
    trainer._train_epoch(False)   # epoch 1 of 2, then "killed": a state.pt but no results.json
    trainer._end_epoch()
    assert (folder / STATE_FILE).is_file() and not (folder / "results.json").exists()
    resumed = []
    original = Trainer.__init__

    def spy(self, *args, **kwargs):
        resumed.append(kwargs.get("resume"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "__init__", spy)
    record = train_or_reuse(spec, env, log=lambda _: None)
    assert resumed == [True] and record.results["epochs"] == 2


# --------------------------------------------------------------------------- zero-shot


def test_zero_shot_never_trains_the_unlabelled_task(env, mtl_doc):
    ctx = context(env)
    doc = run_setting("zeroshot", ctx)
    cols = {c["key"]: c for c in doc["columns"]}
    assert cols["S-D/depth"]["zero_shot"] and not cols["S-D/seg"]["zero_shot"]
    assert doc["where"]["dataset"] == f"synthetic/{ctx.settings.zero_shot_target}"
    assert ctx.settings.zero_shot_target == "indoor_shift"  # the default target since generator v6
    labels = [r["label"] for r in doc["rows"]]
    assert any("source only" in x for x in labels) and any("oracle" in x for x in labels)
    tuned = next(Path(r["dir"]) for r in doc["runs"] if "fine-tuned" in r["role"])
    source = next(Path(r["dir"]) for r in doc["runs"] if r["role"].startswith("vtagml S-D on indoor"))
    run_cfg = json.loads((tuned / "config.json").read_text())
    assert run_cfg["loss_tasks"] == ["seg"] and run_cfg["config"]["data"]["domain"] == ctx.settings.zero_shot_target
    assert run_cfg["config"]["train"]["epochs"] == ctx.settings.finetune_epochs == 2
    assert set(json.loads((tuned / "results.json").read_text())["best"]["metrics"]) == {"seg"}
    before, after = load_model(source / "best").state_dict(), load_model(tuned / "best").state_dict()
    def keys(task):
        return [k for k in before if k.startswith((f"decoder.decoders.{task}.", f"decoder.heads.{task}"))]

    def changed(names):
        return [k for k in names if not torch.equal(before[k], after[k])]

    assert keys("depth") and keys("seg")
    assert changed(keys("depth")) == []                          # no gradient from target labels
    assert changed(keys("seg"))                                  # the labelled task trained
    assert changed([k for k in before if k.startswith("adapter.layers")])  # shared adapters moved


# --------------------------------------------------------------------------- UDA


def _uda_trainer(env, tmp_path, lam: float = 0.01, resume: bool = False, out: Path | None = None):
    from vtagml_core.data.dataset import SyntheticDataset

    cfg = load_kit_config(preset="quick", overrides=TINY + ["model.tasks=S-D"])
    target = SyntheticDataset("indoor_shift", "train", "S-D", 8, size=64, unlabelled=True, progress=False)
    return AdversarialTrainer(cfg, out or tmp_path / "uda", target_set=target, resume=resume,
                              adversarial=AdversarialConfig(lambda_adv=lam, disc_channels=8))


def test_uda_step_trains_discriminators_and_adds_a_nonzero_adversarial_term(env, tmp_path):
    trainer = _uda_trainer(env, tmp_path)
    disc_before = {k: v.clone() for k, v in trainer.discriminators.state_dict().items()}
    out = trainer.training_step(next(iter(trainer.train_loader(0))))
    for t in ("seg", "depth"):
        assert out["losses"][f"adv_{t}"] > 0 and out["losses"][f"disc_{t}"] > 0
    grads = [p.grad for p in trainer.discriminators.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    after = trainer.discriminators.state_dict()
    assert any(not torch.equal(disc_before[k], after[k]) for k in after)
    assert trainer.target_batch(0)["name"] == trainer.target_batch(0)["name"]  # pure function of step
    assert trainer.target_batch(0)["name"] != trainer.target_batch(1)["name"]
    assert set(trainer.target_batch(0)) == {"image", "name", "domain", "features"}  # no labels


def test_generator_loss_reaches_the_model_and_prepares_outputs():
    torch.manual_seed(0)
    seg = torch.randn(2, 5, 32, 32, requires_grad=True)
    normals = torch.randn(2, 3, 32, 32)
    assert torch.allclose(discriminator_input("seg", seg).sum(1), torch.ones(2, 32, 32))
    assert torch.allclose(discriminator_input("normals", normals).norm(dim=1), torch.ones(2, 32, 32))
    discs = TaskDiscriminators(("seg",), 5, AdversarialConfig(disc_channels=4)).requires_grad_(False)
    loss = generator_losses(discs, {"seg": seg}, AdversarialConfig(lambda_adv=0.5))["seg"]
    loss.backward()
    assert loss > 0 and seg.grad is not None and seg.grad.abs().sum() > 0
    zero = generator_losses(discs, {"seg": seg}, AdversarialConfig(lambda_adv=0.0))["seg"]
    assert zero == 0


def test_uda_resume_restores_the_discriminators(env, tmp_path):
    trainer = _uda_trainer(env, tmp_path)
    trainer.fit()
    state = torch.load(tmp_path / "uda" / STATE_FILE, weights_only=True)
    saved = state[STATE_KEY]["discriminators"]
    assert all(torch.equal(saved[k], v) for k, v in trainer.discriminators.state_dict().items())
    again = _uda_trainer(env, tmp_path, resume=True)
    assert all(torch.equal(saved[k], v) for k, v in again.discriminators.state_dict().items())
    assert again.disc_optimizer.state_dict()["state"]                    # Adam moments restored


def test_uda_setting_rows(env, mtl_doc):
    ctx = context(env)
    doc = run_setting("uda", ctx)
    labels = [r["label"] for r in doc["rows"]]
    assert labels[0].endswith("source only") and "UDA" in labels[1] and "oracle" in labels[-1]
    assert doc["target_domain"] == ctx.settings.uda_target and [r["kind"] for r in doc["rows"]][1] == "method"
    adapted = next(Path(r["dir"]) for r in doc["runs"] if "UDA" in r["role"])
    assert "adversarial" in json.loads((adapted / "config.json").read_text())
    # the quick settings warm-start adaptation from the source-only model for uda_epochs
    source = next(Path(r["dir"]) for r in doc["runs"] if r["role"].startswith("vtagml S-D on indoor"))
    info = json.loads((adapted / RUN_INFO_FILE).read_text())["payload"]
    assert info["init_from"] == json.loads((source / RUN_INFO_FILE).read_text())["key"]
    assert info["config"]["train"]["epochs"] == context(env).settings.uda_epochs == 2
    with pytest.raises(ValueError, match="uda_epochs"):
        context(env, "uda_epochs=0")


# --------------------------------------------------------------------------- novel, efficiency


def test_novel_domain_reuses_source_models(env, mtl_doc, monkeypatch):
    counter = FitCounter(monkeypatch)
    doc = run_setting("novel", context(env))
    assert counter.calls == 0
    assert [c["key"] for c in doc["columns"]] == ["indoor/seg", "indoor/depth", "comic/seg", "comic/depth"]
    assert doc["columns"][0]["group"] == "indoor (source)"
    assert [r["method"] for r in doc["rows"]] == ["vtagml", "single_task"]
    assert all(math.isfinite(c["mean"]) for r in doc["rows"] for c in r["cells"].values())


def test_efficiency_counts_parameters_and_times_every_method(env):
    doc = run_setting("efficiency", context(env))
    rows = {r["method"]: r["cells"] for r in doc["rows"]}
    assert set(rows) == {"vtagml", "vanilla_mtl", "finetune_mtl", "single_task"}
    assert rows["vtagml"]["trainable"]["mean"] < rows["vtagml"]["total"]["mean"]
    # the fine-tuned backbone trains (a few timm buffers-like parameters may stay frozen)
    assert rows["finetune_mtl"]["trainable"]["mean"] > 0.99 * rows["finetune_mtl"]["total"]["mean"]
    assert rows["vanilla_mtl"]["trainable"]["mean"] < 0.5 * rows["vanilla_mtl"]["total"]["mean"]
    assert rows["vanilla_mtl"]["total"]["mean"] == rows["finetune_mtl"]["total"]["mean"]
    assert "cache" not in rows["finetune_mtl"] and rows["vtagml"]["cache"]["mean"] > 0
    assert rows["vtagml"]["vs_vtagml"]["mean"] == pytest.approx(1.0)
    assert all(r["step"]["mean"] > 0 for r in rows.values())
    assert rows["vtagml"]["epoch"]["mean"] == pytest.approx(rows["vtagml"]["step"]["mean"] * doc["epoch_steps"])
    assert not any((env / "scratch").glob("efficiency-*"))                # scratch trainers removed


# --------------------------------------------------------------------------- CLI


def test_cli_settings_then_tables(env, mtl_doc, capsys):
    args = ["settings", "novel", "--runs", str(env), "--store", str(env)]
    for o in TINY:
        args += ["--set", o]
    for o in SETTINGS:
        args += ["--settings-set", o]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Generalization to novel domains" in printed and "total wall time" in printed
    assert main(["tables", "--runs", str(env), "--out", str(env / "tables")]) == 0
    md = (env / "tables" / "tables.md").read_text()
    assert "Table 2 shape" in md and "Table 5 shape" in md and md.count("not comparable") >= 2
    assert "plotly" in (env / "tables" / "tables.html").read_text().lower()
    with pytest.raises(SystemExit):
        main(["settings", "nonsense"])
