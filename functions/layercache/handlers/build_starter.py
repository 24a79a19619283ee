"""BuildStarterFunction: build requests from BuildRequestQueue (SQS FIFO) -> StartBuild.

A request that fails (throttled StartBuild, a claim another invocation holds) is reported
as a batch item failure: SQS hands it back after the visibility timeout, later messages
of its branch wait behind it, other branches go on. After the queue's maxReceiveCount it
moves, whole, to BuildRequestFailureQueue. A message that is not a build request is
logged and dropped: retrying cannot fix it.

Powertools' batch utility is imported before pydantic (isort's order, kept): imported after
it, the utility also builds pydantic models of SQS, Kinesis, DynamoDB and Kafka records at
import, which a cold start pays and this handler never uses.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from layercache.build_requests import BuildRequestMessage
from layercache.starting.wiring import build_starter

logger = Logger()
metrics = Metrics()

# What a handled request became, beside BuildsStarted.
OUTCOME_METRICS = {"stale": "RequestsStale", "duplicate": "RequestsDuplicate"}


def handle_record(record: SQSRecord) -> dict[str, Any]:
    try:
        request = BuildRequestMessage.from_message(record.body)
    except ValidationError as error:
        logger.error(
            "Dropped a message that is not a build request",
            extra={"message_id": record.message_id, "error": str(error)[:500]},
        )
        metrics.add_metric(name="RequestsRejected", unit=MetricUnit.Count, value=1)
        return {"action": "rejected"}
    outcome = build_starter().handle(request)
    logger.info(
        "Request handled",
        extra={
            "action": outcome.action,
            "reason": outcome.reason,
            "build_id": outcome.build_id,
            **request.log_keys(),
        },
    )
    if outcome.action in OUTCOME_METRICS:
        metrics.add_metric(name=OUTCOME_METRICS[outcome.action], unit=MetricUnit.Count, value=1)
    if outcome.started:
        metrics.add_metric(name="BuildsStarted", unit=MetricUnit.Count, value=1)
    if outcome.superseded:
        metrics.add_metric(
            name="BuildsSuperseded", unit=MetricUnit.Count, value=len(outcome.superseded)
        )
    return {"action": outcome.action, "build_id": outcome.build_id}


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # One branch's failure holds back only that branch's later messages.
    processor = SqsFifoPartialProcessor(skip_group_on_error=True)
    # All failed is still a partial response: every message goes back, none is lost.
    processor.raise_on_entire_batch_failure = False
    response = process_partial_response(
        event=event, record_handler=handle_record, processor=processor, context=context
    )
    return dict(response)
