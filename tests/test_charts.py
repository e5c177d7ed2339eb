"""appkit.charts: the plotly figures the pages show (no Streamlit needed)."""

from __future__ import annotations

import numpy as np

from appkit import charts


def test_threshold_figure_lines_best_and_marks():
    x = np.linspace(0, 1, 101)
    fig = charts.threshold_figure(
        x, {"Dice": x * (1 - x), "Jaccard": x * (1 - x) / 2}, best=0.5, marks={"A": 0.3}
    )
    assert [trace.name for trace in fig.data] == ["Dice", "Jaccard"]
    np.testing.assert_allclose(fig.data[0].y, x * (1 - x))
    lines = [shape for shape in fig.layout.shapes if shape.type == "line"]
    assert sorted(round(line.x0, 2) for line in lines) == [0.3, 0.5]
    texts = sorted(annotation.text for annotation in fig.layout.annotations)
    assert texts == ["A 0.30", "best 0.50"]


def test_training_figure_skips_missing_keys():
    rows = [{"epoch": 1, "loss": 0.9}, {"epoch": 2, "loss": 0.5, "val_loss": 0.7}]
    fig = charts.training_figure(rows, ["loss", "val_loss", "absent"], title="Loss")
    assert [trace.name for trace in fig.data] == ["loss", "val_loss"]
    assert list(fig.data[0].x) == [1, 2] and list(fig.data[1].y) == [None, 0.7]
