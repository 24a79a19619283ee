"""The `layercache-dev` command: the developer's tools (demo, bench).

The user's command, `layercache` (report, builds, show, status), is its own package:
cli/layercache_cli.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from layercache_dev import bench, demo


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="layercache-dev", description="layercache developer tools")
    subparsers = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench.add_parser(subparsers)
    demo.add_parser(subparsers)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
