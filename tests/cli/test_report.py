"""`layercache report` run as users run it: the installed script against the moto server."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from .conftest import SEEDED, MotoServer, ServedStack, build_item, seed


def recent_lines(out: str) -> list[str]:
    return [line for line in out.split("Per branch")[0].splitlines() if "team/service" in line]


def branch_lines(out: str) -> dict[str, str]:
    return {
        line.split()[1]: line
        for line in out.split("Per branch")[1].splitlines()
        if line.startswith("team/service")
    }


def test_report_prints_recent_builds_and_branch_figures(
    seeded_stack: ServedStack, layercache: Any
) -> None:
    result = layercache("report", "--stack", seeded_stack.name, "--days", "7", "--limit", "5")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Recent builds (5 of 9 in the last 7 days)" in out
    lines = recent_lines(out)
    assert len(lines) == 5
    assert re.search(r"main\s+07c0ffee\s+github\s+normal\s+IN_PROGRESS\s+-\s+-\s+#7$", lines[0])
    assert re.search(r"main\s+06c0ffee .* SUCCEEDED\s+1m15s\s+80%\s+#6$", lines[1])
    assert re.search(r"FAILED \(BUILD\)\s+30s\s+-\s+#5$", lines[2])
    summary = branch_lines(out)
    assert re.search(
        r"main\s+7\s+83% \(5/6\)\s+10m20s \(n=2\)\s+1m15s \(n=3\)\s+80%$", summary["main"]
    )
    assert re.search(
        r"feature/login\s+2\s+100% \(2/2\)\s+- \(n=0\)\s+1m50s \(n=2\)\s+70%$",
        summary["feature/login"],
    )
    assert "Cold: a successful build whose cache hit ratio was below 0.50" in out
    assert "CLAIM" not in out
    # Piped output: no colour codes, no wrapping, no trailing blanks.
    assert "\x1b[" not in out
    assert all(line == line.rstrip() for line in out.splitlines())


def test_stack_table_and_environment_name_the_same_table(
    seeded_stack: ServedStack, layercache: Any
) -> None:
    by_stack = layercache("report", "--stack", seeded_stack.name)
    by_table = layercache("report", "--table", seeded_stack.table_name)
    by_variable = layercache("report", BUILDS_TABLE_NAME=seeded_stack.table_name)

    assert by_stack.returncode == by_table.returncode == by_variable.returncode == 0
    assert "Recent builds (9 of 9 in the last 14 days)" in by_stack.stdout
    assert by_stack.stdout == by_table.stdout == by_variable.stdout


def test_days_window_and_an_empty_table(
    moto_server: MotoServer, stack: ServedStack, layercache: Any
) -> None:
    empty = layercache("report", "--stack", stack.name)
    assert (empty.returncode, empty.stdout) == (0, "No builds in the last 14 days.\n")

    seed(moto_server, stack.table_name, [build_item(20, "main", "SUCCEEDED", 24 * 20, 100, "0.9")])

    assert "No builds" in layercache("report", "--stack", stack.name, "--days", "14").stdout
    wider = layercache("report", "--stack", stack.name, "--days", "30").stdout
    assert "Recent builds (1 of 1 in the last 30 days)" in wider


def test_json_has_every_build_and_the_branch_figures(
    seeded_stack: ServedStack, layercache: Any
) -> None:
    result = layercache("report", "--stack", seeded_stack.name, "--json", "--limit", "2")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["table"] == seeded_stack.table_name
    assert (document["days"], document["warm_threshold"]) == (14, 0.5)
    builds = document["builds"]
    assert [build["build_number"] for build in builds] == [7, 6, 5, 4, 9, 8, 3, 2, 1]
    assert builds[2] | {"requested_at": "-"} == {
        "build_id": SEEDED[4]["build_id"],
        "build_number": 5,
        "image": "team/service",
        "branch": "main",
        "commit": SEEDED[4]["commit"],
        "trigger": "github",
        "mode": "normal",
        "requested_at": "-",
        "status": "FAILED",
        "failed_phase": "BUILD",
        "duration_seconds": 30.0,
        "cache_hit_ratio": None,
    }
    main = next(branch for branch in document["branches"] if branch["branch"] == "main")
    assert main == {
        "image": "team/service",
        "branch": "main",
        "builds": 7,
        "finished": 6,
        "succeeded": 5,
        "success_rate": 5 / 6,
        "cold_builds": 2,
        "warm_builds": 3,
        "median_cold_seconds": 620.0,
        "median_warm_seconds": 75.0,
        "median_cache_hit_ratio": 0.8,
    }


def test_html_page_is_one_offline_file_with_the_chart(
    seeded_stack: ServedStack, layercache: Any, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"

    result = layercache("report", "--stack", seeded_stack.name, "--html", str(page))

    assert result.returncode == 0, result.stderr
    assert f"Wrote {page}" in result.stdout
    text = page.read_text()
    assert text.count("<svg ") == 1
    assert re.search(r'<svg [^>]*id="build-history"', text)
    # One point per build with a duration (8) and one per build with a ratio (7), each
    # with a tooltip naming its build.
    assert len(re.findall(r'<g id="duration-build-\d+">\s*<title>', text)) == 8
    assert len(re.findall(r'<g id="ratio-build-\d+">\s*<title>', text)) == 7
    assert "<title>main 05c0ffee FAILED (BUILD) " in text
    assert "<script" not in text
    assert not re.search(r"""(src|href)=["']?https?:""", text)
    assert "@import" not in text
    assert "@font-face" not in text  # glyphs are drawn as paths: no font to fetch


def test_png_chart(seeded_stack: ServedStack, layercache: Any, tmp_path: Path) -> None:
    chart = tmp_path / "chart.png"

    result = layercache("report", "--stack", seeded_stack.name, "--png", str(chart), "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["builds"]  # the note went to stderr
    assert f"Wrote {chart}" in result.stderr
    data = chart.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (998, 633)
