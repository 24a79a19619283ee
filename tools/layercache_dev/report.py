"""`layercache report`: the build history in BuildsTable, for people.

Reads the table through boto3 (so AWS_ENDPOINT_URL points it at an embedded AWS), using
the ByDay index for the last N days. Prints recent builds and, per branch, how often
builds succeed and what the cache is worth: median duration of cold and warm builds.
"""

from __future__ import annotations

import argparse
import html
import os
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import boto3

from layercache.build_records import INDEX_BY_DAY, BuildsTable
from layercache.recording.build import seconds_text

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

WARM_THRESHOLD = 0.5
FINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "FAULT", "STOPPED", "TIMED_OUT"})


@dataclass(frozen=True)
class BuildRow:
    build_id: str
    image: str
    branch: str
    requested_at: str
    status: str
    trigger: str = ""
    mode: str = ""
    commit: str = ""
    build_number: int | None = None
    duration: float | None = None
    cache_hit_ratio: float | None = None
    failed_phase: str = ""

    @property
    def moment(self) -> datetime | None:
        try:
            return datetime.fromisoformat(self.requested_at.replace("Z", "+00:00"))
        except ValueError:
            return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    return float(value)


def _text(item: Mapping[str, Any], name: str) -> str:
    value = item.get(name)
    return value if isinstance(value, str) else ""


def row_from_item(item: Mapping[str, Any]) -> BuildRow:
    number = _float(item.get("build_number"))
    return BuildRow(
        build_id=_text(item, "build_id") or _text(item, "pk").removeprefix("BUILD#"),
        image=_text(item, "image") or "?",
        branch=_text(item, "branch") or "?",
        requested_at=_text(item, "requested_at"),
        status=_text(item, "status") or "?",
        trigger=_text(item, "trigger"),
        mode=_text(item, "mode"),
        # Nightly builds start at a branch head: the recorder stores the commit it resolved.
        commit=_text(item, "commit") or _resolved_commit(item),
        build_number=int(number) if number is not None else None,
        duration=_float(item.get("duration_seconds")),
        cache_hit_ratio=_float(item.get("cache_hit_ratio")),
        failed_phase=_text(item, "failed_phase"),
    )


def fetch_builds(
    table_name: str, days: int, now: datetime, client: DynamoDBClient | None = None
) -> list[BuildRow]:
    """Every build requested in the last `days` days (today included), newest first."""
    table = BuildsTable(table_name, client or boto3.client("dynamodb"))
    rows: list[BuildRow] = []
    for back in range(days):
        day = (now.astimezone(UTC) - timedelta(days=back)).strftime("%Y-%m-%d")
        for item in table.query_index(INDEX_BY_DAY, "day", day, limit=None):
            if str(item.get("pk", "")).startswith("BUILD#"):
                rows.append(row_from_item(item))
    rows.sort(key=lambda row: row.requested_at, reverse=True)
    return rows


@dataclass(frozen=True)
class BranchSummary:
    image: str
    branch: str
    builds: int
    finished: int
    succeeded: int
    cold_builds: int
    warm_builds: int
    median_cold: float | None
    median_warm: float | None
    median_ratio: float | None

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.finished if self.finished else None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(
    rows: Iterable[BuildRow], warm_threshold: float = WARM_THRESHOLD
) -> list[BranchSummary]:
    """Per image and branch. Cold/warm split successful builds by their cache hit ratio."""
    groups: dict[tuple[str, str], list[BuildRow]] = {}
    for row in rows:
        groups.setdefault((row.image, row.branch), []).append(row)
    summaries = []
    for (image, branch), group in sorted(groups.items()):
        succeeded = [row for row in group if row.status == "SUCCEEDED"]
        measured = [
            r for r in succeeded if r.duration is not None and r.cache_hit_ratio is not None
        ]
        cold = [
            r.duration
            for r in measured
            if r.cache_hit_ratio is not None and r.cache_hit_ratio < warm_threshold
        ]
        warm = [
            r.duration
            for r in measured
            if r.cache_hit_ratio is not None and r.cache_hit_ratio >= warm_threshold
        ]
        ratios = [row.cache_hit_ratio for row in succeeded if row.cache_hit_ratio is not None]
        summaries.append(
            BranchSummary(
                image=image,
                branch=branch,
                builds=len(group),
                finished=sum(1 for row in group if row.status in FINAL_STATUSES),
                succeeded=len(succeeded),
                cold_builds=len(cold),
                warm_builds=len(warm),
                median_cold=_median([d for d in cold if d is not None]),
                median_warm=_median([d for d in warm if d is not None]),
                median_ratio=_median(ratios),
            )
        )
    return summaries


def _resolved_commit(item: Mapping[str, Any]) -> str:
    source_version = _text(item, "source_version")
    is_sha = len(source_version) == 40 and all(c in "0123456789abcdef" for c in source_version)
    return source_version if is_sha else ""


def duration_text(seconds: float | None) -> str:
    return "-" if seconds is None else seconds_text(seconds)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)
    ]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def recent_rows(rows: Sequence[BuildRow], limit: int) -> list[list[str]]:
    return [
        [
            row.requested_at[:19].replace("T", " "),
            row.image,
            row.branch,
            row.commit[:8] or "-",
            row.trigger or "-",
            row.mode or "-",
            row.status + (f" ({row.failed_phase})" if row.failed_phase else ""),
            duration_text(row.duration),
            _percent(row.cache_hit_ratio),
            f"#{row.build_number}" if row.build_number is not None else row.build_id,
        ]
        for row in rows[:limit]
    ]


RECENT_HEADERS = [
    "REQUESTED (UTC)",
    "IMAGE",
    "BRANCH",
    "COMMIT",
    "TRIGGER",
    "MODE",
    "STATUS",
    "DURATION",
    "CACHE HITS",
    "BUILD",
]
SUMMARY_HEADERS = [
    "IMAGE",
    "BRANCH",
    "BUILDS",
    "SUCCESS",
    "COLD MEDIAN",
    "WARM MEDIAN",
    "CACHE HITS MEDIAN",
]


def summary_rows(summaries: Sequence[BranchSummary]) -> list[list[str]]:
    return [
        [
            s.image,
            s.branch,
            str(s.builds),
            f"{_percent(s.success_rate)} ({s.succeeded}/{s.finished})",
            f"{duration_text(s.median_cold)} (n={s.cold_builds})",
            f"{duration_text(s.median_warm)} (n={s.warm_builds})",
            _percent(s.median_ratio),
        ]
        for s in summaries
    ]


def cold_warm_note(threshold: float) -> str:
    return (
        f"Cold: a successful build whose cache hit ratio was below {threshold:.2f}; warm: "
        f"{threshold:.2f} or more. Builds without a ratio count in neither. Success rate is "
        "of finished builds."
    )


def format_report(rows: Sequence[BuildRow], days: int, limit: int, threshold: float) -> str:
    if not rows:
        return f"No builds in the last {days} days.\n"
    parts = [
        f"Recent builds ({min(limit, len(rows))} of {len(rows)} in the last {days} days)",
        _table(RECENT_HEADERS, recent_rows(rows, limit)),
        "",
        "Per branch",
        _table(SUMMARY_HEADERS, summary_rows(summarize(rows, threshold))),
        "",
        cold_warm_note(threshold),
    ]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------ HTML page
PALETTE = ["#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2", "#65a30d"]
FAILED_COLOR = "#dc2626"
WIDTH, HEIGHT = 960, 300
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 30, 40


def _chart(
    title: str,
    series: Mapping[str, list[tuple[datetime, float, BuildRow]]],
    colors: Mapping[str, str],
    y_max: float,
    y_label: Any,
    span: tuple[datetime, datetime],
    chart_id: str,
) -> str:
    start, end = span
    seconds = max((end - start).total_seconds(), 1.0)
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def x(moment: datetime) -> float:
        return MARGIN_LEFT + plot_w * (moment - start).total_seconds() / seconds

    def y(value: float) -> float:
        return MARGIN_TOP + plot_h * (1 - value / y_max)

    out = [
        f'<svg id="{chart_id}" class="chart" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{MARGIN_LEFT}" y="18" class="title">{html.escape(title)}</text>',
        f'<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_w}" height="{plot_h}" '
        'fill="#ffffff" stroke="#d1d5db"/>',
    ]
    for step in range(5):
        value = y_max * step / 4
        out.append(
            f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}" y1="{y(value):.1f}" '
            f'y2="{y(value):.1f}" stroke="#e5e7eb"/>'
            f'<text x="{MARGIN_LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end" '
            f'class="tick">{html.escape(y_label(value))}</text>'
        )
    for step, anchor in enumerate(("start", "middle", "middle", "middle", "end")):
        moment = start + (end - start) * step / 4
        out.append(
            f'<text x="{x(moment):.1f}" y="{HEIGHT - 14}" text-anchor="{anchor}" class="tick">'
            f"{moment.strftime('%m-%d %H:%M')}</text>"
        )
    for name, points in series.items():
        color = colors[name]
        ordered = sorted(points, key=lambda point: point[0])
        if len(ordered) > 1:
            path = " ".join(f"{x(m):.1f},{y(v):.1f}" for m, v, _ in ordered)
            out.append(
                f'<polyline class="line" points="{path}" fill="none" stroke="{color}" '
                'stroke-width="3"/>'
            )
        for moment, value, row in ordered:
            failed = row.status != "SUCCEEDED"
            label = (
                f"{row.branch} {row.commit[:8]} {row.status} {row.requested_at} "
                f"{duration_text(row.duration)} cache {_percent(row.cache_hit_ratio)}"
            )
            out.append(
                f'<circle class="pt{" failed" if failed else ""}" cx="{x(moment):.1f}" '
                f'cy="{y(value):.1f}" r="6" fill="{FAILED_COLOR if failed else color}">'
                f"<title>{html.escape(label)}</title></circle>"
            )
    out.append("</svg>")
    return "\n".join(out)


def render_html(
    rows: Sequence[BuildRow], days: int, threshold: float, generated_at: datetime
) -> str:
    """A static, self-contained page: inline SVG charts and tables, no script, no network."""
    timed = [(row.moment, row) for row in rows if row.moment is not None]
    branches = sorted({f"{row.image} {row.branch}" for _, row in timed})
    colors = {name: PALETTE[index % len(PALETTE)] for index, name in enumerate(branches)}
    durations: dict[str, list[tuple[datetime, float, BuildRow]]] = {name: [] for name in branches}
    ratios: dict[str, list[tuple[datetime, float, BuildRow]]] = {name: [] for name in branches}
    for moment, row in timed:
        assert moment is not None
        name = f"{row.image} {row.branch}"
        if row.duration is not None:
            durations[name].append((moment, row.duration, row))
        if row.cache_hit_ratio is not None:
            ratios[name].append((moment, row.cache_hit_ratio, row))
    moments = [moment for moment, _ in timed if moment is not None]
    if moments:
        span = (min(moments), max(moments))
        if span[0] == span[1]:
            span = (span[0] - timedelta(hours=1), span[1] + timedelta(hours=1))
    else:
        span = (generated_at - timedelta(days=days), generated_at)
    longest = max((row.duration for _, row in timed if row.duration is not None), default=60.0)
    charts = [
        _chart(
            "Build duration",
            durations,
            colors,
            max(longest * 1.1, 1.0),
            duration_text,
            span,
            "duration-chart",
        ),
        _chart(
            "Cache hit ratio",
            ratios,
            colors,
            1.0,
            lambda value: f"{value:.0%}",
            span,
            "cache-chart",
        ),
    ]
    legend = (
        "".join(
            f'<li><span class="swatch" style="background:{colors[name]}"></span>'
            f"{html.escape(name)}</li>"
            for name in branches
        )
        + f'<li><span class="swatch" style="background:{FAILED_COLOR}"></span>not succeeded</li>'
    )

    def table(headers: Sequence[str], body: Sequence[Sequence[str]]) -> str:
        head = "".join(f"<th>{html.escape(cell)}</th>" for cell in headers)
        rows_html = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
            for row in body
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>"

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>layercache build history</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #111827; background: #f9fafb; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 28px; }}
.chart {{ display: block; margin: 12px 0; background: #ffffff; }}
.chart .title {{ font-weight: 600; font-size: 14px; }}
.chart .tick {{ font-size: 11px; fill: #4b5563; }}
ul.legend {{ list-style: none; padding: 0; display: flex; gap: 18px; flex-wrap: wrap; }}
.swatch {{ display: inline-block; width: 12px; height: 12px; margin-right: 6px;
  border-radius: 6px; }}
table {{ border-collapse: collapse; background: #ffffff; }}
th, td {{ border: 1px solid #e5e7eb; padding: 4px 8px; text-align: left; white-space: nowrap; }}
th {{ background: #f3f4f6; }}
p.note {{ color: #4b5563; }}
</style>
</head>
<body>
<h1>layercache build history</h1>
<p>{len(rows)} builds in the last {days} days,
generated {generated_at.strftime("%Y-%m-%d %H:%M")} UTC.</p>
<ul class="legend">{legend}</ul>
{charts[0]}
{charts[1]}
<h2>Per branch</h2>
{table(SUMMARY_HEADERS, summary_rows(summarize(rows, threshold)))}
<p class="note">{html.escape(cold_warm_note(threshold))}</p>
<h2>Recent builds</h2>
{table(RECENT_HEADERS, recent_rows(rows, len(rows)))}
</body>
</html>
"""


# ------------------------------------------------------------------ command line
def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="Show the build history recorded in BuildsTable",
        description=__doc__,
    )
    parser.add_argument(
        "--table",
        default=os.environ.get("BUILDS_TABLE_NAME"),
        help="BuildsTable name (default: $BUILDS_TABLE_NAME; stack output BuildsTableName)",
    )
    parser.add_argument("--days", type=int, default=14, help="How many days back (default 14)")
    parser.add_argument("--limit", type=int, default=20, help="Recent builds to list (default 20)")
    parser.add_argument(
        "--warm-threshold",
        type=float,
        default=WARM_THRESHOLD,
        help="Cache hit ratio from which a build counts as warm (default 0.5)",
    )
    parser.add_argument("--html", type=Path, metavar="FILE", help="Also write a static HTML page")
    parser.set_defaults(run=run)


def run(
    args: argparse.Namespace,
    out: TextIO | None = None,
    client: DynamoDBClient | None = None,
    now: datetime | None = None,
) -> int:
    if not args.table:
        sys.stderr.write("layercache report: give --table or set BUILDS_TABLE_NAME\n")
        return 2
    if args.days < 1 or args.limit < 1 or not 0 <= args.warm_threshold <= 1:
        sys.stderr.write("layercache report: --days and --limit >= 1, --warm-threshold 0..1\n")
        return 2
    out = out or sys.stdout
    now = now or datetime.now(UTC)
    rows = fetch_builds(args.table, args.days, now, client)
    out.write(format_report(rows, args.days, args.limit, args.warm_threshold))
    if args.html:
        args.html.write_text(render_html(rows, args.days, args.warm_threshold, now), "utf-8")
        out.write(f"Wrote {args.html}\n")
    return 0
