"""Record one CodeBuild state change: the item first, then tags, notification, status, metrics.

- IN_PROGRESS: the invocation whose write applied posts `pending`, unless the final status
  is recorded by then (asked before every attempt, so a retry after a 5xx can't land
  after the final status). If a final status was recorded while `pending` was on its way,
  it is posted again after it, so GitHub never ends on `pending`.
- A final status: the moving tags are published (SUCCEEDED; idempotent, any number of
  invocations may), then exactly one invocation claims the report and sends the
  notification and the commit status and emits the outcome metrics (see items.py for
  the claim, its lease and what a retry after a crash does).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from layercache import aws
from layercache.build_records import BuildStatus, parse_timestamp
from layercache.recording.batch import batch_outcome, membership, record_part
from layercache.recording.build import BuildFacts, merge_batch_get
from layercache.recording.events import BuildStateChangeEvent
from layercache.recording.github import GitHubStatusClient, commit_status_for
from layercache.recording.items import (
    RECORDED_STATUS,
    REPORT_LEASE_UNTIL,
    REPORTED_AT,
    record_update,
)
from layercache.recording.metrics import (
    ImageMetricSet,
    MetricPoint,
    image_metric_sets,
    metric_dimensions,
    metric_points,
)
from layercache.recording.notify import SnsNotifier, failure_notification
from layercache.recording.publish import Publication, TagPublisher
from layercache.recording.store import BuildRecordStore

if TYPE_CHECKING:
    from mypy_boto3_codebuild import CodeBuildClient

logger = Logger(child=True)

# An invocation's time when the caller doesn't say (the template's Timeout).
DEFAULT_TIME_LEFT = timedelta(seconds=90)
# A claim outlives its holder's deadline by this much: clocks of two hosts differ a little.
CLOCK_SKEW = timedelta(seconds=5)
# What an invocation keeps of its time for reporting, when it takes a report over.
REPORT_RESERVE = timedelta(seconds=20)
POLL_SECONDS = 0.5


class ReportPending(RuntimeError):
    """Another invocation holds the report's claim beyond this invocation's deadline.

    Raised so that Lambda retries the event: by then the report went out (the retry
    changes nothing) or the claim lapsed (the retry reports).
    """


@dataclass(frozen=True)
class Outcome:
    build_id: str
    status: BuildStatus
    recorded: bool  # False: a duplicate or late event, nothing changed
    reported: bool = False  # this invocation sent the final status's report
    notified: bool = False
    status_posted: bool = False
    publication: Publication | None = None
    record: dict[str, Any] = field(default_factory=dict)
    metrics: tuple[MetricPoint, ...] = ()
    dimensions: dict[str, str] = field(default_factory=dict)
    image_metrics: tuple[ImageMetricSet, ...] = ()  # with a Bake file: one set per image


class BuildRecorder:
    def __init__(
        self,
        image: str,
        store: BuildRecordStore,
        codebuild: CodeBuildClient | None = None,
        notifier: SnsNotifier | None = None,
        github: GitHubStatusClient | None = None,
        publisher: TagPublisher | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        new_token: Callable[[], str] = lambda: uuid.uuid4().hex,
        batch_builds: bool = False,
    ) -> None:
        self.image = image
        self.store = store
        self.codebuild: CodeBuildClient = codebuild or aws.client("codebuild")
        self.notifier = notifier
        self.github = github
        self.publisher = publisher
        self.clock = clock
        self.sleep = sleep
        self.new_token = new_token
        # With batch builds, IN_PROGRESS events are completed too: to tell their builds.
        self.batch_builds = batch_builds

    def complete(self, facts: BuildFacts) -> tuple[BuildFacts, str | None]:
        """Add BatchGetBuilds' times, phases and exported variables to the event's facts;
        and the ARN of the batch the build is part of, if it is."""
        response = self.codebuild.batch_get_builds(ids=[facts.build_id])
        builds = response.get("builds", [])
        if not builds:
            logger.warning("BatchGetBuilds does not know the build", build_id=facts.build_id)
            return facts, None
        return merge_batch_get(facts, dict(builds[0])), builds[0].get("buildBatchArn") or None

    def record(self, event: BuildStateChangeEvent, time_left: timedelta | None = None) -> Outcome:
        """Record `event` and report it; `time_left` is the invocation's remaining time."""
        deadline = self.clock() + (time_left if time_left is not None else DEFAULT_TIME_LEFT)
        facts, batch_arn = event.facts(), None
        if facts.status.is_final or self.batch_builds:
            facts, batch_arn = self.complete(facts)
        if batch_arn:
            batch = membership(self.codebuild, facts.build_id, facts.build_arn, batch_arn)
            if facts.status.is_final:
                item = record_part(self.store.table, batch, facts)
                decided = batch_outcome(batch, facts, item)
                if decided is None:
                    logger.info(
                        "Batch build's part recorded; others still running",
                        build_id=facts.build_id,
                        batch_id=batch.batch_id,
                        part=batch.identifier,
                    )
                    return Outcome(batch.batch_id, BuildStatus.IN_PROGRESS, recorded=True)
                facts = decided
            else:
                facts = batch.facts_of(facts, facts.status)
        result = self.store.apply(record_update(facts, self.image, self.clock()))
        if not result.applied:
            logger.info(
                "Duplicate or late event: record unchanged",
                build_id=facts.build_id,
                event_status=facts.status.value,
                recorded_status=result.item.get(RECORDED_STATUS),
            )
            return Outcome(facts.build_id, facts.status, recorded=False, record=result.item)
        if facts.status.is_final:
            return self._finished(facts, result.item, deadline)
        return self._started(facts, result.item)

    # ------------------------------------------------------------ IN_PROGRESS
    def _started(self, facts: BuildFacts, record: dict[str, Any]) -> Outcome:
        posted = False
        pending = commit_status_for(record, facts.status)
        if pending is not None and self.github is not None:
            posted = self.github.post(
                pending, unless=lambda: self._final_record(facts.build_id) is not None
            )
            if posted:
                self._repost_final(self.github, facts.build_id)
        return Outcome(
            facts.build_id, facts.status, recorded=True, status_posted=posted, record=record
        )

    def _final_record(self, build_id: str) -> tuple[dict[str, Any], BuildStatus] | None:
        """The build's item and final status, if one is recorded now."""
        item = self.store.read(build_id) or {}
        recorded = item.get(RECORDED_STATUS)
        if recorded not in set(BuildStatus) or not BuildStatus(recorded).is_final:
            return None
        return item, BuildStatus(recorded)

    def _repost_final(self, github: GitHubStatusClient, build_id: str) -> None:
        """Post the final status again if it was recorded while `pending` was on its way.

        GitHub may have taken the final status before `pending`; posted again now, after
        `pending` was answered, it is the last one either way.
        """
        final = self._final_record(build_id)
        if final is None:
            return
        status = commit_status_for(*final)
        if status is not None:
            logger.info("Final status recorded meanwhile: posted again after pending")
            github.post(status)

    # ------------------------------------------------------------ final statuses
    def _finished(self, facts: BuildFacts, record: dict[str, Any], deadline: datetime) -> Outcome:
        # The record is written: what follows may fail without losing it (a retry of this
        # event writes it again and reports until `reported_at` is set, see items.py).
        publication = None
        if facts.status is BuildStatus.SUCCEEDED and self.publisher is not None:
            publication = self.publisher.publish(record, facts)
        token = self._claim_report(facts, deadline)
        if token is None:
            logger.info("Outcome reported by another invocation", build_id=facts.build_id)
            return Outcome(
                facts.build_id, facts.status, recorded=True, publication=publication, record=record
            )
        try:
            notified, posted = self._report(facts, record)
        except Exception:
            self._release(facts.build_id, token)
            raise
        if not self.store.mark_reported(facts.build_id, token, self.clock()):
            logger.warning(
                "The report's claim lapsed before it was marked", build_id=facts.build_id
            )
        return Outcome(
            build_id=facts.build_id,
            status=facts.status,
            recorded=True,
            reported=True,
            notified=notified,
            status_posted=posted,
            publication=publication,
            record=record,
            metrics=tuple(metric_points(record, facts.status)),
            dimensions=metric_dimensions(record),
            image_metrics=tuple(image_metric_sets(record, facts.status)),
        )

    def _claim_report(self, facts: BuildFacts, deadline: datetime) -> str | None:
        """This invocation's claim token, or None when another invocation reported.

        Waits while another invocation holds a live claim; raises ReportPending if that
        outlasts what this invocation may wait.
        """
        token = self.new_token()
        lease_until = deadline + CLOCK_SKEW
        wait_until = deadline - REPORT_RESERVE
        budget = max(0.0, (wait_until - self.clock()).total_seconds())
        waited = 0.0
        while True:
            now = self.clock()
            result = self.store.claim_report(facts.build_id, facts.status, token, now, lease_until)
            if result.applied:
                return token
            item = result.item
            if REPORTED_AT in item or item.get(RECORDED_STATUS) != facts.status.value:
                return None
            lapses_in = _seconds_until(item, REPORT_LEASE_UNTIL, now)
            if now >= wait_until or waited >= budget:
                raise ReportPending(
                    f"the report of {facts.build_id} is claimed for {lapses_in:.0f} s more"
                )
            delay = max(0.01, min(POLL_SECONDS, lapses_in, budget - waited))
            if not waited:
                logger.info(
                    "Report claimed by another invocation; waiting for it",
                    build_id=facts.build_id,
                    claim_lapses_in=round(lapses_in),
                )
            self.sleep(delay)
            waited += delay

    def _report(self, facts: BuildFacts, record: Mapping[str, Any]) -> tuple[bool, bool]:
        notified = False
        notification = failure_notification(record, facts.status)
        if notification is not None and self.notifier is not None:
            self.notifier.publish(notification)
            notified = True
        posted = False
        commit_status = commit_status_for(record, facts.status)
        if commit_status is not None and self.github is not None:
            posted = self.github.post(commit_status)
        return notified, posted

    def _release(self, build_id: str, token: str) -> None:
        try:
            self.store.release_report(build_id, token)
        except (ClientError, BotoCoreError) as error:
            logger.warning(
                "Report claim not released; it lapses at its lease's end",
                build_id=build_id,
                error=str(error),
            )


def _seconds_until(item: Mapping[str, Any], name: str, now: datetime) -> float:
    text = item.get(name)
    if not isinstance(text, str):
        return 0.0
    try:
        return max(0.0, (parse_timestamp(text) - now).total_seconds())
    except ValueError:
        return 0.0
