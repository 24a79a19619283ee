"""CodeCommitTriggerFunction: a branch update from EventBridge becomes a build request."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from layercache import dimensions
from layercache.build_records import Trigger
from layercache.triggers.models import CodeCommitReferenceEvent
from layercache.triggers.wiring import codecommit_trigger_service

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE, log_event=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_dimension(name=dimensions.TRIGGER, value=Trigger.CODECOMMIT)
    metrics.add_metric(name="EventsReceived", unit=MetricUnit.Count, value=1)
    try:
        update = parse(event=event, model=CodeCommitReferenceEvent)
    except ValidationError as error:
        # Retrying cannot fix a malformed event: log it and let it go.
        logger.warning("Rejected malformed event", extra={"error": str(error)[:500]})
        metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
        return {"build": False, "reason": "malformed event"}
    result = codecommit_trigger_service().handle(update.detail, pushed_at=update.time)
    if result.request_id and result.decision.build:
        metrics.add_metric(name="BuildsRequested", unit=MetricUnit.Count, value=1)
    return {
        "build": result.decision.build,
        "reason": result.decision.reason,
        "request_id": result.request_id,
    }
