"""sertk.evaluate.report and plots helpers: p-value and percentage-point formatting, bold cells, banners,
recall intervals in the comparison's class order, row-normalised confusions, grouped recall bars."""

from types import SimpleNamespace

import numpy as np
import pytest

from sertk.evaluate.plots import recall_bars_figure, row_normalised_percent
from sertk.evaluate.report import Table, _pp, _recall_interval, format_p, render_html, table_markdown


def test_confusion_rows_are_percent_of_the_true_class_and_empty_rows_stay_zero():
    # Row neu: 3 right, 1 as ang -> 75 %, 25 %; row ang has no utterances -> 0 %, not NaN.
    np.testing.assert_allclose(row_normalised_percent(np.array([[3, 1], [0, 0]])), [[75, 25], [0, 0]])


def test_p_values_below_a_thousandth_only_are_shown_as_bound():
    assert (format_p(0.001), format_p(0.000999), format_p(0.0456), format_p(None)) == (
        "0.001",
        "<0.001",
        "0.046",
        "—",
    )


def test_percentage_point_differences_carry_their_sign():
    assert (_pp(0.012), _pp(-0.005), _pp(0.0)) == ("+1.2", "-0.5", "+0.0")


def test_bold_rows_leave_empty_cells_empty():
    table = Table("t", ["system", "UA", "paper"], [["a", "61.7", ""], ["b", "60.0", "58.1"]], bold={0})
    assert table_markdown(table)[2:] == ["| **a** | **61.7** |  |", "| b | 60.0 | 58.1 |"]


def test_an_unknown_banner_kind_is_refused():
    with pytest.raises(ValueError, match="unknown banner kind 'loud'"):
        render_html("t", [("loud", "x")], [], [], [])


def test_recall_interval_follows_the_comparisons_class_order():
    # The system scored (ang, neu); the comparison lists neu, ang, sad: columns swap, sad (absent) is NaN.
    system = SimpleNamespace(interval={"recall": np.array([[0.1, 0.2], [0.3, 0.4]])}, classes=["ang", "neu"])
    np.testing.assert_allclose(
        _recall_interval(system, ["neu", "ang", "sad"]), [[0.2, 0.1, np.nan], [0.4, 0.3, np.nan]]
    )


def test_recall_bars_of_two_systems_sit_either_side_of_the_class_tick():
    fig = recall_bars_figure([("a", [0.5, 1.0], None), ("b", [0.2, 0.4], None)], ["neu", "ang"], "t")
    # Width 0.8 / 2 = 0.4 each: a centred at tick - 0.2, b at tick + 0.2.
    centres = [p.get_x() + p.get_width() / 2 for p in fig.axes[0].patches]
    assert centres == pytest.approx([-0.2, 0.8, 0.2, 1.2])
