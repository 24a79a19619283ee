"""`layercache builds` and `layercache show`, on records the starter's and the recorder's own
code wrote into the moto server."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from layercache.build_records import BuildsTable
from layercache.recording.build import merge_batch_get
from layercache.recording.events import BuildStateChangeEvent
from layercache.recording.items import record_update
from layercache.recording.store import BuildRecordStore
from tests.integration.recording.conftest import EXPORTED, batch_get_build, sample, trigger_write

from .conftest import IMAGE, PROJECT, REGION, SEEDED, MotoServer, ServedStack

SUCCEEDED_ID = f"{PROJECT}:6f1c2b8e-3d4a-4f5b-9c7d-1e2f3a4b5c6d"
FAILED_ID = f"{PROJECT}:0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"


def build_ids(out: str) -> list[str]:
    return re.findall(rf"{PROJECT}:[0-9a-f-]+", out)


def build_numbers(out: str) -> list[int]:
    return [int(build_id.split(":")[1][:8]) for build_id in build_ids(out)]


def record(table_name: str, event: dict[str, Any], exported: dict[str, str] | None) -> None:
    """What the starter writes at StartBuild, then what the recorder writes on the final event."""
    trigger_write(table_name, event)
    facts = merge_batch_get(
        BuildStateChangeEvent.model_validate(event).facts(), batch_get_build(event, exported)
    )
    table = BuildsTable(table_name, boto3.client("dynamodb", region_name=REGION))
    update = record_update(facts, IMAGE, datetime(2024, 5, 14, 9, 40, tzinfo=UTC))
    assert BuildRecordStore(table).apply(update).applied


@pytest.fixture
def recorded_stack(
    moto_server: MotoServer, stack: ServedStack, monkeypatch: pytest.MonkeyPatch
) -> ServedStack:
    # The writers make their own clients: aim them at the server.
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    record(stack.table_name, sample("succeeded"), EXPORTED)
    record(stack.table_name, sample("failed"), None)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    return stack


def test_builds_lists_the_newest_first_with_whole_ids(
    seeded_stack: ServedStack, layercache: Any
) -> None:
    result = layercache("builds", "--stack", seeded_stack.name, "--limit", "4")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[-2:] == ["BUILD", "ID"]
    assert build_numbers(result.stdout) == [7, 6, 5, 4]
    assert re.search(
        rf"main\s+05c0ffee .* FAILED \(BUILD\)\s+30s\s+-\s+{PROJECT}:00000005-", result.stdout
    )


def test_builds_of_a_branch(seeded_stack: ServedStack, layercache: Any) -> None:
    # With --stack the image is the stack's repository; with --table alone, the images
    # that built in the period; or --image.
    by_stack = layercache("builds", "--stack", seeded_stack.name, "--branch", "feature/login")
    by_table = layercache("builds", "--table", seeded_stack.table_name, "--branch", "main")
    other = layercache(
        "builds", "--table", seeded_stack.table_name, "--branch", "main", "--image", "other"
    )

    assert by_stack.returncode == by_table.returncode == other.returncode == 0
    assert build_numbers(by_stack.stdout) == [9, 8]
    assert build_numbers(by_table.stdout) == [7, 6, 5, 4, 3, 2, 1]
    assert other.stdout == "No builds found.\n"


def test_builds_of_a_commit_whole_or_by_prefix(seeded_stack: ServedStack, layercache: Any) -> None:
    commit = SEEDED[2]["commit"]

    whole = layercache("builds", "--stack", seeded_stack.name, "--commit", commit)
    prefix = layercache("builds", "--stack", seeded_stack.name, "--commit", commit[:7].upper())

    assert whole.returncode == prefix.returncode == 0
    assert build_ids(whole.stdout) == build_ids(prefix.stdout) == [SEEDED[2]["build_id"]]


def fields_of(out: str) -> dict[str, str]:
    """The `Name   value` lines above the phases."""
    lines = out.split("Phases")[0].splitlines()[1:]
    return dict(re.split(r"\s{2,}", line, maxsplit=1) for line in lines if line.strip())


def test_show_tells_the_recorded_build(recorded_stack: ServedStack, layercache: Any) -> None:
    result = layercache("show", SUCCEEDED_ID, "--stack", recorded_stack.name)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Build {SUCCEEDED_ID} (#42)\n")
    fields = fields_of(result.stdout)
    assert fields["Status"] == "SUCCEEDED"
    assert (fields["Image"], fields["Branch"]) == (IMAGE, "main")
    assert fields["Commit"] == "9fceb02d0ae598e95dc970b74767f19372d61af8"
    assert fields["Trigger"] == "github (normal mode)"
    assert fields["Requested"] == "2024-05-14 09:30:01 UTC"
    assert fields["Cache hits"] == "90% (from cache-main)"
    assert fields["Build / push"] == "1m28s / 4s"
    assert fields["Digest"] == "sha256:" + "5e" * 32
    assert fields["Tags"] == "main, 9fceb02d0ae5, latest"
    assert fields["Log"] == (
        "https://us-east-1.console.aws.amazon.com/codesuite/codebuild/123456789012"
        f"/projects/{PROJECT}/build/{SUCCEEDED_ID.replace(':', '%3A')}/"
    )
    phases = [line.split() for line in result.stdout.split("Phases")[1].splitlines()[3:]]
    # In the order CodeBuild went through them, as its event lists them (all but COMPLETED,
    # which is no phase of work).
    went_through = [
        phase["phase-type"]
        for phase in sample("succeeded")["detail"]["additional-information"]["phases"]
    ]
    assert [phase[0] for phase in phases] == [p for p in went_through if p != "COMPLETED"]
    assert phases[6] == ["BUILD", "SUCCEEDED", "1m47s"]


def test_show_a_failed_build_by_arn_or_by_uuid(
    recorded_stack: ServedStack, layercache: Any
) -> None:
    arn = f"arn:aws:codebuild:us-east-1:123456789012:build/{FAILED_ID}"

    by_arn = layercache("show", arn, "--table", recorded_stack.table_name)
    # With --stack, the uuid alone: the project comes from the BuildProjectName output.
    by_uuid = layercache("show", FAILED_ID.split(":")[1], "--stack", recorded_stack.name)

    assert by_arn.returncode == by_uuid.returncode == 0, (by_arn.stderr, by_uuid.stderr)
    assert by_arn.stdout == by_uuid.stdout
    fields = fields_of(by_arn.stdout)
    assert fields["Status"] == "FAILED (BUILD)"
    assert fields["Failure"] == (
        "Error while executing command: python3 buildspecs/build.py. Reason: exit status 1"
    )
    assert (fields["Digest"], fields["Tags"], fields["Cache hits"]) == ("-", "-", "-")
    assert re.search(r"^BUILD\s+FAILED\s+", by_arn.stdout.split("Phases")[1], re.MULTILINE)


def test_show_an_unknown_build(seeded_stack: ServedStack, layercache: Any) -> None:
    result = layercache("show", f"{PROJECT}:nope", "--stack", seeded_stack.name)

    assert result.returncode == 2
    assert result.stderr == (
        f"layercache show: no build '{PROJECT}:nope' in table '{seeded_stack.table_name}'\n"
    )
