"""Statistics over seeds, the summaries' sentences and the claims checklist (issue 18).

Everything runs on synthetic per-seed values with known differences, so each verdict is known
in advance: a clear gap must be called better or worse, noise must not, one seed never.
"""
from __future__ import annotations

import json
import math

import pytest

from vtagml_core.experiments import claims as cl
from vtagml_core.experiments import stats
from vtagml_core.experiments.seeds import summarize
from vtagml_core.notebooks import summaries as sm

#: Student-t quantile t_{0.975, 2} (three seeds), from the tables.
T_975_DF2 = 4.302652729911275


# --------------------------------------------------------------------------- arithmetic


def test_mean_ci_is_the_student_t_interval():
    ci = stats.mean_ci([1.0, 2.0, 3.0])
    assert (ci.mean, ci.n, ci.std) == (2.0, 3, 1.0)
    assert ci.half_width == pytest.approx(T_975_DF2 / math.sqrt(3))
    assert ci.low == pytest.approx(2.0 - T_975_DF2 / math.sqrt(3))
    one = stats.mean_ci([5.0])
    assert not one.has_interval and one.low is None and not one.excludes_zero()
    assert one.n_text() == "n = 1, no interval"
    with pytest.raises(ValueError, match="at least one value"):
        stats.mean_ci([])
    with pytest.raises(ValueError, match="non-finite"):
        stats.mean_ci([1.0, float("nan")])


def test_paired_difference_removes_what_the_seeds_share():
    # Seed effects of +-0.1 swamp an unpaired view; the paired differences are all 0.02.
    a, b = [0.52, 0.62, 0.42], [0.50, 0.60, 0.40]
    d = stats.paired_difference(a, b)
    assert d.mean == pytest.approx(0.02) and d.std == pytest.approx(0.0, abs=1e-12)
    assert d.excludes_zero()
    assert not stats.unpaired_difference(a, b).excludes_zero()
    with pytest.raises(ValueError, match="same --seeds"):
        stats.paired_difference([1.0, 2.0], [1.0])


def test_comparison_verdicts_follow_the_interval_and_the_direction():
    clear = stats.compare([0.60, 0.62, 0.61], [0.50, 0.53, 0.51], lower_is_better=False)
    assert clear.verdict == stats.BETTER and clear.phrase() == "better"
    assert stats.compare([0.60, 0.62, 0.61], [0.50, 0.53, 0.51], lower_is_better=True).verdict == stats.WORSE
    noise = stats.compare([0.5, 0.6, 0.4], [0.55, 0.45, 0.5], lower_is_better=False)
    assert noise.verdict == stats.NO_DIFFERENCE
    assert noise.phrase() == "no measurable difference (n = 3)"
    same = stats.compare([4.655], [4.655], lower_is_better=True)          # 06's "improved"
    assert same.verdict == stats.NO_INTERVAL and same.phrase() == "n = 1, no interval"
    tied = stats.compare([4.655, 4.655], [4.655, 4.655], lower_is_better=True)
    assert tied.verdict == stats.NO_DIFFERENCE                          # identical: no difference


def test_chance_levels_are_computed():
    assert stats.binary_chance_bce() == pytest.approx(math.log(2))
    assert stats.binary_chance_bce(0.25) < math.log(2)                 # unbalanced labels: lower
    with pytest.raises(ValueError, match="strictly between"):
        stats.binary_chance_bce(1.0)
    assert stats.chance_position(0.693, math.log(2)) == stats.AT_CHANCE
    assert stats.chance_position(0.5, math.log(2)) == stats.BELOW_CHANCE
    assert stats.chance_position(0.9, math.log(2)) == stats.ABOVE_CHANCE


def test_gap_share_only_for_a_measurable_gap():
    # Oracle clearly above source only; adapted halfway: 50 %.
    share = stats.gap_share([0.10, 0.12, 0.11], [0.30, 0.32, 0.31], [0.50, 0.52, 0.51], lower_is_better=False)
    assert share.share == pytest.approx(50.0)
    # 07's "-2147 % of the gap": a tiny gap with one seed gives no share at all.
    tiny = stats.gap_share([2.0720], [2.0440], [2.0733], lower_is_better=True)
    assert tiny.share is None and "n = 1" in tiny.reason
    noisy = stats.gap_share([1.0, 1.2, 0.9], [1.1, 1.0, 1.0], [1.1, 1.0, 1.05], lower_is_better=True)
    assert noisy.share is None and "within noise" in noisy.reason
    wrong_way = stats.gap_share([1.0, 1.01, 1.02], [1.0, 1.0, 1.0], [2.0, 2.01, 2.02], lower_is_better=True)
    assert wrong_way.share is None and "no gap to close" in wrong_way.reason


def test_summarize_keeps_the_interval_and_the_values():
    s = summarize([1.0, 2.0, 3.0])
    assert s["ci_low"] == pytest.approx(2.0 - T_975_DF2 / math.sqrt(3)) and s["values"] == [1.0, 2.0, 3.0]
    one = summarize([5.0])
    assert one["ci_low"] is None and one["ci_high"] is None and one["n"] == 1
    json.dumps(one)                                                    # JSON-ready
    diverged = summarize([1.0, float("nan")])
    assert math.isnan(diverged["mean"]) and diverged["ci_low"] is None


# --------------------------------------------------------------------------- synthetic documents


def _cell(values):
    return summarize(values)


def _col(key, label, metric, lower, **extra):
    return {"key": key, "label": label, "metric": metric, "group": extra.get("group", ""),
            "task": extra.get("task", ""), "lower_is_better": lower, "zero_shot": extra.get("zero_shot", False)}


def _row(label, method, cells, kind="method"):
    return {"label": label, "method": method, "kind": kind, "cells": cells, "note": ""}


def _where(n):
    return {"dataset": "synthetic/indoor", "split": "test", "resolution": "64x64", "backbone": "b",
            "seeds": list(range(n))}


GOOD = [0.60, 0.62, 0.61]      # measurably above BAD
BAD = [0.50, 0.53, 0.51]
NOISE_A, NOISE_B = [0.5, 0.6, 0.4], [0.55, 0.45, 0.5]


def _mtl(vt_dm, va_dm, seg=(GOOD, GOOD, GOOD)):
    cols, vt, va = [], {}, {}
    for g, s in zip(("S-D", "S-D-N", "S-D-N-E"), seg):
        cols += [_col(f"{g}/seg", f"{g} mIoU", "mIoU", False, group=g, task="seg"),
                 _col(f"{g}/delta_m", f"{g} dm", "delta_m", False, group=g)]
        vt.update({f"{g}/seg": _cell(s), f"{g}/delta_m": _cell(vt_dm)})
        va.update({f"{g}/seg": _cell(BAD), f"{g}/delta_m": _cell(va_dm)})
    return {"setting": "mtl", "title": "MTL", "preset": "smoke", "where": _where(len(vt_dm)), "columns": cols,
            "rows": [_row("VTAGML", "vtagml", vt), _row("vanilla MTL", "vanilla_mtl", va)]}


def _efficiency(vt_params, va_params):
    return {"setting": "efficiency", "columns": [_col("trainable", "trainable", "params", True)],
            "rows": [_row("VTAGML", "vtagml", {"trainable": _cell([vt_params])}),
                     _row("vanilla MTL", "vanilla_mtl", {"trainable": _cell([va_params])})]}


def _uda(source, adapted, oracle):
    col = _col("S-D/seg", "mIoU", "mIoU", False)
    return {"setting": "uda", "columns": [col], "rows": [
        _row("VTAGML, source only", "vtagml", {"S-D/seg": _cell(source)}, kind="reference"),
        _row("VTAGML-UDA", "vtagml", {"S-D/seg": _cell(adapted)}),
        _row("VTAGML trained on x (oracle)", "vtagml", {"S-D/seg": _cell(oracle)}, kind="reference")]}


def _ablations(full, **ablated):
    col = _col("delta_m", "dm vs single-task", "delta_m", False)
    rows = [_row("VTAGML (full model)", "full", {"delta_m": _cell(full)})]
    rows += [_row(f"without {k}", k, {"delta_m": _cell(v)}) for k, v in ablated.items()]
    return {"setting": "ablations", "columns": [col], "rows": rows}


def test_claim_a_needs_both_a_measurable_delta_m_and_fewer_parameters():
    supported = cl.claim_a({"mtl": _mtl([5.0, 5.2, 5.1], [1.0, 1.1, 0.9]), "efficiency": _efficiency(1e6, 3e6)})
    assert supported.verdict == cl.SUPPORTED
    assert any("fewer" in e for e in supported.evidence) and any("better" in e for e in supported.evidence)
    more_params = cl.claim_a({"mtl": _mtl([5.0, 5.2, 5.1], [1.0, 1.1, 0.9]), "efficiency": _efficiency(4e6, 3e6)})
    assert more_params.verdict == cl.CONTRADICTED
    noise = cl.claim_a({"mtl": _mtl(NOISE_A, NOISE_B), "efficiency": _efficiency(1e6, 3e6)})
    assert noise.verdict == cl.INCONCLUSIVE
    one_seed = cl.claim_a({"mtl": _mtl([5.6], [5.0]), "efficiency": _efficiency(1e6, 3e6)})   # +5.6 vs +5.0
    assert one_seed.verdict == cl.INCONCLUSIVE and any("n = 1, no interval" in e for e in one_seed.evidence)
    assert cl.claim_a({}).verdict == cl.INCONCLUSIVE
    # Parameters go against the paper's own baseline (fine-tuned MTL) wherever it was measured.
    eff = _efficiency(1e6, 0.2e6)
    eff["rows"].append(_row("fine-tuned MTL", "finetune_mtl", {"trainable": _cell([3e6])}))
    against_paper_baseline = cl.claim_a({"mtl": _mtl([5.0, 5.2, 5.1], [1.0, 1.1, 0.9]), "efficiency": eff})
    assert against_paper_baseline.verdict == cl.SUPPORTED
    assert any("fine-tuned MTL 3.000 M: fewer" in e for e in against_paper_baseline.evidence)


def test_claim_b_compares_the_shared_tasks_across_task_sets():
    assert cl.claim_b({"mtl": _mtl(GOOD, BAD, seg=(BAD, [0.55, 0.58, 0.56], GOOD))}).verdict == cl.SUPPORTED
    assert cl.claim_b({"mtl": _mtl(GOOD, BAD, seg=(GOOD, BAD, GOOD))}).verdict == cl.CONTRADICTED
    assert cl.claim_b({"mtl": _mtl(GOOD, BAD, seg=(NOISE_A, NOISE_B, NOISE_A))}).verdict == cl.INCONCLUSIVE


def test_claim_d_gives_a_gap_share_only_when_the_gap_is_measurable():
    good = cl.claim_d({"uda": _uda([0.10, 0.12, 0.11], [0.30, 0.32, 0.31], [0.50, 0.52, 0.51])})
    assert good.verdict == cl.SUPPORTED and any("closed 50 % of it" in e for e in good.evidence)
    tiny_gap = cl.claim_d({"uda": _uda([0.10, 0.12, 0.11], [0.30, 0.32, 0.31], [0.10, 0.13, 0.10])})
    assert tiny_gap.verdict == cl.INCONCLUSIVE and not any("% of it" in e for e in tiny_gap.evidence)
    worse = cl.claim_d({"uda": _uda([0.30, 0.32, 0.31], [0.10, 0.12, 0.11], [0.50, 0.52, 0.51])})
    assert worse.verdict == cl.CONTRADICTED


def test_claim_f_reads_the_ablations_and_says_when_they_are_missing():
    docs = {"ablations": _ablations([2.0, 2.2, 2.1], no_troa=[1.0, 1.1, 0.9], no_taa=[0.0, 0.2, 0.1],
                                    no_tsn=[1.5, 1.4, 1.6])}
    assert cl.claim_f(docs).verdict == cl.SUPPORTED
    docs["ablations"] = _ablations([2.0, 2.2, 2.1], no_troa=[3.0, 3.1, 3.2], no_taa=[0.0, 0.2, 0.1],
                                   no_tsn=[1.5, 1.4, 1.6])
    assert cl.claim_f(docs).verdict == cl.CONTRADICTED
    missing = cl.claim_f({})
    assert missing.verdict == cl.INCONCLUSIVE and "not measured" in missing.evidence[0]


def test_checklist_reads_a_results_folder(tmp_path):
    (tmp_path / "mtl.json").write_text(json.dumps(_mtl([5.6], [5.0])))
    text = cl.claims_from_folder(tmp_path)
    for key in "abcdef":
        assert f"| ({key}) |" in text
    assert text.count("| **inconclusive** |") == 6 and "not measured" in text


# --------------------------------------------------------------------------- summaries' sentences


def test_sentences_call_a_difference_only_when_it_is_measurable():
    doc = _mtl([5.0, 5.2, 5.1], [1.0, 1.1, 0.9])
    vt, va = doc["rows"]
    assert "VTAGML better" in sm.comparison_sentence(doc, vt, va, "S-D/delta_m")
    text = sm.head_to_head_sentence(doc, vt, va)
    assert text.startswith("VTAGML against vanilla MTL on 6 columns (n = 3): better on 6")
    noisy = _mtl(NOISE_A, NOISE_B, seg=(NOISE_A, NOISE_A, NOISE_A))
    for r, v in zip(noisy["rows"], (NOISE_A, NOISE_B)):
        r["cells"].update({k: _cell(v) for k in r["cells"]})
    assert "no measurable difference on 6" in sm.head_to_head_sentence(noisy, *noisy["rows"])
    one = _mtl([5.6], [5.0], seg=([0.5], [0.5], [0.5]))
    one["rows"][1]["cells"].update({k: _cell([0.4]) for k in one["rows"][1]["cells"] if k.endswith("seg")})
    sentence = sm.head_to_head_sentence(one, *one["rows"])
    assert "n = 1, no interval" in sentence and "better" not in sentence.replace("better or worse", "")
    assert "no verdict" in sm.comparison_sentence(one, *one["rows"], "S-D/delta_m")


def test_the_discriminators_at_ln2_are_at_chance():
    flat = [math.log(2)] * 40
    text = sm.discriminator_sentence({"seg": flat, "depth": [0.69] * 40})
    assert "At chance for seg, depth" in text and "tell the domains apart" not in text.split("At chance")[0]
    assert "still tell the domains apart" in sm.discriminator_sentence({"seg": [0.4] * 40})
    assert "worse than guessing" in sm.discriminator_sentence({"seg": [0.9] * 40})


def test_gap_sentence_never_prints_a_meaningless_share():
    doc = _uda([2.0720], [2.0440], [2.0733])
    assert "%" not in sm.gap_sentence(doc, *doc["rows"], "S-D/seg").split("no share")[1]
    good = _uda([0.10, 0.12, 0.11], [0.30, 0.32, 0.31], [0.50, 0.52, 0.51])
    assert "closed 50 % of it" in sm.gap_sentence(good, *good["rows"], "S-D/seg")


def test_ablation_sentences_name_no_loss_when_nothing_hurt():
    one_seed = _ablations([-0.73], no_troa=[2.37], no_taa=[1.87])               # 09's quick numbers
    points = sm.ablation_sentences(one_seed)
    assert "largest loss" not in " ".join(points)
    assert points[-1].startswith("No ablation measurably hurt or helped (n = 1, no interval")
    seeds = _ablations([2.0, 2.2, 2.1], no_troa=[1.0, 1.1, 0.9], no_tsn=[2.1, 2.0, 2.2])
    points = sm.ablation_sentences(seeds)
    assert points[-1] == "Removing a part measurably hurt in 1 of 2 ablations (without no_troa)."


def test_trend_needs_a_measurable_change():
    assert "went down" in sm.trend_sentence("loss", [3.0, 3.1, 2.9, 3.0] + [1.0] * 36 + [0.5, 0.6, 0.4, 0.5])
    assert "no measurable change" in sm.trend_sentence("loss", [1.0, 2.0] * 20)
