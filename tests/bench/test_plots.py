"""Learning-curve figure helpers: distinguishable styles and the zoom on the leaders."""

import numpy as np

from fedloom.bench.plots import ZOOM_POINTS, _zoom_on_leaders, line_style
from fedloom.plots import plt


def test_forty_lines_have_forty_distinct_styles() -> None:
    styles = {(line_style(i)["color"], line_style(i)["linestyle"]) for i in range(40)}
    assert len(styles) == 40


def test_zoom_spans_the_second_half_and_the_points_below_the_best_final() -> None:
    rounds = np.arange(11)
    leader = np.linspace(50, 96, 11)
    laggard = np.linspace(10, 40, 11)
    curves = [("a", rounds, leader, leader * 0), ("b", rounds, laggard, laggard * 0)]
    fig, ax = plt.subplots()
    _zoom_on_leaders(ax, curves)
    assert ax.get_xlim() == (5, 10)
    low, high = ax.get_ylim()
    assert low == 96 - ZOOM_POINTS
    assert high == 96 + 0.1 * ZOOM_POINTS  # the peak of the second half, plus a margin
    plt.close(fig)
