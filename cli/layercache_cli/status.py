"""`layercache status --stack NAME`: is the stack healthy?

The last build of each branch (for a Bake file's build, how many images it built and
how many were all cached), the builds that did not succeed in the last day, the
messages waiting in the failure queues, and the pruner's last run as its log group
records it (the pruner keeps no other record: one "Pruned repository" line per
repository and run, with what it kept, deleted and freed). Exit status 1 when something
needs a look: a branch whose last build did not succeed, a message in a failure queue,
or a pruner run that could not prune a repository.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TextIO

from botocore.exceptions import ClientError
from rich.console import RenderableType
from rich.text import Text

from layercache_cli.arguments import add_command_parser, add_days_argument, add_region_argument
from layercache_cli.aws import AwsAccess
from layercache_cli.history import BuildRow, fetch_builds, newest_per_branch
from layercache_cli.report import identified_builds_table
from layercache_cli.stack import (
    FAILURE_QUEUE_OUTPUTS,
    PRUNER_LOG_GROUP_RESOURCE,
    DeployedStack,
)
from layercache_cli.tables import build_table, write_output

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

# What the pruner logs once per repository and run (layercache/pruning/service.py).
PRUNED_MESSAGE = "Pruned repository"
# Powertools' Logger puts the invocation's request id on every line of it.
REQUEST_ID_KEY = "function_request_id"
PRUNER_LOOKBACK = timedelta(days=7)
FAILURE_WINDOW = timedelta(days=1)
WAITING_ATTRIBUTE: Final = "ApproximateNumberOfMessages"


@dataclass(frozen=True)
class QueueDepth:
    output: str
    url: str | None
    waiting: int | None

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1] if self.url else "-"


@dataclass(frozen=True)
class PrunerRun:
    at: datetime
    repositories: tuple[Mapping[str, Any], ...]

    def total(self, key: str) -> int:
        return sum(int(summary.get(key) or 0) for summary in self.repositories)

    @property
    def dry_run(self) -> bool:
        return any(summary.get("dry_run") for summary in self.repositories)

    @property
    def errors(self) -> list[str]:
        return [
            f"{summary.get('repository', '?')}: {summary['error']}"
            for summary in self.repositories
            if summary.get("error")
        ]


@dataclass(frozen=True)
class StackHealth:
    stack: str
    table: str
    days: int
    latest: Sequence[BuildRow]
    failures: Sequence[BuildRow]
    queues: Sequence[QueueDepth]
    pruner: PrunerRun | None
    # Why there is no pruner run to show.
    pruner_note: str = ""

    @property
    def attention(self) -> list[str]:
        """What needs a look; empty when the stack is healthy."""
        findings = [
            f"{row.image} {row.branch}: last build {row.status_text}"
            for row in self.latest
            if row.finished and not row.succeeded
        ]
        findings += [
            f"{queue.waiting} message(s) waiting in {queue.name} ({queue.output})"
            for queue in self.queues
            if queue.waiting
        ]
        if self.pruner is not None:
            findings += [f"pruner: {error}" for error in self.pruner.errors]
        return findings


# ------------------------------------------------------------------ reading
def failure_queue_depths(stack: DeployedStack, sqs: SQSClient) -> list[QueueDepth]:
    depths = []
    for output in FAILURE_QUEUE_OUTPUTS:
        url = stack.outputs.get(output)
        waiting = None
        if url:
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[WAITING_ATTRIBUTE])[
                "Attributes"
            ]
            waiting = int(attributes.get(WAITING_ATTRIBUTE, "0"))
        depths.append(QueueDepth(output, url, waiting))
    return depths


def log_record(message: str) -> dict[str, Any] | None:
    """The JSON object a Powertools log line holds (Lambda may prefix it), or None."""
    start = message.find("{")
    if start < 0:
        return None
    try:
        record = json.loads(message[start:])
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def newest_pruner_run(events: Iterable[Mapping[str, Any]]) -> PrunerRun | None:
    """The newest run among CloudWatch log events: its "Pruned repository" summaries.

    A run is one invocation: its log stream and request id. A retried invocation keeps
    its request id, so within a run the newest summary of each repository counts.
    """
    pruned: list[tuple[int, tuple[str, str], dict[str, Any]]] = []
    for event in events:
        record = log_record(str(event.get("message", "")))
        if record is None or record.get("message") != PRUNED_MESSAGE:
            continue
        if not isinstance(record.get("summary"), dict):
            continue
        run = (str(event.get("logStreamName", "")), str(record.get(REQUEST_ID_KEY, "")))
        pruned.append((int(event.get("timestamp", 0)), run, record["summary"]))
    if not pruned:
        return None
    pruned.sort(key=lambda entry: entry[0])
    newest_at, newest_run, _ = pruned[-1]
    summaries = {
        str(summary.get("repository", "")): summary
        for _, run, summary in pruned
        if run == newest_run
    }
    return PrunerRun(datetime.fromtimestamp(newest_at / 1000, UTC), tuple(summaries.values()))


def pruner_log_events(logs: Any, log_group: str, since: datetime) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    arguments: dict[str, Any] = {
        "logGroupName": log_group,
        "startTime": int(since.timestamp() * 1000),
        "filterPattern": f'"{PRUNED_MESSAGE}"',
    }
    while True:
        response = logs.filter_log_events(**arguments)
        events.extend(response.get("events", []))
        token = response.get("nextToken")
        if not token:
            return events
        arguments["nextToken"] = token


def read_pruner_run(stack: DeployedStack, logs: Any, now: datetime) -> tuple[PrunerRun | None, str]:
    """The pruner's last run in the lookback, or None and why."""
    log_group = stack.physical_id(PRUNER_LOG_GROUP_RESOURCE)
    if not log_group:
        return None, f"not recorded: the stack has no {PRUNER_LOG_GROUP_RESOURCE}"
    try:
        events = pruner_log_events(logs, log_group, now - PRUNER_LOOKBACK)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None, f"not recorded: its log group {log_group} does not exist"
        raise
    run = newest_pruner_run(events)
    if run is None:
        return None, f"no run in the last {PRUNER_LOOKBACK.days} days (log group {log_group})"
    return run, ""


def read_health(stack: DeployedStack, aws: AwsAccess, days: int, now: datetime) -> StackHealth:
    table = aws.builds_table(stack.table_name())
    rows = fetch_builds(table, max(days, FAILURE_WINDOW.days + 1), now)
    recent = [row for row in rows if row.moment is not None and row.moment >= now - FAILURE_WINDOW]
    pruner, note = read_pruner_run(stack, aws.logs(), now)
    in_period = [
        row for row in rows if row.moment is None or row.moment >= now - timedelta(days=days)
    ]
    return StackHealth(
        stack=stack.name,
        table=table.table_name,
        days=days,
        latest=newest_per_branch(in_period),
        failures=[row for row in recent if row.finished and not row.succeeded],
        queues=failure_queue_depths(stack, aws.sqs()),
        pruner=pruner,
        pruner_note=note,
    )


# ------------------------------------------------------------------ showing
def bytes_text(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def images_text(count: int) -> str:
    return f"{count} image" + ("" if count == 1 else "s")


def age_text(moment: datetime, now: datetime) -> str:
    minutes = max(0, int((now - moment).total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min ago"
    if minutes < 48 * 60:
        return f"{minutes // 60} h ago"
    return f"{minutes // (24 * 60)} days ago"


def pruner_lines(run: PrunerRun, now: datetime) -> list[str]:
    when = f"{run.at.strftime('%Y-%m-%d %H:%M')} UTC ({age_text(run.at, now)})"
    count = len(run.repositories)
    if run.dry_run:
        outcome = (
            f"dry run, would delete {images_text(run.total('planned_deletions'))} "
            f"({bytes_text(run.total('planned_bytes'))})"
        )
    else:
        freed = bytes_text(run.total("bytes_freed"))
        outcome = f"deleted {images_text(run.total('deleted'))}, freed {freed}"
    lines = [f"Last run {when} on {count} repositor{'y' if count == 1 else 'ies'}: {outcome}"]
    for summary in run.repositories:
        repository = summary.get("repository", "?")
        if summary.get("error"):
            lines.append(f"  {repository}: could not prune: {summary['error']}")
        elif summary.get("dry_run"):
            lines.append(
                f"  {repository}: kept {summary.get('kept', 0)}, "
                f"would delete {summary.get('planned_deletions', 0)}"
            )
        else:
            lines.append(
                f"  {repository}: kept {summary.get('kept', 0)}, deleted "
                f"{summary.get('deleted', 0)} ({bytes_text(int(summary.get('bytes_freed') or 0))})"
            )
    return lines


def health_renderables(health: StackHealth, region: str, now: datetime) -> list[RenderableType]:
    parts: list[RenderableType] = [
        Text(f"Stack {health.stack} ({region}), table {health.table}", "bold"),
        Text(""),
        Text(f"Last build per branch (branches built in the last {health.days} days)", "bold"),
    ]
    if health.latest:
        parts.append(identified_builds_table(health.latest))
    else:
        parts.append(Text("No builds."))
    parts.append(Text(""))
    parts.append(
        Text(f"Builds that did not succeed in the last 24 hours: {len(health.failures)}", "bold")
    )
    if health.failures:
        parts.append(identified_builds_table(health.failures))
    parts += [Text(""), Text("Failure queues", "bold")]
    parts.append(
        build_table(
            ["OUTPUT", "QUEUE", "MESSAGES WAITING"],
            [
                [
                    queue.output,
                    queue.name if queue.url else "not in the stack's outputs",
                    "-" if queue.waiting is None else str(queue.waiting),
                ]
                for queue in health.queues
            ],
        )
    )
    parts += [Text(""), Text("Pruner", "bold")]
    if health.pruner is not None:
        parts += [Text(line) for line in pruner_lines(health.pruner, now)]
    else:
        parts.append(Text(health.pruner_note))
    parts.append(Text(""))
    if health.attention:
        parts.append(Text("Needs attention: " + "; ".join(health.attention), "bold red"))
    else:
        parts.append(Text("Healthy.", "bold green"))
    return parts


def add_parser(subparsers: Any) -> None:
    parser = add_command_parser(
        subparsers,
        "status",
        "is the stack healthy? last builds, failures, failure queues, the pruner",
        __doc__,
    )
    parser.add_argument("--stack", metavar="NAME", required=True, help="the layercache stack")
    add_region_argument(parser)
    add_days_argument(parser, 14, "show the last build of branches built in this many days")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, aws: AwsAccess, out: TextIO, now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    stack = DeployedStack(args.stack, aws.cloudformation())
    health = read_health(stack, aws, args.days, now)
    write_output(out, health_renderables(health, aws.region, now))
    return 1 if health.attention else 0
