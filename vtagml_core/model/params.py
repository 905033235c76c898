"""Parameter counts per model component (paper Sec. 4, Table 6 "Parameter Comparison").

Table 6 reports 105.7M parameters for the whole VTAGML model on Swin-B (frozen backbone plus
adapters, decoders and heads). These helpers count total and trainable parameters per component
and print the table in the paper's unit (millions).
"""
from __future__ import annotations

from torch import nn

#: Unit of the table: the paper reports parameters in millions.
MILLION: int = 1_000_000
#: Decimals of the million column.
MILLION_DECIMALS: int = 2
#: Component name of the table's last row.
TOTAL_ROW: str = "total"


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """``(total, trainable)`` parameter counts of ``module``; shared tensors count once."""
    total = trainable = 0
    for p in module.parameters():  # parameters() already yields each tensor once
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return total, trainable


def parameter_table(named_components: dict[str, nn.Module]) -> list[dict]:
    """One row ``{"component", "total", "trainable"}`` per component, plus a :data:`TOTAL_ROW` row.

    The total row counts every distinct parameter tensor once, so weights shared between
    components (e.g. adapters shared across tasks) are not counted twice.
    """
    if not named_components:
        raise ValueError("parameter_table needs at least one component, e.g. {'backbone': model.backbone}")
    if TOTAL_ROW in named_components:
        raise ValueError(f"component name {TOTAL_ROW!r} is reserved for the table's total row")
    rows = []
    seen: dict[int, nn.Parameter] = {}
    for name, module in named_components.items():
        total, trainable = count_parameters(module)
        rows.append({"component": name, "total": total, "trainable": trainable})
        seen.update((id(p), p) for p in module.parameters())
    rows.append({
        "component": TOTAL_ROW,
        "total": sum(p.numel() for p in seen.values()),
        "trainable": sum(p.numel() for p in seen.values() if p.requires_grad),
    })
    return rows


def _millions(n: int) -> str:
    return f"{n / MILLION:.{MILLION_DECIMALS}f}"


def format_parameter_table(rows: list[dict]) -> str:
    """Markdown table of :func:`parameter_table` rows: millions (2 decimals) and exact counts."""
    lines = [
        "| component | total (M) | trainable (M) | total | trainable |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['component']} | {_millions(row['total'])} | {_millions(row['trainable'])} "
            f"| {row['total']:,} | {row['trainable']:,} |"
        )
    return "\n".join(lines)
