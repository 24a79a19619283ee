from __future__ import annotations

import pytest
from pydantic import ValidationError

from layercache.triggers.settings import GitHubWebhookSettings, TriggerSettings

BASE = {
    "BUILDS_TABLE_NAME": "builds",
    "BUILD_PROJECT_NAME": "project",
    "IMAGE_REPOSITORY_NAME": "team/service",
    "WATCHED_BRANCHES": "main, release/2.x ,",
    "DEFAULT_BRANCH": "main",
    "PATH_FILTERS": "",
    "SUPERSEDE_OLDER_BUILDS": "false",
}


def test_reads_and_splits_the_environment() -> None:
    settings = TriggerSettings.from_env(BASE)
    assert settings.watched_branches == frozenset({"main", "release/2.x"})
    assert settings.path_filters == ()
    assert settings.supersede_older_builds is False
    assert settings.push_policy().watched_branches == settings.watched_branches


def test_path_filters_are_a_list() -> None:
    settings = TriggerSettings.from_env({**BASE, "PATH_FILTERS": "app/,Dockerfile"})
    assert settings.path_filters == ("app/", "Dockerfile")


def test_missing_variable_is_a_clear_error() -> None:
    environ = dict(BASE)
    del environ["BUILDS_TABLE_NAME"]
    with pytest.raises(ValidationError, match="builds_table_name"):
        TriggerSettings.from_env(environ)


def test_no_watched_branch_is_refused() -> None:
    with pytest.raises(ValidationError, match="watched_branches"):
        TriggerSettings.from_env({**BASE, "WATCHED_BRANCHES": " , "})


def test_webhook_settings_need_the_secret() -> None:
    with pytest.raises(ValidationError, match="webhook_secret_arn"):
        GitHubWebhookSettings.from_env(BASE)
    settings = GitHubWebhookSettings.from_env({**BASE, "WEBHOOK_SECRET_ARN": "arn:secret"})
    assert settings.secret_max_age_seconds == 300
