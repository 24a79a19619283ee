"""Lambda's SQS event source mapping, played against an (embedded) SQS FIFO queue.

Enough of it for the tests and the demo to drive BuildStarterFunction as template.yaml
wires it: receive up to `batch_size` messages, hand them to the handler as one SQS
event, delete those it did not report in `batchItemFailures`, and leave the failed ones
to come back (at once with `retry_failed_now`, else after the visibility timeout). The
queue's redrive policy moves a message to the failure queue after maxReceiveCount.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from layercache_dev.kit.lambda_context import FakeLambdaContext

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class PollResult:
    received: int = 0
    failed: list[str] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)


@dataclass
class FifoEventSource:
    sqs: Any
    queue_url: str
    handler: Handler
    batch_size: int = 10
    retry_failed_now: bool = True
    region: str = "us-east-1"

    def poll_once(self) -> PollResult:
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            MessageSystemAttributeNames=["All"],
            WaitTimeSeconds=0,
        ).get("Messages", [])
        result = PollResult(received=len(messages))
        if not messages:
            return result
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        event = {"Records": [self._record(message, arn) for message in messages]}
        try:
            response = self.handler(event, FakeLambdaContext("BuildStarterFunction"))
        except BaseException:
            # The invocation died (a timeout, out of memory, or a test's simulated kill):
            # nothing was deleted, and the batch comes back once its visibility times out.
            if self.retry_failed_now:
                self._make_visible(messages)
            raise
        result.responses.append(response)
        failed = {item["itemIdentifier"] for item in (response or {}).get("batchItemFailures", [])}
        for message in messages:
            if message["MessageId"] in failed:
                result.failed.append(message["MessageId"])
                if self.retry_failed_now:
                    self._make_visible([message])
            else:
                self.sqs.delete_message(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
        return result

    def _make_visible(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )

    def drain(self, max_polls: int = 100) -> list[PollResult]:
        """Poll until the queue answers empty (or `max_polls`, against a message that
        fails forever before its redrive)."""
        results = []
        for _ in range(max_polls):
            result = self.poll_once()
            if not result.received:
                break
            results.append(result)
        return results

    def _record(self, message: dict[str, Any], arn: str) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": {},
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": arn,
            "awsRegion": self.region,
        }
