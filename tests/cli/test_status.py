"""`layercache status`: last builds, failures, failure queues, and the pruner's last run as the
real pruner logs it."""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from moto.ecr.models import ECRBackend

from layercache.pruning.ecr import EcrRegistry
from layercache.pruning.model import OCI_MANIFEST
from layercache.pruning.service import Pruner
from layercache.pruning.settings import PrunerSettings
from layercache_cli import stack as stack_names
from layercache_dev.kit.functions import function_module, invoke_function, log_handlers_writing_to
from layercache_dev.kit.moto_ecr import ecr_like_batch_delete_image
from layercache_dev.kit.template import load_template
from tests.integration.pruning.conftest import sample as pruner_sample

from .conftest import (
    IMAGE,
    NOW,
    STACK_RESOURCES,
    MotoServer,
    ServedStack,
    build_item,
    deploy,
    seed,
    stack_template,
)


def test_the_names_the_command_reads_are_the_templates() -> None:
    template = load_template()
    outputs = {
        stack_names.TABLE_OUTPUT,
        stack_names.IMAGE_REPOSITORY_OUTPUT,
        stack_names.BUILD_PROJECT_OUTPUT,
        *stack_names.FAILURE_QUEUE_OUTPUTS,
    }
    assert outputs <= set(template["Outputs"])
    assert {stack_names.TABLE_RESOURCE, stack_names.PRUNER_LOG_GROUP_RESOURCE} <= set(
        template["Resources"]
    )
    assert template["Outputs"]["BuildsTableName"]["Value"] == {"Ref": "BuildsTable"}
    pruner = template["Resources"]["ImagePrunerFunction"]["Properties"]
    assert pruner["LoggingConfig"]["LogGroup"] == {"Ref": "ImagePrunerLogGroup"}


def put_image(ecr: Any, name: str, tag: str | None) -> None:
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(f"{name}/config".encode()).hexdigest(),
                "size": 1500,
            },
            "layers": [],
        }
    )
    arguments: dict[str, Any] = {
        "repositoryName": IMAGE,
        "imageManifest": manifest,
        "imageManifestMediaType": OCI_MANIFEST,
        "imageDigest": "sha256:" + hashlib.sha256(manifest.encode()).hexdigest(),
    }
    ecr.put_image(**arguments, **({"imageTag": tag} if tag else {}))


def pruner_output(
    moto_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    new_images: list[str],
) -> list[str]:
    """What ImagePrunerFunction prints on a daily run over the server's ECR after untagged
    `new_images` were pushed (its clock a month ahead, so none is young; `latest` stays)."""
    ecr = moto_server.client("ecr")
    if IMAGE not in {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]}:
        ecr.create_repository(repositoryName=IMAGE)
        put_image(ecr, "kept", "latest")
    for name in new_images:
        put_image(ecr, name, None)
    settings = PrunerSettings(
        image_repository_name=IMAGE,
        prune_check_ecs_tasks=False,
        prune_check_lambda_functions=False,
    )
    pruner = Pruner(settings, EcrRegistry(ecr), clock=lambda: NOW + timedelta(days=30))
    monkeypatch.setattr(function_module("ImagePrunerFunction"), "default_service", lambda: pruner)
    capsys.readouterr()
    # Powertools' log handlers keep the stream they were created with (an earlier test's
    # stdout, in a full run): point them at a buffer while the handler runs.
    logs = io.StringIO()
    with log_handlers_writing_to(logs):
        result = invoke_function("ImagePrunerFunction", pruner_sample("daily-schedule.json"))
    assert result["status"] == "pruned"
    return logs.getvalue().splitlines() + capsys.readouterr().out.splitlines()


@pytest.fixture
def ecr_reports_untagged_deletes(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's BatchDeleteImage answered as ECR's: deleted untagged images are reported."""
    monkeypatch.setattr(
        ECRBackend, "batch_delete_image", ecr_like_batch_delete_image(ECRBackend.batch_delete_image)
    )


def write_lambda_log(
    moto_server: MotoServer, log_group: str, lines: list[str], hours_ago: float
) -> None:
    """The lines as Lambda writes an invocation into the function's log group."""
    logs = moto_server.client("logs")
    stream = f"{NOW:%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
    logs.create_log_stream(logGroupName=log_group, logStreamName=stream)
    request = str(uuid.uuid4())
    at = int((NOW - timedelta(hours=hours_ago)).timestamp() * 1000)
    messages = [
        f"START RequestId: {request} Version: $LATEST",
        *lines,
        f"END RequestId: {request}",
        f"REPORT RequestId: {request}\tDuration: 812.20 ms\tBilled Duration: 813 ms",
    ]
    logs.put_log_events(
        logGroupName=log_group,
        logStreamName=stream,
        logEvents=[{"timestamp": at + index, "message": m} for index, m in enumerate(messages)],
    )


def section(out: str, title: str) -> str:
    return out.split(title, 1)[1].split("\n\n", 1)[0]


@pytest.mark.usefixtures("ecr_reports_untagged_deletes")
def test_a_healthy_stack_and_the_pruners_last_run(
    moto_server: MotoServer,
    seeded_stack: ServedStack,
    layercache: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    older = pruner_output(moto_server, monkeypatch, capsys, ["old-1", "old-2"])
    newer = pruner_output(moto_server, monkeypatch, capsys, ["old-3"])
    assert any('"message":"Pruned repository"' in line for line in newer), newer
    write_lambda_log(moto_server, seeded_stack.log_group, older, hours_ago=30)
    write_lambda_log(moto_server, seeded_stack.log_group, newer, hours_ago=3)

    result = layercache("status", "--stack", seeded_stack.name)

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith(f"Stack {seeded_stack.name} (us-east-1), table {seeded_stack.table_name}")
    latest = section(out, "Last build per branch (branches built in the last 14 days)")
    assert re.search(r"feature/login\s+09c0ffee .* SUCCEEDED .*:00000009-", latest)
    assert re.search(r"main\s+07c0ffee .* IN_PROGRESS .*:00000007-", latest)
    failures = section(out, "Builds that did not succeed in the last 24 hours: 1")
    assert re.search(r"main\s+05c0ffee .* FAILED \(BUILD\)", failures)
    queues = section(out, "Failure queues")
    assert re.search(r"TriggerFailureQueueUrl\s+\S+TriggerFailureQueue\S+\s+0$", queues, re.M)
    assert re.search(r"BuildRequestFailureQueueUrl\s+\S+-failed-\S+\.fifo\s+0$", queues, re.M)
    ran_at = (NOW - timedelta(hours=3)).strftime("%Y-%m-%d %H:%M")
    pruner = section(out, "Pruner")
    assert f"Last run {ran_at} UTC (3 h ago) on 1 repository: deleted 1 image, freed " in pruner
    assert re.search(rf"\n  {IMAGE}: kept 1, deleted 1 \(\d+(\.\d)? k?B\)$", pruner)
    assert out.rstrip().endswith("Healthy.")


def test_failures_and_waiting_messages_need_attention(
    moto_server: MotoServer, stack: ServedStack, layercache: Any
) -> None:
    seed(
        moto_server,
        stack.table_name,
        [
            build_item(1, "main", "SUCCEEDED", 30, 100, "0.9"),
            build_item(2, "main", "FAILED", 2, 40),
            build_item(3, "feature/x", "TIMED_OUT", 50, 3600),
        ],
    )
    sqs = moto_server.client("sqs")
    for body in ("one", "two"):
        sqs.send_message(QueueUrl=stack.outputs["TriggerFailureQueueUrl"], MessageBody=body)
    sqs.send_message(
        QueueUrl=stack.outputs["BuildRequestFailureQueueUrl"],
        MessageBody="request",
        MessageGroupId=f"{IMAGE}#main",
        MessageDeduplicationId="request-1",
    )

    result = layercache("status", "--stack", stack.name)

    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    # feature/x failed more than a day ago: still its last build, not in the day's failures.
    assert "Builds that did not succeed in the last 24 hours: 1\n" in out
    queues = section(out, "Failure queues")
    assert re.search(r"TriggerFailureQueueUrl\s+\S+\s+2$", queues, re.M)
    assert re.search(r"BuildRequestFailureQueueUrl\s+\S+\s+1$", queues, re.M)
    assert f"no run in the last 7 days (log group {stack.log_group})" in section(out, "Pruner")
    attention = out.rstrip().splitlines()[-1]
    assert attention.startswith("Needs attention: ")
    assert f"{IMAGE} feature/x: last build TIMED_OUT" in attention
    assert f"{IMAGE} main: last build FAILED (BUILD)" in attention
    assert "2 message(s) waiting in " in attention
    assert "1 message(s) waiting in " in attention


def test_a_stack_without_the_pruners_log_group(moto_server: MotoServer, layercache: Any) -> None:
    stack = deploy(moto_server, stack_template(resources=STACK_RESOURCES))

    result = layercache("status", "--stack", stack.name)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "No builds." in result.stdout
    assert section(result.stdout, "Pruner").strip() == (
        "not recorded: the stack has no ImagePrunerLogGroup"
    )
