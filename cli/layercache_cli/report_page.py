"""The report as one static HTML page: the chart as inline SVG and the tables; no script."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime

from layercache_cli.charts import history_chart, inline_svg
from layercache_cli.history import BuildRow, cold_warm_note, summarize
from layercache_cli.report import (
    RECENT_HEADERS,
    SUMMARY_HEADERS,
    recent_cells,
    summary_cells,
)

CHART_ID = "build-history"
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


def render_html(
    rows: Sequence[BuildRow], days: int, threshold: float, generated_at: datetime
) -> str:
    chart = history_chart(rows, days, generated_at, threshold)
    svg = inline_svg(chart, CHART_ID, "Build duration and cache hit ratio over time")
    chart.figure.clear()
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>layercache build history</title>
<style>{STYLE}</style>
</head>
<body>
<h1>layercache build history</h1>
<p>{len(rows)} builds in the last {days} days,
generated {generated_at.strftime("%Y-%m-%d %H:%M")} UTC.</p>
{svg}
<h2>Per branch</h2>
{_table(SUMMARY_HEADERS, summary_cells(summarize(rows, threshold)))}
<p class="note">{html.escape(cold_warm_note(threshold))}</p>
<h2>Recent builds</h2>
{_table(RECENT_HEADERS, recent_cells(rows))}
</body>
</html>
"""
