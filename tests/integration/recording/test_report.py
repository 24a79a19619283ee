"""`layercache report` in-process on moto: what the recorder wrote, the HTML page, the figures.

tests/cli runs the installed command against a moto server; these call it as a function.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from layercache_cli import main
from layercache_cli.aws import AwsAccess
from layercache_cli.history import BuildRow, fetch_builds, row_from_item, summarize
from layercache_cli.report_page import render_html
from layercache_dev.kit.functions import invoke_function
from tests.cli.conftest import SEEDED

from .conftest import RECORDER, REGION, sample

NOW = datetime.now(UTC)


def seed(table_name: str, items: list[dict[str, Any]]) -> None:
    table = boto3.resource("dynamodb", region_name=REGION).Table(table_name)
    for item in items:
        table.put_item(Item=item)


def report(*arguments: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main.main(["report", *arguments], out=out)
    return status, out.getvalue()


@pytest.mark.usefixtures("fresh_recorder")
def test_report_reads_what_the_recorder_wrote(
    stack: Any, function_env: Any, notifications: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    function_env(RECORDER)
    invoke_function(RECORDER, sample("failed"))
    capsys.readouterr()

    # The sample is from 2024: look back far enough to include its day.
    days = (NOW - datetime(2024, 5, 14, tzinfo=UTC)).days + 1
    status, out = report("--table", stack.table_name, "--days", str(days))

    assert status == 0
    assert re.search(r"team/service\s+feature/login\s+1b2c3d4e .* FAILED \(BUILD\)\s+1m51s", out)


def test_fetch_builds_skips_other_items_and_old_days(stack: Any) -> None:
    claim = {**SEEDED[0], "pk": "CLAIM#team/service#main#abc", "status": "?"}
    seed(stack.table_name, [*SEEDED, claim])
    table = AwsAccess.open(REGION).builds_table(stack.table_name)

    rows = fetch_builds(table, 2, NOW)

    # Two days back (today included) reach into yesterday: build 1 (50 hours ago) is out,
    # builds 5 to 7 (at most 10 hours ago) are in.
    numbers = {row.build_number for row in rows}
    assert 1 not in numbers
    assert {5, 6, 7} <= numbers
    assert all(row.build_id.startswith("layercache-image-build:") for row in rows)
    assert [row.requested_at for row in rows] == sorted(
        (row.requested_at for row in rows), reverse=True
    )


def test_report_needs_a_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BUILDS_TABLE_NAME", raising=False)

    assert main.main(["report"]) == 2
    assert capsys.readouterr().err == (
        "layercache report: give --stack NAME or --table NAME (or set BUILDS_TABLE_NAME)\n"
    )


def test_html_page_is_self_contained(stack: Any, tmp_path: Path) -> None:
    seed(stack.table_name, SEEDED)
    page = tmp_path / "report.html"

    status, _ = report("--table", stack.table_name, "--html", str(page))

    assert status == 0
    text = page.read_text()
    assert text.count("<svg ") == 1
    # One point per build with a duration (8), one per build with a ratio (7); the failed
    # build's point is red.
    assert len(re.findall(r'<g id="(duration|ratio)-build-\d+">', text)) == 8 + 7
    assert len(re.findall(r'<g id="(duration|ratio)-line-\d+">', text)) == 4
    assert "fill: #dc2626" in text
    assert "<script" not in text
    assert not re.search(r"""(src|href)=["']?https?:""", text)
    assert "@import" not in text


def test_summary_skips_builds_without_ratio_in_cold_and_warm() -> None:
    rows = [
        BuildRow("b1", "img", "main", "2024-05-14T00:00:00.000Z", "SUCCEEDED", duration=10.0),
        BuildRow("b2", "img", "main", "2024-05-14T01:00:00.000Z", "STOPPED", duration=5.0),
    ]

    [summary] = summarize(rows)

    assert (summary.cold_builds, summary.warm_builds, summary.median_ratio) == (0, 0, None)
    assert (summary.finished, summary.succeeded, summary.success_rate) == (2, 1, 0.5)
    assert 'id="duration-build-0"' in render_html(rows, 7, 0.5, NOW)
    assert "<svg " in render_html([], 7, 0.5, NOW)


def test_summary_of_the_seeded_history() -> None:
    rows = [row_from_item(item) for item in SEEDED]

    main_branch = next(s for s in summarize(rows) if s.branch == "main")

    assert (main_branch.builds, main_branch.finished, main_branch.succeeded) == (7, 6, 5)
    assert (main_branch.median_cold, main_branch.median_warm) == (620.0, 75.0)
    assert main_branch.median_ratio == 0.8
