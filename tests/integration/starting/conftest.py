"""Drive BuildStarterFunction as template.yaml wires it: the FIFO queue, Lambda's event
source, the template's environment, and a CodeBuild that honours idempotency tokens."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config

from layercache.build_records import BranchHead, BuildsTable, Trigger
from layercache.build_requests import BuildRequestMessage, BuildRequestQueue
from layercache.starting.service import BuildStarter
from layercache.starting.settings import StarterSettings
from layercache.starting.wiring import make_build_starter
from layercache_dev.kit.embedded_aws import Stack
from layercache_dev.kit.functions import function_handler_callable, function_module
from layercache_dev.kit.moto_codebuild import CodeBuildLike, codebuild_like
from layercache_dev.kit.sqs_source import FifoEventSource

REGION = "us-east-1"
IMAGE = "team/service"
T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def sha(label: str) -> str:
    return (label.encode().hex() * 40)[:40]


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Pipeline:
    """The queue, the starter behind it, and what CodeBuild saw."""

    stack: Stack
    codebuild: CodeBuildLike
    clock: Clock
    starter: BuildStarter
    source: FifoEventSource
    queue: BuildRequestQueue
    table: BuildsTable
    sent: list[str] = field(default_factory=list)

    def push(
        self,
        commit: str,
        before: str | None,
        *,
        pushed_second: int | None = None,
        branch: str = "main",
        build: bool = True,
    ) -> BuildRequestMessage:
        request = BuildRequestMessage.for_push(
            image=IMAGE,
            branch=branch,
            commit=commit,
            before=before,
            trigger=Trigger.GITHUB,
            requested_at=self.clock(),
            pushed_at=T0 + timedelta(seconds=pushed_second) if pushed_second is not None else None,
            build=build,
            reason="push",
            delivery_id=f"delivery-{len(self.sent)}",
        )
        self.sent.append(self.queue.send(request))
        self.clock.advance(1)
        return request

    def drain(self) -> list[Any]:
        return [r for result in self.source.drain() for r in result.responses]

    def builds(self) -> list[dict[str, Any]]:
        return self.codebuild.builds()

    def builds_of(self, commit: str) -> list[dict[str, Any]]:
        return [
            b
            for b in self.builds()
            if self.codebuild.environment_of(b["id"]).get("LAYERCACHE_COMMIT") == commit
        ]

    def head(self, branch: str = "main") -> BranchHead:
        head = self.table.branch_head(IMAGE, branch)
        assert head is not None
        return head

    def failed_requests(self) -> list[BuildRequestMessage]:
        sqs = boto3.client("sqs", region_name=REGION)
        messages = sqs.receive_message(
            QueueUrl=self.stack.failure_queue_url, MaxNumberOfMessages=10
        ).get("Messages", [])
        return [BuildRequestMessage.from_message(m["Body"]) for m in messages]


@pytest.fixture
def pipeline(
    stack: Stack, function_env: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Pipeline]:
    env = function_env("BuildStarterFunction")
    clock = Clock()
    with codebuild_like(clock) as codebuild:
        # One attempt per call, so throttling reaches the queue's retries without waiting.
        client = boto3.client(
            "codebuild", region_name=REGION, config=Config(retries={"total_max_attempts": 1})
        )
        starter = make_build_starter(StarterSettings.from_env(env), codebuild=client)
        starter.clock = clock
        monkeypatch.setattr(
            function_module("BuildStarterFunction"), "build_starter", lambda: starter
        )
        sqs = boto3.client("sqs", region_name=REGION)
        yield Pipeline(
            stack=stack,
            codebuild=codebuild,
            clock=clock,
            starter=starter,
            source=FifoEventSource(
                sqs, stack.queue_url, function_handler_callable("BuildStarterFunction")
            ),
            queue=BuildRequestQueue(stack.queue_url, sqs),
            table=starter.table,
        )
