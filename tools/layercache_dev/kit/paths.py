"""Where the checkout's files are, for the kit, the demo and the benchmark."""

from __future__ import annotations

from pathlib import Path

# tools/layercache_dev/kit/paths.py: the checkout is three folders up.
ROOT = Path(__file__).resolve().parents[3]
TEMPLATE_PATH = ROOT / "template.yaml"
BUILDSPECS = ROOT / "buildspecs"
BUILDSPEC = BUILDSPECS / "buildspec.yml"
EVENTS = ROOT / "events"
