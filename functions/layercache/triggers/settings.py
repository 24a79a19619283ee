"""One settings model per trigger function, read once from the environment template.yaml sets."""

from __future__ import annotations

from pydantic import Field, field_validator

from layercache.settings import EnvSettings, split_csv
from layercache.triggers.decisions import PushPolicy


class TriggerSettings(EnvSettings):
    """What every trigger needs."""

    build_request_queue_url: str = Field(min_length=1)
    image_repository_name: str = Field(min_length=1)
    watched_branches: frozenset[str] = Field(min_length=1)
    path_filters: tuple[str, ...] = ()
    # GitHub "owner/name" or the CodeCommit repository name; events of others are ignored.
    source_repository: str = ""

    _split = field_validator("watched_branches", "path_filters", mode="before")(split_csv)

    def push_policy(self) -> PushPolicy:
        return PushPolicy(watched_branches=self.watched_branches, path_filters=self.path_filters)


class GitHubWebhookSettings(TriggerSettings):
    webhook_secret_arn: str = Field(min_length=1)
    # The secret is cached this long, so a rotation takes effect within it.
    secret_max_age_seconds: int = Field(default=300, ge=0)


class CodeCommitTriggerSettings(TriggerSettings):
    # GetDifferences pages read before giving up and building anyway.
    max_difference_pages: int = Field(default=10, ge=1)


class NightlyRebuildSettings(TriggerSettings):
    pass
