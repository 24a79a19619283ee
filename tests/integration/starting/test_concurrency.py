"""Deliveries at once, against a moto server, through the webhook and the starter.

8 deliveries of one commit and interleaved pushes of 3 commits on one branch arrive on
threads; three pollers then play Lambda's event source concurrently (SQS FIFO, like
moto, hands a group to one poller at a time). Then 8 starters handle one request at
once, bypassing the queue's order, as a duplicate sent outside the group would: the
claim and the branch head's conditional writes must hold on their own.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from layercache.build_records import BuildsTable, Trigger
from layercache.build_requests import BuildRequestMessage
from layercache.starting import wiring as starting_wiring
from layercache.starting.service import ClaimHeld
from layercache.starting.wiring import build_starter
from layercache.triggers import wiring as trigger_wiring
from layercache_dev.kit.embedded_aws import FAKE_CREDENTIALS, EmbeddedAws, Stack
from layercache_dev.kit.functions import function_handler_callable
from layercache_dev.kit.github_events import fake_sha, function_url_event, push_payload
from layercache_dev.kit.lambda_context import FakeLambdaContext
from layercache_dev.kit.moto_atomic import atomic_backends
from layercache_dev.kit.moto_codebuild import codebuild_like
from layercache_dev.kit.sqs_source import FifoEventSource


@pytest.fixture
def served() -> Iterator[tuple[EmbeddedAws, Stack]]:
    aws = EmbeddedAws()
    aws.start()
    try:
        stack = aws.deploy(
            parameters={"SourceRepository": "octo-org/service"}, build_repository_uri=""
        )
        yield aws, stack
    finally:
        aws.stop()


def _pushes() -> list[tuple[str, dict[str, Any]]]:
    a, b, c = fake_sha("a"), fake_sha("b"), fake_sha("c")
    root = fake_sha("root")
    payloads = []
    for second, (before, after) in enumerate([(root, a), (a, b), (b, c)]):
        payload = push_payload(after=after, before=before)
        payload["repository"]["pushed_at"] = 1_796_000_000 + second
        payloads.append((after, payload))
    return payloads


def test_many_deliveries_at_once_one_build_per_commit_and_the_newest_wins(
    served: tuple[EmbeddedAws, Stack], monkeypatch: pytest.MonkeyPatch
) -> None:
    aws, stack = served
    for name, value in {**FAKE_CREDENTIALS, **stack.environment("GitHubWebhookFunction")}.items():
        monkeypatch.setenv(name, value)
    for name, value in stack.environment("BuildStarterFunction").items():
        monkeypatch.setenv(name, value)
    trigger_wiring.reset()
    starting_wiring.reset()
    webhook = function_handler_callable("GitHubWebhookFunction")
    starter = function_handler_callable("BuildStarterFunction")
    pushes = _pushes()
    a_payload = pushes[0][1]
    deliveries = [
        function_url_event("push", a_payload, delivery_id=str(uuid.uuid4())) for _ in range(8)
    ]
    deliveries += [function_url_event("push", payload) for _, payload in pushes]
    random.Random(7).shuffle(deliveries)

    answers: list[int] = []

    def deliver(event: dict[str, Any]) -> None:
        answers.append(webhook(event, FakeLambdaContext("GitHubWebhookFunction"))["statusCode"])

    with codebuild_like() as codebuild, atomic_backends():
        threads = [threading.Thread(target=deliver, args=(event,)) for event in deliveries]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [202] * len(deliveries)

        def poll() -> None:
            FifoEventSource(aws.client("sqs"), stack.queue_url, starter, batch_size=2).drain()

        pollers = [threading.Thread(target=poll) for _ in range(3)]
        for poller in pollers:
            poller.start()
        for poller in pollers:
            poller.join()
        FifoEventSource(aws.client("sqs"), stack.queue_url, starter).drain()

        commits = [
            codebuild.environment_of(b["id"])["LAYERCACHE_COMMIT"] for b in codebuild.builds()
        ]
        newest = pushes[-1][0]
        assert len(commits) == len(set(commits)), f"a commit was built twice: {commits}"
        assert newest in commits
        running = [
            codebuild.environment_of(b["id"])["LAYERCACHE_COMMIT"]
            for b in codebuild.builds()
            if b["buildStatus"] == "IN_PROGRESS"
        ]
        assert running == [newest], "only the newest commit's build is left running"
        head = BuildsTable(stack.table_name, aws.client("dynamodb")).branch_head(
            "layercache/demo", "main"
        )
        assert head is not None
        assert head.commit == newest

        racing = BuildRequestMessage.for_push(
            image="layercache/demo",
            branch="main",
            commit=fake_sha("d"),
            before=newest,
            trigger=Trigger.GITHUB,
            requested_at=datetime.now(UTC),
            pushed_at=None,
            build=True,
            reason="push",
        )
        outcomes: list[str] = []

        def handle() -> None:
            try:
                outcomes.append(build_starter().handle(racing).action)
            except ClaimHeld:
                outcomes.append("held")

        racers = [threading.Thread(target=handle) for _ in range(8)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
        assert outcomes.count("started") == 1, outcomes
        assert set(outcomes) <= {"started", "duplicate", "held"}
        assert len(codebuild.builds()) == len(commits) + 1
