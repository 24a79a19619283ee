"""The `layercache` command as users run it: the installed script, in a process of its own,
against a moto server (AWS_ENDPOINT_URL) holding a stack made from template.yaml's own
definitions (the table, the failure queues, the pruner's log group and their outputs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from layercache_dev.kit.embedded_aws import EmbeddedAws
from layercache_dev.kit.template import load_template

REGION = "us-east-1"
IMAGE = "team/service"
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("layercache")
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "cli-tests", "AWS_SECRET_ACCESS_KEY": "cli-tests"}
NOW = datetime.now(UTC)

# The slice of template.yaml the command reads: resources, and the outputs naming them.
STACK_RESOURCES = ("BuildsTable", "TriggerFailureQueue", "BuildRequestFailureQueue")
PRUNER_LOG_GROUP = "ImagePrunerLogGroup"
STACK_OUTPUTS = ("BuildsTableName", "TriggerFailureQueueUrl", "BuildRequestFailureQueueUrl")
# Outputs of resources outside the slice: the values they resolve to in a deployed stack.
PROJECT = "layercache-image-build"
RESOLVED_OUTPUTS = {
    "BuildProjectName": PROJECT,
    "ImageRepositoryUri": f"123456789012.dkr.ecr.{REGION}.amazonaws.com/{IMAGE}",
}


class MotoServer(EmbeddedAws):
    """The kit's embedded AWS (moto's server on a thread), and the shell users run in."""

    def command_env(
        self,
        extra: Mapping[str, str] | None = None,
        *,
        credentials: bool = True,
        region: bool = True,
    ) -> dict[str, str]:
        """The environment of a user's shell aimed at this server; no AWS_* of ours leaks in."""
        env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        env |= {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
            # No ~/.aws of the machine's: what the command sees is what the test sets.
            "AWS_CONFIG_FILE": str(ROOT / "tests" / "cli" / "no-such-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(ROOT / "tests" / "cli" / "no-such-credentials"),
        }
        if credentials:
            env |= FAKE_CREDENTIALS
        if region:
            env["AWS_DEFAULT_REGION"] = REGION
        return env | dict(extra or {})


@dataclass(frozen=True)
class ServedStack:
    name: str
    outputs: dict[str, str]
    resources: dict[str, str]

    @property
    def table_name(self) -> str:
        return self.outputs["BuildsTableName"]

    @property
    def log_group(self) -> str:
        return self.resources[PRUNER_LOG_GROUP]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def stack_template(
    resources: Sequence[str] = (*STACK_RESOURCES, PRUNER_LOG_GROUP),
    outputs: Sequence[str] = STACK_OUTPUTS,
    resolved_outputs: Mapping[str, str] = RESOLVED_OUTPUTS,
) -> dict[str, Any]:
    """template.yaml's own definitions of `resources` and `outputs` (plus resolved ones)."""
    template = load_template()
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {"LogRetentionDays": template["Parameters"]["LogRetentionDays"]},
        "Resources": {name: template["Resources"][name] for name in resources},
        "Outputs": {name: template["Outputs"][name] for name in outputs}
        | {
            name: {**template["Outputs"][name], "Value": value}
            for name, value in resolved_outputs.items()
        },
    }


def deploy(server: MotoServer, template: Mapping[str, Any]) -> ServedStack:
    """Create a uniquely named stack through moto's CloudFormation."""
    cloudformation = server.client("cloudformation")
    name = f"layercache-{uuid.uuid4().hex[:8]}"
    cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(template))
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack
    resources = cloudformation.describe_stack_resources(StackName=name)["StackResources"]
    return ServedStack(
        name=name,
        outputs={o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        resources={r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources},
    )


@pytest.fixture
def stack(moto_server: MotoServer) -> ServedStack:
    return deploy(moto_server, stack_template())


def run_command(
    arguments: Sequence[str], env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`layercache ARGUMENTS` through the console script `make venv` installs."""
    if not SCRIPT.exists():
        pytest.fail(f"no {SCRIPT}: install the package (make venv)", pytrace=False)
    return subprocess.run(
        [str(SCRIPT), *arguments],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


@pytest.fixture
def layercache(moto_server: MotoServer) -> Any:
    """`layercache(*arguments, **env)`: run the command against the server."""

    def run(
        *arguments: str, credentials: bool = True, region: bool = True, **env: str
    ) -> subprocess.CompletedProcess[str]:
        environment = moto_server.command_env(env, credentials=credentials, region=region)
        return run_command(arguments, environment)

    return run


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Exit status 2, nothing on stdout, one line on stderr holding every `expected`."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------ build records
def build_item(
    number: int,
    branch: str,
    status: str,
    hours_ago: float,
    duration: int | None = None,
    ratio: str | None = None,
    image: str = IMAGE,
) -> dict[str, Any]:
    """A build item as the starter and the recorder leave it (the attributes the report reads)."""
    requested = NOW - timedelta(hours=hours_ago)
    stamp = requested.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    build_id = f"layercache-image-build:{number:08d}-0000-4000-8000-000000000000"
    item: dict[str, Any] = {
        "pk": f"BUILD#{build_id}",
        "build_id": build_id,
        "build_number": number,
        "image": image,
        "branch": branch,
        "branch_key": f"{image}#{branch}",
        "commit": f"{number:02d}" + "c0ffee" * 6 + "00",
        "trigger": "github",
        "mode": "normal",
        "requested_at": stamp,
        "day": stamp[:10],
        "status": status,
    }
    if duration is not None:
        item["duration_seconds"] = duration
    if ratio is not None:
        item["cache_hit_ratio"] = Decimal(ratio)
    if status == "FAILED":
        item["failed_phase"] = "BUILD"
    return item


SEEDED = [
    # main: two cold builds, three warm ones, a failure and one still running
    build_item(1, "main", "SUCCEEDED", 50, 600, "0.1"),
    build_item(2, "main", "SUCCEEDED", 40, 640, "0.2"),
    build_item(3, "main", "SUCCEEDED", 30, 60, "0.9"),
    build_item(4, "main", "SUCCEEDED", 20, 90, "0.95"),
    build_item(5, "main", "FAILED", 10, 30),
    build_item(6, "main", "SUCCEEDED", 5, 75, "0.8"),
    build_item(7, "main", "IN_PROGRESS", 0.1),
    # a feature branch that started warm from main's cache
    build_item(8, "feature/login", "SUCCEEDED", 26, 100, "0.7"),
    build_item(9, "feature/login", "SUCCEEDED", 25, 120, "0.7"),
]


def seed(server: MotoServer, table_name: str, items: Sequence[Mapping[str, Any]]) -> None:
    table = server.resource("dynamodb").Table(table_name)
    for item in items:
        table.put_item(Item=dict(item))
    # Not a build: every command must skip it even though it has the indexes' keys.
    table.put_item(Item={**items[0], "pk": f"CLAIM#{IMAGE}#main#abc", "status": "?"})


@pytest.fixture
def seeded_stack(moto_server: MotoServer, stack: ServedStack) -> ServedStack:
    seed(moto_server, stack.table_name, SEEDED)
    return stack
