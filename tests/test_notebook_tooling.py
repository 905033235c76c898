"""The notebooks' tooling: parameters, widgets/static switch, lesson helpers, student versions,
and the papermill runner with its report and failure messages (on tiny notebooks)."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import nbformat
import plotly.graph_objects as go
import pytest
import torch
from nbformat import v4

from vtagml_core.notebooks import params as params_mod
from vtagml_core.notebooks.display import matrix_table, md_table, summary
from vtagml_core.notebooks.params import NotebookParameterError, resolve
from vtagml_core.train.config import load_kit_config
from vtagml_core.nbtools.report import write_report
from vtagml_core.nbtools.results import INJECTED_TAG, CellFailure, NotebookResult, RunResult
from vtagml_core.nbtools.runner import (check_notebook, check_parameter_names, discover_notebooks,
                                          exercise_results, run_all)
from vtagml_core.nbtools.student import (STUB, strip_solutions, student_notebook,
                                         write_student_notebooks)
from vtagml_core.notebooks.widgets import interactive_or_static, static_slider_figure

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for name in (params_mod.PRESET_ENV, params_mod.OUTPUT_ENV, params_mod.HEADLESS_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VTAGML_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------- parameters
def test_resolve_reads_the_preset_file_and_applies_overrides(tmp_path):
    P = resolve(preset="smoke", output_dir=str(tmp_path / "out"), interactive=False)
    smoke = load_kit_config(preset="smoke")
    assert (P.size, P.steps, P.batch_size, P.device) == (
        smoke.data.size, smoke.lesson.steps, smoke.data.batch_size, "cpu")
    assert P.output_dir == tmp_path / "out" and P.output_dir.is_dir()
    P2 = resolve(preset="smoke", overrides=["lesson.steps=3", "data.size=96",
                                            "model.backbone.img_size=96"],
                 output_dir=str(tmp_path), interactive=False)
    assert (P2.steps, P2.size, P2.cfg.model.backbone.img_size) == (3, 96, 96)


def test_relative_output_dir_starts_at_the_project_root(monkeypatch, tmp_path):
    assert params_mod.project_root() == ROOT  # a checkout: the folder with pyproject.toml
    monkeypatch.setattr(params_mod, "project_root", lambda: tmp_path)
    P = resolve(preset="smoke", output_dir="runs/nb", interactive=False)
    assert P.output_dir == tmp_path / "runs" / "nb" and P.output_dir.is_dir()


@pytest.mark.parametrize("kwargs, needle", [
    ({"preset": "fast"}, "'smoke'"),
    ({"preset": 3}, "valid presets"),
    ({"overrides": "train.lr=0.1"}, "list of 'key.sub=value' strings"),
    ({"overrides": ["train.lr"]}, "list of 'key.sub=value' strings"),
    ({"overrides": ["train.learning_rate=0.1"]}, "unknown key 'learning_rate'"),
    ({"overrides": ["data.size=100"]}, "data.size (100) differs"),
    ({"seed": True}, "'seed' must be an integer"),
    ({"steps": 10}, "sizes and budgets are overrides now"),
    ({"device": "gpu"}, "'auto', 'cpu', 'cuda'"),
    ({"interactive": "yes"}, "'auto', True, False"),
    ({"output_dir": None}, "'output_dir' must be a folder path"),
    ({"batch": 4}, "valid parameters: preset, overrides, device, seed, output_dir"),
])
def test_bad_parameters_stop_with_the_valid_values(kwargs, needle, tmp_path):
    with pytest.raises(NotebookParameterError) as info:
        resolve(**{"output_dir": str(tmp_path), **kwargs})
    assert needle in str(info.value)


def test_every_preset_is_listed_in_the_unknown_preset_error(tmp_path):
    with pytest.raises(NotebookParameterError) as info:
        resolve(preset="huge", output_dir=str(tmp_path))
    for name in ("smoke", "quick", "paper"):
        assert repr(name) in str(info.value)


def test_environment_overrides_win(monkeypatch, tmp_path):
    monkeypatch.setenv(params_mod.PRESET_ENV, "smoke")
    monkeypatch.setenv(params_mod.OUTPUT_ENV, str(tmp_path / "env-out"))
    monkeypatch.setenv(params_mod.HEADLESS_ENV, "1")
    P = resolve(preset="paper", output_dir="ignored", interactive=True)
    assert P.preset == "smoke" and P.output_dir == tmp_path / "env-out"
    assert P.interactive is False and set(P.overridden) == {"preset", "output_dir"}
    monkeypatch.setenv(params_mod.PRESET_ENV, "bogus")
    with pytest.raises(NotebookParameterError, match=r"\$VTAGML_NB_PRESET"):
        resolve(output_dir=str(tmp_path))


def test_cache_dir_is_exported_for_the_library(monkeypatch, tmp_path):
    resolve(preset="smoke", output_dir=str(tmp_path), cache_dir=str(tmp_path / "c"), interactive=False)
    import os

    assert os.environ["VTAGML_CACHE"] == str(tmp_path / "c")


def test_kit_config_of_the_smoke_preset_is_valid(tmp_path):
    P = resolve(preset="smoke", output_dir=str(tmp_path), interactive=False)
    cfg = P.kit_config()
    assert cfg.data.size == cfg.model.backbone.img_size == P.size
    assert cfg.lesson.steps == P.steps and cfg.data.train_count == P.train_count
    assert P.model_config("S-D").tasks == "S-D"


def test_paper_preset_is_the_papers_scale(tmp_path):
    P = resolve(preset="paper", device="cpu", output_dir=str(tmp_path), interactive=False)
    cfg = P.kit_config()
    assert (P.size, cfg.model.backbone.name) == (256, "swinv2_base_window8_256")
    assert cfg.model.tasks == "S-D-N-E" and cfg.data.size == 256


def test_comparison_seeds_give_a_spread_where_it_is_affordable():
    """Notebook 10 shows a seed spread in the smoke (seconds) and paper (GPU) presets; the quick
    preset trains one seed so that its comparison reuses notebook 05's runs on a CPU."""
    from vtagml_core.experiments.settings.context import load_settings_config

    seeds = {name: load_settings_config(preset=name).compare_seeds for name in ("smoke", "quick", "paper")}
    assert seeds["smoke"] >= 2 and seeds["paper"] >= 3 and seeds["quick"] == 1


# ------------------------------------------------------------------------------- widgets
def _heatmap(task="a", head=0):
    fig = go.Figure(go.Heatmap(z=[[head, 1], [2, 3]], name=f"{task}-{head}"))
    return fig.update_layout(title=f"{task} head {head}")


def test_static_figure_has_one_slider_step_per_option():
    fig = interactive_or_static(_heatmap, {"task": ["a", "b", "c"], "head": [0, 1]}, interactive=False,
                                defaults={"task": "b"})
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["a", "b", "c"]
    assert [t.name for t in fig.data] == ["a-0", "b-0", "c-0"]
    assert [t.visible for t in fig.data] == [False, True, False]
    assert steps[2].args[0]["visible"] == [False, False, True]
    assert steps[2].args[1]["title.text"] == "c head 0"


def test_static_figure_thins_long_controls_and_uses_a_given_figure():
    fig = interactive_or_static(lambda step: _heatmap(str(step)), {"step": list(range(100))},
                                interactive=False, max_static=5)
    assert len(fig.data) == 5 and fig.layout.sliders[0].steps[-1].label == "99"
    ready = go.Figure()
    assert interactive_or_static(_heatmap, {"task": ["a"]}, interactive=False, static=ready) is ready
    with pytest.raises(ValueError, match="not one of its options"):
        interactive_or_static(_heatmap, {"task": ["a"]}, interactive=False, defaults={"task": "z"})
    with pytest.raises(ValueError, match="one label per figure"):
        static_slider_figure([_heatmap()], [])


def test_interactive_explorer_redraws_when_a_control_moves():
    pytest.importorskip("ipywidgets")
    calls = []

    def make(task, head):
        calls.append((task, head))
        return _heatmap(task, head)

    box = interactive_or_static(make, {"task": ["a", "b"], "head": list(range(12))}, interactive=True)
    dropdown, slider = box.children[0].children
    assert type(slider).__name__ == "SelectionSlider" and type(dropdown).__name__ == "Dropdown"
    assert calls[-1] == ("a", 0)
    dropdown.value = "b"
    slider.value = 7
    assert calls[-1] == ("b", 7)


# ------------------------------------------------------------------------------- display
def test_markdown_tables():
    text = md_table([{"task": "seg", "mIoU": 0.51234, "n": 1200}], caption="synthetic/indoor val")
    assert text.splitlines()[0] == "*synthetic/indoor val*"
    assert "|---|---:|---:|" in text and "| seg | 0.5123 | 1,200 |" in text
    assert "| t | 0.5 | 0.5 |" in matrix_table(torch.full((1, 2), 0.5), ["t"], ["a", "b"])
    with pytest.raises(ValueError, match="missing"):
        md_table([{"a": 1}], ["b"])
    assert summary(["x"]).endswith("- x")


# ------------------------------------------------------------------------------- lesson helpers
def test_troa_toy_and_replay():
    from vtagml_core.model.troa import gradient_cosine_similarity
    from vtagml_core.notebooks.troa_lab import (TOY_ANGLES_DEG, replay_mirror_descent, self_affinity,
                                                toy_losses, unrolled_affinity)

    theta = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    grads = torch.stack([torch.autograd.grad(l, theta, retain_graph=True)[0] for l in toy_losses(theta)])
    sim = gradient_cosine_similarity(grads)
    assert math.isclose(float(sim[0, 1]), math.cos(math.radians(TOY_ANGLES_DEG[1])), abs_tol=1e-6)
    sims = sim.double().expand(5, 4, 4)
    plus, minus = replay_mirror_descent(sims, 1.0, 1.0), replay_mirror_descent(sims, 1.0, -1.0)
    assert plus.shape == (6, 4, 4)
    assert torch.allclose(plus[-1], unrolled_affinity(sims, 1.0, 1.0), atol=1e-9)
    up, down = self_affinity(plus), self_affinity(minus)
    assert (up[1:] > up[:-1]).all() and (down[1:] < down[:-1]).all()
    assert math.isclose(float(up[0]), 0.25) and float(down[-1]) < 0.25 < float(up[-1])
    with pytest.raises(ValueError, match="NaN"):
        replay_mirror_descent(torch.full((1, 4, 4), float("nan")))


def test_plain_attention_is_recovered_from_taa():
    from vtagml_core.notebooks.taa_lab import plain_from_adapted

    g = torch.Generator().manual_seed(0)
    logits, bias = torch.randn(5, 9, generator=g), torch.randn(5, 9, generator=g)
    adapted = torch.softmax(logits + bias, dim=-1)
    assert torch.allclose(plain_from_adapted(adapted, bias), torch.softmax(logits, dim=-1), atol=1e-6)


def test_tsn_starts_as_layernorm_and_balances_scales():
    from vtagml_core.notebooks.tsn_lab import layernorm_gap, scale_experiment

    assert layernorm_gap() < 1e-5
    result = scale_experiment()
    assert result.errors["TSN"].shape == result.errors["LayerNorm"].shape
    assert float(result.final["TSN"][0]) < float(result.final["LayerNorm"][0])
    with pytest.raises(ValueError, match="two positive"):
        scale_experiment(target_scales=(1.0,))


# ------------------------------------------------------------------------------- student version
def test_strip_solutions_keeps_indentation_and_the_rest():
    source = "def f(x):\n    '''doc'''\n    # BEGIN SOLUTION\n    y = x + 1\n    return y\n    # END SOLUTION\n"
    assert strip_solutions(source) == f"def f(x):\n    '''doc'''\n    {STUB}"
    for bad, needle in [("# END SOLUTION", "without a preceding"), ("# BEGIN SOLUTION\nx", "never closed"),
                        ("x = 1", "no '# BEGIN SOLUTION'"),
                        ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", "inside another")]:
        with pytest.raises(ValueError, match=needle):
            strip_solutions(bad)


def test_student_notebook_refuses_untagged_answers():
    nb = v4.new_notebook(cells=[v4.new_markdown_cell("# T"), v4.new_code_cell("# BEGIN SOLUTION\n1\n# END SOLUTION")])
    with pytest.raises(ValueError, match="not tagged 'exercise'"):
        student_notebook(nb, "t.ipynb")


def test_student_command_writes_answerless_notebooks(tmp_path):
    res = subprocess.run([sys.executable, "-m", "vtagml_core", "notebooks", "student", "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    written = sorted(tmp_path.glob("*.ipynb"))
    assert [p.name for p in written] == [p.name for p in discover_notebooks(ROOT / "notebooks")]
    exercises = 0
    for path in written:
        nb = nbformat.read(str(path), as_version=4)
        text = "\n".join(c.source for c in nb.cells)
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
        assert all(c.outputs == [] for c in nb.cells if c.cell_type == "code")
        for cell in nb.cells:
            if "exercise" in cell.metadata.get("tags", []):
                exercises += 1
                assert STUB in cell.source
                compile(cell.source, path.name, "exec")
    assert exercises >= 4  # notebooks 02-04: similarity, mirror descent, FiLM bias, TSN


def test_student_copies_already_there_are_kept_unless_forced(tmp_path):
    source = [ROOT / "notebooks" / "02_troa.ipynb", ROOT / "notebooks" / "03_taa.ipynb"]
    assert len(write_student_notebooks(source, tmp_path)) == 2
    work = tmp_path / "02_troa.ipynb"
    work.write_text(work.read_text().replace("your code here", "a student's answer"))
    assert write_student_notebooks(source, tmp_path) == []  # nothing replaced
    assert "a student's answer" in work.read_text()
    assert write_student_notebooks(source, tmp_path, overwrite=True) == [work, tmp_path / "03_taa.ipynb"]
    assert "a student's answer" not in work.read_text()


# ------------------------------------------------------------------------------- runner
PARAMS_CELL = 'preset = "quick"\noverrides = []\nseed = 0'
RESOLVE_CELL = ("from vtagml_core.notebooks.params import resolve\n"
                "P = resolve(preset=preset, overrides=overrides, seed=seed, output_dir=output_dir)")


def _tiny_notebook(path: Path, body: list, params: str = PARAMS_CELL + '\noutput_dir = "x"') -> Path:
    cells = [v4.new_markdown_cell("# tiny"), v4.new_code_cell(params)]
    cells[1].metadata["tags"] = ["parameters"]
    cells += body
    nbformat.write(v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3",
                   "display_name": "Python 3", "language": "python"}}), str(path))
    return path


def _report_cell(source: str):
    cell = v4.new_code_cell(source)
    cell.metadata["tags"] = ["report"]
    return cell


def test_discovery_order_filters_and_checks(tmp_path):
    for name in ("01_b.ipynb", "00_a.ipynb", "notes.ipynb", "10_c.ipynb"):
        _tiny_notebook(tmp_path / name, [])
    assert [p.name for p in discover_notebooks(tmp_path)] == ["00_a.ipynb", "01_b.ipynb", "10_c.ipynb"]
    assert [p.name for p in discover_notebooks(tmp_path, ["10", "00_a"])] == ["00_a.ipynb", "10_c.ipynb"]
    with pytest.raises(FileNotFoundError, match="no notebook matches"):
        discover_notebooks(tmp_path, ["07"])
    bad = tmp_path / "02_bad.ipynb"
    nbformat.write(v4.new_notebook(cells=[v4.new_code_cell("x = 1")]), str(bad))
    with pytest.raises(ValueError, match="0 cells tagged 'parameters'"):
        check_notebook(bad)
    with pytest.raises(ValueError, match="valid parameters: preset"):
        check_parameter_names({"stepz": 3})


def _printed_cell(source: str, text: str, tags: tuple[str, ...] = ()):
    cell = v4.new_code_cell(source)
    cell.metadata["tags"] = list(tags)
    cell.outputs = [v4.new_output("stream", name="stdout", text=text)]
    return cell


def _executed_exercise_notebook():
    """What an executed notebook with three checks looks like (papermill's injected cell too)."""
    return v4.new_notebook(cells=[
        v4.new_markdown_cell("# t"),
        _printed_cell("x = 1", "", ("parameters",)),
        _printed_cell("output_dir = 'x'", "", (INJECTED_TAG,)),
        _printed_cell("print(check_cosine_similarity(my_cosine_similarity))",
                      "PASS: gradient cosine similarity: matches the reference on 4 random cases\n"),
        _printed_cell("print(check_film_bias(my_film_bias))",
                      "FAIL: FiLM bias A'(omega_t): gamma and beta are swapped (on T=1)\nHint: x\n"),
        _printed_cell("print('FAIL: not a check: ignored')", "FAIL: not a check: ignored\n"),
        _printed_cell("print(check_tsn(my_tsn))",
                      "UNSOLVED: task-scaled normalization: not implemented yet\nHint: h\nNote: n\n"),
    ])


def test_exercise_checks_are_read_back_from_an_executed_notebook():
    found = exercise_results(_executed_exercise_notebook(), "04_t.ipynb")
    assert [(e.cell_index, e.exercise, e.status) for e in found] == [
        (2, "gradient cosine similarity", "passed"), (3, "FiLM bias A'(omega_t)", "failed"),
        (5, "task-scaled normalization", "unsolved")]
    assert found[1].message == "gamma and beta are swapped (on T=1)"


def test_a_failed_exercise_is_not_ok_and_the_report_lists_every_check(tmp_path):
    nb = _executed_exercise_notebook()
    executed = tmp_path / "executed" / "04_t.ipynb"
    executed.parent.mkdir()
    nbformat.write(nb, str(executed))
    checks = exercise_results(nb, "04_t.ipynb")
    unsolved = NotebookResult("05_u.ipynb", executed, 1.0, None,
                              [dataclasses.replace(checks[2], notebook="05_u.ipynb")])
    failed = NotebookResult("04_t.ipynb", executed, 2.0, None, checks)
    crashed = NotebookResult("06_c.ipynb", executed, 0.5, CellFailure("06_c.ipynb", 3, "1 / 0",
                                                                      "ZeroDivisionError", "x"))
    assert unsolved.ok and unsolved.status == "ok"  # a student notebook that ran through
    assert not failed.ok and failed.status == "EXERCISE FAILED"
    assert failed.exercise_summary() == "1 passed, 1 failed, 1 unsolved"
    assert crashed.status == "FAILED" and crashed.exercise_summary() == "-"
    run = RunResult("smoke", tmp_path, {"output_dir": str(tmp_path)}, [unsolved, failed])
    assert not run.ok and [e.exercise for e in run.failed_exercises] == ["FiLM bias A'(omega_t)"]
    write_report(run)
    report = (tmp_path / "report.md").read_text()
    assert "| 05_u.ipynb | ok | 1 unsolved | 1.0 |" in report
    assert "| 04_t.ipynb | EXERCISE FAILED | 1 passed, 1 failed, 1 unsolved | 2.0 |" in report
    assert ("- 04_t.ipynb cell 3 exercise 'FiLM bias A'(omega_t)' failed: gamma and beta are "
            "swapped (on T=1)") in report
    assert "| 04_t.ipynb | 2 | gradient cosine similarity | passed |" in report
    assert "| 05_u.ipynb | 5 | task-scaled normalization | unsolved | not implemented yet |" in report


@pytest.mark.slow
def test_runner_report_and_failures(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _tiny_notebook(nbs / "00_ok.ipynb", [
        v4.new_code_cell(RESOLVE_CELL),
        _report_cell("from IPython.display import Markdown\nMarkdown('| a | b |\\n|---|---:|\\n| x | 1 |')"),
        _report_cell("import plotly.graph_objects as go\n"
                     "go.Figure(go.Bar(y=[1, 2])).update_layout(title='bars')"),
        _report_cell("print('steps', P.steps)"),
    ])
    _tiny_notebook(nbs / "01_fails.ipynb", [v4.new_code_cell("x = 1"),
                                             v4.new_code_cell("# NBVAL_CHECK_OUTPUT\n1 / 0")])
    _tiny_notebook(nbs / "02_student.ipynb", [
        v4.new_code_cell("import torch\nfrom vtagml_core.exercises import exercise, check_cosine_similarity, "
                         "check_mirror_descent\n\n@exercise('cosine_similarity')\ndef my_cos(g):\n"
                         "    raise NotImplementedError('your code here')\n\n"
                         "@exercise('mirror_descent')\ndef my_md(o, s, k, sign):\n"
                         "    return o * torch.exp(sign * k * s)"),
        v4.new_code_cell("print(check_cosine_similarity(my_cos))"),
        v4.new_code_cell("print(check_mirror_descent(my_md))"),
        v4.new_code_cell("print('later cell:', my_cos(torch.eye(3)).shape)"),
    ])
    run = run_all(nbs, tmp_path / "out", preset="smoke", parameters={"overrides": ["lesson.steps=2"]},
                  log=lambda m: None)
    assert not run.ok and [r.ok for r in run.results] == [True, False, False]
    student = run.results[2]
    assert student.failure is None and student.status == "EXERCISE FAILED"  # ran to the end
    assert [(e.cell_index, e.status) for e in student.exercises] == [(3, "unsolved"), (4, "failed")]
    later = nbformat.read(str(student.executed), as_version=4).cells[-1].outputs
    assert "using the reference solution: your answer is missing" in later[0].text
    assert "later cell: torch.Size([3, 3])" in later[-1].text
    timings = json.loads((tmp_path / "out" / "timings.json").read_text())
    assert timings[2]["status"] == "EXERCISE FAILED" and timings[2]["exercises"][1]["status"] == "failed"
    failure = run.failures[0]
    assert (failure.notebook, failure.cell_index, failure.first_line, failure.ename) == \
        ("01_fails.ipynb", 3, "1 / 0", "ZeroDivisionError")
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| x | 1 |" in report and "steps 2" in report
    assert "[figure: bars](figures/00_ok_cell4_1.html)" in report
    assert (tmp_path / "out" / "figures" / "00_ok_cell4_1.html").is_file()
    if _static_images_possible():  # report.md shows the figure itself, not only a link to it
        assert "![bars](figures/00_ok_cell4_1.png)" in report
        assert (tmp_path / "out" / "figures" / "00_ok_cell4_1.png").read_bytes().startswith(PNG_MAGIC)
    assert "01_fails.ipynb cell 3 (`1 / 0`): ZeroDivisionError" in report
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<table>" in html and "plotly.min.js" in html and "ZeroDivisionError" in html
    assert (tmp_path / "out" / "executed" / "00_ok.ipynb").is_file()


@pytest.mark.slow
def test_cli_wrong_parameter_type_fails_in_the_first_cell(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _tiny_notebook(nbs / "00_params.ipynb", [v4.new_code_cell(RESOLVE_CELL), v4.new_code_cell("print('after')")])
    res = subprocess.run([sys.executable, "-m", "vtagml_core", "notebooks", "run", "--preset", "smoke",
                          "--notebooks", str(nbs), "--out", str(tmp_path / "out"), "--param", "seed=ten"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 1
    assert "FAILED: 00_params.ipynb cell 2 (`from vtagml_core.notebooks.params import resolve`)" in res.stderr
    assert "NotebookParameterError" in res.stderr and "'seed' must be an integer" in res.stderr
    res = subprocess.run([sys.executable, "-m", "vtagml_core", "notebooks", "run", "--notebooks", str(nbs),
                          "--out", str(tmp_path / "out2"), "--param", "batch=4"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 2 and "valid parameters" in res.stderr


def test_cli_lists_the_notebooks():
    res = subprocess.run([sys.executable, "-m", "vtagml_core", "notebooks", "list"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    for stem in ("00_setup_and_benchmark", "01_frozen_backbone", "02_troa", "03_taa", "04_tsn"):
        assert stem in res.stdout


# ------------------------------------------------------------------------------- static figures
#: The first bytes of every PNG file.
PNG_MAGIC = b"\x89PNG"


def _static_images_possible() -> bool:
    """kaleido and a Chromium are here (``make test`` installs both; elsewhere these skip)."""
    from vtagml_core.viz.static import ensure_browser_path

    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return ensure_browser_path() is not None


def test_static_renderer_puts_an_image_next_to_the_interactive_figure():
    import base64

    import plotly.io as pio

    from vtagml_core.viz.static import PLOTLY_MIME, RENDERER_NAME, StaticAndInteractiveRenderer, use_static_renderer

    if not _static_images_possible():
        pytest.skip("kaleido or Chromium missing: `make test` installs both")
    bundle = StaticAndInteractiveRenderer().to_mimebundle(go.Figure(go.Bar(y=[1, 2])).to_dict())
    assert bundle[PLOTLY_MIME]["data"][0]["type"] == "bar"
    assert base64.b64decode(bundle["image/png"]).startswith(PNG_MAGIC)
    previous = pio.renderers.default
    try:
        assert use_static_renderer() == RENDERER_NAME and pio.renderers.default == RENDERER_NAME
        shown = go.Figure(go.Bar(y=[3]))._repr_mimebundle_()
        assert PLOTLY_MIME in shown and "image/png" in shown
    finally:
        pio.renderers.default = previous


@pytest.mark.slow
def test_nbconvert_html_of_an_executed_notebook_shows_the_figure(tmp_path):
    """Executed headless (papermill, as the runner and a plain papermill call do), a plotly
    figure's output carries a PNG, so nbconvert's HTML (and GitHub) show an <img> for it."""
    import json

    papermill = pytest.importorskip("papermill")
    if not _static_images_possible():
        pytest.skip("kaleido or Chromium missing: `make test` installs both")
    nb = tmp_path / "00_figure.ipynb"
    _tiny_notebook(nb, [v4.new_code_cell("from vtagml_core.viz.static import use_static_renderer\n"
                                         "use_static_renderer()"),
                        v4.new_code_cell("import plotly.graph_objects as go\n"
                                         "go.Figure(go.Bar(y=[1, 2])).update_layout(title='bars')")])
    executed = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(nb), str(executed), kernel_name="python3", cwd=str(tmp_path),
                               progress_bar=False)
    outputs = [o for c in json.loads(executed.read_text())["cells"] for o in c.get("outputs", [])]
    data = next(o["data"] for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {}))
    assert "image/png" in data
    res = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", str(executed)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    import re

    page = (tmp_path / "executed.html").read_text()
    assert re.search(r'<img [^>]*src="data:image/png;base64,', page), "nbconvert shows no image"


def test_report_ends_with_the_claims_checklist(tmp_path):
    import json

    from vtagml_core.experiments.seeds import summarize
    from vtagml_core.nbtools.report import write_report
    from vtagml_core.nbtools.results import RunResult

    artifacts = tmp_path / "artifacts"
    results = artifacts / "settings" / "setting_results"
    results.mkdir(parents=True)
    col = {"key": "S-D/delta_m", "label": "S-D dm", "metric": "delta_m", "group": "S-D", "task": "",
           "lower_is_better": False, "zero_shot": False}
    rows = [{"label": label, "method": method, "kind": "method", "note": "", "cells": {col["key"]: summarize(v)}}
            for label, method, v in (("VTAGML", "vtagml", [5.0, 5.2, 5.1]), ("vanilla", "vanilla_mtl", [1.0, 1.1, 0.9]))]
    (results / "mtl.json").write_text(json.dumps({"setting": "mtl", "columns": [col], "rows": rows}))
    md, _ = write_report(RunResult("smoke", tmp_path, {"output_dir": str(artifacts)}))
    text = md.read_text()
    assert "## The paper's claims" in text and "| (a) |" in text and "| (f) |" in text
    assert "S-D dm: VTAGML +5.10 vs vanilla +1.00" in text and "VTAGML better" in text
    md, _ = write_report(RunResult("smoke", tmp_path / "none", {"output_dir": str(tmp_path / "empty")}))
    assert "The paper's claims" not in md.read_text()
