"""The recorder's settings: how long the GitHub token is cached."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from layercache.recording.settings import RecorderSettings

ENVIRON = {
    "BUILDS_TABLE_NAME": "builds",
    "BUILD_PROJECT_NAME": "project",
    "IMAGE_REPOSITORY_NAME": "team/service",
}


def test_the_token_is_read_again_every_five_minutes_by_default() -> None:
    assert RecorderSettings.from_env(ENVIRON).github_token_max_age_seconds == 300


def test_the_token_max_age_can_be_set_and_is_checked() -> None:
    environ = {**ENVIRON, "GITHUB_TOKEN_MAX_AGE_SECONDS": "0"}
    assert RecorderSettings.from_env(environ).github_token_max_age_seconds == 0
    with pytest.raises(ValidationError, match="github_token_max_age_seconds"):
        RecorderSettings.from_env({**ENVIRON, "GITHUB_TOKEN_MAX_AGE_SECONDS": "-1"})
