"""The webhook secret as the webhook reads it: cached, and remembered through an outage."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from botocore.stub import Stubber

from layercache.triggers.github import SecretUnavailable
from layercache.triggers.wiring import RememberedSecret

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:layercache-webhook-AbCdEf"


@pytest.fixture
def secrets() -> Iterator[Stubber]:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def remembered(stubber: Stubber, max_age: int = 0) -> RememberedSecret:
    return RememberedSecret(
        SecretsProvider(boto3_client=cast("SecretsManagerClient", stubber.client)), ARN, max_age
    )


def answer(stubber: Stubber, value: str) -> None:
    stubber.add_response(
        "get_secret_value", {"ARN": ARN, "Name": "layercache-webhook", "SecretString": value}
    )


def fail(stubber: Stubber) -> None:
    stubber.add_client_error("get_secret_value", "InternalServiceError", http_status_code=500)


def test_reads_the_secret_as_bytes(secrets: Stubber) -> None:
    answer(secrets, "s3cret")
    assert remembered(secrets)() == b"s3cret"


def test_a_cold_read_that_fails_is_unavailable(secrets: Stubber) -> None:
    fail(secrets)
    with pytest.raises(SecretUnavailable):
        remembered(secrets)()


def test_a_warm_read_that_fails_uses_the_remembered_secret(secrets: Stubber) -> None:
    secret = remembered(secrets)
    answer(secrets, "s3cret")
    fail(secrets)
    fail(secrets)

    assert secret() == b"s3cret"
    assert secret() == b"s3cret"
    assert secret() == b"s3cret"


def test_a_rotated_secret_replaces_the_remembered_one(secrets: Stubber) -> None:
    secret = remembered(secrets)
    answer(secrets, "old")
    fail(secrets)
    answer(secrets, "new")
    fail(secrets)

    assert [secret(), secret(), secret(), secret()] == [b"old", b"old", b"new", b"new"]


def test_within_its_max_age_the_secret_is_read_once(secrets: Stubber) -> None:
    secret = remembered(secrets, max_age=300)
    answer(secrets, "s3cret")
    # The Stubber fails any call it was not told to expect.
    assert [secret() for _ in range(5)] == [b"s3cret"] * 5
