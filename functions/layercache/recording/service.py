"""Record one CodeBuild state change: the item first, then status, notification, metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from layercache import aws
from layercache.build_records import BuildStatus
from layercache.recording.build import BuildFacts, merge_batch_get
from layercache.recording.events import BuildStateChangeEvent
from layercache.recording.github import GitHubStatusClient, commit_status_for
from layercache.recording.items import record_update
from layercache.recording.metrics import MetricPoint, metric_dimensions, metric_points
from layercache.recording.notify import SnsNotifier, failure_notification
from layercache.recording.publish import Publication, TagPublisher
from layercache.recording.store import BuildRecordStore

if TYPE_CHECKING:
    from mypy_boto3_codebuild import CodeBuildClient

logger = Logger(child=True)


@dataclass(frozen=True)
class Outcome:
    build_id: str
    status: BuildStatus
    recorded: bool  # False: a duplicate or late event, nothing changed
    notified: bool = False
    status_posted: bool = False
    publication: Publication | None = None
    record: dict[str, Any] = field(default_factory=dict)
    metrics: tuple[MetricPoint, ...] = ()
    dimensions: dict[str, str] = field(default_factory=dict)


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
    ) -> None:
        self.image = image
        self.store = store
        self.codebuild: CodeBuildClient = codebuild or aws.client("codebuild")
        self.notifier = notifier
        self.github = github
        self.publisher = publisher
        self.clock = clock

    def complete(self, facts: BuildFacts) -> BuildFacts:
        """Add BatchGetBuilds' times, phases and exported variables to a final event's facts."""
        response = self.codebuild.batch_get_builds(ids=[facts.build_id])
        builds = response.get("builds", [])
        if not builds:
            logger.warning("BatchGetBuilds does not know the build", build_id=facts.build_id)
            return facts
        return merge_batch_get(facts, dict(builds[0]))

    def record(self, event: BuildStateChangeEvent) -> Outcome:
        facts = event.facts()
        if facts.status.is_final:
            facts = self.complete(facts)
        result = self.store.apply(record_update(facts, self.image, self.clock()))
        if not result.applied:
            logger.info(
                "Duplicate or late event: record unchanged",
                build_id=facts.build_id,
                event_status=facts.status.value,
                recorded_status=result.item.get("recorded_status"),
            )
            return Outcome(facts.build_id, facts.status, recorded=False, record=result.item)
        record = result.item
        # The record is written: what follows may fail without losing it (a retry of this
        # event runs it again until `reported_at` is set, see items.py).
        publication = None
        if facts.status is BuildStatus.SUCCEEDED and self.publisher is not None:
            publication = self.publisher.publish(record, facts)
        notified = False
        notification = failure_notification(record, facts.status)
        if notification is not None and self.notifier is not None:
            self.notifier.publish(notification)
            notified = True
        status_posted = False
        commit_status = commit_status_for(record, facts.status)
        if commit_status is not None and self.github is not None:
            status_posted = self.github.post(commit_status)
        if facts.status.is_final:
            self.store.mark_reported(facts.build_id, self.clock())
        return Outcome(
            build_id=facts.build_id,
            status=facts.status,
            recorded=True,
            notified=notified,
            status_posted=status_posted,
            publication=publication,
            record=record,
            metrics=tuple(metric_points(record, facts.status)),
            dimensions=metric_dimensions(record),
        )
