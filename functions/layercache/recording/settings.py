"""The build recorder's configuration, read once from the function's environment."""

from __future__ import annotations

from pydantic import Field

from layercache.github_token import DEFAULT_MAX_AGE_SECONDS
from layercache.settings import GitHubApiSettings


class RecorderSettings(GitHubApiSettings):
    builds_table_name: str = Field(min_length=1)
    build_project_name: str = Field(min_length=1)
    image_repository_name: str = Field(min_length=1)
    build_notifications_topic_arn: str = ""
    source_type: str = "GITHUB"
    source_repository: str = ""
    # FanOut or several platforms: builds come in batches, recorded as one (batch.py).
    batch_builds: bool = False
    # The GitHub token is read again after this long, so a rotated token is picked up.
    github_token_max_age_seconds: int = Field(default=DEFAULT_MAX_AGE_SECONDS, ge=0)

    @property
    def github_enabled(self) -> bool:
        """Commit statuses are posted only for a GitHub source with a token configured."""
        return (
            self.source_type == "GITHUB"
            and "/" in self.source_repository
            and bool(self.github_token_secret_arn)
        )
