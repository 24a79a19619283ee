"""The `layercache` developer command: one subcommand per tool (report, later demo, bench)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from layercache_dev import bench, demo, report


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="layercache", description="layercache developer tools")
    subparsers = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report.add_parser(subparsers)
    bench.add_parser(subparsers)
    demo.add_parser(subparsers)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
