"""The build recorder's configuration, read once from the function's environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_GITHUB_API_URL = "https://api.github.com"


class RecorderSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    builds_table_name: str = Field(min_length=1)
    build_project_name: str = Field(min_length=1)
    image_repository_name: str = Field(min_length=1)
    notifications_topic_arn: str = ""
    source_type: str = "GITHUB"
    source_repository: str = ""
    github_token_secret_arn: str = ""
    github_api_url: str = DEFAULT_GITHUB_API_URL

    @property
    def github_enabled(self) -> bool:
        """Commit statuses are posted only for a GitHub source with a token configured."""
        return (
            self.source_type == "GITHUB"
            and "/" in self.source_repository
            and bool(self.github_token_secret_arn)
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> RecorderSettings:
        return cls(
            builds_table_name=environ.get("BUILDS_TABLE_NAME", ""),
            build_project_name=environ.get("BUILD_PROJECT_NAME", ""),
            image_repository_name=environ.get("IMAGE_REPOSITORY_NAME", ""),
            notifications_topic_arn=environ.get("BUILD_NOTIFICATIONS_TOPIC_ARN", ""),
            source_type=environ.get("SOURCE_TYPE", "GITHUB"),
            source_repository=environ.get("SOURCE_REPOSITORY", ""),
            github_token_secret_arn=environ.get("GITHUB_TOKEN_SECRET_ARN", ""),
            github_api_url=environ.get("GITHUB_API_URL") or DEFAULT_GITHUB_API_URL,
        )
