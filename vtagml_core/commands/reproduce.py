"""``python -m vtagml_core reproduce``: the headless end-to-end run behind ``make reproduce``.

Until the numbered notebooks exist, this exercises the data and model pipeline on the built-in
benchmark and writes ``<out>/report.md``:

1. render (or reuse) every synthetic domain's train/val/test splits and the pretext split, with
   statistics and a plotly sample grid per domain;
2. build the VTAGML model of the preset and report its parameters;
3. train it for ``train.steps`` steps on the source domain with TROA on; evaluate on the
   validation split before and after, next to trivial predictors (majority class, mean depth,
   mean normal, no edges), save the model and the affinity matrix with its history.

Every number in the report is measured in this run and names its dataset, size and backbone.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from ._common import add_config_arguments, config_from_args

#: Metrics shown in the report per task (the paper's columns: mIoU, RMSE, mErr, odsF).
REPORT_METRICS = {"seg": ("mIoU", "pixel_acc"), "depth": ("rmse", "abs_rel"),
                  "normals": ("mean", "median"), "edges": ("odsF",)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("runs/reproduce"), help="output folder")


def _resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is visible; use auto or cpu")
    return torch.device(name)


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
    from vtagml_core.data.dataset import SyntheticDataset
    from vtagml_core.eval.evaluate import evaluate
    from vtagml_core.eval.trivial import evaluate_trivial
    from vtagml_core.model.checkpoint import save_model
    from vtagml_core.model.params import format_parameter_table
    from vtagml_core.model.vtagml import VTAGML
    from vtagml_core.train.losses import MultiTaskLoss, class_pixel_counts, class_weights_from_frequencies
    from vtagml_core.train.step import move_batch, train_step
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

    log("[2/3] building the model")
    torch.manual_seed(cfg.train.seed)
    device = _resolve_device(cfg.train.device)
    model = VTAGML(cfg.model).to(device)
    bb = cfg.model.backbone
    where = (f"synthetic/{cfg.data.domain} val split ({cfg.data.val_count} scenes), "
             f"{cfg.data.size}x{cfg.data.size}, backbone {bb.name}"
             f"{' (pretrained)' if bb.pretrained or bb.weights else ' (random init, frozen)'}")
    report += ["", "## 2. Model", "",
               f"VTAGML, tasks {cfg.model.tasks}, {model.num_classes} classes, adapter taps "
               f"{model.backbone.tap_blocks}.", "", format_parameter_table(model.parameter_report())]

    log(f"[3/3] training {cfg.train.steps} steps on {cfg.data.domain} ({device})")
    d = cfg.data
    root = Path(d.cache_root) if d.cache_root else None
    kw = dict(tasks=model.tasks, size=d.size, seed=d.seed, root=root, progress=False)
    train_ds = SyntheticDataset(d.domain, "train", count=d.train_count, **kw)
    val_ds = SyntheticDataset(d.domain, "val", count=d.val_count, **kw)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    train_loader = DataLoader(train_ds, batch_size=d.batch_size, shuffle=True, drop_last=True,
                              generator=gen, num_workers=d.num_workers)
    val_loader = DataLoader(val_ds, batch_size=d.batch_size, num_workers=d.num_workers)
    weights = None
    if "seg" in model.tasks and cfg.train.class_weight_power > 0:
        counts = sum(class_pixel_counts(b["seg"], model.num_classes) for b in
                     DataLoader(train_ds, batch_size=64))
        weights = class_weights_from_frequencies(counts, cfg.train.class_weight_power).to(device)
    loss_fn = MultiTaskLoss(model.tasks, cfg.train.task_weights or None, cfg.train.depth_loss,
                            cfg.train.edge_loss, class_weights=weights)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                 lr=cfg.train.lr)
    results = {"trivial predictors": evaluate_trivial(train_loader, val_loader, model.tasks,
                                                      model.num_classes)}
    results["VTAGML before training"] = evaluate(model, val_loader, model.tasks,
                                                 model.num_classes, device)
    model.train()
    losses, t0 = [], time.perf_counter()
    batches = itertools.cycle(train_loader)
    for step in range(1, cfg.train.steps + 1):
        res = train_step(model, move_batch(next(batches), device), loss_fn, optimizer)
        losses.append({"step": step, "loss": res.loss, **res.task_losses})
        if step == 1 or step % max(1, cfg.train.steps // 10) == 0:
            log(f"  step {step:4d}  loss {res.loss:.4f}  " +
                "  ".join(f"{t} {v:.3f}" for t, v in res.task_losses.items()))
    train_secs = time.perf_counter() - t0
    results[f"VTAGML after {cfg.train.steps} steps"] = evaluate(
        model, val_loader, model.tasks, model.num_classes, device)
    save_model(model, out / "model", meta={"preset": args.preset, "steps": cfg.train.steps})
    (out / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in losses))
    (out / "results.json").write_text(json.dumps({"where": where, "results": results}, indent=2))
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    affinity_heatmap(model.omega, model.tasks).write_html(str(out / "affinity.html"),
                                                          include_plotlyjs="directory")
    steps, mats = model.adapter.troa.history_tensor()
    if len(steps):
        affinity_history_figure(steps, mats, model.tasks).write_html(
            str(out / "affinity_history.html"), include_plotlyjs="directory")
    omega = model.omega.cpu().numpy()
    report += ["", "## 3. A short training run", "",
               f"{cfg.train.steps} steps of batch {d.batch_size} (Adam, lr {cfg.train.lr}) on "
               f"synthetic/{d.domain} train ({d.train_count} scenes) in {train_secs:.1f} s on "
               f"{device}; loss {losses[0]['loss']:.4f} -> {losses[-1]['loss']:.4f}.", "",
               f"Metrics on {where}:", "", *_metrics_rows(results), "",
               "TROA affinity after training (row = target task, column = inductive task):", "",
               "| | " + " | ".join(model.tasks) + " |", "|---|" + "---:|" * len(model.tasks),
               *[f"| {t} | " + " | ".join(f"{v:.3f}" for v in omega[i]) + " |"
                 for i, t in enumerate(model.tasks)],
               "", "Files: `model/` (safetensors + JSON), `train_log.jsonl`, `results.json`, "
               "`affinity.html`, `affinity_history.html`.",
               "", f"Total run time: {time.perf_counter() - started:.1f} s."]
    (out / "report.md").write_text("\n".join(report) + "\n")
    log(f"wrote {out / 'report.md'}")
    return 0
