"""Interactive explorers in JupyterLab, static plotly figures headless (issue 5, item 5).

Every explorer in the notebooks is one call::

    interactive_or_static(make_figure, {"task": tasks, "head": range(heads)},
                          interactive=P.interactive)

``make_figure(**choice)`` builds a plotly figure for one choice of the controls.

* In a live kernel with ipywidgets (``interactive=True``), each control becomes a widget
  (a dropdown, or a slider for long numeric ranges) and the figure below it is rebuilt
  whenever a widget moves.
* Headless (papermill, nbval: ``interactive=False``) there is no frontend to talk to the
  widgets, so the function returns one static figure instead: the figures for every option
  of one control (``static_control``, default the first), merged into one plotly figure with
  a plotly slider that switches between them. The other controls stay at their defaults. The
  figure is plain plotly JSON, so it works in the saved notebook, in the runner's HTML report
  and in any browser.

Plotly's ``FigureWidget`` would update in place but needs the ``anywidget`` package; rebuilding
an ordinary figure inside an ``ipywidgets.Output`` works with ipywidgets alone.
"""
from __future__ import annotations

import copy
import numbers
from typing import Any, Callable, Mapping, Sequence

import plotly.graph_objects as go

from .params import widgets_available

#: A headless figure keeps at most this many options of the varied control (evenly spaced),
#: so that the saved notebook and the report stay small.
MAX_STATIC_FIGURES: int = 24
#: Numeric controls with more options than this get a slider instead of a dropdown.
SLIDER_MIN_OPTIONS: int = 8

Options = Sequence[Any] | Mapping[str, Any]


def _labelled(options: Options, name: str) -> list[tuple[str, Any]]:
    """Options as ``(label, value)`` pairs; a mapping is ``label -> value``."""
    pairs = (list(options.items()) if isinstance(options, Mapping)
             else [(str(v), v) for v in options])
    if not pairs:
        raise ValueError(f"control {name!r} has no options: give at least one value")
    return pairs


def _subset(pairs: list[tuple[str, Any]], limit: int) -> list[tuple[str, Any]]:
    if len(pairs) <= limit:
        return pairs
    step = (len(pairs) - 1) / (limit - 1)
    keep = sorted({round(i * step) for i in range(limit)})
    return [pairs[i] for i in keep]


def static_slider_figure(figures: Sequence[go.Figure], labels: Sequence[str],
                         prefix: str = "", active: int = 0) -> go.Figure:
    """Merge figures that share one layout into one figure with a slider choosing which shows.

    The layout (axes, annotations, size) comes from the first figure; each slider step shows
    that figure's traces and its title and hides the others.

    Args:
        figures: one figure per option, all with the same subplot layout.
        labels: slider label of each figure.
        prefix: text before the current label (e.g. ``"task: "``).
        active: index shown first.
    """
    if not figures or len(figures) != len(labels):
        raise ValueError(f"need one label per figure and at least one figure, got "
                         f"{len(figures)} figures and {len(labels)} labels")
    if not 0 <= active < len(figures):
        raise ValueError(f"active must index the figures (0..{len(figures) - 1}), got {active}")
    layout = copy.deepcopy(figures[0].layout)
    merged = go.Figure(layout=layout)
    owners: list[int] = []
    for i, fig in enumerate(figures):
        for trace in fig.data:
            trace = copy.deepcopy(trace)
            trace.visible = i == active
            merged.add_trace(trace)
            owners.append(i)
    steps = []
    for i, (fig, label) in enumerate(zip(figures, labels)):
        title = fig.layout.title.text if fig.layout.title and fig.layout.title.text else ""
        steps.append(dict(method="update", label=str(label),
                          args=[{"visible": [o == i for o in owners]}, {"title.text": title}]))
    merged.update_layout(
        title_text=figures[active].layout.title.text,
        sliders=[dict(active=active, steps=steps, currentvalue=dict(prefix=prefix),
                      pad=dict(t=40))],
    )
    return merged


def _widget_for(name: str, pairs: list[tuple[str, Any]], value: Any):
    import ipywidgets as widgets

    numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for _, v in pairs)
    style = {"description_width": "initial"}
    if numeric and len(pairs) > SLIDER_MIN_OPTIONS:
        return widgets.SelectionSlider(options=pairs, value=value, description=name,
                                       continuous_update=False, style=style)
    return widgets.Dropdown(options=pairs, value=value, description=name, style=style)


def interactive_or_static(
    make_figure: Callable[..., go.Figure],
    controls: Mapping[str, Options],
    interactive: bool,
    static_control: str | None = None,
    defaults: Mapping[str, Any] | None = None,
    static: go.Figure | None = None,
    max_static: int = MAX_STATIC_FIGURES,
):
    """An ipywidgets explorer (``interactive=True``) or one static plotly figure.

    Args:
        make_figure: ``make_figure(**{name: value})`` -> plotly figure.
        controls: control name -> options (a sequence of values, or ``label -> value``).
        interactive: usually ``P.interactive`` from :func:`.params.resolve`.
        static_control: the control the static figure's slider varies (default the first).
        defaults: starting value per control (default: its first option).
        static: a ready-made static figure to return headless instead of building one
            (e.g. :func:`vtagml_core.viz.affinity.affinity_history_figure`).
        max_static: at most this many options go into the static figure.

    Returns:
        The widget box (display it as the cell's last expression) or a ``go.Figure``.
    """
    if not controls:
        raise ValueError("interactive_or_static needs at least one control")
    labelled = {name: _labelled(opts, name) for name, opts in controls.items()}
    start = {name: pairs[0][1] for name, pairs in labelled.items()}
    for name, value in (defaults or {}).items():
        if name not in labelled:
            raise ValueError(f"default for unknown control {name!r}; controls: {list(labelled)}")
        if value not in [v for _, v in labelled[name]]:
            raise ValueError(f"default {value!r} of control {name!r} is not one of its options")
        start[name] = value
    if not interactive:
        if static is not None:
            return static
        vary = static_control or next(iter(labelled))
        if vary not in labelled:
            raise ValueError(f"static_control {vary!r} is not a control; controls: {list(labelled)}")
        pairs = _subset(labelled[vary], max_static)
        figures = [make_figure(**{**start, vary: value}) for _, value in pairs]
        values = [v for _, v in pairs]
        active = values.index(start[vary]) if start[vary] in values else 0
        return static_slider_figure(figures, [label for label, _ in pairs], f"{vary}: ", active)

    import ipywidgets as widgets
    from IPython.display import display

    boxes = {name: _widget_for(name, pairs, start[name]) for name, pairs in labelled.items()}
    out = widgets.Output()

    def redraw(**choice: Any) -> None:
        with out:
            out.clear_output(wait=True)
            display(make_figure(**choice))

    widgets.interactive_output(redraw, boxes)
    return widgets.VBox([widgets.HBox(list(boxes.values())), out])


__all__ = ["MAX_STATIC_FIGURES", "interactive_or_static", "static_slider_figure",
           "widgets_available"]
