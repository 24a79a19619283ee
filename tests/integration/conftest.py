"""An embedded AWS (moto) with the stack's resources created as template.yaml declares them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto import mock_aws

from layercache_dev.template import (
    create_table_arguments,
    function_environment,
    parameter_defaults,
    resolve,
)

REGION = "us-east-1"


@dataclass
class Stack:
    """The deployed names, and the values template references resolve to."""

    table_name: str = "layercache-builds"
    project_name: str = "layercache-image-build"
    repository_name: str = "team/service"
    webhook_secret_value: str = "It's a Secret to Everybody"
    refs: dict[str, Any] = field(default_factory=dict)

    def environment(self, logical_id: str) -> dict[str, str]:
        """The environment template.yaml gives the function `logical_id`, resolved."""
        return {
            name: str(resolve(value, self.refs))
            for name, value in function_environment(logical_id).items()
        }


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def stack(aws: None) -> Stack:
    stack = Stack()
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(**create_table_arguments("BuildsTable", stack.table_name))
    ecr = boto3.client("ecr", region_name=REGION)
    repository = ecr.create_repository(repositoryName=stack.repository_name)["repository"]
    codebuild = boto3.client("codebuild", region_name=REGION)
    codebuild.create_project(
        name=stack.project_name,
        source={
            "type": "GITHUB",
            "location": "https://github.com/octo-org/service.git",
            "buildspec": "version: 0.2",
        },
        artifacts={"type": "NO_ARTIFACTS"},
        environment={
            "type": "LINUX_CONTAINER",
            "image": "aws/codebuild/standard:7.0",
            "computeType": "BUILD_GENERAL1_SMALL",
            "privilegedMode": True,
        },
        serviceRole="arn:aws:iam::123456789012:role/layercache-build",
    )
    secrets = boto3.client("secretsmanager", region_name=REGION)
    secret = secrets.create_secret(
        Name="layercache-webhook", SecretString=stack.webhook_secret_value
    )
    stack.refs = {
        **parameter_defaults(),
        "ImageRepositoryName": stack.repository_name,
        "SourceRepository": "octo-org/service",
        "ImageRepository": stack.repository_name,
        "ImageRepository.RepositoryUri": repository["repositoryUri"],
        "BuildsTable": stack.table_name,
        "ImageBuildProject": stack.project_name,
        "WebhookSecret": secret["ARN"],
    }
    return stack


@pytest.fixture
def function_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Apply the template's environment for one function: `function_env("LogicalId")`."""

    def apply(logical_id: str, **overrides: str) -> dict[str, str]:
        env = {**stack.environment(logical_id), **overrides}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return env

    return apply


@dataclass
class RecordedCall:
    operation: str
    params: dict[str, Any]


@pytest.fixture
def aws_calls(aws: None) -> Iterator[list[RecordedCall]]:
    """Every AWS call clients made through boto3's default session, with its parameters.

    moto keeps less than we send (StartBuild's environment overrides, for one), so tests
    assert on what was sent as well as on what moto stored.
    """
    calls: list[RecordedCall] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append(RecordedCall(f"{model.service_model.service_name}:{model.name}", dict(params)))

    boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    boto3.DEFAULT_SESSION.events.register("provide-client-params.*.*", record)
    yield calls
    boto3.DEFAULT_SESSION = None
