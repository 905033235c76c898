"""The paper's own reported numbers (VTAGML, ICCV 2023, Tables 2-6), for orientation only.

Transcribed by hand from the paper's text (Bhattacharjee et al., ICCV 2023, Sec. 4.2
and the captions of Tables 2-6), with the table number, the row names and the column names as
printed. They were measured on real datasets (Taskonomy, Cityscapes, Vkitti2, NYUDv2) with a
Swin-B V2 backbone pretrained on ImageNet-22k at 256x256. The kit's own tables are measured on
its synthetic benchmark with other backbones and budgets: **different data, so these rows are
shown beside the kit's rows for orientation, never as a comparison** (:mod:`vtagml_core.experiments.tables`
prints them in a separate, labelled block).

Conventions:

- Values are stored exactly as printed: mIoU, F1 and similar in percent, depth RMSE in the
  dataset's units, normal mean angular error (mErr) in degrees, parameters in millions, training
  time in minutes per epoch.
- ``None`` marks a number that cannot be read in the text file (:data:`MISSING`); none of the
  main-text tables has such a cell, but results the paper defers to its supplementary material
  (NYUDv2/Synthia/Vkitti2 MTL, Synthia zero-shot, the comics domain) are not in the text at all:
  :data:`NOT_IN_MAIN_TEXT` lists them rather than guessing.
- Citations inside row names (``[52]``) are kept as printed, including the paper's own slips
  (Table 5 cites MulT as [35]).
"""
from __future__ import annotations

from dataclasses import dataclass

#: Placeholder of an unreadable cell (never a guess).
MISSING = None

#: Results the paper reports only in its supplementary material (not transcribed).
NOT_IN_MAIN_TEXT: tuple[str, ...] = (
    "MTL on NYUDv2, Synthia and Vkitti2 (Sec. 4.2: 'provided in the supplementary material')",
    "zero-shot task transfer Vkitti2 -> Synthia (Sec. 4.2)",
    "generalization to the comics domain, trained on MS-COCO (Sec. 4.2)",
    "ablations (TROA/TAA/TSN, adapter placement, backbones) and zero-shot captioning",
)

#: Short description of the paper's experimental conditions, printed with every paper block.
PAPER_CONDITIONS: str = ("real datasets, Swin-B V2 backbone pretrained on ImageNet-22k, 256x256 "
                         "input (paper Sec. 4)")


@dataclass(frozen=True)
class PaperTable:
    """One of the paper's tables (or one dataset's half of it).

    Attributes:
        table: ``"Table 2"`` ... ``"Table 6"``.
        dataset: what the numbers were measured on, as the caption says.
        columns: column names as printed (task-set prefix where the table groups by task set).
        rows: ``(group, name, values)`` with ``group`` the table's row block ("CNN",
            "Transformer") and one value per column (:data:`MISSING` where unreadable).
        caption: the caption's first sentence.
        decimals: per column, the decimals the paper prints (values are re-printed with them).
        lower_is_better: per column, True where the paper marks the column with a down arrow,
            False for an up arrow, None for a non-metric column (Tables 4-5's "MTL" check marks,
            stored as ``"yes"``/``"no"``).
    """

    table: str
    dataset: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, str, tuple[float | str | None, ...]], ...]
    caption: str
    lower_is_better: tuple[bool | None, ...]
    decimals: tuple[int, ...]

    def __post_init__(self) -> None:
        for name in ("lower_is_better", "decimals"):
            if len(getattr(self, name)) != len(self.columns):
                raise ValueError(f"{self.table}: {len(self.columns)} columns but "
                                 f"{len(getattr(self, name))} entries in {name}")
        for group, name, values in self.rows:
            if len(values) != len(self.columns):
                raise ValueError(f"{self.table} row {name!r} has {len(values)} values for "
                                 f"{len(self.columns)} columns")


_T2_TASKONOMY_COLS = ("S-D SemSeg mIoU%", "S-D Depth RMSE", "S-D-N SemSeg mIoU%", "S-D-N Depth RMSE",
                      "S-D-N Normal mErr", "S-D-N-E SemSeg mIoU%", "S-D-N-E Depth RMSE",
                      "S-D-N-E Normal mErr", "S-D-N-E Edges F1%")
_T2_TASKONOMY_DIRS = (False, True, False, True, True, False, True, True, False)
_T2_CITYSCAPES_COLS = ("S-D SemSeg mIoU%", "S-D Depth RMSE", "S-D-N SemSeg mIoU%", "S-D-N Depth RMSE",
                       "S-D-N Normal mErr")
_T2_CITYSCAPES_DIRS = (False, True, False, True, True)

# Table 2 rows as printed: 9 Taskonomy values then 5 Cityscapes values per method.
_T2_ROWS: tuple[tuple[str, str, tuple[float, ...]], ...] = (
    ("CNN", "MTL-baseline [52]",
     (41.22, 0.5640, 45.16, 0.5398, 29.30, 47.64, 0.5091, 25.11, 53.96, 70.66, 6.726, 70.93, 6.721, 43.60)),
    ("CNN", "Cross-stitch [34]",
     (30.83, 0.7780, 32.84, 0.7530, 34.11, 34.91, 0.6980, 32.04, 37.58, 50.33, 7.683, 54.99, 7.311, 44.10)),
    ("CNN", "MTAN [29]",
     (32.94, 0.6800, 35.79, 0.6440, 32.25, 38.88, 0.6030, 30.55, 40.19, 53.86, 7.318, 57.23, 7.050, 42.09)),
    ("CNN", "TTNet [37]",
     (42.75, 0.5270, 45.85, 0.5011, 24.88, 52.79, 0.4872, 24.11, 56.10, 71.00, 6.655, 71.40, 6.511, 41.23)),
    ("CNN", "Taskonomy [67]",
     (42.00, 0.5633, 43.11, 0.5391, 29.67, 48.40, 0.5086, 26.62, 53.99, 60.02, 7.204, 63.41, 7.044, 41.91)),
    ("CNN", "TSwitch [48]",
     (42.79, 0.5222, 45.91, 0.5007, 24.82, 52.81, 0.4873, 24.00, 56.72, 71.13, 6.634, 71.45, 6.509, 41.00)),
    ("CNN", "Consistency [65]",
     (42.46, 0.5293, 45.69, 0.5013, 27.22, 52.55, 0.4899, 24.02, 55.50, 70.23, 6.671, 71.67, 6.575, 41.46)),
    ("CNN", "XTAM [31]",
     (43.24, 0.4966, 45.77, 0.4888, 25.05, 52.71, 0.4701, 22.19, 58.10, 75.02, 6.653, 75.92, 6.419, 40.39)),
    ("CNN", "TAWT [8]",
     (44.07, 0.4935, 48.92, 0.4833, 24.86, 53.15, 0.4658, 22.02, 61.77, 74.95, 6.649, 76.08, 6.407, 40.05)),
    ("Transformer", "ST-MTL [35]",
     (45.12, 0.4990, 49.34, 0.4750, 23.11, 53.17, 0.4600, 21.80, 62.85, 75.01, 6.655, 76.13, 6.429, 39.95)),
    ("Transformer", "MulT [3]",
     (49.73, 0.4981, 52.13, 0.4501, 21.86, 54.04, 0.4429, 20.10, 65.62, 76.05, 6.650, 77.50, 6.391, 39.84)),
    ("Transformer", "Our",
     (52.46, 0.4524, 57.03, 0.4291, 19.46, 60.80, 0.3903, 17.13, 71.09, 78.00, 6.503, 80.55, 6.307, 39.05)),
)
_N_TASKONOMY = len(_T2_TASKONOMY_COLS)

TABLE2_TASKONOMY = PaperTable(
    table="Table 2", dataset="Taskonomy", columns=_T2_TASKONOMY_COLS,
    rows=tuple((g, n, v[:_N_TASKONOMY]) for g, n, v in _T2_ROWS),
    caption="Quantitative comparison on the Taskonomy and Cityscapes benchmarks for different "
            "multitask settings of 'S-D', 'S-D-N' and 'S-D-N-E'.",
    lower_is_better=_T2_TASKONOMY_DIRS, decimals=(2, 4, 2, 4, 2, 2, 4, 2, 2))

TABLE2_CITYSCAPES = PaperTable(
    table="Table 2", dataset="Cityscapes", columns=_T2_CITYSCAPES_COLS,
    rows=tuple((g, n, v[_N_TASKONOMY:]) for g, n, v in _T2_ROWS),
    caption=TABLE2_TASKONOMY.caption, lower_is_better=_T2_CITYSCAPES_DIRS,
    decimals=(2, 3, 2, 3, 2))

TABLE3 = PaperTable(
    table="Table 3", dataset="Vkitti2 -> Cityscapes (fine-tuned with S, resp. S and D labels)",
    columns=("S-D SemSeg mIoU%", "S-D Depth RMSE (zero-shot)", "S-D-N SemSeg mIoU%",
             "S-D-N Depth RMSE", "S-D-N Normal mErr (zero-shot)"),
    rows=(
        ("CNN", "TTNet [37]", (71.00, 8.101, 71.40, 6.511, 49.22)),
        ("CNN", "Taskonomy [67]", (60.02, 8.694, 63.41, 7.044, 53.57)),
        ("CNN", "Consistency [65]", (70.23, 7.773, 71.67, 6.575, 48.51)),
        ("CNN", "TAWT [8]", (75.02, 7.596, 75.92, 6.419, 45.28)),
        ("Transformer", "Vanilla MTL Swin [30]", (75.10, 8.003, 75.97, 8.000, 49.05)),
        ("Transformer", "MulT [3]", (76.05, 7.115, 77.50, 6.391, 42.69)),
        ("Transformer", "Our", (78.00, 6.919, 80.55, 6.307, 41.10)),
    ),
    caption="Results on zero-shot task transfer. All the methods are first trained on the "
            "Vkitti2 benchmark and then fine-tuned to Cityscapes.",
    lower_is_better=(False, True, False, True, True), decimals=(2, 3, 2, 3, 2))

TABLE4 = PaperTable(
    table="Table 4", dataset="Vkitti2 -> Cityscapes (UDA, 'S-D')",
    columns=("MTL", "SemSeg mIoU%", "Depth RMSE"),
    rows=(
        ("CNN", "MTL-baseline-UDA [52]", ("yes", 57.26, 11.85)),
        ("CNN", "Consistency-UDA [65]", ("yes", 62.19, 11.33)),
        ("CNN", "XTAM-UDA [31]", ("yes", 63.76, 11.15)),
        ("Transformer", "1-task Swin-UDA [41]", ("no", 63.88, 11.09)),
        ("Transformer", "MulT-UDA [3]", ("yes", 66.12, 10.35)),
        ("Transformer", "Our-UDA", ("yes", 70.93, 8.66)),
        ("Transformer", "1-task Swin-target (Oracle) [30]", ("no", 75.97, 6.65)),
    ),
    caption="Unsupervised Domain Adaptation (UDA) results for Vkitti2 -> Cityscapes "
            "(MTL: multitask model or not).",
    lower_is_better=(None, False, True), decimals=(0, 2, 2))

TABLE5 = PaperTable(
    table="Table 5", dataset="Taskonomy -> NYUDv2 (no fine-tuning)",
    columns=("MTL", "SemSeg mIoU%", "Depth RMSE"),
    rows=(
        ("CNN", "Consistency [65]", ("yes", 26.24, 0.771)),
        ("CNN", "XTAM [31]", ("yes", 29.13, 0.750)),
        ("Transformer", "1-task Swin [30]", ("no", 32.09, 0.722)),
        ("Transformer", "ST-MTL [35]", ("yes", 32.51, 0.720)),
        ("Transformer", "MulT [35]", ("yes", 33.68, 0.701)),
        ("Transformer", "Our", ("yes", 40.77, 0.652)),
    ),
    caption="Generalization to novel domains results for Taskonomy -> NYUDv2 "
            "(MTL: multitask model or not).",
    lower_is_better=(None, False, True), decimals=(0, 2, 3))

TABLE6 = PaperTable(
    table="Table 6", dataset="Taskonomy, 'S-D-N-E'",
    columns=("# Parameters (Millions)", "Training time (mins per epoch)"),
    rows=(
        ("CNN", "XTAM [31]", (304.0, 16.0)),
        ("CNN", "Consistency [65]", (228.0, 14.0)),
        ("Transformer", "Vanilla MTL Swin [30]", (348.0, 18.0)),
        ("Transformer", "MulT [3]", (447.0, 22.0)),
        ("Transformer", "Our", (105.7, 8.0)),
    ),
    caption="Parameter and training time comparison of our model on the Taskonomy benchmark.",
    lower_is_better=(True, True), decimals=(1, 0))

#: The paper's tables shown next to each setting's table (setting name -> tables).
PAPER_TABLES: dict[str, tuple[PaperTable, ...]] = {
    "mtl": (TABLE2_TASKONOMY, TABLE2_CITYSCAPES),
    "zeroshot": (TABLE3,),
    "uda": (TABLE4,),
    "novel": (TABLE5,),
    "efficiency": (TABLE6,),
}


def paper_tables(setting: str) -> tuple[PaperTable, ...]:
    """The paper's tables for ``setting`` (one of :data:`PAPER_TABLES`)."""
    if setting not in PAPER_TABLES:
        raise ValueError(f"no paper table for setting {setting!r}; settings: {', '.join(PAPER_TABLES)}")
    return PAPER_TABLES[setting]


__all__ = ["MISSING", "NOT_IN_MAIN_TEXT", "PAPER_CONDITIONS", "PAPER_TABLES", "PaperTable",
           "TABLE2_CITYSCAPES", "TABLE2_TASKONOMY", "TABLE3", "TABLE4", "TABLE5", "TABLE6",
           "paper_tables"]
