"""Fixtures for driving the trigger functions exactly as template.yaml wires them.

The triggers end at BuildRequestQueue: what a test checks is the request on the queue
(read back with `queued`/`queued_requests`) and that nothing reached CodeBuild or the
table (`assert_nothing_built`), which is BuildStarterFunction's job alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError

from layercache.build_requests import BuildRequestMessage
from layercache.triggers import wiring
from layercache_dev.kit.embedded_aws import Stack
from tests.integration.conftest import RecordedCall

EVENTS = Path(__file__).resolve().parents[3] / "events"
REGION = "us-east-1"


@cache
def _session() -> boto3.session.Session:
    """The tests' own session (made once moto is in place): its calls are not `aws_calls`."""
    return boto3.session.Session()


def _client(service: str) -> Any:
    return _session().client(service, region_name=REGION)  # type: ignore[call-overload]


def sample(*parts: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(EVENTS.joinpath(*parts).read_text())
    return event


@pytest.fixture(autouse=True)
def _fresh_services() -> Iterator[None]:
    wiring.reset()
    yield
    wiring.reset()


class Outage:
    """Makes one AWS operation fail, as an unreachable endpoint does, while `on`.

    Registered on boto3's default session (the one `aws_calls` instruments and the
    functions' clients come from) before any client exists, so it holds for them all.
    """

    def __init__(self, event_name: str) -> None:
        self.on = False
        assert boto3.DEFAULT_SESSION is not None, "needs the aws_calls fixture first"
        boto3.DEFAULT_SESSION.events.register_first(event_name, self._fail)

    def _fail(self, **_: Any) -> None:
        if self.on:
            raise EndpointConnectionError(endpoint_url="https://unreachable.example")


@pytest.fixture
def queue_outage(aws_calls: list[RecordedCall]) -> Outage:
    """SendMessage to BuildRequestQueue failing (switch it on with `.on = True`)."""
    return Outage("before-call.sqs.SendMessage")


@dataclass(frozen=True)
class QueuedRequest:
    """One message on BuildRequestQueue, as the build starter will receive it."""

    message_id: str
    group_id: str
    deduplication_id: str
    request: BuildRequestMessage


def queued(stack: Stack) -> list[QueuedRequest]:
    """Every message waiting on the stack's BuildRequestQueue, in the order SQS gives them.

    Reads in batches of ten until the queue answers empty, deleting what it read (a FIFO
    queue holds back a message group's later messages while earlier ones are in flight),
    so each call returns what was queued since the previous one.
    """
    sqs = _client("sqs")
    found: list[QueuedRequest] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=stack.queue_url,
            MaxNumberOfMessages=10,
            MessageSystemAttributeNames=["MessageGroupId", "MessageDeduplicationId"],
            WaitTimeSeconds=0,
        ).get("Messages", [])
        if not messages:
            return found
        for message in messages:
            attributes = message.get("Attributes", {})
            found.append(
                QueuedRequest(
                    message_id=message["MessageId"],
                    group_id=attributes["MessageGroupId"],
                    deduplication_id=attributes["MessageDeduplicationId"],
                    request=BuildRequestMessage.from_message(message["Body"]),
                )
            )
            sqs.delete_message(QueueUrl=stack.queue_url, ReceiptHandle=message["ReceiptHandle"])


def queued_requests(stack: Stack) -> list[BuildRequestMessage]:
    """The build requests waiting on the stack's queue (see `queued`)."""
    return [message.request for message in queued(stack)]


def failed_requests(stack: Stack) -> int:
    """How many messages sit in the failure queue (the triggers must never put any there)."""
    sqs = _client("sqs")
    attributes = sqs.get_queue_attributes(
        QueueUrl=stack.failure_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def builds_started(project_name: str) -> list[str]:
    client = _client("codebuild")
    return list(client.list_builds_for_project(projectName=project_name)["ids"])


def table_items(table_name: str) -> list[dict[str, Any]]:
    client = _client("dynamodb")
    return list(client.scan(TableName=table_name)["Items"])


def assert_nothing_built(stack: Stack, calls: Sequence[RecordedCall] = ()) -> None:
    """No trigger started, stopped or looked up a build, nor wrote the builds table:
    that is the starter's work, after the hand-over."""
    touched = [
        call.operation for call in calls if call.operation.startswith(("codebuild:", "dynamodb:"))
    ]
    assert touched == [], f"a trigger called {touched}"
    assert builds_started(stack.project_name) == []
    assert table_items(stack.table_name) == []
