"""BuildStarterFunction's configuration, read once from the environment template.yaml sets."""

from __future__ import annotations

from pydantic import Field, field_validator

from layercache.settings import EnvSettings

DEFAULT_GITHUB_API_URL = "https://api.github.com"


class StarterSettings(EnvSettings):
    builds_table_name: str = Field(min_length=1)
    build_project_name: str = Field(min_length=1)
    supersede_older_builds: bool = True
    # A claim blocks a retry this long; longer than the function's timeout, so only a
    # dead invocation's claim is ever taken over.
    claim_lease_seconds: int = Field(default=90, ge=1)
    source_type: str = "GITHUB"
    source_repository: str = ""
    github_token_secret_arn: str = ""
    github_api_url: str = DEFAULT_GITHUB_API_URL

    @field_validator("github_api_url")
    @classmethod
    def _default_when_empty(cls, value: str) -> str:
        return value or DEFAULT_GITHUB_API_URL
