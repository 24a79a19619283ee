"""The build recorder's configuration, read once from the function's environment."""

from __future__ import annotations

from pydantic import Field, field_validator

from layercache.settings import EnvSettings

DEFAULT_GITHUB_API_URL = "https://api.github.com"


class RecorderSettings(EnvSettings):
    builds_table_name: str = Field(min_length=1)
    build_project_name: str = Field(min_length=1)
    image_repository_name: str = Field(min_length=1)
    build_notifications_topic_arn: str = ""
    source_type: str = "GITHUB"
    source_repository: str = ""
    github_token_secret_arn: str = ""
    github_api_url: str = DEFAULT_GITHUB_API_URL

    @field_validator("github_api_url")
    @classmethod
    def _default_when_empty(cls, value: str) -> str:
        return value or DEFAULT_GITHUB_API_URL

    @property
    def github_enabled(self) -> bool:
        """Commit statuses are posted only for a GitHub source with a token configured."""
        return (
            self.source_type == "GITHUB"
            and "/" in self.source_repository
            and bool(self.github_token_secret_arn)
        )
