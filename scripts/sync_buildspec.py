"""Keep the CodeBuild project's inline buildspec a copy of buildspecs/buildspec.yml.

CodeBuild reads the buildspec from the project (the user's source repository does not
carry ours), so template.yaml must hold it inline. This script writes that copy
(`--write`) or fails when it differs from the file (`--check`), so no one edits it by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
BUILDSPEC = ROOT / "buildspecs" / "buildspec.yml"
MARKER = "# generated from buildspecs/buildspec.yml by `make buildspec`: edit that file"


def render(template_text: str, buildspec_text: str) -> str:
    """Return template_text with the block after MARKER replaced by buildspec_text."""
    lines = template_text.splitlines(keepends=True)
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == MARKER)
    except StopIteration:
        raise SystemExit(f"{TEMPLATE.name}: no line '{MARKER}' under BuildSpec") from None
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith(indent)):
        end += 1
    # Keep blank lines that separate the block from what follows.
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    body = [indent + line if line.strip() else "\n" for line in buildspec_text.splitlines(True)]
    if body and not body[-1].endswith("\n"):
        body[-1] += "\n"
    return "".join(lines[: start + 1] + body + lines[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="update template.yaml")
    mode.add_argument("--check", action="store_true", help="fail if template.yaml differs")
    args = parser.parse_args(argv)
    current = TEMPLATE.read_text()
    wanted = render(current, BUILDSPEC.read_text())
    if args.write:
        if wanted != current:
            TEMPLATE.write_text(wanted)
            print("template.yaml: buildspec updated")
        return 0
    if wanted != current:
        print(
            "template.yaml's BuildSpec differs from buildspecs/buildspec.yml: run `make buildspec`"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
