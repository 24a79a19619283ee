"""The base of every function's settings model: fields read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, field_validator


def split_csv(value: Any) -> Any:
    """A comma-separated variable as a list, empty items dropped (a field validator)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class EnvSettings(BaseModel):
    """Field `x_y` is read from the variable `X_Y`; template.yaml sets them."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        environ = os.environ if environ is None else environ
        values = {
            name: environ[name.upper()] for name in cls.model_fields if name.upper() in environ
        }
        return cls.model_validate(values)


DEFAULT_GITHUB_API_URL = "https://api.github.com"


class GitHubApiSettings(EnvSettings):
    """The stack's GitHub token (a Secrets Manager ARN, optional) and API."""

    github_token_secret_arn: str = ""
    github_api_url: str = DEFAULT_GITHUB_API_URL

    @field_validator("github_api_url")
    @classmethod
    def _default_when_empty(cls, value: str) -> str:
        return value or DEFAULT_GITHUB_API_URL
