"""`layercache report`: the build history in BuildsTable, for people, pages and scripts.

Reads the builds requested in the last N days (the table's ByDay index), prints the
recent ones and, per image and branch, how often builds succeed and what the cache is
worth: the median duration of cold and of warm builds, and the median cache hit ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from layercache_cli.arguments import (
    add_days_argument,
    add_table_arguments,
    open_builds_table,
    open_stack,
    positive_int,
    ratio,
)
from layercache_cli.aws import AwsAccess
from layercache_cli.history import (
    WARM_THRESHOLD,
    BranchSummary,
    BuildRow,
    cold_warm_note,
    duration_text,
    fetch_builds,
    percent_text,
    summarize,
)
from layercache_cli.tables import Cell, build_table, plain_text, status_cell, write_output

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
STATUS_COLUMN = RECENT_HEADERS.index("STATUS")
# The same with whole build ids, for `layercache show`.
IDENTIFIED_HEADERS = [*RECENT_HEADERS[:-1], "BUILD ID"]
SUMMARY_HEADERS = [
    "IMAGE",
    "BRANCH",
    "BUILDS",
    "SUCCESS",
    "COLD MEDIAN",
    "WARM MEDIAN",
    "CACHE HITS MEDIAN",
]


def requested_text(row: BuildRow) -> str:
    return row.requested_at[:19].replace("T", " ")


def recent_cells(rows: Sequence[BuildRow], full_ids: bool = False) -> list[list[str]]:
    """One line per build; BUILD is `#number` (or the whole build id with `full_ids`)."""
    return [
        [
            requested_text(row),
            row.image,
            row.branch,
            row.commit[:8] or "-",
            row.trigger or "-",
            row.mode or "-",
            row.status_text,
            duration_text(row.duration),
            percent_text(row.cache_hit_ratio),
            row.build_id if full_ids or row.build_number is None else f"#{row.build_number}",
        ]
        for row in rows
    ]


def recent_table_cells(rows: Sequence[BuildRow], full_ids: bool = False) -> list[list[Cell]]:
    """recent_cells, with the status coloured on a terminal."""
    return [
        [
            *cells[:STATUS_COLUMN],
            status_cell(cells[STATUS_COLUMN], row.status),
            *cells[STATUS_COLUMN + 1 :],
        ]
        for row, cells in zip(rows, recent_cells(rows, full_ids), strict=True)
    ]


def identified_builds_table(rows: Sequence[BuildRow]) -> Table:
    return build_table(IDENTIFIED_HEADERS, recent_table_cells(rows, full_ids=True))


def summary_cells(summaries: Sequence[BranchSummary]) -> list[list[str]]:
    return [
        [
            s.image,
            s.branch,
            str(s.builds),
            f"{percent_text(s.success_rate)} ({s.succeeded}/{s.finished})",
            f"{duration_text(s.median_cold)} (n={s.cold_builds})",
            f"{duration_text(s.median_warm)} (n={s.warm_builds})",
            percent_text(s.median_ratio),
        ]
        for s in summaries
    ]


def report_renderables(
    rows: Sequence[BuildRow], days: int, limit: int, threshold: float
) -> list[RenderableType]:
    if not rows:
        return [Text(f"No builds in the last {days} days.")]
    shown = rows[:limit]
    return [
        Text(f"Recent builds ({len(shown)} of {len(rows)} in the last {days} days)", "bold"),
        build_table(RECENT_HEADERS, recent_table_cells(shown)),
        Text(""),
        Text("Per branch", "bold"),
        build_table(SUMMARY_HEADERS, summary_cells(summarize(rows, threshold))),
        Text(""),
        Text(cold_warm_note(threshold)),
    ]


def report_text(rows: Sequence[BuildRow], days: int, limit: int, threshold: float) -> str:
    """The report as plain text (the demo's summary keeps it)."""
    return plain_text(report_renderables(rows, days, limit, threshold))


def report_document(
    rows: Sequence[BuildRow], days: int, threshold: float, generated_at: datetime, table: str
) -> dict[str, Any]:
    """What --json prints: every build of the period and the per-branch figures."""
    return {
        "table": table,
        "days": days,
        "generated_at": generated_at.astimezone(UTC).isoformat(timespec="seconds"),
        "warm_threshold": threshold,
        "builds": [
            {
                "build_id": row.build_id,
                "build_number": row.build_number,
                "image": row.image,
                "branch": row.branch,
                "commit": row.commit or None,
                "trigger": row.trigger or None,
                "mode": row.mode or None,
                "requested_at": row.requested_at,
                "status": row.status,
                "failed_phase": row.failed_phase or None,
                "duration_seconds": row.duration,
                "cache_hit_ratio": row.cache_hit_ratio,
            }
            for row in rows
        ],
        "branches": [
            {
                "image": s.image,
                "branch": s.branch,
                "builds": s.builds,
                "finished": s.finished,
                "succeeded": s.succeeded,
                "success_rate": s.success_rate,
                "cold_builds": s.cold_builds,
                "warm_builds": s.warm_builds,
                "median_cold_seconds": s.median_cold,
                "median_warm_seconds": s.median_warm,
                "median_cache_hit_ratio": s.median_ratio,
            }
            for s in summarize(rows, threshold)
        ],
    }


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="the build history: recent builds, success rate, cold and warm medians",
        description=__doc__,
    )
    add_table_arguments(parser)
    add_days_argument(parser, 14, "how many days back")
    parser.add_argument(
        "--limit", type=positive_int, default=20, help="recent builds to list (default 20)"
    )
    parser.add_argument(
        "--warm-threshold",
        type=ratio,
        default=WARM_THRESHOLD,
        help="cache hit ratio from which a build counts as warm (default 0.5)",
    )
    parser.add_argument(
        "--html", type=Path, metavar="FILE", help="also write a static HTML page with the chart"
    )
    parser.add_argument("--png", type=Path, metavar="FILE", help="also write the chart as PNG")
    parser.add_argument(
        "--json", action="store_true", help="print JSON (every build and branch) instead"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, aws: AwsAccess, out: TextIO, now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    table = open_builds_table(args, aws, open_stack(args, aws))
    rows = fetch_builds(table, args.days, now)
    notes = sys.stderr if args.json else out
    if args.json:
        document = report_document(rows, args.days, args.warm_threshold, now, table.table_name)
        out.write(json.dumps(document, indent=2) + "\n")
    else:
        write_output(out, report_renderables(rows, args.days, args.limit, args.warm_threshold))
    if args.html:
        from layercache_cli.report_page import render_html  # matplotlib: only when asked

        args.html.write_text(render_html(rows, args.days, args.warm_threshold, now), "utf-8")
        notes.write(f"Wrote {args.html}\n")
    if args.png:
        from layercache_cli.charts import history_chart, save_png

        save_png(history_chart(rows, args.days, now, args.warm_threshold), args.png)
        notes.write(f"Wrote {args.png}\n")
    return 0
