"""GitHubWebhookFunction: a signed GitHub delivery in, a build request handed on (or a clear
refusal) out, answered without waiting on CodeBuild."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import LambdaFunctionUrlModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from layercache import dimensions
from layercache.build_records import Trigger
from layercache.triggers.github import WebhookDelivery
from layercache.triggers.wiring import github_webhook_service

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    delivery = WebhookDelivery.from_function_url(parse(event=event, model=LambdaFunctionUrlModel))
    logger.set_correlation_id(delivery.delivery_id)
    logger.append_keys(github_event=delivery.event_type)
    metrics.add_metric(name="DeliveriesReceived", unit=MetricUnit.Count, value=1)
    response = github_webhook_service().handle(delivery)
    logger.info("Delivery handled", extra={"status": response.status, "result": response.message})
    if response.rejected_because:
        metrics.add_dimension(name=dimensions.REASON, value=response.rejected_because)
        metrics.add_metric(name="DeliveriesRejected", unit=MetricUnit.Count, value=1)
    if response.request_id:
        metrics.add_dimension(name=dimensions.TRIGGER, value=Trigger.GITHUB)
        metrics.add_metric(name="BuildsRequested", unit=MetricUnit.Count, value=1)
    return response.to_function_url()
