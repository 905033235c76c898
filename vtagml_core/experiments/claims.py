"""The paper's claims as a checklist, marked from the settings' results documents (issue 18).

The paper (Sec. 4) makes six claims this kit can measure on its own benchmark:

=====  ====================================================================  ====================
claim  what the paper says                                                    evidence (document)
=====  ====================================================================  ====================
(a)    VTAGML beats vanilla MTL in delta_m with fewer trainable parameters   ``mtl``, ``efficiency``
(b)    more tasks help: S-D -> S-D-N -> S-D-N-E improves the shared tasks    ``mtl``
(c)    zero-shot depth / normals beat the baselines                          ``zeroshot``
(d)    UDA beats source only and closes part of the gap to the oracle        ``uda``
(e)    on novel domains VTAGML beats single-task models                      ``novel``
(f)    each component (TROA, TAA, TSN) helps                                 ``ablations`` (notebook 09)
=====  ====================================================================  ====================

Each claim rests on comparisons of two rows seed by seed
(:func:`vtagml_core.experiments.stats.compare`) and is marked

* **supported** when every comparison is measurably in its favour (the paired 95 % interval
  excludes zero on the right side; an exact count such as trainable parameters is simply
  compared);
* **contradicted** when any comparison is measurably against it;
* **inconclusive** otherwise: a difference within noise, one seed (no interval), or a document
  that is missing ("not measured").

The evidence lines give the numbers behind each verdict. :func:`load_documents` reads a
``setting_results/`` folder; :func:`check_claims` marks the claims; :func:`claims_markdown`
writes the checklist (the ``tables`` command and the notebook runner's report print it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vtagml_core.experiments.stats import BETTER, WORSE, Comparison, gap_share
from vtagml_core.experiments.tables import TABLE_OF, compare_cells
from vtagml_core.experiments.formatting import format_difference, format_value, markdown_table

#: Verdicts of a claim.
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
#: Name of the ablations' results document (written by notebook 09).
ABLATIONS_DOCUMENT: str = "ablations"
#: Baselines of claim (a), in order of preference: the paper's "Vanilla MTL Swin" is the fully
#: fine-tuned network (``finetune_mtl``); the frozen ``vanilla_mtl`` stands in where it was not run.
#: delta_m and parameters each use the first of these their document has (the evidence names it).
VANILLA_METHODS: tuple[str, ...] = ("finetune_mtl", "vanilla_mtl")
#: Ablation rows of claim (f): component -> the row's ``method`` in the ablations document.
COMPONENT_ABLATIONS: dict[str, str] = {"TROA": "no_troa", "TAA": "no_taa", "TSN": "no_tsn"}
#: Column of the ablations document the components are compared on (delta_m vs single-task).
ABLATION_COLUMN: str = "delta_m"
#: Row method of the ablations' full model.
FULL_MODEL_METHOD: str = "full"
#: The column of the efficiency document with the trainable parameters.
TRAINABLE_COLUMN: str = "trainable"


@dataclass
class Claim:
    """One claim of the paper and what these results say about it.

    Attributes:
        key: ``"a"`` to ``"f"``.
        text: the claim, as the paper makes it.
        verdict: :data:`SUPPORTED`, :data:`CONTRADICTED` or :data:`INCONCLUSIVE`.
        evidence: one line per comparison, with its numbers.
    """

    key: str
    text: str
    verdict: str = INCONCLUSIVE
    evidence: list[str] = field(default_factory=list)


def load_documents(results_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every settings document in ``results_dir`` (``<setting>.json``) plus the ablations', by
    name; a missing document is simply absent (its claims are "not measured")."""
    folder = Path(results_dir)
    docs = {}
    for name in (*TABLE_OF, ABLATIONS_DOCUMENT):
        path = folder / f"{name}.json"
        if path.is_file():
            docs[name] = json.loads(path.read_text())
    return docs


# --------------------------------------------------------------------------- reading documents


def _rows(doc: dict[str, Any], method: str | None = None, kind: str | None = None,
          label_contains: str | None = None) -> list[dict[str, Any]]:
    return [r for r in doc["rows"] if (method is None or r["method"] == method)
            and (kind is None or r["kind"] == kind)
            and (label_contains is None or label_contains in r["label"])]


def _one(doc: dict[str, Any], **criteria: Any) -> dict[str, Any] | None:
    rows = _rows(doc, **criteria)
    return rows[0] if len(rows) == 1 else None


def _column(doc: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((c for c in doc["columns"] if c["key"] == key), None)


@dataclass
class _Tally:
    """The comparisons behind one claim, and the lines that describe them."""

    lines: list[str] = field(default_factory=list)
    favour: int = 0
    against: int = 0
    open: int = 0

    def add(self, ok: bool | None, line: str) -> None:
        """``ok``: True (measurably for the claim), False (measurably against), None (open)."""
        self.lines.append(line)
        if ok is None:
            self.open += 1
        elif ok:
            self.favour += 1
        else:
            self.against += 1

    def missing(self, line: str) -> None:
        self.add(None, line)

    def verdict(self) -> str:
        if self.against:
            return CONTRADICTED
        if self.favour and not self.open:
            return SUPPORTED
        return INCONCLUSIVE


def _compare_line(what: str, a_label: str, b_label: str, a: dict[str, Any], b: dict[str, Any],
                  comp: Comparison, metric: str) -> str:
    verdict = f"{a_label} {comp.phrase()}" if comp.significant else comp.phrase()
    return (f"{what}: {a_label} {format_value(a['mean'], metric)} vs {b_label} "
            f"{format_value(b['mean'], metric)}, difference {format_difference(comp.difference, metric)}: "
            f"{verdict}")


def _tally_compare(tally: _Tally, what: str, a_row: dict[str, Any], b_row: dict[str, Any],
                   col: dict[str, Any], a_label: str | None = None, b_label: str | None = None) -> None:
    """Add "row a measurably better than row b in column col" to ``tally``."""
    a_label, b_label = a_label or a_row["label"], b_label or b_row["label"]
    a, b = a_row["cells"].get(col["key"]), b_row["cells"].get(col["key"])
    comp = compare_cells(a, b, bool(col["lower_is_better"]))
    if comp is None:
        tally.missing(f"{what}: {a_label} and {b_label} cannot be paired (a value is missing or "
                      "their seeds differ)")
        return
    ok = True if comp.verdict == BETTER else (False if comp.verdict == WORSE else None)
    tally.add(ok, _compare_line(what, a_label, b_label, a, b, comp, col["metric"]))


# --------------------------------------------------------------------------- the claims


def claim_a(docs: dict[str, dict[str, Any]]) -> Claim:
    """(a) VTAGML beats vanilla MTL in delta_m, with fewer trainable parameters."""
    claim = Claim("a", "VTAGML beats vanilla MTL in delta_m with fewer trainable parameters")
    tally = _Tally()
    mtl = docs.get("mtl")
    if mtl is None:
        tally.missing("not measured: no mtl results (python -m vtagml_core settings mtl)")
        return _finish(claim, tally)
    vt = _one(mtl, method="vtagml", kind="method")
    base = next((m for m in VANILLA_METHODS if _one(mtl, method=m, kind="method")), None)
    if vt is None or base is None:
        tally.missing(f"not measured: the mtl results need a VTAGML row and one of {VANILLA_METHODS}")
        return _finish(claim, tally)
    base_row = _one(mtl, method=base, kind="method")
    if base != VANILLA_METHODS[0]:
        tally.lines.append(f"delta_m baseline: {base_row['label']}, standing in for the paper's fully "
                           f"fine-tuned vanilla MTL ({VANILLA_METHODS[0]}), which the mtl results lack")
    for col in [c for c in mtl["columns"] if c["metric"] == "delta_m"]:
        _tally_compare(tally, col["label"], vt, base_row, col, "VTAGML")
    eff = docs.get("efficiency")
    # Parameters against the paper's own baseline (the fine-tuned network) wherever it was
    # measured: the frozen stand-in has fewer trainable parameters by construction.
    param_base = next((m for m in VANILLA_METHODS if eff and _one(eff, method=m)), None)
    vt_e = _one(eff, method="vtagml") if eff else None
    base_e = _one(eff, method=param_base) if param_base else None
    if vt_e is None or base_e is None or TRAINABLE_COLUMN not in vt_e["cells"] \
            or TRAINABLE_COLUMN not in base_e["cells"]:
        tally.missing("trainable parameters not measured: the efficiency results need VTAGML and one of "
                      f"{VANILLA_METHODS}")
    else:
        mine, theirs = vt_e["cells"][TRAINABLE_COLUMN]["mean"], base_e["cells"][TRAINABLE_COLUMN]["mean"]
        tally.add(mine < theirs, f"trainable parameters (exact counts): VTAGML "
                  f"{format_value(mine, 'params')} M vs {base_e['label']} {format_value(theirs, 'params')} M: "
                  f"{'fewer' if mine < theirs else 'not fewer'}")
    return _finish(claim, tally)


def claim_b(docs: dict[str, dict[str, Any]]) -> Claim:
    """(b) more tasks help: each shared task of VTAGML improves from S-D to S-D-N to S-D-N-E."""
    claim = Claim("b", "more tasks help: VTAGML's shared tasks improve from S-D to S-D-N to S-D-N-E")
    tally = _Tally()
    mtl = docs.get("mtl")
    vt = _one(mtl, method="vtagml", kind="method") if mtl else None
    if vt is None:
        tally.missing("not measured: no VTAGML row in mtl results")
        return _finish(claim, tally)
    groups = list(dict.fromkeys(c["group"] for c in mtl["columns"] if c.get("task")))
    for small, large in zip(groups, groups[1:]):
        for col in [c for c in mtl["columns"] if c["group"] == small and c.get("task")]:
            wider = _column(mtl, f"{large}/{col['task']}")
            if wider is None:
                continue
            a, b = vt["cells"].get(wider["key"]), vt["cells"].get(col["key"])
            comp = compare_cells(a, b, bool(col["lower_is_better"]))
            what = f"{col['task']} ({col['metric']}) {small} -> {large}"
            if comp is None:
                tally.missing(f"{what}: cannot be paired")
                continue
            ok = True if comp.verdict == BETTER else (False if comp.verdict == WORSE else None)
            tally.add(ok, _compare_line(what, large, small, a, b, comp, col["metric"]))
    if not tally.lines:
        tally.missing("not measured: fewer than two task sets in the mtl results")
    return _finish(claim, tally)


def claim_c(docs: dict[str, dict[str, Any]]) -> Claim:
    """(c) zero-shot tasks: VTAGML fine-tuned beats every other method fine-tuned alike."""
    claim = Claim("c", "zero-shot depth / normals: VTAGML beats the baselines")
    tally = _Tally()
    doc = docs.get("zeroshot")
    vt = _one(doc, method="vtagml", kind="method") if doc else None
    others = [r for r in _rows(doc, kind="method") if r["method"] != "vtagml"] if doc else []
    if vt is None or not others:
        tally.missing("not measured: the zeroshot results need VTAGML and at least one baseline method")
        return _finish(claim, tally)
    for col in [c for c in doc["columns"] if c.get("zero_shot")]:
        for other in others:
            _tally_compare(tally, col["label"], vt, other, col, "VTAGML")
    return _finish(claim, tally)


def claim_d(docs: dict[str, dict[str, Any]]) -> Claim:
    """(d) UDA: adapted VTAGML beats its source-only model and closes part of the oracle gap."""
    claim = Claim("d", "UDA beats source only and closes part of the gap to the oracle")
    tally = _Tally()
    doc = docs.get("uda")
    if doc is None:
        tally.missing("not measured: no uda results")
        return _finish(claim, tally)
    adapted = _one(doc, method="vtagml", kind="method")
    source = _one(doc, method="vtagml", kind="reference", label_contains="source only")
    oracle = _one(doc, kind="reference", label_contains="oracle")
    if adapted is None or source is None or oracle is None:
        tally.missing("not measured: the uda results need VTAGML adapted, source only and the oracle")
        return _finish(claim, tally)
    for col in [c for c in doc["columns"] if c.get("lower_is_better") is not None]:
        _tally_compare(tally, col["label"], adapted, source, col, "adapted", "source only")
        cells = [r["cells"].get(col["key"]) for r in (source, adapted, oracle)]
        if any(c is None or not c.get("values") for c in cells) or len({len(c["values"]) for c in cells}) > 1:
            tally.missing(f"{col['label']}: the gap cannot be paired")
            continue
        share = gap_share(*[c["values"] for c in cells], bool(col["lower_is_better"]))
        gap_text = format_difference(share.gap, col["metric"])
        if share.share is None:
            tally.missing(f"{col['label']}: oracle gap {gap_text} (positive: oracle better); no "
                          f"share of it is given: {share.reason}")
            continue
        closed = share.gain.excludes_zero() and share.gain.mean > 0
        tally.add(True if closed else None,
                  f"{col['label']}: oracle gap {gap_text}; adaptation closed {share.share:.0f} % of it"
                  + ("" if closed else f" (the gain is not measurable: {share.gain.n_text()})"))
    return _finish(claim, tally)


def claim_e(docs: dict[str, dict[str, Any]]) -> Claim:
    """(e) novel domains: VTAGML beats the single-task models on every unseen domain's columns."""
    claim = Claim("e", "on novel domains VTAGML beats single-task models")
    tally = _Tally()
    doc = docs.get("novel")
    vt = _one(doc, method="vtagml", kind="method") if doc else None
    stl = _one(doc, method="single_task") if doc else None
    if vt is None or stl is None:
        tally.missing("not measured: the novel results need VTAGML and the single-task rows")
        return _finish(claim, tally)
    source = doc.get("source_domain", "")
    for col in [c for c in doc["columns"] if c.get("lower_is_better") is not None
                and not c["key"].startswith(f"{source}/")]:
        _tally_compare(tally, col["label"], vt, stl, col, "VTAGML", "single-task")
    return _finish(claim, tally)


def claim_f(docs: dict[str, dict[str, Any]]) -> Claim:
    """(f) each component helps: the full model beats the model without it (delta_m)."""
    claim = Claim("f", "each component (TROA, TAA, TSN) helps")
    tally = _Tally()
    doc = docs.get(ABLATIONS_DOCUMENT)
    full = _one(doc, method=FULL_MODEL_METHOD) if doc else None
    col = _column(doc, ABLATION_COLUMN) if doc else None
    if full is None or col is None:
        tally.missing(f"not measured: no ablation results ({ABLATIONS_DOCUMENT}.json, written by "
                      "notebook 09)")
        return _finish(claim, tally)
    for component, method in COMPONENT_ABLATIONS.items():
        ablated = _one(doc, method=method)
        if ablated is None:
            tally.missing(f"{component}: not measured (no {method} row)")
            continue
        _tally_compare(tally, f"{component}, {col['label']}", full, ablated, col, "full model",
                       ablated["label"])
    return _finish(claim, tally)


def _finish(claim: Claim, tally: _Tally) -> Claim:
    claim.verdict, claim.evidence = tally.verdict(), tally.lines
    return claim


#: The checks, in the order of the checklist.
CLAIMS: tuple[Callable[[dict[str, dict[str, Any]]], Claim], ...] = (
    claim_a, claim_b, claim_c, claim_d, claim_e, claim_f)


def check_claims(docs: dict[str, dict[str, Any]]) -> list[Claim]:
    """Every claim of :data:`CLAIMS`, marked from ``docs`` (see :func:`load_documents`)."""
    return [check(docs) for check in CLAIMS]


def claims_markdown(claims: list[Claim], title: str = "The paper's claims on these results") -> str:
    """The checklist: one table row per claim, then the evidence behind each verdict."""
    lines = [f"### {title}", "",
             "A claim is **supported** when every comparison behind it is measurably in its favour "
             "(the paired 95 % interval over seeds excludes zero; parameter counts are exact), "
             "**contradicted** when any is measurably against it, and **inconclusive** otherwise: "
             "a difference within noise, one seed (n = 1, no interval), or not measured.", "",
             markdown_table(["claim", "the paper says", "verdict here"],
                            [[f"({c.key})", c.text, f"**{c.verdict}**"] for c in claims],
                            ["l", "l", "l"]), ""]
    for c in claims:
        lines.append(f"- ({c.key}) {c.verdict}:")
        lines += [f"  - {e}" for e in c.evidence]
    return "\n".join(lines)


def claims_from_folder(results_dir: str | Path) -> str:
    """The checklist of the documents in ``results_dir`` (markdown)."""
    return claims_markdown(check_claims(load_documents(results_dir)))


__all__ = ["ABLATIONS_DOCUMENT", "CLAIMS", "CONTRADICTED", "COMPONENT_ABLATIONS", "Claim", "INCONCLUSIVE",
           "SUPPORTED", "VANILLA_METHODS", "check_claims", "claim_a", "claim_b", "claim_c", "claim_d",
           "claim_e", "claim_f", "claims_from_folder", "claims_markdown", "load_documents"]
