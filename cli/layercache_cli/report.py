"""`layercache report`: the build history in BuildsTable, for people, pages and scripts.

Reads the builds requested in the last N days (the table's ByDay index), prints the
recent ones and, per image and branch, how often builds succeed and what the cache is
worth: the median duration of cold and of warm builds, and the median cache hit ratio.
When builds built several images (a Bake file), it also shows each image's figures;
--image NAME makes the whole report (and the charts) one image's: its own cache hit
ratio and its own build and push time in place of the build's totals.
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
from layercache_cli.aws import AwsAccess, CommandError
from layercache_cli.history import (
    WARM_THRESHOLD,
    BranchSummary,
    BuildRow,
    ImageSummary,
    cold_warm_note,
    counts_images,
    duration_text,
    fetch_builds,
    has_images,
    image_names,
    percent_text,
    select_image,
    summarize,
    summarize_images,
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
# The same with whole build ids, for `layercache builds` and `status`.
IDENTIFIED_HEADERS = [*RECENT_HEADERS[:-1], "BUILD ID"]
# Before the last column, only when a build of the list built several images (Bake).
IMAGES_HEADER = "IMAGES"
SUMMARY_HEADERS = [
    "IMAGE",
    "BRANCH",
    "BUILDS",
    "SUCCESS",
    "COLD MEDIAN",
    "WARM MEDIAN",
    "CACHE HITS MEDIAN",
]


IMAGE_SUMMARY_HEADERS = [
    "IMAGE",
    "REPOSITORY",
    "BUILDS",
    "ALL CACHED",
    "CACHE HITS MEDIAN",
    "BUILD MEDIAN",
    "LAST DIGEST",
    "LAST CACHE",
]


def requested_text(row: BuildRow) -> str:
    return row.requested_at[:19].replace("T", " ")


def with_images_column(headers: Sequence[str], rows: Sequence[BuildRow]) -> list[str]:
    """The headers, with IMAGES before the last when a build built several images."""
    if not counts_images(rows):
        return list(headers)
    return [*headers[:-1], IMAGES_HEADER, headers[-1]]


def recent_headers(rows: Sequence[BuildRow]) -> list[str]:
    return with_images_column(RECENT_HEADERS, rows)


def recent_cells(rows: Sequence[BuildRow], full_ids: bool = False) -> list[list[str]]:
    """One line per build; BUILD is `#number` (or the whole build id with `full_ids`).

    With an IMAGES column (`recent_headers`) when a build of `rows` built several images.
    """
    images = counts_images(rows)
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
            *([row.images_text] if images else []),
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
    headers = with_images_column(IDENTIFIED_HEADERS, rows)
    return build_table(headers, recent_table_cells(rows, full_ids=True))


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


def image_summary_cells(summaries: Sequence[ImageSummary]) -> list[list[str]]:
    return [
        [
            s.image,
            s.repository,
            str(s.builds),
            f"{s.fully_cached}/{s.builds}",
            percent_text(s.median_ratio),
            duration_text(s.median_build),
            s.last.short_digest,
            s.last.cache_status or "-",
        ]
        for s in summaries
    ]


def image_note(image: str) -> str:
    return (
        f"Image {image} only: each build's duration is the image's own build and push "
        "time, its cache hits the image's own; builds without a result for it are left out."
    )


def images_note() -> str:
    return (
        "Per image: builds that recorded a result for it; ALL CACHED: builds in which every "
        "step of the image came from the cache; BUILD MEDIAN: the image's own build time."
    )


def select_report_image(rows: Sequence[BuildRow], image: str, days: int) -> list[BuildRow]:
    """--image: the builds of one image, as that image saw them; an unknown image is an error."""
    selected = select_image(rows, image)
    if not selected:
        known = image_names(rows) or sorted({row.image for row in rows})
        choices = f" (images: {', '.join(known)})" if known else ""
        raise CommandError(f"no build of image {image!r} in the last {days} days{choices}")
    return selected


def report_renderables(
    rows: Sequence[BuildRow], days: int, limit: int, threshold: float, image: str | None = None
) -> list[RenderableType]:
    if not rows:
        return [Text(f"No builds in the last {days} days.")]
    shown = rows[:limit]
    of_image = f" of image {image}" if image else ""
    parts: list[RenderableType] = [
        Text(
            f"Recent builds{of_image} ({len(shown)} of {len(rows)} in the last {days} days)",
            "bold",
        ),
        build_table(recent_headers(shown), recent_table_cells(shown)),
        Text(""),
        Text("Per branch", "bold"),
        build_table(SUMMARY_HEADERS, summary_cells(summarize(rows, threshold))),
    ]
    if has_images(rows):
        parts += [
            Text(""),
            Text("Per image", "bold"),
            build_table(IMAGE_SUMMARY_HEADERS, image_summary_cells(summarize_images(rows))),
        ]
    parts += [Text(""), Text(cold_warm_note(threshold))]
    if has_images(rows):
        parts.append(Text(images_note()))
    if image:
        parts.append(Text(image_note(image)))
    return parts


def report_text(
    rows: Sequence[BuildRow], days: int, limit: int, threshold: float, image: str | None = None
) -> str:
    """The report as plain text (the demo's summary keeps it)."""
    return plain_text(report_renderables(rows, days, limit, threshold, image))


def report_document(
    rows: Sequence[BuildRow],
    days: int,
    threshold: float,
    generated_at: datetime,
    table: str,
    image: str | None = None,
) -> dict[str, Any]:
    """What --json prints: every build of the period and the per-branch figures; with
    images (a Bake file), each build's `images` and the per-image figures."""
    document: dict[str, Any] = {
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
            | ({"images": [i.as_json() for i in row.images]} if row.images else {})
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
    if has_images(rows):
        document["images"] = [summary.as_json() for summary in summarize_images(rows)]
    if image:
        document["image"] = image
    return document


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
        "--image",
        metavar="NAME",
        help="only this image of a Bake file's builds (its target or repository name)",
    )
    parser.add_argument(
        "--html", type=Path, metavar="FILE", help="also write a static HTML page with the charts"
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
    image: str | None = args.image
    if image:
        rows = select_report_image(rows, image, args.days)
    notes = sys.stderr if args.json else out
    if args.json:
        document = report_document(
            rows, args.days, args.warm_threshold, now, table.table_name, image
        )
        out.write(json.dumps(document, indent=2) + "\n")
    else:
        write_output(
            out, report_renderables(rows, args.days, args.limit, args.warm_threshold, image)
        )
    if args.html:
        from layercache_cli.report_page import render_html  # matplotlib: only when asked

        page = render_html(rows, args.days, args.warm_threshold, now, image)
        args.html.write_text(page, "utf-8")
        notes.write(f"Wrote {args.html}\n")
    if args.png:
        from layercache_cli.charts import history_chart, save_png

        save_png(history_chart(rows, args.days, now, args.warm_threshold), args.png)
        notes.write(f"Wrote {args.png}\n")
    return 0
