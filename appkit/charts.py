"""Plotly figures for the app: threshold curves, training curves, histograms and reliability
diagrams (no Streamlit, no TF)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from segcore.analysis.overlays import PALETTE
from segcore.metrics.calibration import Reliability

__all__ = ["nuclei_histograms", "reliability_figure", "threshold_figure", "training_figure"]

_DICE = PALETTE["false_negative"].hex  # blue
_JACCARD = PALETTE["false_positive"].hex  # vermillion
_BEST = PALETTE["true_positive"].hex  # bluish green
_MARK_LINE = 16
"""Pixels between the label rows of a threshold figure's marks."""


def threshold_figure(
    thresholds: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    *,
    best: float | None = None,
    marks: Mapping[str, float] | None = None,
    title: str = "",
    height: int = 320,
) -> go.Figure:
    """Metric-versus-threshold lines with the best threshold highlighted and others marked.

    Args:
        thresholds: the x values.
        curves: ``{"Dice": [...], "Jaccard": [...]}``, one line each (same length as x).
        best: the threshold to highlight (a dashed green line with its label), or None.
        marks: ``{"A": 0.5, "B": 0.7}``: dotted vertical lines labelled with their value at
            the bottom (the lowest left of its line, the others right of theirs, one row
            higher each, so close marks do not overlap).
        title: the figure title.
        height: pixels.
    """
    colours = {"Dice": _DICE, "Jaccard": _JACCARD}
    fig = go.Figure()
    for name, values in curves.items():
        fig.add_trace(
            go.Scatter(
                x=list(thresholds),
                y=list(values),
                mode="lines",
                name=name,
                line={"color": colours.get(name), "width": 2},
            )
        )
    if best is not None:  # labelled at the top, the marks at the bottom: they never meet
        fig.add_vline(
            x=best,
            line={"color": _BEST, "dash": "dash", "width": 2},
            annotation_text=f"best {best:.2f}",
            annotation_position="top left" if best >= 0.15 else "top right",
        )
    ordered = sorted((marks or {}).items(), key=lambda item: item[1])
    for index, (label, value) in enumerate(ordered):
        # the lowest mark labelled left of its line, the others right of theirs and each a
        # line higher: two close marks (A 0.46, B 0.50) never overlap
        fig.add_vline(
            x=value,
            line={"color": "#888888", "dash": "dot", "width": 1.5},
            annotation_text=f"{label} {value:.2f}",
            annotation_position="bottom left" if index == 0 else "bottom right",
            annotation_yshift=_MARK_LINE * max(0, index - 1),
        )
    fig.update_layout(
        title=title or None,
        height=height,
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        xaxis={"title": "threshold", "range": [0, 1]},
        yaxis={"title": "score", "range": [0, 1.02]},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def training_figure(
    rows: Sequence[Mapping[str, float]], keys: Sequence[str], *, title: str, height: int = 300
) -> go.Figure:
    """Per-epoch lines from ``metrics.csv`` rows, one per key present (e.g. loss, val_loss)."""
    fig = go.Figure()
    epochs = [int(row.get("epoch", i + 1)) for i, row in enumerate(rows)]
    for key in keys:
        values = [row.get(key) for row in rows]
        if all(v is None for v in values):
            continue
        fig.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers", name=key))
    fig.update_layout(
        title=title,
        height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis={"title": "epoch", "dtick": 1 if len(epochs) <= 20 else None},
        legend={"orientation": "h", "y": -0.3},
    )
    return fig


def nuclei_histograms(columns: Mapping[str, Sequence[float]], *, height: int = 300) -> go.Figure:
    """Side-by-side histograms of per-nucleus measurements (e.g. area, circularity).

    Args:
        columns: ``{"Area (µm²)": [...], "Circularity": [...]}``, one panel each.
        height: pixels.
    """
    from plotly.subplots import make_subplots

    names = list(columns)
    fig = make_subplots(rows=1, cols=max(1, len(names)), subplot_titles=names)
    for i, name in enumerate(names, start=1):
        fig.add_trace(
            go.Histogram(x=list(columns[name]), marker={"color": _DICE}, showlegend=False),
            row=1,
            col=i,
        )
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, bargap=0.05)
    fig.update_annotations(font_size=12)  # the panels' titles: three fit half the page
    return fig


def reliability_figure(diagram: Reliability, *, title: str = "", height: int = 360) -> go.Figure:
    """The reliability diagram: the observed fraction of nucleus pixels against the mean
    predicted probability of each bin (left axis), the diagonal of perfect calibration, and the
    pixels per bin as grey bars behind them (right axis, logarithmic).

    Args:
        diagram: per-bin sums (:func:`segcore.metrics.calibration.reliability`, or an
            evaluation's ``calibration``); empty bins are left out.
        title: the figure title.
        height: pixels.
    """
    filled = diagram.counts > 0
    edges = diagram.edges
    centres = (edges[:-1] + edges[1:]) / 2
    share = diagram.counts / max(diagram.n_pixels, 1)
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=centres[filled].tolist(),
            y=diagram.counts[filled].tolist(),
            width=float(edges[1] - edges[0]) * 0.9,
            name="pixels in bin",
            marker={"color": "#bbbbbb"},
            customdata=(100 * share[filled]).tolist(),
            hovertemplate="%{y:,d} pixels (%{customdata:.2f} %)<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="perfectly calibrated",
            line={"color": "#888888", "dash": "dash", "width": 1.5},
            hoverinfo="skip",
            yaxis="y2",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=diagram.confidence[filled].tolist(),
            y=diagram.observed[filled].tolist(),
            mode="lines+markers",
            name="observed nucleus fraction",
            line={"color": _DICE, "width": 2},
            hovertemplate="predicted %{x:.3f}, observed %{y:.3f}<extra></extra>",
            yaxis="y2",
        )
    )
    fig.update_layout(
        title=title or None,
        height=height,
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        xaxis={"title": "mean predicted probability (bin)", "range": [0, 1]},
        yaxis={"title": "pixels", "type": "log", "side": "right", "showgrid": False},
        yaxis2={
            "title": "fraction of true nucleus pixels",
            "range": [0, 1.02],
            "overlaying": "y",
            "side": "left",
        },
        legend={"orientation": "h", "y": -0.25},
        barmode="overlay",
    )
    return fig
