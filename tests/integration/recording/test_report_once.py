"""One report per outcome: copies of a final event handled at once notify once, and a
report whose invocation died before sending still goes out on the retry (issue 11, #6)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from layercache.build_records import BuildsTable, BuildStatus, parse_timestamp
from layercache.recording.events import BuildStateChangeEvent
from layercache.recording.github import GitHubStatusClient
from layercache.recording.notify import Notification, SnsNotifier
from layercache.recording.service import BuildRecorder, ReportPending
from layercache.recording.store import BuildRecordStore
from layercache_dev.kit.embedded_aws import Stack
from layercache_dev.kit.functions import function_module, invoke_function
from layercache_dev.kit.moto_atomic import atomic_backends
from tests.conftest import emitted_metrics

from .conftest import (
    IMAGE,
    RECORDER,
    REGION,
    FakeGitHub,
    Notifications,
    StubbedCodeBuild,
    batch_get_build,
    sample,
    trigger_write,
)

BUILD_ID = "layercache-image-build:0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"  # events/.../failed.json
T0 = datetime(2024, 5, 14, 9, 40, tzinfo=UTC)


def metric_count(output: str, name: str) -> int:
    """How many values of metric `name` the EMF documents in `output` carry."""
    count = 0
    for document in emitted_metrics(output):
        value = document.get(name)
        if value is not None:
            count += len(value) if isinstance(value, list) else 1
    return count


@pytest.fixture
def boto_events(aws: None) -> Iterator[Any]:
    """The default boto3 session's event hooks (register before the clients are made)."""
    boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    yield boto3.DEFAULT_SESSION.events
    boto3.DEFAULT_SESSION = None


# Both handlers share the module's Metrics: one thread's flush may leave the other none.
@pytest.mark.filterwarnings("ignore:No application metrics to publish")
@pytest.mark.usefixtures("fresh_recorder")
def test_two_copies_of_one_failed_event_at_once_report_once(
    stack: Stack,
    function_env: Any,
    notifications: Notifications,
    github_token_secret: str,
    fake_github: FakeGitHub,
    boto_events: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    function_env(
        RECORDER,
        GITHUB_TOKEN_SECRET_ARN=github_token_secret,
        GITHUB_API_URL=fake_github.url,
    )
    trigger_write(stack.table_name, sample("failed"))
    # Both copies have written the record before either goes on: the window in which
    # "not yet reported" holds for both.
    both_recorded = threading.Barrier(2, timeout=10)
    recorded: set[int] = set()

    def after_update_item(**_: Any) -> None:
        me = threading.get_ident()
        if threading.current_thread() is not threading.main_thread() and me not in recorded:
            recorded.add(me)  # this thread's first UpdateItem: its record write
            both_recorded.wait()

    boto_events.register("after-call.dynamodb.UpdateItem", after_update_item)
    function_module(RECORDER).default_service()  # a warm container: its clients carry the hook
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def invoke() -> None:
        try:
            results.append(invoke_function(RECORDER, sample("failed")))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=invoke) for _ in range(2)]
    with atomic_backends():  # each DynamoDB request atomic, as in DynamoDB
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    assert errors == []
    assert len(notifications.received()) == 1
    assert fake_github.statuses() == ["failure"]
    assert metric_count(capsys.readouterr().out, "BuildFailed") == 1
    assert sorted(result["reported"] for result in results) == [False, True]
    assert sorted(result["notified"] for result in results) == [False, True]
    item = BuildsTable(stack.table_name, boto3.client("dynamodb", region_name=REGION)).get(
        "BUILD#" + BUILD_ID
    )
    assert item is not None
    assert "reported_at" in item
    assert "report_lease_until" not in item


# ---------------------------------------------------------------- a report cut short
class Killed(BaseException):
    """The invocation stops where it stands (timeout, out of memory): no handler of its
    own runs, so its claim is not released."""


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


class DyingNotifier(SnsNotifier):
    def publish(self, notification: Notification) -> str:
        raise Killed


def make_recorder(
    stack: Stack,
    codebuild: StubbedCodeBuild,
    clock: FakeClock,
    notifier: SnsNotifier,
    github: GitHubStatusClient | None = None,
) -> BuildRecorder:
    return BuildRecorder(
        image=IMAGE,
        store=BuildRecordStore(
            BuildsTable(stack.table_name, boto3.client("dynamodb", region_name=REGION))
        ),
        codebuild=codebuild.client,
        notifier=notifier,
        github=github,
        clock=clock,
        sleep=clock.sleep,
    )


def sns_notifier(topic_arn: str) -> SnsNotifier:
    return SnsNotifier(topic_arn, boto3.client("sns", region_name=REGION))


def item_of(stack: Stack) -> dict[str, Any]:
    item = BuildsTable(stack.table_name, boto3.client("dynamodb", region_name=REGION)).get(
        "BUILD#" + BUILD_ID
    )
    assert item is not None
    return item


@pytest.fixture
def failed(stack: Stack, codebuild_stub: StubbedCodeBuild) -> Callable[[], BuildStateChangeEvent]:
    """The FAILED event, as each delivery of it reaches a recorder (BatchGetBuilds queued)."""
    event = sample("failed")
    trigger_write(stack.table_name, event)

    def deliver() -> BuildStateChangeEvent:
        codebuild_stub.will_return(batch_get_build(event))
        return BuildStateChangeEvent.model_validate(event)

    return deliver


def test_a_retry_after_the_reporter_died_waits_for_its_claim_and_reports_once(
    stack: Stack,
    codebuild_stub: StubbedCodeBuild,
    notifications: Notifications,
    fake_github: FakeGitHub,
    failed: Callable[[], BuildStateChangeEvent],
) -> None:
    clock = FakeClock(T0)
    github = GitHubStatusClient("octo-org/service", lambda: "t", fake_github.url, sleep=clock.sleep)
    dying = make_recorder(
        stack, codebuild_stub, clock, DyingNotifier(notifications.topic_arn), github
    )
    with pytest.raises(Killed):
        dying.record(failed(), time_left=timedelta(seconds=90))
    held = item_of(stack)
    assert held["recorded_status"] == "FAILED"
    assert "reported_at" not in held
    # The claim lasts until the dead invocation's own deadline (and a little more).
    lease_until = parse_timestamp(held["report_lease_until"])
    assert T0 + timedelta(seconds=90) <= lease_until <= T0 + timedelta(seconds=100)

    clock.now = T0 + timedelta(seconds=60)  # Lambda's first retry, a minute later
    retry = make_recorder(
        stack, codebuild_stub, clock, sns_notifier(notifications.topic_arn), github
    )
    outcome = retry.record(failed(), time_left=timedelta(seconds=90))

    assert outcome.reported
    assert outcome.notified
    assert outcome.status_posted
    assert clock.now >= lease_until  # it waited for the dead claim to lapse
    assert len(notifications.received()) == 1
    assert fake_github.statuses() == ["failure"]
    assert [point.name for point in outcome.metrics][-1] == "BuildFailed"
    done = item_of(stack)
    assert "reported_at" in done
    assert "report_lease_until" not in done


def test_a_retry_that_cannot_outwait_the_claim_fails_and_a_later_one_reports(
    stack: Stack,
    codebuild_stub: StubbedCodeBuild,
    notifications: Notifications,
    failed: Callable[[], BuildStateChangeEvent],
) -> None:
    clock = FakeClock(T0)
    with pytest.raises(Killed):
        make_recorder(stack, codebuild_stub, clock, DyingNotifier(notifications.topic_arn)).record(
            failed(), time_left=timedelta(seconds=90)
        )

    clock.now = T0 + timedelta(seconds=60)
    short = make_recorder(stack, codebuild_stub, clock, sns_notifier(notifications.topic_arn))
    with pytest.raises(ReportPending):  # Lambda retries the event again later
        short.record(failed(), time_left=timedelta(seconds=30))
    assert notifications.received() == []
    assert "reported_at" not in item_of(stack)

    clock.now = T0 + timedelta(minutes=3)  # the second retry
    clock.slept.clear()
    later = make_recorder(stack, codebuild_stub, clock, sns_notifier(notifications.topic_arn))
    outcome = later.record(failed(), time_left=timedelta(seconds=90))

    assert outcome.reported
    assert outcome.notified
    assert clock.slept == []  # the claim had lapsed: taken at once
    assert len(notifications.received()) == 1


def test_an_error_while_reporting_releases_the_claim_for_the_retry(
    stack: Stack,
    codebuild_stub: StubbedCodeBuild,
    notifications: Notifications,
    failed: Callable[[], BuildStateChangeEvent],
) -> None:
    clock = FakeClock(T0)
    missing_topic = notifications.topic_arn + "-deleted"
    with pytest.raises(boto3.client("sns", region_name=REGION).exceptions.NotFoundException):
        make_recorder(stack, codebuild_stub, clock, sns_notifier(missing_topic)).record(failed())
    released = item_of(stack)
    assert "report_token" not in released
    assert "report_lease_until" not in released
    assert "reported_at" not in released

    retry = make_recorder(stack, codebuild_stub, clock, sns_notifier(notifications.topic_arn))
    outcome = retry.record(failed())  # the same moment: nothing to wait for

    assert outcome.reported
    assert outcome.notified
    assert clock.slept == []
    assert len(notifications.received()) == 1


def test_after_the_report_a_copy_changes_nothing(
    stack: Stack,
    codebuild_stub: StubbedCodeBuild,
    notifications: Notifications,
    failed: Callable[[], BuildStateChangeEvent],
) -> None:
    clock = FakeClock(T0)
    recorder = make_recorder(stack, codebuild_stub, clock, sns_notifier(notifications.topic_arn))
    first = recorder.record(failed())
    clock.now += timedelta(minutes=5)
    again = recorder.record(failed())

    assert (first.recorded, first.reported) == (True, True)
    assert (again.recorded, again.reported, again.metrics) == (False, False, ())
    assert len(notifications.received()) == 1


def test_the_claim_is_exclusive_until_it_lapses(stack: Stack) -> None:
    store = BuildRecordStore(
        BuildsTable(stack.table_name, boto3.client("dynamodb", region_name=REGION))
    )
    store.table.update(
        "BUILD#" + BUILD_ID,
        "SET recorded_status = :s",
        values={":s": "FAILED"},
    )
    lease = T0 + timedelta(seconds=95)

    first = store.claim_report(BUILD_ID, BuildStatus.FAILED, "a", T0, lease)
    second = store.claim_report(
        BUILD_ID, BuildStatus.FAILED, "b", T0 + timedelta(seconds=94), lease
    )
    other_status = store.claim_report(
        BUILD_ID, BuildStatus.SUCCEEDED, "c", T0 + timedelta(seconds=96), lease
    )
    taken_over = store.claim_report(
        BUILD_ID, BuildStatus.FAILED, "d", T0 + timedelta(seconds=96), lease + timedelta(hours=1)
    )

    assert (first.applied, second.applied, other_status.applied, taken_over.applied) == (
        True,
        False,
        False,
        True,
    )
    assert second.item["report_token"] == "a"
    assert not store.mark_reported(BUILD_ID, "a", T0)  # "a" lost its claim when it lapsed
    assert not store.release_report(BUILD_ID, "a")
    assert store.mark_reported(BUILD_ID, "d", T0 + timedelta(seconds=97))
    assert not store.claim_report(
        BUILD_ID, BuildStatus.FAILED, "e", T0 + timedelta(days=1), T0 + timedelta(days=2)
    ).applied
