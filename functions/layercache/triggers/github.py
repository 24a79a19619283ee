"""A GitHub webhook delivery, from signature check to build start."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self
from urllib.parse import parse_qs

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser.models import LambdaFunctionUrlModel
from pydantic import ValidationError

from layercache.build_records import Trigger, utc_now
from layercache.build_requests import BuildRequestMessage, BuildRequestQueue
from layercache.triggers.decisions import branch_of, decide_push
from layercache.triggers.models import GitHubPushEvent
from layercache.triggers.settings import GitHubWebhookSettings
from layercache.triggers.signature import is_valid_signature

logger = Logger(child=True)


class SecretUnavailable(Exception):
    """The webhook secret can't be read (Secrets Manager down) and none is remembered."""


@dataclass(frozen=True)
class WebhookDelivery:
    """One HTTP delivery from GitHub, as the function URL passed it on."""

    event_type: str | None
    delivery_id: str | None
    signature: str | None
    content_type: str
    body: bytes

    @classmethod
    def from_function_url(cls, event: LambdaFunctionUrlModel) -> Self:
        headers = {name.lower(): value for name, value in (event.headers or {}).items()}
        raw = event.body if isinstance(event.body, str) else ""
        body = base64.b64decode(raw) if event.isBase64Encoded else raw.encode()
        return cls(
            event_type=headers.get("x-github-event"),
            delivery_id=headers.get("x-github-delivery"),
            signature=headers.get("x-hub-signature-256"),
            content_type=headers.get("content-type", "application/json").split(";")[0].strip(),
            body=body,
        )

    def payload(self) -> Any:
        """The JSON payload, from a JSON body or a form body's `payload` field."""
        text = self.body.decode("utf-8")
        if self.content_type == "application/x-www-form-urlencoded":
            fields = parse_qs(text, strict_parsing=True)
            if "payload" not in fields:
                raise ValueError("form delivery without a payload field")
            text = fields["payload"][0]
        return json.loads(text)


@dataclass(frozen=True)
class WebhookResponse:
    status: int
    message: str
    # The hand-over's message id: what to look for in the starter's logs.
    request_id: str | None = None
    # Why a delivery was refused (401/400), for the DeliveriesRejected metric.
    rejected_because: str | None = None

    def to_function_url(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message}
        if self.request_id:
            body["request_id"] = self.request_id
        return {
            "statusCode": self.status,
            "headers": {"content-type": "application/json"},
            "body": json.dumps(body),
        }


class GitHubWebhookService:
    """Verify, decide, hand on: nothing here waits on CodeBuild."""

    def __init__(
        self,
        settings: GitHubWebhookSettings,
        secret: Callable[[], bytes],
        queue: BuildRequestQueue,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.secret = secret
        self.queue = queue
        self.clock = clock

    def handle(self, delivery: WebhookDelivery) -> WebhookResponse:
        try:
            secret = self.secret()
        except SecretUnavailable:
            # Nothing was recorded: GitHub's Redeliver will work once the secret is back.
            return WebhookResponse(503, "webhook secret unavailable; redeliver later")
        if not is_valid_signature(secret, delivery.body, delivery.signature):
            return WebhookResponse(401, "invalid signature", rejected_because="signature")
        if delivery.event_type == "ping":
            return WebhookResponse(200, "pong")
        if delivery.event_type != "push":
            return WebhookResponse(
                202, f"ignored: layercache builds on push, not {delivery.event_type}"
            )
        if not delivery.delivery_id:
            return WebhookResponse(400, "missing X-GitHub-Delivery", rejected_because="malformed")
        try:
            push = GitHubPushEvent.model_validate(delivery.payload())
        except (ValueError, ValidationError) as error:
            logger.warning("Malformed push delivery", extra={"error": str(error)[:500]})
            return WebhookResponse(400, "malformed push payload", rejected_because="malformed")
        return self._handle_push(delivery.delivery_id, push)

    def _handle_push(self, delivery_id: str, push: GitHubPushEvent) -> WebhookResponse:
        repository = self.settings.source_repository
        if repository and push.repository.full_name.lower() != repository.lower():
            return WebhookResponse(202, f"ignored: push to {push.repository.full_name}")
        policy = self.settings.push_policy()
        decision = decide_push(push.facts(), policy)
        logger.info("Push decision", extra={"build": decision.build, "reason": decision.reason})
        branch = branch_of(push.ref)
        if branch is None or push.deleted or branch not in policy.watched_branches:
            return WebhookResponse(202, f"no build: {decision.reason}")
        # Every push of a watched branch is handed on, built or not: it moves the
        # branch, and the starter orders later pushes by it.
        request = BuildRequestMessage.for_push(
            image=self.settings.image_repository_name,
            branch=branch,
            commit=push.after,
            before=push.before,
            trigger=Trigger.GITHUB,
            requested_at=self.clock(),
            pushed_at=push.pushed_time(),
            build=decision.build,
            reason=decision.reason,
            delivery_id=delivery_id,
            forced=push.forced,
        )
        message_id = self.queue.send(request)
        logger.info("Build request handed on", extra={"message_id": message_id})
        if not decision.build:
            return WebhookResponse(202, f"no build: {decision.reason}")
        return WebhookResponse(202, "build requested", request_id=message_id)
