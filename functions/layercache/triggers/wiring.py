"""Build each trigger's service from its settings and AWS clients.

`make_*` take every client, so tests can pass stubbed ones; the cached accessors the
handlers call build a service once per container with real clients.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from aws_lambda_powertools.utilities.parameters import SecretsProvider

from layercache import aws
from layercache.triggers.builds import BuildStarter
from layercache.triggers.codecommit import CodeCommitChanges, CodeCommitTriggerService
from layercache.triggers.github import GitHubWebhookService
from layercache.triggers.settings import (
    CodeCommitTriggerSettings,
    GitHubWebhookSettings,
    NightlyRebuildSettings,
    TriggerSettings,
)
from layercache.triggers.store import BuildsStore

if TYPE_CHECKING:
    from mypy_boto3_codebuild import CodeBuildClient
    from mypy_boto3_codecommit import CodeCommitClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_secretsmanager import SecretsManagerClient


def make_build_starter(
    settings: TriggerSettings,
    dynamodb: DynamoDBClient | None = None,
    codebuild: CodeBuildClient | None = None,
) -> BuildStarter:
    return BuildStarter(
        project_name=settings.build_project_name,
        store=BuildsStore(settings.builds_table_name, dynamodb or aws.client("dynamodb")),
        codebuild=codebuild or aws.client("codebuild"),
        supersede=settings.supersede_older_builds,
    )


def make_github_webhook_service(
    settings: GitHubWebhookSettings,
    secretsmanager: SecretsManagerClient | None = None,
    starter: BuildStarter | None = None,
) -> GitHubWebhookService:
    secrets = SecretsProvider(boto3_client=secretsmanager or aws.client("secretsmanager"))

    def secret() -> bytes:
        # Cached for max_age: a warm container does not call Secrets Manager per delivery.
        value = secrets.get(settings.webhook_secret_arn, max_age=settings.secret_max_age_seconds)
        return value.encode() if isinstance(value, str) else bytes(value or b"")

    starter = starter or make_build_starter(settings)
    return GitHubWebhookService(settings, secret, starter.store, starter)


def make_codecommit_trigger_service(
    settings: CodeCommitTriggerSettings,
    codecommit: CodeCommitClient | None = None,
    starter: BuildStarter | None = None,
) -> CodeCommitTriggerService:
    changes = CodeCommitChanges(
        codecommit or aws.client("codecommit"), settings.max_difference_pages
    )
    return CodeCommitTriggerService(settings, changes, starter or make_build_starter(settings))


@cache
def github_webhook_service() -> GitHubWebhookService:
    return make_github_webhook_service(GitHubWebhookSettings.from_env())


@cache
def codecommit_trigger_service() -> CodeCommitTriggerService:
    return make_codecommit_trigger_service(CodeCommitTriggerSettings.from_env())


@cache
def nightly_rebuild_service() -> tuple[NightlyRebuildSettings, BuildStarter]:
    settings = NightlyRebuildSettings.from_env()
    return settings, make_build_starter(settings)


def reset() -> None:
    """Forget the cached services (tests change the environment between cases)."""
    github_webhook_service.cache_clear()
    codecommit_trigger_service.cache_clear()
    nightly_rebuild_service.cache_clear()
