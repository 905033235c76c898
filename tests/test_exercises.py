"""Course-exercise checkers: a correct answer passes, each typical mistake is named with a hint.

The notebooks' own reference answers (the code between the solution markers of every cell
tagged ``exercise``) are executed here too: they must pass their checker, and the student
version of the same cell must get "not implemented yet" rather than a traceback.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch

from vtagml_core.exercises import (EXERCISES, FALLBACK_NOTE, CheckResult, check_corruption_error,
                                   check_cosine_similarity, check_delta_m, check_discriminator_loss,
                                   check_film_bias, check_fine_tuned_parameters, check_mirror_descent,
                                   check_paired_interval, check_parameter_count, check_tsn, exercise)
from vtagml_core.exercises.harness import RESULT_LINE, as_tensor
from vtagml_core.experiments.stats import t_quantile
from vtagml_core.metrics.multitask import METRIC_DIRECTIONS, PRIMARY_METRICS
from vtagml_core.nbtools.student import EXERCISE_TAG, strip_solutions

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: Which checker each notebook exercise function goes to.
CHECKERS = {"my_cosine_similarity": check_cosine_similarity,
            "my_mirror_descent_update": check_mirror_descent,
            "my_film_bias": check_film_bias, "my_tsn": check_tsn, "my_delta_m": check_delta_m,
            "my_discriminator_loss": check_discriminator_loss,
            "my_paired_interval": check_paired_interval,
            "my_count_parameters": check_parameter_count,
            "my_fine_tuned_parameters": check_fine_tuned_parameters,
            "my_corruption_error": check_corruption_error}


# ---------------------------------------------------------------- answers written for the tests
def cosine(grads):
    norms = grads.norm(dim=1, keepdim=True)
    unit = torch.where(norms > 0, grads / norms.clamp_min(1e-12), torch.zeros_like(grads))
    return unit @ unit.T


def mirror(omega, sim, kappa, sign):
    new = omega * torch.exp(sign * kappa * sim)
    return new / new.sum(dim=1, keepdim=True)


def film(omega, A, W, b):
    L = A.shape[0]
    gamma, beta = (omega @ W.T + b).view(-1, 2, L, L).unbind(dim=1)
    return A * (1 + gamma) + beta


def tsn(a, omega_tilde, gamma_p, beta_p, g, b, eps):
    normed = torch.nn.functional.layer_norm(a, (a.shape[-1],), eps=eps)
    return normed * gamma_p * (1 + g(omega_tilde)) + beta_p + b(omega_tilde)


def delta_m_by_hand(mtl, stl, signed=True, percent=100.0):
    terms = []
    for task in stl:
        metric = PRIMARY_METRICS[task]
        sign = -1.0 if signed and METRIC_DIRECTIONS[metric] else 1.0
        terms.append(sign * (mtl[task][metric] - stl[task][metric]) / stl[task][metric] * percent)
    return sum(terms) / len(terms)


def delta_m_as_tensor(mtl, stl):
    """A correct alternative: a 0-dim tensor, the tasks in another order."""
    tasks = sorted(stl, reverse=True)
    m = torch.tensor([mtl[t][PRIMARY_METRICS[t]] for t in tasks], dtype=torch.float64)
    s = torch.tensor([stl[t][PRIMARY_METRICS[t]] for t in tasks], dtype=torch.float64)
    lower = torch.tensor([METRIC_DIRECTIONS[PRIMARY_METRICS[t]] for t in tasks])
    return (torch.where(lower, -1.0, 1.0) * (m - s) / s).mean() * 100


def bce(logits, label):
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))


def disc_loss(source, target):
    return (bce(source, 0.0) + bce(target, 1.0)) / 2


def disc_loss_pooled(source, target):
    """Wrong when the batches differ in size: one BCE over all patches weighs the larger more."""
    logits = torch.cat([source.flatten(), target.flatten()])
    labels = torch.cat([torch.zeros(source.numel()), torch.ones(target.numel())])
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)


def disc_loss_on_probabilities(source, target):
    """A correct alternative: sigmoid, then the plain BCE."""
    p_s, p_t = torch.sigmoid(source), torch.sigmoid(target)
    return 0.5 * (torch.nn.functional.binary_cross_entropy(p_s, torch.zeros_like(p_s))
                  + torch.nn.functional.binary_cross_entropy(p_t, torch.ones_like(p_t)))


def param_count(module, distinct=True, by_grad=True):
    params = [p for _, p in module.named_parameters(remove_duplicate=distinct)]
    return (sum(p.numel() for p in params),
            sum(p.numel() for p in params if p.requires_grad or not by_grad))


def param_count_by_id(module):
    """A correct alternative: a set of tensor ids, a list for the answer."""
    seen = {id(p): p for m in module.modules() for p in m.parameters(recurse=False)}
    return [sum(p.numel() for p in seen.values()),
            sum(p.numel() for p in seen.values() if p.requires_grad)]


def paired(a, b, quantile=None, ddof=1):
    diffs = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    n = len(diffs)
    q = t_quantile(n) if quantile is None else quantile
    half = q * diffs.std(correction=ddof) / n ** 0.5
    return diffs.mean(), diffs.mean() - half, diffs.mean() + half


def paired_as_tensor(a, b):
    """A correct alternative: one tensor [mean, low, high]."""
    return torch.stack(paired(a, b))


def fine_tuned_by_name(model, labelled, zero):
    """The zero-shot task's own decoder and head by name, and the frozen backbone by requires_grad."""
    return {n for n, p in model.named_parameters() if p.requires_grad and f".{zero}." not in n}


def fine_tuned_by_autograd(model, labelled, zero):
    """A correct alternative: a list of the names one backward pass of the labelled outputs reaches."""
    size = model.backbone.config.img_size
    out = model(torch.zeros(1, 3, size, size))
    model.zero_grad(set_to_none=True)
    sum(out[t].sum() for t in labelled).backward()
    names = [n for n, p in model.named_parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    return names


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def corruption(values, baseline, lower):
    err = (lambda xs: list(xs)) if lower else (lambda xs: [1 - x for x in xs])
    return 100 * sum(err(values)) / sum(err(baseline))


def corruption_as_tensor(values, baseline, lower):
    """A correct alternative: tensors, the error of a fraction as 1 - value."""
    v, b = torch.tensor(values), torch.tensor(baseline)
    if not lower:
        v, b = 1 - v, 1 - b
    return 100 * v.sum() / b.sum()


@pytest.mark.parametrize("checker, answer", [(check_cosine_similarity, cosine),
                                             (check_mirror_descent, mirror),
                                             (check_film_bias, film), (check_tsn, tsn),
                                             (check_delta_m, delta_m_by_hand),
                                             (check_delta_m, delta_m_as_tensor),
                                             (check_discriminator_loss, disc_loss),
                                             (check_discriminator_loss, disc_loss_on_probabilities),
                                             (check_paired_interval, lambda a, b: tuple(map(float, paired(a, b)))),
                                             (check_paired_interval, paired_as_tensor),
                                             (check_parameter_count, param_count),
                                             (check_parameter_count, param_count_by_id),
                                             (check_fine_tuned_parameters, fine_tuned_by_name),
                                             (check_fine_tuned_parameters, fine_tuned_by_autograd),
                                             (check_corruption_error, corruption),
                                             (check_corruption_error, corruption_as_tensor)])
def test_correct_answers_pass(checker, answer):
    result = checker(answer)
    assert isinstance(result, CheckResult) and result.passed, str(result)
    assert str(result).startswith("PASS")


@pytest.mark.parametrize("checker, wrong, expected", [
    (check_cosine_similarity, lambda g: g @ g.T, "raw dot products"),
    (check_cosine_similarity, lambda g: g.T @ g, "output shape"),
    (check_cosine_similarity, lambda g: cosine(g).fill_diagonal_(1.0), "all-zero gradient"),
    (check_mirror_descent, lambda o, s, k, sign: o * torch.exp(sign * k * s), "not normalised"),
    (check_mirror_descent, lambda o, s, k, sign: mirror(o, s, k, -sign), "sign is the wrong way"),
    (check_mirror_descent, lambda o, s, k, sign: mirror(o, s, k, 1.0), "sign is the wrong way"),
    (check_mirror_descent, lambda o, s, k, sign: mirror(o, s, 1.0, sign), "kappa is ignored"),
    (check_mirror_descent, lambda o, s, k, sign: torch.softmax(sign * k * s, dim=1), "previous omega"),
    (check_mirror_descent,
     lambda o, s, k, sign: (o * torch.exp(sign * k * s)) / (o * torch.exp(sign * k * s)).sum(0),
     "columns instead of the rows"),
    (check_film_bias, lambda o, A, W, b: film(o, A, W, b) - A, "Eq. 3 literally"),
    (check_film_bias, lambda o, A, W, b: film(o, A, W, torch.zeros_like(b)), "FiLM layer's bias"),
    (check_tsn, lambda a, w, gp, bp, g, b, eps: tsn(a, w, gp, bp, g, b, eps) - bp, "beta' (the LayerNorm bias) is missing"),
    (check_tsn, lambda a, w, gp, bp, g, b, eps: tsn(a, a, gp, bp, g, b, eps), "applied to a instead of omega~"),
    (check_delta_m, lambda m, s: delta_m_by_hand(m, s, signed=False), "lower-is-better metrics is not flipped"),
    (check_delta_m, lambda m, s: -delta_m_by_hand(m, s), "wrong sign"),
    (check_delta_m, lambda m, s: delta_m_by_hand(m, s, percent=1.0), "a fraction, not a percentage"),
    (check_delta_m, lambda m, s: delta_m_by_hand(m, s) * len(s), "summed the terms"),
    (check_delta_m, lambda m, s: delta_m_by_hand(s, m) * -1, "divided by the multitask value"),
    (check_delta_m, lambda m, s: sum((-1 if METRIC_DIRECTIONS[k] else 1) * (m[t][k] - v) / v * 100
                                     for t in s for k, v in s[t].items()) / sum(len(v) for v in s.values()),
     "every metric"),
    (check_discriminator_loss, lambda s, t: disc_loss(t, s), "labels are swapped"),
    (check_discriminator_loss, lambda s, t: bce(s, 0.0) + bce(t, 1.0), "added, not averaged"),
    (check_discriminator_loss, lambda s, t: bce(t, 0.0), "generator's (adversarial) loss"),
    (check_discriminator_loss, disc_loss_pooled, "all patches of both batches together"),
    (check_discriminator_loss, lambda s, t: disc_loss(torch.sigmoid(s), torch.sigmoid(t)), "sigmoid"),
    (check_paired_interval, lambda a, b: [float(v) for v in paired(b, a)], "wrong way round"),
    (check_paired_interval, lambda a, b: [float(v) for v in paired(a, b, quantile=1.959964)],
     "normal quantile 1.96"),
    (check_paired_interval, lambda a, b: [float(v) for v in paired(a, b, quantile=t_quantile(len(a) + 1))],
     "n degrees of freedom"),
    (check_paired_interval, lambda a, b: [float(v) for v in paired(a, b, ddof=0)], "population standard"),
    (check_parameter_count, lambda m: (len(list(m.parameters())),) * 2, "tensors, not their elements"),
    (check_parameter_count, lambda m: param_count(m, by_grad=False), "frozen parameters are counted as trainable"),
    (check_parameter_count, lambda m: param_count(m, distinct=False), "shared by two layers is counted twice"),
    (check_parameter_count, lambda m: (sum(v.numel() for v in m.state_dict().values()), param_count(m)[1]),
     "state_dict"),
    (check_parameter_count,
     lambda m: tuple(map(sum, zip(*(param_count(sub) for sub in m.modules())))), "counted again at every level"),
    (check_paired_interval,
     lambda a, b: [float(v) for v in paired(a, b, quantile=t_quantile(len(a)) * len(a) ** 0.5)],
     "not the standard error"),
    (check_fine_tuned_parameters, lambda m, lab, z: trainable(m), "zero-shot task's decoder and head are in"),
    (check_fine_tuned_parameters, lambda m, lab, z: {n for n, _ in m.named_parameters() if f".{z}." not in n},
     "frozen backbone is in your set"),
    (check_fine_tuned_parameters, lambda m, lab, z: {n for n in trainable(m) if f"heads.{z}." not in n},
     "left out the zero-shot task's head but kept its decoder"),
    (check_fine_tuned_parameters, lambda m, lab, z: {n for n in trainable(m) if any(f".{t}." in n for t in lab)},
     "only the labelled tasks' decoders and heads"),
    (check_fine_tuned_parameters, lambda m, lab, z: {n for n in trainable(m) if f".{z}." not in n and "image_skip" not in n},
     "your set misses 'decoder.image_skip"),
    (check_fine_tuned_parameters, lambda m, lab, z: len(trainable(m)), "expected a set of parameter names"),
    (check_fine_tuned_parameters, lambda m, lab, z: {"adapter"}, "not parameters of the model"),
    (check_corruption_error, lambda v, b, lower: 100 * sum(v) / sum(b), "higher-is-better metric was used as an error"),
    (check_corruption_error, lambda v, b, lower: 100 * sum(corruption([x], [y], lower) / 100 for x, y in zip(v, b)) / len(v),
     "averaged the per-severity ratios"),
    (check_corruption_error, lambda v, b, lower: corruption(b, v, lower), "wrong way round"),
    (check_corruption_error, lambda v, b, lower: corruption(v, b, lower) / 100, "a fraction, not a percentage"),
])
def test_wrong_answers_are_named_with_a_hint(checker, wrong, expected):
    result = checker(wrong)
    assert not result.passed
    assert expected in result.message, str(result)
    assert result.hint, "every failure must come with a hint"
    assert str(result).startswith("FAIL") and "Hint:" in str(result)


def test_unbiased_variance_and_eps_placement_are_told_apart():
    def unbiased(a, w, gp, bp, g, b, eps):
        mu, var = a.mean(-1, keepdim=True), a.var(-1, keepdim=True)
        return (a - mu) / torch.sqrt(var + eps) * gp * (1 + g(w)) + bp + b(w)

    def eps_outside(a, w, gp, bp, g, b, eps):
        mu, var = a.mean(-1, keepdim=True), a.var(-1, keepdim=True, unbiased=False)
        return (a - mu) / (var.sqrt() + eps) * gp * (1 + g(w)) + bp + b(w)

    assert "unbiased variance" in check_tsn(unbiased).message
    assert "eps is outside" in check_tsn(eps_outside).message


def test_unknown_mistake_reports_where_and_how_much():
    result = check_mirror_descent(lambda o, s, k, sign: mirror(o, s, k, sign) * 0.5 + 0.5 / o.shape[1])
    assert not result.passed
    assert "differs from the reference by up to" in result.message and "index" in result.message


def test_student_errors_are_reported_not_raised():
    def stub(*args):
        raise NotImplementedError("your code here")

    def broken(grads):
        return grads @ torch.ones(3, 3)

    def in_place(omega, sim, kappa, sign):
        omega.mul_(torch.exp(sign * kappa * sim))
        return omega / omega.sum(dim=1, keepdim=True)

    assert check_tsn(stub).message == "not implemented yet"
    assert "raised RuntimeError" in check_cosine_similarity(broken).message
    assert "returned NoneType" in check_film_bias(lambda *a: None).message
    assert "modified its inputs" in check_mirror_descent(in_place).message
    assert "expected a function" in check_mirror_descent(torch.eye(3)).message


def test_number_answers_are_judged_like_tensors():
    def pops(mtl, stl):
        value = delta_m_by_hand(mtl, stl)
        mtl.pop(next(iter(mtl)))
        return value

    result = check_delta_m(lambda m, s: delta_m_by_hand(m, s) + 1.0)
    assert not result.passed and "your value" in result.message and "but expected" in result.message
    assert check_delta_m(lambda m, s: None).message == "returned NoneType, expected a number"
    assert check_delta_m(lambda m, s: "3.2 %").message == "returned str, expected a number"
    assert "modified its inputs" in check_delta_m(pops).message
    assert "expected a torch.Tensor" in check_discriminator_loss(lambda s, t: None).message
    assert check_discriminator_loss(lambda s, t: float(disc_loss(s, t))).passed  # a float is a number
    assert as_tensor(True) is None and as_tensor(2).dtype == torch.float64
    assert check_paired_interval(lambda a, b: None).message == "returned NoneType, expected 3 numbers"
    assert "output shape (1,) but expected (3,)" in check_paired_interval(lambda a, b: [1.0]).message

    def sorts_in_place(a, b):
        a.sort()
        return paired_as_tensor(a, b)

    assert "modified its inputs" in check_paired_interval(sorts_in_place).message


def test_unpaired_interval_is_named():
    """Seeds shared by both methods: an unpaired (Welch) interval is the typical mistake."""
    from vtagml_core.experiments.stats import unpaired_difference

    def welch(a, b):
        iv = unpaired_difference(a, b)
        return iv.mean, iv.low, iv.high

    result = check_paired_interval(welch)
    assert result.status == "failed" and "independent samples" in result.message
    assert "differences a_i - b_i first" in result.hint


def _exercise_cells():
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        for i, cell in enumerate(nb.cells):
            if EXERCISE_TAG in cell.get("metadata", {}).get("tags", []):
                yield pytest.param(cell.source, id=f"{path.stem}-cell{i}")


@pytest.mark.parametrize("source", list(_exercise_cells()))
def test_notebook_reference_answers_pass_and_student_stubs_do_not(source):
    namespace = {"torch": torch}
    exec(compile(source, "<exercise>", "exec"), namespace)
    name = next(n for n in CHECKERS if n in namespace)
    assert CHECKERS[name](namespace[name]).passed
    student = {"torch": torch}
    exec(compile(strip_solutions(source), "<student exercise>", "exec"), student)
    result = CHECKERS[name](student[name])
    assert result.message == "not implemented yet" and result.status == "unsolved"
    assert str(result).startswith("UNSOLVED") and FALLBACK_NOTE in str(result)


# ---------------------------------------------------------------- unsolved: fall back, run on
def _stub(*args):
    raise NotImplementedError("your code here")


@pytest.mark.parametrize("name", list(EXERCISES))
def test_unsolved_exercise_falls_back_to_the_reference_with_a_note(name, capsys):
    ex = EXERCISES[name]
    fn = exercise(name)(_stub)
    case = ex.cases()[0]
    out, ref = fn(*case.args), ex.reference(*case.args)
    if as_tensor(ref) is None:  # an answer that is not numbers (a set of parameter names)
        assert out == ref
    else:
        assert torch.allclose(as_tensor(out), as_tensor(ref))
    fn(*case.args)  # the note is printed once, not on every call
    printed = capsys.readouterr().out
    assert printed.count(FALLBACK_NOTE) == 1 and ex.title in printed
    # the checker judges the student's function, not the fallback: still unsolved
    verdict = ex.checker(fn)
    assert verdict.status == "unsolved" and verdict.exercise == ex.title


def test_fallback_uses_a_written_answer_and_shows_its_bugs(capsys):
    wrong = exercise("mirror_descent")(lambda o, s, k, sign: o * torch.exp(sign * k * s))
    result = check_mirror_descent(wrong)
    assert result.status == "failed" and "not normalised" in result.message and not result.note
    omega, sim = torch.full((2, 2), 0.5), torch.eye(2)
    assert torch.allclose(wrong(omega, sim, 1.0, 1.0), omega * torch.exp(sim))  # theirs, not ours
    assert check_mirror_descent(exercise("mirror_descent")(mirror)).status == "passed"
    broken = exercise("cosine_similarity")(lambda g: g @ torch.ones(3, 3))
    with pytest.raises(RuntimeError):  # a real bug is not hidden behind the reference
        broken(torch.ones(2, 5))
    assert FALLBACK_NOTE not in capsys.readouterr().out
    with pytest.raises(KeyError, match="exercises: cosine_similarity"):
        exercise("film")


def test_result_lines_name_status_and_exercise():
    for result, word in [(check_tsn(tsn), "PASS"), (check_tsn(_stub), "UNSOLVED"),
                         (check_film_bias(lambda o, A, W, b: film(o, A, W, b) - A), "FAIL")]:
        match = RESULT_LINE.match(str(result).splitlines()[0])
        assert match and match.group(1) == word and match.group(2) == result.exercise


def test_corruption_error_known_answers():
    from vtagml_core.metrics.robustness import corruption_error, mean_corruption_error

    # errors 1+2+3 = 6 against 2+4+6 = 12: half the baseline's errors
    assert corruption_error([1, 2, 3], [2, 4, 6], lower_is_better=True) == pytest.approx(50.0)
    # mIoU 0.8, 0.6 -> errors 0.2 + 0.4 = 0.6 against 0.4 + 0.8 = 1.2 (mIoU 0.6, 0.2)
    assert corruption_error([0.8, 0.6], [0.6, 0.2], lower_is_better=False) == pytest.approx(50.0)
    assert mean_corruption_error([50.0, 150.0]) == 100.0
    with pytest.raises(ValueError, match="fractions"):
        corruption_error([49.0], [40.0], lower_is_better=False)
    with pytest.raises(ValueError, match="one value per severity"):
        corruption_error([1.0, 2.0], [1.0], lower_is_better=True)
    with pytest.raises(ValueError, match="no error"):
        corruption_error([0.5], [1.0], lower_is_better=False)


def test_fine_tuned_parameters_leave_out_the_backbone_and_the_zero_shot_parts():
    from vtagml_core.baselines.registry import build_model
    from vtagml_core.experiments.settings.zero_shot import fine_tuned_parameters
    from vtagml_core.train.config import load_kit_config

    model = build_model("vtagml", load_kit_config(preset="smoke", overrides=["model.tasks=S-D-N"]).model)
    changed = fine_tuned_parameters(model, ("seg", "depth"))
    fixed = {n for n, _ in model.named_parameters()} - changed
    assert all(n.startswith("backbone.") or ".normals." in n for n in fixed)
    assert any(n.startswith("decoder.decoders.normals.") for n in fixed)
    assert any(n.startswith("adapter.") for n in changed) and not any(".normals." in n for n in changed)
    model.train()
    fine_tuned_parameters(model, ("seg",))
    assert model.training  # the model's mode is restored after the forward pass in eval mode
    with pytest.raises(ValueError, match="no output for"):
        fine_tuned_parameters(model, ("edges",))
