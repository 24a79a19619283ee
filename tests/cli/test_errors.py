"""Every way the command cannot do its job: one line on stderr, exit status 2, no traceback."""

from __future__ import annotations

import contextlib
import json
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import (
    MotoServer,
    ServedStack,
    assert_one_line_error,
    deploy,
    run_command,
    stack_template,
)


def test_no_region(layercache: Any) -> None:
    result = layercache("report", "--table", "builds", region=False)

    assert_one_line_error(result, "layercache report: no AWS region: pass --region")


def test_region_from_the_option_or_aws_region(seeded_stack: ServedStack, layercache: Any) -> None:
    by_option = layercache("report", "--stack", seeded_stack.name, "--region", "us-east-1")
    by_variable = layercache("report", "--stack", seeded_stack.name, AWS_REGION="us-east-1")

    assert by_option.returncode == by_variable.returncode == 0
    assert "Recent builds (9 of 9" in by_option.stdout
    assert by_option.stdout == by_variable.stdout


def test_no_credentials(layercache: Any) -> None:
    result = layercache("builds", "--stack", "layercache", credentials=False)

    assert_one_line_error(result, "layercache builds: no AWS credentials: set AWS_PROFILE")


def test_a_profile_that_does_not_exist(layercache: Any) -> None:
    result = layercache("status", "--stack", "layercache", AWS_PROFILE="nowhere")

    assert_one_line_error(result, "layercache status: ", "nowhere", "could not be found")


def test_no_such_stack(layercache: Any) -> None:
    for command in (["report"], ["builds"], ["show", "p:1"], ["status"]):
        result = layercache(*command, "--stack", "no-such-stack")

        assert_one_line_error(
            result,
            f"layercache {command[0]}: no CloudFormation stack named 'no-such-stack' in us-east-1",
        )


def test_a_stack_without_the_table_output(moto_server: MotoServer, layercache: Any) -> None:
    other = deploy(
        moto_server,
        stack_template(
            resources=("TriggerFailureQueue",),
            outputs=("TriggerFailureQueueUrl",),
            resolved_outputs={},
        ),
    )

    result = layercache("report", "--stack", other.name)

    assert_one_line_error(
        result,
        f"layercache report: stack '{other.name}' has no BuildsTableName output and no "
        "BuildsTable resource: is it a layercache stack?",
    )


def test_a_stack_without_the_output_but_with_the_table(
    moto_server: MotoServer, layercache: Any
) -> None:
    """An older stack: the table is found among its resources."""
    older = deploy(moto_server, stack_template(outputs=(), resolved_outputs={}))

    result = layercache("report", "--stack", older.name)

    assert (result.returncode, result.stdout) == (0, "No builds in the last 14 days.\n")


def test_no_such_table(layercache: Any) -> None:
    for command in (["report"], ["builds"], ["show", "p:1"]):
        result = layercache(*command, "--table", "no-such-table")

        assert_one_line_error(
            result, f"layercache {command[0]}: no DynamoDB table named 'no-such-table' in us-east-1"
        )


def test_no_table_given(layercache: Any) -> None:
    result = layercache("report")

    assert_one_line_error(
        result, "layercache report: give --stack NAME or --table NAME (or set BUILDS_TABLE_NAME)"
    )


def test_an_endpoint_that_does_not_answer(layercache: Any) -> None:
    result = layercache("report", "--table", "builds", AWS_ENDPOINT_URL="http://127.0.0.1:9")

    assert_one_line_error(result, "layercache report: cannot reach AWS: ", "127.0.0.1:9")


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ([], "layercache: the following arguments are required: COMMAND (see layercache --help)"),
        (["deploy"], "layercache: argument COMMAND: invalid choice: 'deploy'"),
        (["report", "--days", "0"], "layercache report: argument --days: must be 1 or more: 0"),
        (["report", "--limit", "ten"], "layercache report: argument --limit: not a whole number"),
        (["report", "--warm-threshold", "2"], "argument --warm-threshold: must be between 0"),
        (["report", "--stack", "a", "--table", "b"], "argument --table: not allowed with"),
        (["report", "--colour"], "layercache: unrecognized arguments: --colour"),
        (["builds", "--days", "-1"], "layercache builds: argument --days: must be 1 or more"),
        (["show"], "layercache show: the following arguments are required: BUILD_ID"),
        (["status"], "layercache status: the following arguments are required: --stack"),
        (["status", "--table", "t"], "layercache status: "),
    ],
)
def test_bad_arguments(arguments: list[str], expected: str, layercache: Any) -> None:
    assert_one_line_error(layercache(*arguments), expected)


# ------------------------------------------------------------------ IAM on the server
def reset_auth(server: MotoServer, unauthenticated_requests: float) -> None:
    """moto's server checks IAM from now on, after this many more unchecked requests."""
    request = urllib.request.Request(  # noqa: S310 - the local moto server
        f"{server.endpoint}/moto-api/reset-auth",
        data=str(unauthenticated_requests).encode(),
        headers={"Content-Type": "text/plain"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert json.loads(response.read())["status"] == "ok"


def user_keys(server: MotoServer, allowed_actions: list[str]) -> dict[str, str]:
    """Access keys of a new IAM user allowed `allowed_actions` only."""
    iam = server.client("iam")
    user = f"reader-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    if allowed_actions:
        statement = {"Effect": "Allow", "Action": allowed_actions, "Resource": "*"}
        iam.put_user_policy(
            UserName=user,
            PolicyName="read",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
        )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }


@contextlib.contextmanager
def iam_enforcement(moto_server: MotoServer) -> Iterator[None]:
    """moto checks every request against IAM (process-wide: always switched back off)."""
    reset_auth(moto_server, 0)
    try:
        yield
    finally:
        reset_auth(moto_server, float("inf"))


def run_checked_by_iam(
    moto_server: MotoServer, arguments: list[str], keys: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`layercache ARGUMENTS` with `keys`, every request checked against IAM."""
    with iam_enforcement(moto_server):
        return run_command(arguments, moto_server.command_env(keys))


@pytest.mark.parametrize(
    ("command", "allowed_actions", "expected"),
    [
        (
            "report",
            ["cloudformation:Describe*"],
            (
                "layercache report: access denied (Query): User: "
                "arn:aws:iam::123456789012:user/reader-",
                " is not authorized to perform: dynamodb:Query",
            ),
        ),
        (
            "status",
            [],
            (
                "layercache status: access denied (DescribeStacks): User: ",
                " is not authorized to perform: cloudformation:DescribeStacks",
            ),
        ),
    ],
    ids=["to-the-table", "to-the-stack"],
)
def test_access_denied(
    command: str,
    allowed_actions: list[str],
    expected: tuple[str, ...],
    moto_server: MotoServer,
    seeded_stack: ServedStack,
) -> None:
    keys = user_keys(moto_server, allowed_actions)

    result = run_checked_by_iam(moto_server, [command, "--stack", seeded_stack.name], keys)

    assert_one_line_error(result, *expected)


def test_credentials_aws_does_not_know(moto_server: MotoServer, seeded_stack: ServedStack) -> None:
    unknown = {"AWS_ACCESS_KEY_ID": "AKIAUNKNOWNUNKNOWN00", "AWS_SECRET_ACCESS_KEY": "x" * 40}

    result = run_checked_by_iam(moto_server, ["report", "--stack", seeded_stack.name], unknown)

    assert_one_line_error(result, "layercache report: AWS rejected the credentials (")
