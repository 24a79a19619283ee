"""The build table as a grouped bar chart, drawn by matplotlib's Agg renderer (no display):
`figure_png(builds_figure(results))` is a 1280 x 720 PNG."""

from __future__ import annotations

from io import BytesIO

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine

from layercache_dev.bench.builds import STRATEGIES, Strategy
from layercache_dev.bench.report import Results, human_bytes
from layercache_dev.bench.workload import SCENARIOS

WIDTH_PX, HEIGHT_PX, DPI = 1280, 720, 100
TITLE = "Build wall time by scenario and strategy"
X_LABEL = "Scenario"
Y_LABEL = "Wall time, median (seconds)"
STRATEGY_COLORS = {
    Strategy.NO_CACHE: "#8c8c8c",
    Strategy.SEED: "#d6604d",
    Strategy.INLINE: "#f4a550",
    Strategy.REGISTRY: "#2166ac",
    Strategy.WARM: "#5aaa5a",
    Strategy.WARM_TIER: "#1b7837",
    Strategy.WARM_TIER_RECYCLED: "#92c5de",
}


def sentence_case(label: str) -> str:
    return label[:1].upper() + label[1:]


def seconds_label(seconds: float) -> str:
    return f"{seconds:.1f}" if seconds < 100 else f"{seconds:.0f}"


def runs_label(runs: int) -> str:
    return "1 run" if runs == 1 else f"{runs} runs"


def builds_figure(results: Results) -> Figure:
    """Median wall seconds: a group of bars per scenario, a bar per strategy measured."""
    strategies = [s for s in STRATEGIES if any(c.strategy is s for c in results.cells)]
    meta = results.meta
    figure = Figure(
        figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI),
        dpi=DPI,
        layout=ConstrainedLayoutEngine(w_pad=0.15, h_pad=0.1),
    )
    FigureCanvasAgg(figure)  # drawn by Agg whatever backend pyplot would choose; no display
    axes = figure.add_subplot()
    axes.set_title(TITLE, loc="left", fontsize=18, fontweight="bold", pad=30)
    axes.annotate(
        f"Median of {runs_label(meta['runs'])} per bar; {human_bytes(results.image_bytes)} image, "
        f"registry link {meta['rate_bytes_per_second'] / 1e6:g} MB/s each way; {meta['date']}",
        xy=(0, 1),
        xycoords="axes fraction",
        xytext=(0, 10),
        textcoords="offset points",
        fontsize=11,
        color="#444444",
    )
    bar_width = 0.8 / len(strategies)
    for index, strategy in enumerate(strategies):
        seconds = [results.cell(strategy, scenario).seconds for scenario in SCENARIOS]
        offset = (index - (len(strategies) - 1) / 2) * bar_width
        bars = axes.bar(
            [group + offset for group in range(len(SCENARIOS))],
            seconds,
            bar_width * 0.95,
            label=sentence_case(str(strategy)),
            color=STRATEGY_COLORS[strategy],
            zorder=2,
        )
        axes.bar_label(bars, labels=[seconds_label(s) for s in seconds], padding=2, fontsize=9)
    axes.set_xticks(range(len(SCENARIOS)), [sentence_case(str(s)) for s in SCENARIOS])
    axes.tick_params(axis="x", length=0, labelsize=12, pad=8)
    axes.tick_params(axis="y", labelsize=11)
    axes.set_xlabel(X_LABEL, fontsize=12, labelpad=8)
    axes.set_ylabel(Y_LABEL, fontsize=12)
    axes.margins(x=0.02, y=0.08)
    axes.set_ylim(bottom=0)
    axes.grid(axis="y", color="#dddddd", zorder=0)
    axes.spines[["top", "right"]].set_visible(False)
    figure.legend(
        loc="outside lower center",
        ncols=len(strategies),
        fontsize=11,
        frameon=False,
        columnspacing=1.2,
        handlelength=1.5,
    )
    return figure


def figure_png(figure: Figure) -> bytes:
    """The figure as a PNG of its own size (no tight cropping), without a Software stamp."""
    png = BytesIO()
    figure.savefig(png, format="png", dpi=DPI, metadata={"Software": None})
    return png.getvalue()
