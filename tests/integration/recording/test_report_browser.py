"""The report's HTML page renders in headless Chromium, charts included.

Skipped without a `chromium` binary unless LAYERCACHE_REQUIRE_BROWSER=1 (CI installs it
with .ci/setup-browser). LAYERCACHE_KEEP_SCREENSHOT=FILE keeps the screenshot, to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from layercache_cli.charts import FAILED_COLOR, PALETTE
from layercache_cli.history import row_from_item
from layercache_cli.report_page import render_html
from tests.cli.conftest import SEEDED

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("LAYERCACHE_REQUIRE_BROWSER") == "1"

if CHROMIUM is None and REQUIRED:
    pytest.fail("LAYERCACHE_REQUIRE_BROWSER=1 but no chromium on PATH", pytrace=False)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (see .ci/setup-browser)")


def chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess[bytes]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-extensions",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *arguments,
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )


def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Decode an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes) to RGB pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, idat = 8, b""
    width = height = channels = 0
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, interlace) == (8, 0)
            assert color_type in (2, 6)
            channels = 3 if color_type == 2 else 4
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    pixels: list[tuple[int, int, int]] = []
    position = 0
    for _ in range(height):
        scan_filter = raw[position]
        line = bytearray(raw[position + 1 : position + 1 + stride])
        position += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if scan_filter == 1:
                line[i] = (line[i] + left) & 0xFF
            elif scan_filter == 2:
                line[i] = (line[i] + up) & 0xFF
            elif scan_filter == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif scan_filter == 4:
                guess = left + up - corner
                pa, pb, pc = abs(guess - left), abs(guess - up), abs(guess - corner)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + predictor) & 0xFF
        pixels.extend((line[i], line[i + 1], line[i + 2]) for i in range(0, stride, channels))
        previous = line
    return width, height, pixels


def near(pixel: tuple[int, int, int], color: str, tolerance: int = 12) -> bool:
    target = (int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16))
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, target, strict=True))


@pytest.fixture
def page(tmp_path: Path) -> Path:
    rows = sorted((row_from_item(item) for item in SEEDED), key=lambda r: r.requested_at)
    path = tmp_path / "report.html"
    path.write_text(render_html(rows[::-1], 7, 0.5, datetime.now(UTC)), "utf-8")
    return path


def test_chromium_builds_the_chart_elements(page: Path, tmp_path: Path) -> None:
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile").stdout.decode()

    assert re.search(r'<svg [^>]*id="build-history"', dom)
    assert len(re.findall(r'<g id="(duration|ratio)-line-\d+">', dom)) == 4  # 2 branches x 2
    points = re.findall(r'<g id="(?:duration|ratio)-build-\d+">\s*<title>([^<]*)</title>', dom)
    assert len(points) == 8 + 7
    assert sum(1 for label in points if label.startswith("main 05c0ffee FAILED (BUILD)")) == 1
    assert "layercache build history" in dom


def test_chromium_paints_the_charts(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"

    chromium(
        f"--screenshot={shot}", "--window-size=1100,900", page.as_uri(), profile=tmp_path / "p"
    )

    if os.environ.get("LAYERCACHE_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["LAYERCACHE_KEEP_SCREENSHOT"])
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (1100, 900)
    assert len(set(pixels)) > 50, "the screenshot is blank"
    # main's series (second colour) draws long 3px lines through both panels; its legend
    # entry alone would be ~150 pixels. The failed build is one red point (and a legend one).
    main_pixels = sum(1 for pixel in pixels if near(pixel, PALETTE[1]))
    feature_pixels = sum(1 for pixel in pixels if near(pixel, PALETTE[0]))
    failed_pixels = sum(1 for pixel in pixels if near(pixel, FAILED_COLOR))
    assert main_pixels > 2000
    assert feature_pixels > 250
    assert failed_pixels > 80
