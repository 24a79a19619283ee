"""`layercache`: what a deployed layercache stack recorded, from a laptop or a CI job.

    layercache report --stack NAME [--days 14] [--image NAME] [--html FILE] [--png FILE] [--json]
    layercache builds --stack NAME [--branch B] [--commit SHA] [--limit N]
    layercache show BUILD_ID --stack NAME [--json]
    layercache status --stack NAME

Every command reads with your AWS credentials (AWS_PROFILE, ~/.aws, the environment);
AWS_ENDPOINT_URL points it at another endpoint. Errors are one line, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from botocore.exceptions import BotoCoreError, ClientError

from layercache_cli import builds, report, status
from layercache_cli.arguments import ArgumentParser
from layercache_cli.aws import AwsAccess, CommandError, explain

ERROR_STATUS = 2


def parser() -> ArgumentParser:
    root = ArgumentParser(
        prog="layercache",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report.add_parser(subparsers)
    builds.add_builds_parser(subparsers)
    builds.add_show_parser(subparsers)
    status.add_parser(subparsers)
    return root


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = parser().parse_args(argv)
    aws: AwsAccess | None = None
    try:
        aws = AwsAccess.open(args.region)
        code: int = args.run(args, aws, out or sys.stdout)
    except CommandError as error:
        return fail(args.command, str(error))
    except (BotoCoreError, ClientError) as error:
        return fail(args.command, aws.explain(error) if aws else explain(error))
    return code


def fail(command: str, message: str) -> int:
    sys.stderr.write(f"layercache {command}: {message}\n")
    return ERROR_STATUS


if __name__ == "__main__":
    raise SystemExit(main())
