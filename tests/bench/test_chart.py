"""The build chart: a PNG of a fixed size that shows the build table, with readable text."""

from __future__ import annotations

from io import BytesIO, StringIO

import matplotlib
import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.image import imread

from layercache_dev.bench.builds import Strategy
from layercache_dev.bench.chart import (
    HEIGHT_PX,
    STRATEGY_COLORS,
    TITLE,
    WIDTH_PX,
    X_LABEL,
    Y_LABEL,
    builds_figure,
    figure_png,
)

from .test_report import make_results

SCENARIO_LABELS = [
    "Cold", "Unchanged", "Change halfway", "Builder-stage change", "Base-image refresh",
]  # fmt: skip
STRATEGY_LABELS = [
    "No cache", "Seed: pull + inline cache", "Inline cache, no pull",
    "Registry cache mode=max (ours)", "Warm local builder (lower bound)",
]  # fmt: skip


def svg_text(figure: Figure) -> str:
    """The figure as SVG with its text kept as text, so tests can read the labels."""
    svg = StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure.savefig(svg, format="svg")
    return svg.getvalue()


def test_the_chart_is_a_png_of_fixed_size_with_a_bar_of_every_strategy() -> None:
    png = figure_png(builds_figure(make_results()))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pixels = imread(BytesIO(png))
    assert pixels.shape[:2] == (HEIGHT_PX, WIDTH_PX)
    rgb = pixels[..., :3]
    ink = np.any(rgb < 0.95, axis=-1)
    assert 0.1 < ink.mean() < 0.9, "neither blank nor a solid block"
    for strategy, color in STRATEGY_COLORS.items():
        bar = np.all(np.abs(rgb - np.array(to_rgb(color))) < 0.01, axis=-1)
        assert bar.sum() > 1_000, strategy  # bars and legend swatch in the strategy's colour


def test_the_chart_says_what_it_shows() -> None:
    svg = svg_text(builds_figure(make_results()))
    labels = [TITLE, X_LABEL, Y_LABEL, *SCENARIO_LABELS, *STRATEGY_LABELS]
    for label in labels:
        assert f">{label}</text>" in svg, label
    assert "Median of 3 runs per bar; 300.0 MB image, registry link 50 MB/s each way" in svg
    assert "2026-11-29 15:00 UTC" in svg
    assert ">1.5</text>" in svg  # ours, unchanged: each bar carries its value


def test_the_chart_shows_only_the_strategies_measured() -> None:
    results = make_results()
    results.cells = [c for c in results.cells if c.strategy is not Strategy.WARM]
    svg = svg_text(builds_figure(results))
    assert "Warm local builder" not in svg
    assert "Registry cache mode=max (ours)" in svg


def test_the_same_results_give_the_same_png() -> None:
    results = make_results()
    assert figure_png(builds_figure(results)) == figure_png(builds_figure(results))
