"""The demo's plotly figures made to fit its layout: the affinity heatmap and history in a
half-width column, and the blank figure a view shows when it has nothing to plot.

The figures themselves come from :mod:`vtagml_core.viz.affinity`; here only their layout changes
(width, title lines, label breaks, slider room), so the notebooks and the demo draw the same data.
"""
from __future__ import annotations

import plotly.graph_objects as go

#: Heatmap cell text: the affinity with three decimals.
AFFINITY_TEXT: str = "%{z:.3f}"
#: Affinity figures: height (px), top margin (room for a two-line title), and below the
#: history's axis: the room for the two-line task names and the axis title, then the slider.
AFFINITY_HEIGHT_PX: int = 500
HISTORY_HEIGHT_PX: int = 640
TITLE_MARGIN_PX: int = 90
AXIS_ROOM_PX: int = 90
SLIDER_ROOM_PX: int = 110

def fit_affinity_layout(fig: go.Figure, title: str, subtitle: str, slider: bool = False) -> None:
    """Make an affinity figure fit the app's half-width plot without overlaps.

    The library figure has a fixed 520 px width and a one-line title (cut off in a narrow
    column) and its step slider sits where the task names are. Here: the width follows the
    column, the title is two short lines, task names break onto two lines (no rotated labels
    of unknown height), cells print 3 decimals, and the slider starts
    :data:`AXIS_ROOM_PX` below the axis, inside a bottom margin that holds it.
    """
    fig.update_traces(texttemplate=AFFINITY_TEXT, selector=dict(type="heatmap"))
    for axis in (fig.layout.xaxis, fig.layout.yaxis):
        names = list(fig.data[0].x if axis is fig.layout.xaxis else fig.data[0].y)
        axis.update(tickmode="array", tickvals=names, tickangle=0, automargin=True,
                    ticktext=[name.replace(" ", "<br>") for name in names])
    title_text = f"{title}<br><sup>{subtitle}</sup>"
    bottom = AXIS_ROOM_PX + (SLIDER_ROOM_PX if slider else 0)
    fig.update_layout(title=dict(text=title_text, x=0.5, xanchor="center"), autosize=True,
                      width=None, height=HISTORY_HEIGHT_PX if slider else AFFINITY_HEIGHT_PX,
                      margin=dict(t=TITLE_MARGIN_PX, b=bottom))
    if slider:
        fig.layout.sliders[0].update(y=0, yanchor="top", pad=dict(t=AXIS_ROOM_PX))
        for frame in fig.frames:  # the frames' titles replace the layout's while animating
            step = frame.name
            frame.layout.title = dict(text=f"{title}<br><sup>{subtitle}, step {step}</sup>",
                                      x=0.5, xanchor="center")


def blank_figure(message: str) -> go.Figure:
    """An empty plotly figure showing ``message`` (for views with nothing to plot)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(xaxis_visible=False, yaxis_visible=False, height=200)
    return fig


__all__ = ["blank_figure", "fit_affinity_layout"]
