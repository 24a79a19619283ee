"""Command-line pieces the commands share: the parser class, value types, the table to read."""

from __future__ import annotations

import argparse
import os
from typing import Any, NoReturn

from layercache.build_records import BuildsTable
from layercache_cli.aws import AwsAccess, CommandError
from layercache_cli.stack import DeployedStack

TABLE_VARIABLE = "BUILDS_TABLE_NAME"


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a bad argument reported in one line (exit status 2, as argparse does)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {value}")
    return value


def ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {value}")
    return value


def add_command_parser(
    subparsers: Any, name: str, help: str, description: str | None
) -> argparse.ArgumentParser:
    """A command's parser whose --help shows `description` (a module docstring) as written."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def add_days_argument(parser: argparse.ArgumentParser, default: int, meaning: str) -> None:
    """--days N: how far back a command reads (`meaning` says it for --help)."""
    parser.add_argument(
        "--days", type=positive_int, default=default, help=f"{meaning} (default {default})"
    )


def add_region_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--region", help="AWS Region (default: $AWS_REGION, $AWS_DEFAULT_REGION, your profile's)"
    )


def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    """--stack or --table: where the build records are."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--stack", metavar="NAME", help="the layercache stack (reads its BuildsTableName output)"
    )
    where.add_argument(
        "--table", metavar="NAME", help=f"the BuildsTable's name (default: ${TABLE_VARIABLE})"
    )
    add_region_argument(parser)


def open_stack(args: argparse.Namespace, aws: AwsAccess) -> DeployedStack | None:
    return DeployedStack(args.stack, aws.cloudformation()) if args.stack else None


def open_builds_table(
    args: argparse.Namespace, aws: AwsAccess, stack: DeployedStack | None
) -> BuildsTable:
    if stack is not None:
        return aws.builds_table(stack.table_name())
    name = args.table or os.environ.get(TABLE_VARIABLE)
    if not name:
        raise CommandError(f"give --stack NAME or --table NAME (or set {TABLE_VARIABLE})")
    return aws.builds_table(name)
