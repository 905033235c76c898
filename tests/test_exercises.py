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

from vtagml_core.exercises import (EXERCISES, FALLBACK_NOTE, CheckResult, check_cosine_similarity,
                                   check_film_bias, check_mirror_descent, check_tsn, exercise)
from vtagml_core.exercises.harness import RESULT_LINE
from vtagml_core.nbtools.student import EXERCISE_TAG, strip_solutions

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: Which checker each notebook exercise function goes to.
CHECKERS = {"my_cosine_similarity": check_cosine_similarity,
            "my_mirror_descent_update": check_mirror_descent,
            "my_film_bias": check_film_bias, "my_tsn": check_tsn}


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


@pytest.mark.parametrize("checker, answer", [(check_cosine_similarity, cosine),
                                             (check_mirror_descent, mirror),
                                             (check_film_bias, film), (check_tsn, tsn)])
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


def _exercise_cells():
    for path in sorted(NOTEBOOKS.glob("0[0-4]_*.ipynb")):
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
    out = fn(*case.args)
    assert torch.allclose(out, ex.reference(*case.args))
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
