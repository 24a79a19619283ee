from __future__ import annotations

import pytest
from pydantic import ValidationError

from layercache.triggers.settings import (
    CodeCommitTriggerSettings,
    GitHubWebhookSettings,
    NightlyRebuildSettings,
    TriggerSettings,
)

QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/layercache-build-requests.fifo"
BASE = {
    "BUILD_REQUEST_QUEUE_URL": QUEUE_URL,
    "IMAGE_REPOSITORY_NAME": "team/service",
    "WATCHED_BRANCHES": "main, release/2.x ,",
    "PATH_FILTERS": "",
    # The template's Globals give every function these; the triggers need none of them.
    "BUILDS_TABLE_NAME": "builds",
    "BUILD_PROJECT_NAME": "project",
}


def test_reads_and_splits_the_environment() -> None:
    settings = TriggerSettings.from_env(BASE)
    assert settings.build_request_queue_url == QUEUE_URL
    assert settings.watched_branches == frozenset({"main", "release/2.x"})
    assert settings.path_filters == ()
    assert settings.source_repository == ""
    assert settings.push_policy().watched_branches == settings.watched_branches


def test_triggers_know_nothing_of_codebuild_or_the_table() -> None:
    """They hand requests on; the starter starts builds and writes BuildsTable."""
    fields = set(TriggerSettings.model_fields)
    assert "build_request_queue_url" in fields
    assert not {"builds_table_name", "build_project_name", "supersede_older_builds"} & fields


def test_path_filters_are_a_list() -> None:
    settings = TriggerSettings.from_env({**BASE, "PATH_FILTERS": "app/, Dockerfile"})
    assert settings.path_filters == ("app/", "Dockerfile")
    assert settings.push_policy().path_filters == ("app/", "Dockerfile")


@pytest.mark.parametrize(
    "name", ["BUILD_REQUEST_QUEUE_URL", "IMAGE_REPOSITORY_NAME", "WATCHED_BRANCHES"]
)
def test_a_missing_variable_is_a_clear_error(name: str) -> None:
    environ = dict(BASE)
    del environ[name]
    with pytest.raises(ValidationError, match=name.lower()):
        TriggerSettings.from_env(environ)


def test_an_empty_queue_url_is_refused() -> None:
    with pytest.raises(ValidationError, match="build_request_queue_url"):
        TriggerSettings.from_env({**BASE, "BUILD_REQUEST_QUEUE_URL": ""})


def test_no_watched_branch_is_refused() -> None:
    with pytest.raises(ValidationError, match="watched_branches"):
        TriggerSettings.from_env({**BASE, "WATCHED_BRANCHES": " , "})


def test_webhook_settings_need_the_secret() -> None:
    with pytest.raises(ValidationError, match="webhook_secret_arn"):
        GitHubWebhookSettings.from_env(BASE)
    settings = GitHubWebhookSettings.from_env({**BASE, "WEBHOOK_SECRET_ARN": "arn:secret"})
    assert settings.secret_max_age_seconds == 300


def test_the_secret_cache_age_may_be_zero_not_negative() -> None:
    environ = {**BASE, "WEBHOOK_SECRET_ARN": "arn:secret"}
    assert (
        GitHubWebhookSettings.from_env(
            {**environ, "SECRET_MAX_AGE_SECONDS": "0"}
        ).secret_max_age_seconds
        == 0
    )
    with pytest.raises(ValidationError, match="secret_max_age_seconds"):
        GitHubWebhookSettings.from_env({**environ, "SECRET_MAX_AGE_SECONDS": "-1"})


def test_codecommit_settings_bound_the_diff_read() -> None:
    assert CodeCommitTriggerSettings.from_env(BASE).max_difference_pages == 10
    with pytest.raises(ValidationError, match="max_difference_pages"):
        CodeCommitTriggerSettings.from_env({**BASE, "MAX_DIFFERENCE_PAGES": "0"})


def test_nightly_settings_are_the_common_ones() -> None:
    settings = NightlyRebuildSettings.from_env(BASE)
    assert settings.watched_branches == frozenset({"main", "release/2.x"})
