"""BuildRecorderFunction: CodeBuild "Build State Change" events -> BuildsTable, status, SNS."""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from layercache import aws
from layercache.build_records import BuildsTable
from layercache.github_token import SecretToken
from layercache.recording.events import BuildStateChangeEvent
from layercache.recording.github import GitHubStatusClient
from layercache.recording.metrics import emit_image_metrics
from layercache.recording.notify import SnsNotifier
from layercache.recording.publish import TagPublisher
from layercache.recording.service import BuildRecorder
from layercache.recording.settings import RecorderSettings
from layercache.recording.store import BuildRecordStore

logger = Logger()
metrics = Metrics()


@cache
def default_service() -> tuple[RecorderSettings, BuildRecorder]:
    settings = RecorderSettings.from_env()
    github = None
    if settings.github_enabled:
        token = SecretToken(
            settings.github_token_secret_arn,
            max_age_seconds=settings.github_token_max_age_seconds,
        )
        github = GitHubStatusClient(settings.source_repository, token, settings.github_api_url)
    notifier = (
        SnsNotifier(settings.build_notifications_topic_arn)
        if settings.build_notifications_topic_arn
        else None
    )
    table = BuildsTable(settings.builds_table_name, aws.client("dynamodb"))
    recorder = BuildRecorder(
        image=settings.image_repository_name,
        store=BuildRecordStore(table),
        notifier=notifier,
        github=github,
        publisher=TagPublisher(table, aws.client("ecr"), settings.image_repository_name),
        batch_builds=settings.batch_builds,
    )
    return settings, recorder


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE, log_event=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings, recorder = default_service()
    metrics.add_metric(name="EventsReceived", unit=MetricUnit.Count, value=1)
    try:
        parsed = BuildStateChangeEvent.model_validate(event)
    except ValidationError as error:
        logger.warning("Rejected: not a CodeBuild build state change", reason=str(error))
        metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
        return {"recorded": False, "reason": "malformed event"}
    if parsed.detail.project_name != settings.build_project_name:
        logger.warning("Rejected: event of another project", project=parsed.detail.project_name)
        metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
        return {"recorded": False, "reason": "foreign project"}

    outcome = recorder.record(
        parsed, time_left=timedelta(milliseconds=context.get_remaining_time_in_millis())
    )
    if outcome.metrics:
        metrics.add_dimensions(**outcome.dimensions)
        for point in outcome.metrics:
            metrics.add_metric(name=point.name, unit=point.unit, value=point.value)
    emit_image_metrics(outcome.image_metrics)  # one EMF document per image of a Bake file
    logger.info(
        "Build state recorded" if outcome.recorded else "Build state already recorded",
        build_id=outcome.build_id,
        status=outcome.status.value,
        reported=outcome.reported,
        notified=outcome.notified,
        commit_status_posted=outcome.status_posted,
        tags_published=outcome.publication.tags if outcome.publication else (),
        tags_published_in=outcome.publication.repositories if outcome.publication else (),
    )
    return {
        "recorded": outcome.recorded,
        "build_id": outcome.build_id,
        "status": outcome.status.value,
        "reported": outcome.reported,
        "notified": outcome.notified,
        "commit_status_posted": outcome.status_posted,
        "tags_published": list(outcome.publication.tags) if outcome.publication else [],
    }
