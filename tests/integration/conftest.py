"""An embedded AWS (moto) with the stack's resources created as template.yaml declares them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from layercache_dev.kit.embedded_aws import Stack, StackNames, deploy_stack

REGION = "us-east-1"


# The names the tests' resources get; the stack itself is made as the demo makes it.
TEST_NAMES = StackNames(
    table="layercache-builds",
    project="layercache-image-build",
    repository="team/service",
    secret="layercache-webhook",
)


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def stack(aws: None) -> Stack:
    """The stack's resources in moto, created from template.yaml's own definitions."""

    def client(service: str) -> Any:
        return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]

    return deploy_stack(
        client,
        endpoint="",  # moto's in-process mock: boto3's default endpoints
        parameters={"SourceRepository": "octo-org/service"},
        names=TEST_NAMES,
    )


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
