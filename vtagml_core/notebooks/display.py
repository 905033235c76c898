"""Markdown tables and computed summaries for the notebooks (and, through them, the report).

Every number a notebook states is computed in the run; the closing summary of each lesson is
built from its results with these helpers, so it stays true when the numbers change (issue 5,
item 1). Tables are shown as ``IPython.display.Markdown``; the runner copies the markdown of
cells tagged ``report`` into ``report.md``.
"""
from __future__ import annotations

import numbers
from typing import Any, Mapping, Sequence

#: Significant digits of floats in tables (``format(x, ".4g")``).
FLOAT_DIGITS: int = 4


def fmt(value: Any, digits: int = FLOAT_DIGITS) -> str:
    """A table cell: floats with ``digits`` significant digits, ints with thousands separators."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        return f"{float(value):.{digits}g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
             caption: str | None = None, digits: int = FLOAT_DIGITS) -> str:
    """A markdown table of ``rows`` (dicts); ``columns`` picks and orders the keys.

    Numeric columns are right-aligned. A ``caption`` goes above the table in italics (say what
    the numbers are: dataset, size, backbone, split).
    """
    if not rows:
        raise ValueError("md_table needs at least one row")
    cols = list(columns) if columns is not None else list(rows[0].keys())
    missing = [c for c in cols if any(c not in r for r in rows)]
    if missing:
        raise ValueError(f"columns {missing} are missing from some rows; rows have {list(rows[0])}")
    numeric = [all(isinstance(r[c], numbers.Real) and not isinstance(r[c], bool) for r in rows)
               for c in cols]
    lines = [] if caption is None else [f"*{caption}*", ""]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    for r in rows:
        lines.append("| " + " | ".join(fmt(r[c], digits) for c in cols) + " |")
    return "\n".join(lines)


def matrix_table(matrix: Any, row_names: Sequence[str], col_names: Sequence[str] | None = None,
                 corner: str = "", caption: str | None = None, digits: int = FLOAT_DIGITS) -> str:
    """A markdown table of a 2-D array with named rows and columns (e.g. an affinity matrix)."""
    import numpy as np

    m = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix, dtype=float)
    col_names = list(col_names if col_names is not None else row_names)
    if m.shape != (len(row_names), len(col_names)):
        raise ValueError(f"matrix of shape {m.shape} does not fit {len(row_names)} row and "
                         f"{len(col_names)} column names")
    rows = [{corner or " ": name, **{c: float(v) for c, v in zip(col_names, m[i])}}
            for i, name in enumerate(row_names)]
    return md_table(rows, [corner or " ", *col_names], caption, digits)


def show(markdown: str) -> Any:
    """Display markdown in a notebook (returns the object so it can be a cell's last value)."""
    from IPython.display import Markdown

    return Markdown(markdown)


def summary(points: Sequence[str], title: str = "What the numbers showed") -> str:
    """The closing summary: a heading and one bullet per computed sentence."""
    if not points:
        raise ValueError("a summary needs at least one computed point")
    return "\n".join([f"### {title}", "", *[f"- {p}" for p in points]])


def compare_word(a: float, b: float, rel_tol: float = 0.05, higher: str = "higher",
                 lower: str = "lower", same: str = "about the same as") -> str:
    """``higher`` / ``lower`` / ``same`` for ``a`` against ``b`` (within ``rel_tol`` = same)."""
    scale = max(abs(a), abs(b), 1e-12)
    if abs(a - b) <= rel_tol * scale:
        return same
    return higher if a > b else lower


__all__ = ["compare_word", "fmt", "matrix_table", "md_table", "show", "summary"]
