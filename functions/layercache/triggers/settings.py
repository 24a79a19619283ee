"""One settings model per trigger function, read once from the environment template.yaml sets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from layercache.triggers.decisions import PushPolicy


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class TriggerSettings(BaseModel):
    """What every trigger needs. Field `x_y` is read from the variable `X_Y`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    builds_table_name: str = Field(min_length=1)
    build_project_name: str = Field(min_length=1)
    image_repository_name: str = Field(min_length=1)
    watched_branches: frozenset[str] = Field(min_length=1)
    default_branch: str = Field(min_length=1)
    path_filters: tuple[str, ...] = ()
    supersede_older_builds: bool = True
    # GitHub "owner/name" or the CodeCommit repository name; events of others are ignored.
    source_repository: str = ""

    _split = field_validator("watched_branches", "path_filters", mode="before")(_split_csv)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        environ = os.environ if environ is None else environ
        values = {
            name: environ[name.upper()] for name in cls.model_fields if name.upper() in environ
        }
        return cls.model_validate(values)

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
