"""`layercache report` on seeded build records: the table, per-branch figures, the HTML page."""

from __future__ import annotations

import importlib
import os
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest

from layercache_dev import cli
from layercache_dev.lambda_context import FakeLambdaContext
from layercache_dev.report import BuildRow, render_html, summarize
from layercache_dev.template import create_table_arguments, function_handler

from .conftest import REGION, sample

NOW = datetime.now(UTC)


def build_item(
    number: int,
    branch: str,
    status: str,
    hours_ago: float,
    duration: int | None = None,
    ratio: str | None = None,
    image: str = "team/service",
) -> dict[str, Any]:
    requested = NOW - timedelta(hours=hours_ago)
    stamp = requested.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    item: dict[str, Any] = {
        "pk": f"BUILD#layercache-image-build:{number:08d}-0000-4000-8000-000000000000",
        "build_id": f"layercache-image-build:{number:08d}-0000-4000-8000-000000000000",
        "build_number": number,
        "image": image,
        "branch": branch,
        "branch_key": f"{image}#{branch}",
        "commit": f"{number:02d}" + "c0ffee" * 6 + "00",
        "trigger": "github",
        "mode": "normal",
        "requested_at": stamp,
        "day": stamp[:10],
        "status": status,
    }
    if duration is not None:
        item["duration_seconds"] = duration
    if ratio is not None:
        item["cache_hit_ratio"] = Decimal(ratio)
    if status == "FAILED":
        item["failed_phase"] = "BUILD"
    return item


SEEDED = [
    # main: two cold builds, three warm ones, a failure and one still running
    build_item(1, "main", "SUCCEEDED", 50, 600, "0.1"),
    build_item(2, "main", "SUCCEEDED", 40, 640, "0.2"),
    build_item(3, "main", "SUCCEEDED", 30, 60, "0.9"),
    build_item(4, "main", "SUCCEEDED", 20, 90, "0.95"),
    build_item(5, "main", "FAILED", 10, 30),
    build_item(6, "main", "SUCCEEDED", 5, 75, "0.8"),
    build_item(7, "main", "IN_PROGRESS", 0.1),
    # a feature branch that started warm from main's cache
    build_item(8, "feature/login", "SUCCEEDED", 26, 100, "0.7"),
    build_item(9, "feature/login", "SUCCEEDED", 25, 120, "0.7"),
]


def seed(client: Any, table_name: str, items: list[dict[str, Any]]) -> None:
    table = boto3.resource(
        "dynamodb", region_name=REGION, endpoint_url=client.meta.endpoint_url
    ).Table(table_name)
    for item in items:
        table.put_item(Item=item)
    # Not a build: the report must skip it even though it has the index's keys.
    table.put_item(Item={**items[0], "pk": "CLAIM#team/service#main#abc", "status": "?"})


def test_report_prints_recent_builds_and_branch_figures(
    stack: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(boto3.client("dynamodb", region_name=REGION), stack.table_name, SEEDED)

    status = cli.main(["report", "--table", stack.table_name, "--days", "7", "--limit", "5"])

    out = capsys.readouterr().out
    assert status == 0
    assert "Recent builds (5 of 9 in the last 7 days)" in out
    recent = out.split("Per branch")[0]
    lines = [line for line in recent.splitlines() if "team/service" in line]
    assert len(lines) == 5
    assert re.search(r"main\s+07c0ffee\s+github\s+normal\s+IN_PROGRESS\s+-\s+-\s+#7", lines[0])
    assert re.search(r"main\s+06c0ffee .* SUCCEEDED\s+1m15s\s+80%\s+#6", lines[1])
    assert re.search(r"FAILED \(BUILD\)\s+30s\s+-\s+#5", lines[2])
    summary = {
        line.split()[1]: line
        for line in out.split("Per branch")[1].splitlines()
        if line.startswith("team/service")
    }
    assert re.search(
        r"main\s+7\s+83% \(5/6\)\s+10m20s \(n=2\)\s+1m15s \(n=3\)\s+80%", summary["main"]
    )
    assert re.search(
        r"feature/login\s+2\s+100% \(2/2\)\s+- \(n=0\)\s+1m50s \(n=2\)\s+70%",
        summary["feature/login"],
    )
    assert "Cold: a successful build whose cache hit ratio was below 0.50" in out
    assert "CLAIM" not in out


def test_report_days_window_and_empty_table(stack: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "--table", stack.table_name]) == 0
    assert capsys.readouterr().out == "No builds in the last 14 days.\n"

    old = build_item(20, "main", "SUCCEEDED", 24 * 20, 100, "0.9")
    seed(boto3.client("dynamodb", region_name=REGION), stack.table_name, [old])

    assert cli.main(["report", "--table", stack.table_name, "--days", "14"]) == 0
    assert "No builds" in capsys.readouterr().out
    assert cli.main(["report", "--table", stack.table_name, "--days", "30"]) == 0
    assert "Recent builds (1 of 1 in the last 30 days)" in capsys.readouterr().out


def test_report_needs_a_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUILDS_TABLE_NAME", raising=False)

    assert cli.main(["report"]) == 2


def test_report_reads_what_the_recorder_wrote(
    stack: Any, function_env: Any, notifications: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    function_env("BuildRecorderFunction")
    module_name, _, name = function_handler("BuildRecorderFunction").rpartition(".")
    module = importlib.import_module(module_name)
    module.default_service.cache_clear()
    getattr(module, name)(sample("failed"), FakeLambdaContext())
    module.default_service.cache_clear()
    capsys.readouterr()

    # The sample is from 2024: look back far enough to include its day.
    days = (NOW - datetime(2024, 5, 14, tzinfo=UTC)).days + 1
    assert cli.main(["report", "--table", stack.table_name, "--days", str(days)]) == 0

    out = capsys.readouterr().out
    assert re.search(r"team/service\s+feature/login\s+1b2c3d4e .* FAILED \(BUILD\)\s+1m51s", out)


def test_html_page_is_self_contained(stack: Any, tmp_path: Path) -> None:
    seed(boto3.client("dynamodb", region_name=REGION), stack.table_name, SEEDED)
    page = tmp_path / "report.html"

    assert cli.main(["report", "--table", stack.table_name, "--html", str(page)]) == 0

    text = page.read_text()
    assert text.count('<svg id="') == 2
    # One point per build with a duration (8), one per build with a ratio (7).
    assert text.count('<circle class="pt') == 8 + 7
    assert text.count('class="pt failed"') == 1
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
    assert "<svg" in render_html(rows, 7, 0.5, NOW)
    assert "<svg" in render_html([], 7, 0.5, NOW)


def test_console_script_against_an_embedded_aws_server(tmp_path: Path) -> None:
    """`layercache report` honours AWS_ENDPOINT_URL: here a moto server on 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("dynamodb", region_name=REGION, endpoint_url=endpoint)
        client.create_table(**create_table_arguments("BuildsTable", "served-builds"))
        seed(client, "served-builds", SEEDED)
        script = Path(sys.executable).with_name("layercache")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "layercache_dev.cli"]
        result = subprocess.run(
            [*command, "report", "--days", "3"],
            env={
                **os.environ,
                "AWS_ENDPOINT_URL": endpoint,
                "BUILDS_TABLE_NAME": "served-builds",
            },
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        server.stop()

    assert result.returncode == 0, result.stderr
    assert "Recent builds (9 of 9 in the last 3 days)" in result.stdout
