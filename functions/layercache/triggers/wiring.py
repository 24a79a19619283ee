"""Build each trigger's service from its settings and AWS clients.

`make_*` take every client, so tests can pass stubbed ones; the cached accessors the
handlers call build a service once per container with real clients.

The three triggers' handlers import this module: what only the webhook needs (its service
and the Function URL event model under it, Powertools' parameters utility) is imported
where the webhook's service is made, so the other triggers' cold starts skip it.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from layercache import aws
from layercache.build_requests import BuildRequestQueue
from layercache.triggers.codecommit import CodeCommitChanges, CodeCommitTriggerService
from layercache.triggers.settings import (
    CodeCommitTriggerSettings,
    GitHubWebhookSettings,
    NightlyRebuildSettings,
    TriggerSettings,
)

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider
    from mypy_boto3_codecommit import CodeCommitClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

    from layercache.triggers.github import GitHubWebhookService

logger = Logger(child=True)


def make_queue(
    settings: TriggerSettings, sqs: SQSClient | None = None, budget: aws.Budget = aws.STANDARD
) -> BuildRequestQueue:
    return BuildRequestQueue(settings.build_request_queue_url, sqs or aws.client("sqs", budget))


class RememberedSecret:
    """The webhook secret, cached for `max_age`; the last value read outlives an outage.

    Secrets Manager failing must not turn every delivery into a lost push: while a value
    is remembered it is used (and the failure logged); only a cold container that never
    read the secret answers "unavailable".
    """

    def __init__(self, provider: SecretsProvider, arn: str, max_age: int) -> None:
        self.provider = provider
        self.arn = arn
        self.max_age = max_age
        self._last: bytes | None = None

    def __call__(self) -> bytes:
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

        from layercache.triggers.github import SecretUnavailable

        try:
            value = self.provider.get(self.arn, max_age=self.max_age)
        except (GetParameterError, ClientError, BotoCoreError) as error:
            if self._last is None:
                logger.error("Webhook secret unavailable", extra={"error": str(error)[:300]})
                raise SecretUnavailable(str(error)) from error
            logger.warning("Secrets Manager failed; using the remembered secret")
            return self._last
        self._last = value.encode() if isinstance(value, str) else bytes(value or b"")
        return self._last


def make_github_webhook_service(
    settings: GitHubWebhookSettings,
    secretsmanager: SecretsManagerClient | None = None,
    sqs: SQSClient | None = None,
) -> GitHubWebhookService:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    from layercache.triggers.github import GitHubWebhookService

    # GitHub waits 10 s for an answer: every call on the way has the interactive budget.
    provider = SecretsProvider(
        boto3_client=secretsmanager or aws.client("secretsmanager", aws.INTERACTIVE)
    )
    secret = RememberedSecret(
        provider, settings.webhook_secret_arn, settings.secret_max_age_seconds
    )
    return GitHubWebhookService(settings, secret, make_queue(settings, sqs, aws.INTERACTIVE))


def make_codecommit_trigger_service(
    settings: CodeCommitTriggerSettings,
    codecommit: CodeCommitClient | None = None,
    sqs: SQSClient | None = None,
) -> CodeCommitTriggerService:
    changes = CodeCommitChanges(
        codecommit or aws.client("codecommit"), settings.max_difference_pages
    )
    return CodeCommitTriggerService(settings, changes, make_queue(settings, sqs))


@cache
def github_webhook_service() -> GitHubWebhookService:
    return make_github_webhook_service(GitHubWebhookSettings.from_env())


@cache
def codecommit_trigger_service() -> CodeCommitTriggerService:
    return make_codecommit_trigger_service(CodeCommitTriggerSettings.from_env())


@cache
def nightly_rebuild_service() -> tuple[NightlyRebuildSettings, BuildRequestQueue]:
    settings = NightlyRebuildSettings.from_env()
    return settings, make_queue(settings)


def reset() -> None:
    """Forget the cached services (tests change the environment between cases)."""
    github_webhook_service.cache_clear()
    codecommit_trigger_service.cache_clear()
    nightly_rebuild_service.cache_clear()
