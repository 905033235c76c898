"""Training metrics as JSON lines (docs/layout.md): one JSON object per line in ``log.jsonl``.

Two kinds of record, told apart by ``"kind"`` (``step`` counts optimizer steps from 1,
``epoch`` counts epochs from 1):

- ``{"kind": "step", "step", "epoch", "lr", "loss", "losses": {task: value}, "seconds"}``
  after every optimizer step (``loss`` is the weighted total, ``losses`` the unweighted task
  losses, both averaged over processes under DDP; ``seconds`` is that step's wall time);
- ``{"kind": "epoch", "epoch", "step", "train_loss", "val": {task: {metric: value}},
  "score", "best", "epoch_seconds", "val_seconds"}`` after every epoch's validation.

The file is appended to and flushed line by line, so a killed run leaves every finished
record readable (plus, at worst, one cut-off last line, which :func:`read_log` skips). On
resume the trainer drops the records written after the saved state
(:func:`truncate_log`), so the file of a resumed run reads like that of an uninterrupted one.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from .state import atomic_write_text

#: File name of the log inside a run folder.
LOG_FILE: str = "log.jsonl"


def _clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become strings ("nan", "inf"), tuples lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class JsonlLogger:
    """Appends one JSON object per line to ``path``; a disabled logger (DDP rank > 0) writes nothing.

    Args:
        path: the ``log.jsonl`` file (its folder must exist).
        enabled: False on every process but rank 0.
    """

    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line and flush it to the file."""
        if not self.enabled:
            return
        line = json.dumps(_clean(record), sort_keys=False)
        with self.path.open("a") as f:
            f.write(line + "\n")
            f.flush()


def read_log(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Records of a ``log.jsonl`` (only those of ``kind`` when given).

    A last line cut off by a killed run is skipped; a broken line anywhere else raises
    ValueError naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                break  # the run was killed while writing this line
            raise ValueError(f"{path}, line {number}, is not valid JSON ({err}); the log is "
                             "damaged: remove that line") from err
        if kind is None or record.get("kind") == kind:
            records.append(record)
    return records


def truncate_log(path: str | Path, last_step: int, epochs_done: int) -> None:
    """Keep step records up to ``last_step`` and the records of the first ``epochs_done`` epochs.

    This is the log as it was when the resumed training state was saved.
    """
    path = Path(path)
    if not path.is_file():
        return
    kept = [r for r in read_log(path) if _before_resume_point(r, last_step, epochs_done)]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def _before_resume_point(record: dict[str, Any], last_step: int, epochs_done: int) -> bool:
    if record.get("kind") == "epoch":
        return int(record.get("epoch", epochs_done + 1)) <= epochs_done
    return int(record.get("step", last_step + 1)) <= last_step


def write_json(path: str | Path, data: Any) -> None:
    """Pretty JSON, written atomically (``config.json``, ``results.json``)."""
    atomic_write_text(path, json.dumps(_clean(data), indent=2) + "\n")


def mean_of(records: Iterable[dict[str, Any]], key: str) -> float:
    """Mean of ``record[key]`` over records (NaN for none), e.g. an epoch's training loss."""
    values = [float(r[key]) for r in records]
    return sum(values) / len(values) if values else float("nan")
