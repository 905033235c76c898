"""The quality floor: has a quick-preset model learned enough to teach anything?

A fast recipe is only worth having if its models still learn the scene, not only floor, wall
and ceiling. The floor compares a model's validation metrics with absolute and trivial-relative
bars (the trivial predictors of :mod:`.trivial`, fitted on the same train split):

==============  =================================================  ==========================
task            the model must reach                               default bar
==============  =================================================  ==========================
seg             mIoU >= ``min_miou``                               0.50
depth           RMSE <= ``depth_rmse_ratio`` x mean-depth's RMSE   0.65
normals         mean angle <= ``normals_error_ratio`` x the mean   0.50
                normal's mean angle
edges           odsF > the constant edge map's odsF                (strictly above)
==============  =================================================  ==========================

Tasks absent from the model are not checked. :func:`check_floor` returns one
:class:`FloorCheck` per task and :func:`floor_met` says whether all passed;
``bench/bench_quick_preset.py`` uses them to time a recipe to the floor.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

#: ``{task: {metric: value}}`` as :class:`~.multitask.MultiTaskMetrics` computes it.
Metrics = Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class QualityFloor:
    """The bars of the floor (module docstring); the defaults are the quick preset's.

    Attributes:
        min_miou: segmentation mIoU the model must reach (a fraction).
        depth_rmse_ratio: the model's depth RMSE over the mean-depth predictor's, at most.
        normals_error_ratio: the model's mean angular error over the mean normal's, at most.
    """

    min_miou: float = 0.50
    depth_rmse_ratio: float = 0.65
    normals_error_ratio: float = 0.50


@dataclass(frozen=True)
class FloorCheck:
    """One task's verdict: ``value`` against ``bar`` (``higher`` says which side passes)."""

    task: str
    metric: str
    value: float
    bar: float
    higher: bool
    strict: bool

    @property
    def passed(self) -> bool:
        if self.higher:
            return self.value > self.bar if self.strict else self.value >= self.bar
        return self.value < self.bar if self.strict else self.value <= self.bar

    def text(self) -> str:
        """``"seg mIoU 0.534 >= 0.500 yes"``."""
        sign = (">" if self.strict else ">=") if self.higher else ("<" if self.strict else "<=")
        return f"{self.task} {self.metric} {self.value:.3f} {sign} {self.bar:.3f} " \
               f"{'yes' if self.passed else 'no'}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def check_floor(metrics: Metrics, trivial: Metrics, floor: QualityFloor = QualityFloor()
                ) -> list[FloorCheck]:
    """Check every task of ``metrics`` against the floor.

    Args:
        metrics: the model's validation metrics ``{task: {metric: value}}``.
        trivial: the trivial predictors' metrics on the same split (:func:`.trivial.evaluate_trivial`).
        floor: the bars.

    Returns:
        One :class:`FloorCheck` per task of ``metrics`` that the floor covers, in task order.

    Raises:
        KeyError: when ``trivial`` lacks a task that ``metrics`` has (fit the trivial predictors
            on the same task set).
    """
    checks = []
    for task in metrics:
        m = metrics[task]
        if task == "seg":
            checks.append(FloorCheck(task, "mIoU", m["mIoU"], floor.min_miou, True, False))
            continue
        if task not in ("depth", "normals", "edges"):
            continue
        if task not in trivial:
            raise KeyError(f"no trivial metrics for {task!r}: fit the trivial predictors on the "
                           f"model's task set ({', '.join(metrics)})")
        t = trivial[task]
        if task == "depth":
            checks.append(FloorCheck(task, "rmse", m["rmse"], floor.depth_rmse_ratio * t["rmse"],
                                     False, False))
        elif task == "normals":
            checks.append(FloorCheck(task, "mean", m["mean"],
                                     floor.normals_error_ratio * t["mean"], False, False))
        else:
            checks.append(FloorCheck(task, "odsF", m["odsF"], t["odsF"], True, True))
    return checks


def floor_met(checks: list[FloorCheck]) -> bool:
    """True when every check passed (and there was at least one)."""
    return bool(checks) and all(c.passed for c in checks)


__all__ = ["FloorCheck", "QualityFloor", "check_floor", "floor_met"]
