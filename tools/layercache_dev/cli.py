"""The `layercache-dev` command: the developer's tools (demo, bench).

Each command's module (and what it needs: moto, the rig, matplotlib) is imported only
when that command runs; `--help` needs none of them.

The user's command, `layercache` (report, builds, show, status), is its own package:
cli/layercache_cli.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

# Command -> (its module, the one-line help `layercache-dev --help` lists; the module's
# parser uses the same).
COMMANDS = {
    "bench": (
        "layercache_dev.bench.command",
        "build strategies side by side, and the pipeline's own overhead",
    ),
    "demo": (
        "layercache_dev.demo.command",
        "The whole pipeline end to end, on an embedded AWS and a local registry",
    ),
}


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line; with `command`, that command's own arguments (its module loaded)."""
    root = argparse.ArgumentParser(prog="layercache-dev", description="layercache developer tools")
    subparsers = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_line) in COMMANDS.items():
        if name == command:
            importlib.import_module(module).add_parser(subparsers)
        else:
            # A stand-in until the command is chosen: its own --help comes with its module.
            subparsers.add_parser(name, help=help_line, add_help=False)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    first, _ = parser().parse_known_args(argv)
    args = parser(first.command).parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
