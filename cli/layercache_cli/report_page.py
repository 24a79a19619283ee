"""The report as one static HTML page: the charts as inline SVG and the tables; no script.

For a Bake file's builds, a table and one chart per image follow the build history's.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import datetime

from layercache_cli.charts import history_chart, inline_svg
from layercache_cli.history import (
    BuildRow,
    cold_warm_note,
    has_images,
    select_image,
    summarize,
    summarize_images,
)
from layercache_cli.report import (
    IMAGE_SUMMARY_HEADERS,
    SUMMARY_HEADERS,
    image_note,
    image_summary_cells,
    images_note,
    recent_cells,
    recent_headers,
    summary_cells,
)

CHART_ID = "build-history"
IMAGE_CHART_PREFIX = "image-"
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #111827; background: #f9fafb; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
svg.chart { display: block; margin: 12px 0; background: #ffffff; max-width: 100%; height: auto; }
table { border-collapse: collapse; background: #ffffff; }
th, td { border: 1px solid #e5e7eb; padding: 4px 8px; text-align: left; white-space: nowrap; }
th { background: #f3f4f6; }
p.note { color: #4b5563; }
"""


def _table(headers: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in headers)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in body
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _svg(
    rows: Sequence[BuildRow],
    days: int,
    threshold: float,
    generated_at: datetime,
    element_id: str,
    label: str,
    own_ids: bool = False,
) -> str:
    chart = history_chart(rows, days, generated_at, threshold)
    svg = inline_svg(chart, element_id, label, own_ids)
    chart.figure.clear()
    return svg


def chart_id(repository: str) -> str:
    """An element id for an image's chart: `image-team-app-api`."""
    return IMAGE_CHART_PREFIX + re.sub(r"[^A-Za-z0-9_-]+", "-", repository).strip("-")


def image_sections(
    rows: Sequence[BuildRow], days: int, threshold: float, generated_at: datetime
) -> str:
    """The per-image table and one chart per image; nothing without a Bake file's builds."""
    if not has_images(rows):
        return ""
    summaries = summarize_images(rows)
    parts = [
        "<h2>Per image</h2>",
        _table(IMAGE_SUMMARY_HEADERS, image_summary_cells(summaries)),
        f'<p class="note">{html.escape(images_note())}</p>',
    ]
    for summary in summaries:
        element_id = chart_id(summary.repository)
        parts += [
            f"<h3>Image {html.escape(summary.image)} ({html.escape(summary.repository)})</h3>",
            _svg(
                select_image(rows, summary.repository),
                days,
                threshold,
                generated_at,
                element_id,
                f"Image {summary.image}: build time and cache hit ratio over time",
                own_ids=True,
            ),
        ]
    return "\n".join(parts) + "\n"


def render_html(
    rows: Sequence[BuildRow],
    days: int,
    threshold: float,
    generated_at: datetime,
    image: str | None = None,
) -> str:
    """The page; with `image`, `rows` are that image's (`select_image`) and the page says so."""
    label = "Build duration and cache hit ratio over time"
    svg = _svg(rows, days, threshold, generated_at, CHART_ID, label)
    images = image_sections(rows, days, threshold, generated_at)
    of_image = f" of image {html.escape(image)}" if image else ""
    image_line = f'\n<p class="note">{html.escape(image_note(image))}</p>' if image else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>layercache build history</title>
<style>{STYLE}</style>
</head>
<body>
<h1>layercache build history</h1>
<p>{len(rows)} builds{of_image} in the last {days} days,
generated {generated_at.strftime("%Y-%m-%d %H:%M")} UTC.</p>{image_line}
{svg}
<h2>Per branch</h2>
{_table(SUMMARY_HEADERS, summary_cells(summarize(rows, threshold)))}
<p class="note">{html.escape(cold_warm_note(threshold))}</p>
{images}<h2>Recent builds</h2>
{_table(recent_headers(rows), recent_cells(rows))}
</body>
</html>
"""
