"""``python -m vtagml_core reproduce``: the headless end-to-end run behind ``make reproduce``.

Until the numbered notebooks exist, this exercises the data and model pipeline on the built-in
benchmark and writes ``<out>/report.md``:

1. render (or reuse) every synthetic domain's train/val/test splits and the pretext split, with
   statistics and a plotly sample grid per domain;
2. build the VTAGML model of the preset and report its parameters;
3. train it with :class:`vtagml_core.train.trainer.Trainer` (``train.epochs`` epochs, capped
   by ``train.max_steps``) on the source domain with TROA on; evaluate on the validation split
   before and after, next to trivial predictors (majority class, mean depth, mean normal, no
   edges), save the model and the affinity matrix with its history. The trainer's own run
   folder (log, best/last checkpoints, training state) is ``<out>/train``; it is replaced
   when the command runs again.

Every number in the report is measured in this run and names its dataset, size and backbone.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from ._common import add_config_arguments, config_from_args

#: Sub-folder of ``--out`` that holds the trainer's run (log, checkpoints, state).
TRAIN_DIR = "train"

#: Metrics shown in the report per task (the paper's columns: mIoU, RMSE, mErr, odsF).
REPORT_METRICS = {"seg": ("mIoU", "pixel_acc"), "depth": ("rmse", "abs_rel"),
                  "normals": ("mean", "median"), "edges": ("odsF",)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("runs/reproduce"), help="output folder")


def _metrics_rows(results: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    tasks = next(iter(results.values())).keys()
    cols = [(t, m) for t in tasks for m in REPORT_METRICS.get(t, ())]
    lines = ["| model | " + " | ".join(f"{t} {m}" for t, m in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for name, res in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{res[t][m]:.4f}" for t, m in cols) + " |")
    return lines


def _render_all(cfg, out: Path, log) -> list[str]:
    from vtagml_core.data.cache import ensure_split, split_statistics
    from vtagml_core.data.dataset import SyntheticDataset
    from vtagml_core.data.synthetic.domains import DOMAINS
    from vtagml_core.viz.samples import sample_grid

    d = cfg.data
    root = Path(d.cache_root) if d.cache_root else None
    counts = {"train": d.train_count, "val": d.val_count, "test": d.test_count}
    lines = ["## 1. Synthetic benchmark", "",
             f"Size {d.size}x{d.size}, seed {d.seed}; scenes per split: {counts}.", "",
             "| domain | description | render s | classes present (train) | depth mean |",
             "|---|---|---:|---|---:|"]
    stats_all = {}
    for name, spec in DOMAINS.items():
        t0 = time.perf_counter()
        paths = {s: ensure_split(name, s, n, d.size, seed=d.seed, root=root)
                 for s, n in counts.items()}
        secs = time.perf_counter() - t0
        stats = split_statistics(paths["train"])
        stats_all[name] = stats
        present = [c for c, f in stats["class_fraction"].items() if f > 0]
        lines.append(f"| {name} | {spec.description} | {secs:.1f} | {len(present)}: "
                     f"{', '.join(present)} | {stats['depth_mean']:.2f} |")
        ds = SyntheticDataset(name, "train", count=d.train_count, size=d.size, seed=d.seed, root=root)
        fig = sample_grid(ds, n=4, title=f"synthetic/{name} train {d.size}x{d.size}")
        fig.write_html(str(out / f"samples_{name}.html"), include_plotlyjs="directory")
        log(f"  {name}: splits ready in {secs:.1f} s")
    t0 = time.perf_counter()
    ensure_split("mixed", "pretext", d.pretext_count, d.size, seed=d.seed, root=root)
    lines += ["", f"Pretext split (disjoint scenes, albedo + texture-type targets): "
                  f"{d.pretext_count} scenes ready in {time.perf_counter() - t0:.1f} s.",
              "Sample grids: " + ", ".join(f"`samples_{n}.html`" for n in DOMAINS) + "."]
    (out / "data_statistics.json").write_text(json.dumps(stats_all, indent=2))
    return lines


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    from vtagml_core.config import to_dict
    from vtagml_core.metrics.trivial import evaluate_trivial
    from vtagml_core.model.checkpoint import save_model
    from vtagml_core.model.params import format_parameter_table
    from vtagml_core.train.logging import LOG_FILE, read_log
    from vtagml_core.train.trainer import RESULTS_FILE, Trainer
    from vtagml_core.viz.affinity import affinity_heatmap, affinity_history_figure

    cfg = config_from_args(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(msg, flush=True)

    log(f"[1/3] rendering the synthetic benchmark into the cache ({cfg.data.size}px)")
    report = ["# vtagml-kit reproducibility run", "",
              f"Preset `{args.preset}`{' + ' + ', '.join(args.overrides) if args.overrides else ''}; "
              f"config in `config.json`.", ""]
    report += _render_all(cfg, out, log)

    log("[2/3] building the model and the trainer")
    run_dir = out / TRAIN_DIR
    if run_dir.exists():  # this command regenerates all of its outputs
        log(f"  replacing the previous training run in {run_dir}")
        shutil.rmtree(run_dir)
    trainer = Trainer(cfg, run_dir, method="vtagml")
    model, device, d = trainer.model, trainer.device, cfg.data
    bb = cfg.model.backbone
    where = (f"synthetic/{d.domain} val split ({d.val_count} scenes), {d.size}x{d.size}, "
             f"backbone {bb.name}"
             f"{' (pretrained)' if bb.pretrained or bb.weights else ' (random init, frozen)'}")
    report += ["", "## 2. Model", "",
               f"VTAGML, tasks {cfg.model.tasks}, {model.num_classes} classes, adapter taps "
               f"{model.backbone.tap_blocks}.", "", format_parameter_table(model.parameter_report())]

    log(f"[3/3] training {trainer.total_steps} steps on {d.domain} ({device})")
    plain = dict(batch_size=d.batch_size, num_workers=d.num_workers, generator=torch.Generator())
    results = {"trivial predictors": evaluate_trivial(
        DataLoader(trainer.train_set, **plain), DataLoader(trainer.val_set, **plain),
        model.tasks, model.num_classes)}
    results["VTAGML before training"] = trainer.evaluate()
    fit = trainer.fit()
    summary = json.loads((run_dir / RESULTS_FILE).read_text())
    results[f"VTAGML after {trainer.progress.global_step} steps"] = fit.last_metrics
    save_model(fit.model, out / "model", meta={"preset": args.preset, "steps": trainer.progress.global_step})
    (out / "results.json").write_text(json.dumps({"where": where, "results": results}, indent=2))
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    affinity_heatmap(model.omega, model.tasks).write_html(str(out / "affinity.html"),
                                                          include_plotlyjs="directory")
    steps, mats = model.adapter.troa.history_tensor()
    if len(steps):
        affinity_history_figure(steps, mats, model.tasks).write_html(
            str(out / "affinity_history.html"), include_plotlyjs="directory")
    losses = [r["loss"] for r in read_log(run_dir / LOG_FILE, kind="step")]
    omega = model.omega.cpu().numpy()
    tc = cfg.train
    report += ["", "## 3. A short training run", "",
               f"{trainer.progress.global_step} steps ({trainer.progress.epoch} epoch(s)) of batch {d.batch_size} "
               f"(Adam, lr {tc.lr} after {tc.warmup_steps} warm-up steps, cosine to "
               f"{tc.min_lr_ratio} x lr) on synthetic/{d.domain} train ({d.train_count} scenes) "
               f"in {summary['train_seconds']:.1f} s on {device}"
               f"{' with the frozen-backbone feature cache' if trainer.use_feature_cache else ''}; "
               f"loss {losses[0]:.4f} -> {losses[-1]:.4f}.", "",
               f"Metrics on {where}:", "", *_metrics_rows(results), "",
               "TROA affinity after training (row = target task, column = inductive task):", "",
               "| | " + " | ".join(model.tasks) + " |", "|---|" + "---:|" * len(model.tasks),
               *[f"| {t} | " + " | ".join(f"{v:.3f}" for v in omega[i]) + " |"
                 for i, t in enumerate(model.tasks)],
               "", f"Files: `model/` (safetensors + JSON), `{TRAIN_DIR}/` (the trainer's run: "
               "`log.jsonl`, `best/`, `last/`, `state.pt`, `results.json`), `results.json`, "
               "`affinity.html`, `affinity_history.html`.",
               "", f"Total run time: {time.perf_counter() - started:.1f} s."]
    (out / "report.md").write_text("\n".join(report) + "\n")
    log(f"wrote {out / 'report.md'}")
    return 0
