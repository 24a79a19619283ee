"""Keep the pruner's copy of the branch slug identical to the build driver's.

The build driver (buildspecs/build_driver.py) ships to CodeBuild on its own, standard
library only; the pruner ships in the Lambda package (functions/). Neither can import the
other, yet both must spell a branch's tags the same way. So the slug is written once, in
the driver, between the lines `# >>> branch slug` and `# <<< branch slug`, and this script
copies that block, unchanged, into functions/layercache/pruning/model.py (`--write`) or
fails when the copy differs (`--check`, run by `make lint`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "buildspecs" / "build_driver.py"
COPY = ROOT / "functions" / "layercache" / "pruning" / "model.py"
BEGIN = "# >>> branch slug"
END = "# <<< branch slug"


def block(text: str, name: str) -> tuple[int, int]:
    """The [start, end) line indexes of the slug block in `text`, markers included."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith(BEGIN)]
    ends = [i for i, line in enumerate(lines) if line.startswith(END)]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise SystemExit(f"{name}: needs one '{BEGIN}' line and one '{END}' line after it")
    return starts[0], ends[0] + 1


def render(copy_text: str, source_text: str) -> str:
    """`copy_text` with its slug block replaced by the one in `source_text`."""
    source_lines = source_text.splitlines(keepends=True)
    start, end = block(source_text, SOURCE.name)
    copy_lines = copy_text.splitlines(keepends=True)
    copy_start, copy_end = block(copy_text, COPY.name)
    return "".join(copy_lines[:copy_start] + source_lines[start:end] + copy_lines[copy_end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help=f"update {COPY.name}")
    mode.add_argument("--check", action="store_true", help=f"fail if {COPY.name} differs")
    args = parser.parse_args(argv)
    current = COPY.read_text()
    wanted = render(current, SOURCE.read_text())
    if args.write:
        if wanted != current:
            COPY.write_text(wanted)
            print(f"{COPY.relative_to(ROOT)}: branch slug updated")
        return 0
    if wanted != current:
        print(
            f"{COPY.relative_to(ROOT)}'s branch slug differs from {SOURCE.relative_to(ROOT)}'s: "
            "run `python scripts/sync_slug.py --write`"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
