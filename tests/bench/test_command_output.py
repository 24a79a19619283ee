"""What `layercache bench` prints: progress lines as they come, then the report's tables, all
through rich to standard output (plain text when that is not a terminal)."""

from __future__ import annotations

import argparse
import json
import re
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from layercache_dev.bench.command import BenchProgress, add_parser
from layercache_dev.bench.report import check_targets, results_json

from .test_report import make_results


def test_progress_lines_are_printed_plain_when_not_a_terminal() -> None:
    out = StringIO()
    progress = BenchProgress(Console(file=out, width=100), builds=2)
    lines = [
        "builds: 2 MB image, 0 s of work, 1 run(s) per cell, registry link 50 MB/s",
        "  no cache / cold #1: 1.2s, down 0.0 MB, up 2.1 MB, 0/12 cached",
        "  no cache / unchanged #1: 1.0s, down 0.0 MB, up 2.1 MB, [12/12] cached",
        "overhead: imports",
    ]
    with progress.bar:
        progress.say(lines[0])
        for line in lines[1:3]:
            progress.say(line)
            progress.build_measured()
        progress.say(lines[3])
    assert out.getvalue() == "\n".join(lines) + "\n"  # no bar, colour or markup
    assert progress.bar.tasks[progress.builds].completed == 2


def test_on_a_terminal_a_bar_counts_the_builds_below_the_lines() -> None:
    out = StringIO()
    progress = BenchProgress(
        Console(file=out, width=100, force_terminal=True, color_system=None), builds=3
    )
    with progress.bar:
        progress.build_measured()
        progress.say("  no cache / cold #1: 1.2s, down 0.0 MB, up 2.1 MB, 0/12 cached")
    drawn = out.getvalue()
    assert "no cache / cold #1" in drawn
    assert re.search(r"builds .* 1/3 ", drawn)


def test_rendering_from_json_writes_the_files_and_prints_the_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    results = make_results()
    source = tmp_path / "results.json"
    source.write_text(json.dumps(results_json(results, check_targets(results))))
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["bench", "--from-json", str(source), "--out", str(tmp_path / "out")])

    assert args.run(args) == 0

    printed = capsys.readouterr().out
    assert "\x1b" not in printed
    assert re.search(r"\nbase-image refresh +registry +20\.0 +0\.50x +0\.56x ", printed)
    assert "unchanged rebuild vs the seed" in printed
    assert printed.rstrip().endswith(f"rendered {source} to {tmp_path / 'out'}")
    written = tmp_path / "out"
    assert (written / "results.md").read_text().startswith("# layercache benchmark results")
    assert (written / "builds.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
