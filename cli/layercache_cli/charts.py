"""The report's chart, drawn by matplotlib: build duration and cache hit ratio over time.

One figure, two panels sharing the time axis; one colour per image and branch, a red
point for a build that did not succeed. It is saved as PNG, or as SVG for the HTML
page, where each point gets a tooltip (an SVG <title>) saying which build it is. The
page holds one such chart for all builds and, for a Bake file's builds, one per image
(its rows as `BuildRow.for_image` makes them), whose ids are made its own (`own_ids`).
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import matplotlib as mpl
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MultipleLocator, PercentFormatter

from layercache_cli.history import BuildRow, duration_text, percent_text

PALETTE = ["#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2", "#65a30d"]
FAILED_COLOR = "#dc2626"
GRID_COLOR = "#e5e7eb"
THRESHOLD_COLOR = "#9ca3af"
TEXT_COLOR = "#1f2937"
# Tick steps for durations, in seconds: 5 s up to 3 h.
DURATION_STEPS = (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800)
SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
FIGURE_SIZE = (10.4, 6.6)  # inches: 1000 x 634 px in a browser (SVG) or at 96 dpi (PNG)


@dataclass(frozen=True)
class HistoryChart:
    figure: Figure
    # Tooltip text for each point, by the id its group gets in the SVG.
    point_labels: dict[str, str]


def series_name(row: BuildRow) -> str:
    return f"{row.image} {row.branch}"


def point_label(row: BuildRow) -> str:
    return (
        f"{row.branch} {row.commit[:8]} {row.status_text} {row.requested_at} "
        f"{duration_text(row.duration)} cache {percent_text(row.cache_hit_ratio)}"
    )


def duration_step(longest: float) -> float:
    """A tick step that puts at most six round durations on the axis."""
    for step in DURATION_STEPS:
        if longest / step <= 6:
            return step
    return DURATION_STEPS[-1] * (int(longest / DURATION_STEPS[-1] / 6) + 1)


def time_span(rows: Sequence[BuildRow], days: int, now: datetime) -> tuple[datetime, datetime]:
    moments = [row.moment for row in rows if row.moment is not None]
    if not moments:
        return now - timedelta(days=days), now
    start, end = min(moments), max(moments)
    margin = max((end - start) * 0.03, timedelta(minutes=30))
    return start - margin, end + margin


def _duration(row: BuildRow) -> float | None:
    return row.duration


def _cache_hit_ratio(row: BuildRow) -> float | None:
    return row.cache_hit_ratio


def history_chart(
    rows: Sequence[BuildRow], days: int, now: datetime, warm_threshold: float
) -> HistoryChart:
    figure = Figure(figsize=FIGURE_SIZE, layout="constrained")
    figure.set_facecolor("white")
    duration_axes, ratio_axes = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    names = sorted({series_name(row) for row in rows if row.moment is not None})
    colors = {name: PALETTE[index % len(PALETTE)] for index, name in enumerate(names)}
    labels: dict[str, str] = {}
    longest = max((row.duration for row in rows if row.duration is not None), default=60.0)
    for chart, axes, value_of in (
        ("duration", duration_axes, _duration),
        ("ratio", ratio_axes, _cache_hit_ratio),
    ):
        for index, name in enumerate(names):
            points = sorted(
                (
                    (row.moment, value, row)
                    for row in rows
                    if series_name(row) == name
                    and row.moment is not None
                    and (value := value_of(row)) is not None
                ),
                key=lambda point: point[0],
            )
            if len(points) > 1:
                axes.plot(
                    [moment for moment, _, _ in points],
                    [value for _, value, _ in points],
                    color=colors[name],
                    linewidth=2.25,
                    zorder=2,
                    gid=f"{chart}-line-{index}",
                )
            for moment, value, row in points:
                gid = f"{chart}-build-{len(labels)}"
                labels[gid] = point_label(row)
                axes.plot(
                    [moment],
                    [value],
                    marker="o",
                    markersize=8,
                    markeredgecolor="white",
                    markeredgewidth=1.2,
                    color=colors[name] if row.succeeded else FAILED_COLOR,
                    linestyle="none",
                    zorder=3,
                    gid=gid,
                )
    _style_duration_axes(duration_axes, longest)
    _style_ratio_axes(ratio_axes, warm_threshold)
    start, end = time_span(rows, days, now)
    ratio_axes.set_xlim(start, end)
    # matplotlib.dates has no type annotations.
    locator = AutoDateLocator(tz=UTC, minticks=4, maxticks=9)  # type: ignore[no-untyped-call]
    formatter = ConciseDateFormatter(locator, tz=UTC)  # type: ignore[no-untyped-call]
    ratio_axes.xaxis.set_major_locator(locator)
    ratio_axes.xaxis.set_major_formatter(formatter)
    ratio_axes.set_xlabel("requested at (UTC)", color=TEXT_COLOR)
    handles = [
        Line2D([], [], color=colors[name], linewidth=2.25, marker="o", label=name) for name in names
    ]
    handles.append(
        Line2D([], [], color=FAILED_COLOR, marker="o", linestyle="none", label="not succeeded")
    )
    handles.append(
        Line2D(
            [],
            [],
            color=THRESHOLD_COLOR,
            linewidth=1,
            linestyle="--",
            label=f"warm: {warm_threshold:.0%} cache hits or more",
        )
    )
    figure.legend(
        handles=handles,
        loc="outside upper left",
        ncols=min(len(handles), 4),
        frameon=False,
        fontsize=10,
    )
    return HistoryChart(figure, labels)


def _style_axes(axes: Axes) -> None:
    axes.grid(True, color=GRID_COLOR, linewidth=0.8)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    axes.tick_params(colors=TEXT_COLOR, labelsize=9.5)


def _style_duration_axes(axes: Axes, longest: float) -> None:
    _style_axes(axes)
    axes.set_title("Build duration", loc="left", fontsize=12, fontweight="bold", color=TEXT_COLOR)
    axes.set_ylim(0, max(longest * 1.1, 1.0))
    axes.yaxis.set_major_locator(MultipleLocator(duration_step(longest * 1.1)))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: duration_text(value)))


def _style_ratio_axes(axes: Axes, warm_threshold: float) -> None:
    _style_axes(axes)
    axes.set_title("Cache hit ratio", loc="left", fontsize=12, fontweight="bold", color=TEXT_COLOR)
    axes.set_ylim(0, 1.05)
    axes.yaxis.set_major_locator(MultipleLocator(0.25))
    axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes.axhline(warm_threshold, color=THRESHOLD_COLOR, linewidth=1, linestyle="--", zorder=1)


def save_png(chart: HistoryChart, path: Path) -> None:
    chart.figure.savefig(path, format="png", dpi=96, metadata={"Software": None})


def inline_svg(chart: HistoryChart, element_id: str, label: str, own_ids: bool = False) -> str:
    """The chart as an <svg> element for an HTML page: glyphs as paths (no font needed),
    ids salted by `element_id`, and a tooltip on every point.

    With `own_ids`, every id inside (the glyphs' and the points' too) starts with
    `element_id-`, so that several charts share a page without sharing an id.
    """
    buffer = io.StringIO()
    with mpl.rc_context({"svg.fonttype": "path", "svg.hashsalt": element_id}):
        chart.figure.savefig(buffer, format="svg", metadata={"Date": None})
    ElementTree.register_namespace("", SVG_NS)
    ElementTree.register_namespace("xlink", XLINK_NS)
    root = ElementTree.fromstring(buffer.getvalue())  # noqa: S314 - matplotlib's own output
    for group in root.iter(f"{{{SVG_NS}}}g"):
        text = chart.point_labels.get(group.get("id", ""))
        if text is not None:
            title = ElementTree.Element(f"{{{SVG_NS}}}title")
            title.text = text
            group.insert(0, title)
    if own_ids:
        prefix_ids(root, f"{element_id}-")
    root.set("id", element_id)
    root.set("class", "chart")
    root.set("role", "img")
    root.set("aria-label", label)
    return ElementTree.tostring(root, encoding="unicode")


def prefix_ids(root: ElementTree.Element, prefix: str) -> None:
    """Prefix every id under `root`, and the references to them (`#id`, `url(#id)`)."""
    elements = list(root.iter())
    ids = {element.get("id", "") for element in elements} - {""}
    if not ids:
        return
    reference = re.compile(r"(url\(#|^#)([^)\s]+)")

    def renamed(match: re.Match[str]) -> str:
        name = match.group(2)
        return match.group(1) + (prefix + name if name in ids else name)

    for element in elements:
        for attribute, value in element.attrib.items():
            if attribute == "id":
                element.set(attribute, prefix + value)
            elif "#" in value:
                element.set(attribute, reference.sub(renamed, value))
