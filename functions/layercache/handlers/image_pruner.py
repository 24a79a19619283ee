"""ImagePrunerFunction: after each successful image build, and daily, prune the repositories."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from layercache.pruning.events import (
    BUILD_STATE_CHANGE,
    BuildSucceededEvent,
    ScheduledEvent,
)
from layercache.pruning.service import default_service

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE, log_event=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    pruner = default_service()
    try:
        if event.get("detail-type") == BUILD_STATE_CHANGE:
            build = parse(event=event, model=BuildSucceededEvent).detail
            if build.build_status != "SUCCEEDED" or (
                build.project_name != pruner.settings.build_project_name
            ):
                logger.warning(
                    "Ignored a build event of another project or status",
                    extra={"project": build.project_name, "status": build.build_status},
                )
                metrics.add_metric(name="EventsIgnored", unit=MetricUnit.Count, value=1)
                return {"status": "ignored", "reason": "not a successful build of this project"}
            trigger = f"build {build.build_id}"
        else:
            parse(event=event, model=ScheduledEvent)
            trigger = "schedule"
    except ValidationError as error:
        logger.warning(
            "Rejected an event that is neither a build nor the schedule",
            extra={"error": str(error)[:500]},
        )
        metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
        return {"status": "ignored", "reason": "malformed event"}

    reports = pruner.run()
    metrics.add_metadata(key="trigger", value=trigger)
    metrics.add_metric(
        name="ImagesKept", unit=MetricUnit.Count, value=sum(r.images_kept for r in reports)
    )
    metrics.add_metric(
        name="ImagesDeleted", unit=MetricUnit.Count, value=sum(r.images_deleted for r in reports)
    )
    metrics.add_metric(
        name="ImagesPlannedForDeletion",
        unit=MetricUnit.Count,
        value=sum(len(r.plan.deleted) for r in reports),
    )
    metrics.add_metric(
        name="BytesFreed", unit=MetricUnit.Bytes, value=sum(r.bytes_freed for r in reports)
    )
    metrics.add_metric(
        name="DeleteFailures", unit=MetricUnit.Count, value=sum(r.failures for r in reports)
    )
    failed = [report for report in reports if report.error is not None]
    metrics.add_metric(name="RepositoriesFailed", unit=MetricUnit.Count, value=len(failed))
    if failed:
        # Every other repository was pruned; fail the invocation so it is retried and,
        # after the retries, lands in the failure destination.
        names = ", ".join(f"{r.repository} ({r.error})" for r in failed)
        raise PruningIncomplete(f"could not prune {len(failed)} repository(ies): {names}")
    return {
        "status": "pruned",
        "trigger": trigger,
        "repositories": [report.summary() for report in reports],
    }


class PruningIncomplete(RuntimeError):
    """At least one repository could not be pruned (the others were)."""
