"""`layercache builds` lists recent builds; `layercache show` tells one build's whole record.

A Bake file's build built several images: `builds` counts them (`4 images, 3 cached`),
`show` has a table of them, and `show --json` the record with its `images` list.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TextIO

from rich.console import RenderableType
from rich.text import Text

from layercache.build_records import BuildsTable, build_pk
from layercache.recording.build import build_id_of, console_url
from layercache_cli.arguments import (
    add_days_argument,
    add_table_arguments,
    open_builds_table,
    open_stack,
    positive_int,
)
from layercache_cli.aws import AwsAccess, CommandError
from layercache_cli.history import (
    BuildRow,
    ImageResult,
    builds_of_branch,
    builds_of_commit,
    duration_text,
    fetch_builds,
    is_build_item,
    is_full_sha,
    newest_builds,
    number,
    percent_text,
    row_from_item,
    text,
)
from layercache_cli.report import identified_builds_table
from layercache_cli.stack import BUILD_PROJECT_OUTPUT, DeployedStack
from layercache_cli.tables import build_table, key_value_table, status_cell, write_output

# CodeBuild's phases in the order a build goes through them (the record keeps a map).
PHASE_ORDER = (
    "SUBMITTED",
    "QUEUED",
    "PROVISIONING",
    "DOWNLOAD_SOURCE",
    "INSTALL",
    "PRE_BUILD",
    "BUILD",
    "POST_BUILD",
    "UPLOAD_ARTIFACTS",
    "FINALIZING",
)
IMAGE_HEADERS = [
    "IMAGE",
    "DIGEST",
    "TAGS",
    "CACHED STEPS",
    "CACHE HITS",
    "BUILD",
    "PUSH",
    "CACHE",
    "BUILT ON",
]
# The recorder's bookkeeping of its one report per outcome: no part of the build's story.
INTERNAL_ATTRIBUTES = frozenset({"report_token", "report_lease_until"})


# ------------------------------------------------------------------ builds
def images_to_search(
    args: argparse.Namespace, stack: DeployedStack | None, table: BuildsTable, now: datetime
) -> list[str]:
    """--image; else the stack's image repository; else the images built in the period."""
    if args.image:
        return [args.image]
    image = stack.image_repository_name() if stack is not None else None
    if image:
        return [image]
    return sorted({row.image for row in fetch_builds(table, args.days, now)})


def find_builds(
    args: argparse.Namespace, stack: DeployedStack | None, table: BuildsTable, now: datetime
) -> list[BuildRow]:
    """Newest first: a commit's builds (ByCommit), a branch's (ByBranch), or everyone's (ByDay).

    A commit given in full is looked up directly; a prefix among the period's builds.
    """
    commit = args.commit.lower() if args.commit else None
    if commit and is_full_sha(commit):
        rows = builds_of_commit(table, commit, args.limit)
    elif args.branch:
        rows = []
        for image in images_to_search(args, stack, table, now):
            rows.extend(builds_of_branch(table, image, args.branch, args.limit))
    elif commit:
        rows = fetch_builds(table, args.days, now)
    else:
        rows = newest_builds(table, args.limit, args.days, now)
    rows = [
        row
        for row in rows
        if (not commit or row.commit.startswith(commit))
        and (not args.branch or row.branch == args.branch)
        and (not args.image or row.image == args.image)
    ]
    rows.sort(key=lambda row: row.requested_at, reverse=True)
    return rows[: args.limit]


def add_builds_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "builds",
        help="recent builds, newest first (of a branch, of a commit)",
        description="Recent builds, newest first. Give the BUILD ID to `layercache show`.",
    )
    add_table_arguments(parser)
    parser.add_argument("--branch", metavar="B", help="only this branch's builds")
    parser.add_argument(
        "--commit", metavar="SHA", help="only builds of this commit (full SHA, or a prefix)"
    )
    parser.add_argument(
        "--image",
        metavar="NAME",
        help="only this image (default with --branch: the stack's image repository)",
    )
    parser.add_argument(
        "--limit", type=positive_int, default=20, help="how many builds (default 20)"
    )
    add_days_argument(parser, 30, "how far back to look without --branch or a full --commit")
    parser.set_defaults(run=run_builds)


def run_builds(
    args: argparse.Namespace, aws: AwsAccess, out: TextIO, now: datetime | None = None
) -> int:
    now = now or datetime.now(UTC)
    stack = open_stack(args, aws)
    table = open_builds_table(args, aws, stack)
    rows = find_builds(args, stack, table, now)
    if not rows:
        write_output(out, [Text("No builds found.")])
    else:
        write_output(out, [identified_builds_table(rows)])
    return 0


# ------------------------------------------------------------------ show
def log_link(item: Mapping[str, Any]) -> str:
    """The build's page in the CodeBuild console (its logs are there), from its ARN."""
    arn = text(item, "build_arn")
    parts = arn.split(":", 5)  # arn:aws:codebuild:<region>:<account>:build/<project>:<uuid>
    if len(parts) == 6 and parts[5].startswith("build/"):
        build_id = build_id_of(arn)
        project = build_id.split(":", 1)[0]
        return console_url(parts[3], parts[4], project, build_id)
    return text(item, "console_url") or "-"


def _seconds(item: Mapping[str, Any], name: str) -> str:
    return duration_text(number(item.get(name)))


def _moment(item: Mapping[str, Any], name: str) -> str:
    value = text(item, name)
    return value[:19].replace("T", " ") + " UTC" if value else "-"


def record_pairs(item: Mapping[str, Any]) -> list[tuple[str, Text | str]]:
    row = row_from_item(item)
    ratio = number(item.get("cache_hit_ratio"))
    cache = percent_text(ratio)
    if text(item, "cache_ref_hit"):
        cache += f" (from {text(item, 'cache_ref_hit')})"
    tags = item.get("image_tags")
    pairs: list[tuple[str, Text | str]] = [
        ("Status", status_cell(row.status_text, row.status)),
        ("Image", row.image),
        ("Branch", row.branch),
        ("Commit", row.commit or text(item, "source_version") or "-"),
        ("Trigger", f"{row.trigger or '-'} ({row.mode or '-'} mode)"),
        ("Requested", _moment(item, "requested_at")),
        ("Started", _moment(item, "started_at")),
        ("Ended", _moment(item, "ended_at")),
        ("Duration", f"{duration_text(row.duration)} (queued {_seconds(item, 'queued_seconds')})"),
        ("Build / push", f"{_seconds(item, 'build_seconds')} / {_seconds(item, 'push_seconds')}"),
        ("Cache hits", cache),
        ("Digest", text(item, "image_digest") or "-"),
        ("Tags", ", ".join(str(tag) for tag in tags) if isinstance(tags, list) and tags else "-"),
    ]
    if row.images:
        pairs.append(("Images", row.images_text))
    if text(item, "failure_message"):
        pairs.append(("Failure", text(item, "failure_message")))
    pairs.append(("Log", log_link(item)))
    return pairs


def image_cells(images: tuple[ImageResult, ...]) -> list[list[Text | str]]:
    """One line per image of a Bake file's build, in the order they were built."""
    return [
        [
            image.name,
            image.short_digest,
            ", ".join(image.tags) or "-",
            image.steps_text,
            percent_text(image.cache_hit_ratio),
            duration_text(image.build_seconds),
            duration_text(image.push_seconds),
            image.cache_status or "-",
            ", ".join(image.built_on) or "-",
        ]
        for image in images
    ]


def plain_value(value: Any) -> Any:
    """A DynamoDB value as JSON takes it: numbers as int or float, sets as sorted lists."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {str(key): plain_value(entry) for key, entry in value.items()}
    if isinstance(value, list | tuple):
        return [plain_value(entry) for entry in value]
    if isinstance(value, set | frozenset):
        return sorted(plain_value(entry) for entry in value)
    if isinstance(value, bytes | bytearray):
        return value.hex()
    return value


def record_document(item: Mapping[str, Any]) -> dict[str, Any]:
    """What `show --json` prints: the record as the recorder wrote it."""
    return {
        name: plain_value(value)
        for name, value in sorted(item.items())
        if name not in INTERNAL_ATTRIBUTES
    }


def phase_cells(item: Mapping[str, Any]) -> list[list[Text | str]]:
    phases = item.get("phases")
    if not isinstance(phases, Mapping):
        return []
    order = {name: index for index, name in enumerate(PHASE_ORDER)}
    cells: list[list[Text | str]] = []
    for name in sorted(phases, key=lambda name: (order.get(name, len(order)), name)):
        phase = phases[name] if isinstance(phases[name], Mapping) else {}
        status = text(phase, "status")
        seconds = phase.get("seconds")
        cells.append(
            [
                name,
                status_cell(status, status) if status else "-",
                duration_text(float(seconds) if isinstance(seconds, int | Decimal) else None),
            ]
        )
    return cells


def find_record(table: BuildsTable, build: str, stack: DeployedStack | None) -> dict[str, Any]:
    """The item of a build given by id ("project:uuid"), ARN, or uuid (with --stack)."""
    build_id = build_id_of(build)
    candidates = [build_id]
    project = stack.outputs.get(BUILD_PROJECT_OUTPUT) if stack is not None else None
    if ":" not in build_id and project:
        candidates.insert(0, f"{project}:{build_id}")
    for candidate in candidates:
        item = table.get(build_pk(candidate))
        if item is not None and is_build_item(item):
            return item
    raise CommandError(f"no build {build!r} in table {table.table_name!r}")


def add_show_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "show",
        help="one build's record: phases, tags, digest, cache hits, a link to its log",
        description="One build's record, as the build recorder wrote it.",
    )
    parser.add_argument(
        "build", metavar="BUILD_ID", help="the build's id (project:uuid), ARN, or uuid"
    )
    add_table_arguments(parser)
    parser.add_argument(
        "--json", action="store_true", help="print the record as JSON (with its images) instead"
    )
    parser.set_defaults(run=run_show)


def run_show(args: argparse.Namespace, aws: AwsAccess, out: TextIO) -> int:
    stack = open_stack(args, aws)
    table = open_builds_table(args, aws, stack)
    item = find_record(table, args.build, stack)
    if args.json:
        out.write(json.dumps(record_document(item), indent=2) + "\n")
        return 0
    row = row_from_item(item)
    title = f"Build {row.build_id}" + (
        f" (#{row.build_number})" if row.build_number is not None else ""
    )
    parts: list[RenderableType] = [Text(title, "bold"), key_value_table(record_pairs(item))]
    if row.images:
        parts += [
            Text(""),
            Text("Images", "bold"),
            build_table(IMAGE_HEADERS, image_cells(row.images)),
        ]
    phases = phase_cells(item)
    if phases:
        parts += [
            Text(""),
            Text("Phases", "bold"),
            build_table(["PHASE", "STATUS", "TIME"], phases),
        ]
    write_output(out, parts)
    return 0
