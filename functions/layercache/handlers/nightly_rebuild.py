"""NightlyRebuildFunction: EventBridge Scheduler's nightly run requests a refresh per branch."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from layercache import dimensions
from layercache.build_records import Trigger
from layercache.triggers.models import NightlyRebuildRequest
from layercache.triggers.nightly import request_rebuilds
from layercache.triggers.wiring import nightly_rebuild_service

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        request = parse(event=event, model=NightlyRebuildRequest)
    except ValidationError as error:
        logger.warning("Rejected malformed request", extra={"error": str(error)[:500]})
        metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
        return {"builds": [], "reason": "malformed request"}
    logger.set_correlation_id(request.execution_id or context.aws_request_id)
    settings, queue = nightly_rebuild_service()
    rebuilds = request_rebuilds(request, settings, queue, context.aws_request_id)
    trigger = Trigger.MANUAL if request.manual else Trigger.NIGHTLY
    metrics.add_dimension(name=dimensions.TRIGGER, value=trigger)
    metrics.add_metric(
        name="BuildsRequested",
        unit=MetricUnit.Count,
        value=sum(1 for rebuild in rebuilds if rebuild.request_id),
    )
    return {
        "mode": request.mode.value,
        "builds": [
            {
                "branch": rebuild.branch,
                "requested": rebuild.request_id is not None,
                "request_id": rebuild.request_id,
                "reason": rebuild.reason,
            }
            for rebuild in rebuilds
        ],
    }
