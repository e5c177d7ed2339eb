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


def test_threshold_figure_labels_of_close_marks_do_not_overlap():
    """A and B a few hundredths apart: the lower one labelled left of its line, the higher
    right of its own; the best threshold's label at the top, away from both."""
    x = np.linspace(0, 1, 101)
    fig = charts.threshold_figure(x, {"Dice": x}, best=0.67, marks={"B": 0.50, "A": 0.46})
    where = {a.text: (a.xanchor, a.yanchor, a.y) for a in fig.layout.annotations}
    assert where["A 0.46"][0] == "right" and where["B 0.50"][0] == "left"  # left / right of x
    assert where["A 0.46"][1] == where["B 0.50"][1] == "bottom"
    assert where["best 0.67"][2] == 1  # top of the plot
    assert where["A 0.46"][2] == where["B 0.50"][2] == 0  # bottom
