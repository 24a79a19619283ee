"""CodeCommitTriggerFunction on moto; CodeCommit's commit and diff APIs (absent from moto)
are answered by botocore's Stubber."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest
from botocore.stub import Stubber

from layercache.handlers import codecommit_trigger
from layercache.triggers import wiring
from layercache.triggers.settings import CodeCommitTriggerSettings
from layercache_dev.embedded_aws import Stack
from layercache_dev.lambda_context import FakeLambdaContext
from tests.integration.conftest import RecordedCall

from .conftest import builds_started, sample, table_items, template_handler

if TYPE_CHECKING:
    from mypy_boto3_codecommit import CodeCommitClient

FUNCTION = "CodeCommitTriggerFunction"
UPDATED = sample("codecommit-trigger", "reference-updated.json")
COMMIT = UPDATED["detail"]["commitId"]
OLD_COMMIT = UPDATED["detail"]["oldCommitId"]


@pytest.fixture
def codecommit(aws: None) -> Iterator[Stubber]:
    client = boto3.client("codecommit", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def invoke(
    stack: Stack,
    function_env: Any,
    lambda_context: FakeLambdaContext,
    codecommit: Stubber,
    monkeypatch: pytest.MonkeyPatch,
    aws_calls: list[RecordedCall],
) -> Any:
    def call(event: dict[str, Any], **env: str) -> dict[str, Any]:
        function_env(FUNCTION, SOURCE_REPOSITORY="service", **env)
        service = wiring.make_codecommit_trigger_service(
            CodeCommitTriggerSettings.from_env(),
            codecommit=cast("CodeCommitClient", codecommit.client),
        )
        monkeypatch.setattr(codecommit_trigger, "codecommit_trigger_service", lambda: service)
        result: dict[str, Any] = template_handler(FUNCTION)(event, lambda_context)
        return result

    return call


def expect_commit(stubber: Stubber, commit_id: str, message: str) -> None:
    stubber.add_response(
        "get_commit",
        {"commit": {"commitId": commit_id, "message": message, "parents": [OLD_COMMIT]}},
        {"repositoryName": "service", "commitId": commit_id},
    )


def expect_differences(stubber: Stubber, *pages: list[str], more: bool = False) -> None:
    for index, paths in enumerate(pages):
        expected: dict[str, Any] = {
            "repositoryName": "service",
            "beforeCommitSpecifier": OLD_COMMIT,
            "afterCommitSpecifier": COMMIT,
        }
        if index:
            expected["NextToken"] = f"page-{index}"
        response: dict[str, Any] = {
            "differences": [
                {"afterBlob": {"blobId": "b" * 40, "path": path, "mode": "100644"}}
                for path in paths
            ]
        }
        if index < len(pages) - 1 or more:
            response["NextToken"] = f"page-{index + 1}"
        stubber.add_response("get_differences", response, expected)


def test_branch_update_starts_a_build_of_that_commit(
    invoke: Any, codecommit: Stubber, stack: Stack, aws_calls: list[RecordedCall]
) -> None:
    expect_commit(codecommit, COMMIT, "Add health check")

    result = invoke(UPDATED)

    assert result["build"] is True
    assert builds_started(stack.project_name) == [result["build_id"]]
    (params,) = [call.params for call in aws_calls if call.operation == "codebuild:StartBuild"]
    assert params["sourceVersion"] == COMMIT
    env = {item["name"]: item["value"] for item in params["environmentVariablesOverride"]}
    assert env["LAYERCACHE_TRIGGER"] == "codecommit"
    assert env["LAYERCACHE_BRANCH"] == "main"
    (build,) = table_items(stack.table_name, "BUILD#")
    assert build["commit"]["S"] == COMMIT


def test_created_branch_builds(invoke: Any, codecommit: Stubber, stack: Stack) -> None:
    event = sample("codecommit-trigger", "reference-created.json")
    expect_commit(codecommit, event["detail"]["commitId"], "Start the branch")
    assert invoke(event)["build"] is True


def test_duplicate_event_starts_no_second_build(
    invoke: Any, codecommit: Stubber, stack: Stack
) -> None:
    expect_commit(codecommit, COMMIT, "Add health check")
    expect_commit(codecommit, COMMIT, "Add health check")
    invoke(UPDATED)

    result = invoke(UPDATED)

    assert result["build_id"] is None
    assert "SUCCEEDED" in result["reason"]
    assert len(builds_started(stack.project_name)) == 1


@pytest.mark.parametrize(
    "name", ["reference-updated-other-branch", "tag-created"], ids=["other branch", "tag"]
)
def test_pushes_we_do_not_build_call_nothing(
    invoke: Any, stack: Stack, name: str, aws_calls: list[RecordedCall]
) -> None:
    result = invoke(sample("codecommit-trigger", f"{name}.json"))
    assert result["build"] is False
    assert builds_started(stack.project_name) == []
    assert not [call for call in aws_calls if call.operation.startswith("codecommit:")]


def test_skip_ci_in_the_commit_message(invoke: Any, codecommit: Stubber, stack: Stack) -> None:
    expect_commit(codecommit, COMMIT, "Tidy docs\n\n[ci skip]")
    result = invoke(UPDATED)
    assert result["build"] is False
    assert "skip CI" in result["reason"]
    assert builds_started(stack.project_name) == []


def test_event_of_another_repository_is_ignored(invoke: Any, stack: Stack) -> None:
    event = sample("codecommit-trigger", "reference-updated.json")
    event["detail"]["repositoryName"] = "other"
    assert invoke(event)["build"] is False
    assert builds_started(stack.project_name) == []


def test_malformed_event_is_rejected_without_retry(invoke: Any, stack: Stack) -> None:
    event = sample("codecommit-trigger", "reference-updated.json")
    del event["detail"]["referenceName"]
    result = invoke(event)
    assert result == {"build": False, "reason": "malformed event"}
    assert builds_started(stack.project_name) == []


class TestPathFilters:
    def test_change_under_a_filter_builds(self, invoke: Any, codecommit: Stubber) -> None:
        expect_commit(codecommit, COMMIT, "Change the API")
        expect_differences(codecommit, ["README.md"], ["app/api.py"])
        assert invoke(UPDATED, PATH_FILTERS="app/")["build"] is True

    def test_change_outside_the_filters_does_not(
        self, invoke: Any, codecommit: Stubber, stack: Stack
    ) -> None:
        expect_commit(codecommit, COMMIT, "Docs")
        expect_differences(codecommit, ["README.md", "docs/guide.md"])
        result = invoke(UPDATED, PATH_FILTERS="app/,Dockerfile")
        assert result["build"] is False
        assert "path filters" in result["reason"]
        assert builds_started(stack.project_name) == []

    def test_a_diff_too_large_to_read_builds_anyway(self, invoke: Any, codecommit: Stubber) -> None:
        expect_commit(codecommit, COMMIT, "Vendor everything")
        expect_differences(codecommit, ["vendor/a"], ["vendor/b"], more=True)
        result = invoke(UPDATED, PATH_FILTERS="app/", MAX_DIFFERENCE_PAGES="2")
        assert result["build"] is True

    def test_new_branch_has_no_diff_and_builds(self, invoke: Any, codecommit: Stubber) -> None:
        event = sample("codecommit-trigger", "reference-created.json")
        expect_commit(codecommit, event["detail"]["commitId"], "New branch")
        assert invoke(event, PATH_FILTERS="app/")["build"] is True


def test_codecommit_failure_surfaces_for_the_async_retry(
    invoke: Any, codecommit: Stubber, stack: Stack
) -> None:
    codecommit.add_client_error("get_commit", "ServiceUnavailableException", http_status_code=503)
    with pytest.raises(codecommit.client.exceptions.ClientError):
        invoke(UPDATED)
    assert builds_started(stack.project_name) == []
