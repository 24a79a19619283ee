"""events/ through SAM's own local runtime: `sam local invoke` against an embedded AWS.

`sam build` once, then `sam local invoke <LogicalId> -e events/<function>/<sample>.json
--env-vars <env.json>` on the local stand-in for the Lambda Python 3.13 image
(.ci/lambda-base-image), each answer checked against what its sample is for. An
invocation takes 8-15 s here, so by default one sample per function runs (three for
the webhook, whose status codes are its contract); LAYERCACHE_LOCAL_INVOKE=all (what
`make local-invoke` sets) runs every sample. The in-process tests cover every sample's
decision too; this tier proves the packaging, handler paths and template environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from layercache.build_records import Trigger
from layercache.build_requests import BuildRequestMessage
from layercache_dev.kit.embedded_aws import EmbeddedAws, Stack, StackNames
from tests.conftest import require

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
BASE_IMAGE = os.environ.get("LAMBDA_BASE_IMAGE", "layercache/lambda-python:3.13")
SAM = [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "scripts" / "sam_host_network.py")]
FUNCTIONS = {
    "github-webhook": "GitHubWebhookFunction",
    "codecommit-trigger": "CodeCommitTriggerFunction",
    "nightly-rebuild": "NightlyRebuildFunction",
    "build-starter": "BuildStarterFunction",
    "build-recorder": "BuildRecorderFunction",
    "image-pruner": "ImagePrunerFunction",
}
# What runs by default: one sample per function (the webhook's three status codes).
DEFAULT_SAMPLES = {
    "github-webhook/bad-signature",
    "github-webhook/ping",
    "github-webhook/push-main",
    # Reads GetCommit and GetDifferences from the embedded AWS: the trigger's whole path.
    "codecommit-trigger/reference-updated",
    "nightly-rebuild/schedule",
    "build-starter/push-main",
    "build-recorder/failed",
    "image-pruner/daily-schedule",
}

# The CodeCommit trigger runs with a path filter here, so a push to main reads the pushed
# commit (GetCommit) and its changed paths (GetDifferences) from the embedded AWS, which
# holds the samples' commits (embedded_aws.deploy_stack, moto_codecommit): each changes
# the Dockerfile.
CODECOMMIT_PATH_FILTERS = "Dockerfile"


@dataclass
class LocalLambda:
    """The built stack, the embedded AWS its functions talk to, and `sam local invoke`."""

    aws: EmbeddedAws
    stack: Stack
    env_file: Path
    template: Path

    def invoke(self, sample: str) -> dict[str, Any]:
        folder = sample.split("/")[0]
        command = [
            *SAM,
            "local",
            "invoke",
            FUNCTIONS[folder],
            "--template-file",
            str(self.template),
            "--event",
            str(EVENTS / f"{sample}.json"),
            "--env-vars",
            str(self.env_file),
            "--invoke-image",
            BASE_IMAGE,
            "--skip-pull-image",
            "--docker-network",
            "host",
            "--add-host",
            "host.docker.internal:127.0.0.1",
        ]
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, f"sam local invoke {sample} failed:\n{done.stderr[-3000:]}"
        answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        assert "errorType" not in answer, f"{sample} failed: {answer}\n{done.stderr[-3000:]}"
        return answer

    def queued_requests(self) -> list[BuildRequestMessage]:
        sqs = self.aws.client("sqs")
        messages = sqs.receive_message(
            QueueUrl=self.stack.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0
        ).get("Messages", [])
        return [BuildRequestMessage.from_message(message["Body"]) for message in messages]

    def builds(self) -> list[dict[str, Any]]:
        codebuild = self.aws.client("codebuild")
        ids = codebuild.list_builds_for_project(projectName=self.stack.project_name)["ids"]
        return list(codebuild.batch_get_builds(ids=ids)["builds"]) if ids else []

    def records(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.aws.client("dynamodb").scan(
            TableName=self.stack.table_name
        )["Items"]
        return items


def missing_for_local_invoke() -> list[str]:
    missing = []
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run([docker, "info"], capture_output=True, check=False).returncode
    ):
        return ["a running Docker engine"]
    if subprocess.run(
        [docker, "image", "inspect", BASE_IMAGE], capture_output=True, check=False
    ).returncode:
        missing.append(f"the image {BASE_IMAGE} (.ci/lambda-base-image)")
    if subprocess.run(
        [ROOT / "scripts" / "find-python", "3.13"], capture_output=True, check=False
    ).returncode:
        missing.append("python3.13 for sam build")
    return missing


@pytest.fixture(scope="module")
def local_lambda(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLambda]:
    require("sam local invoke", missing_for_local_invoke())
    runtime_python = subprocess.run(
        [ROOT / "scripts" / "find-python", "3.13"], capture_output=True, text=True, check=True
    ).stdout.strip()
    # The same command as `make build`: a cached build, so after it this costs seconds.
    subprocess.run(
        [str(ROOT / ".venv" / "bin" / "sam"), "build", "--template-file", "template.yaml"],
        cwd=ROOT,
        env={**os.environ, "PATH": f"{Path(runtime_python).parent}:{os.environ['PATH']}"},
        check=True,
        capture_output=True,
    )
    with EmbeddedAws(host="127.0.0.1") as aws:
        stack = aws.deploy(
            {"SourceRepository": "octo-org/service", "WatchedBranches": ["main"]},
            build_repository_uri="",  # the project pushes to the created ECR repository
            names=StackNames.from_env_json(),
        )
        # events/env.json aims at port 5000; this AWS is on a free port.
        env = json.loads(
            (EVENTS / "env.json")
            .read_text()
            .replace("host.docker.internal:5000", f"host.docker.internal:{aws.port}")
        )
        env["CodeCommitTriggerFunction"]["PATH_FILTERS"] = CODECOMMIT_PATH_FILTERS
        env_file = tmp_path_factory.mktemp("local-invoke") / "env.json"
        env_file.write_text(json.dumps(env, indent=2))
        yield LocalLambda(aws, stack, env_file, ROOT / ".aws-sam" / "build" / "template.yaml")


def _body(answer: dict[str, Any]) -> str:
    return str(answer.get("body", ""))


def _push_commit(sample: str) -> str:
    event = json.loads((EVENTS / f"{sample}.json").read_text())
    commit: str = json.loads(event["body"])["after"]
    return commit


def check_webhook_rejected(answer: dict[str, Any], _: LocalLambda) -> None:
    assert answer["statusCode"] == 401


def check_webhook_pong(answer: dict[str, Any], _: LocalLambda) -> None:
    assert answer["statusCode"] == 200
    assert "pong" in _body(answer)


def check_webhook_push_accepted(answer: dict[str, Any], local: LocalLambda) -> None:
    assert answer["statusCode"] == 202
    assert "build requested" in _body(answer)
    commits = {(r.branch, r.commit) for r in local.queued_requests()}
    assert ("main", _push_commit("github-webhook/push-main")) in commits


def check_webhook_no_build(answer: dict[str, Any], _: LocalLambda) -> None:
    assert answer["statusCode"] == 202
    assert "build requested" not in _body(answer)


def check_codecommit_requested(
    sample: str, reason: str
) -> Callable[[dict[str, Any], LocalLambda], None]:
    """A build of `sample`'s commit on main requested for `reason`, and queued."""
    detail = json.loads((EVENTS / f"{sample}.json").read_text())["detail"]

    def check(answer: dict[str, Any], local: LocalLambda) -> None:
        assert answer["build"] is True, answer
        assert answer["reason"] == reason
        assert answer["request_id"]
        queued = {r.commit: r for r in local.queued_requests() if r.trigger is Trigger.CODECOMMIT}
        request = queued[detail["commitId"]]
        assert (request.branch, request.before, request.build) == (
            "main",
            detail.get("oldCommitId"),
            True,
        )

    return check


def check_no_build_requested(answer: dict[str, Any], _: LocalLambda) -> None:
    assert answer["build"] is False
    assert answer["request_id"] is None


def check_nightly_requested(answer: dict[str, Any], local: LocalLambda) -> None:
    assert [(b["branch"], b["requested"]) for b in answer["builds"]] == [("main", True)]
    assert any(r.branch == "main" and r.commit is None for r in local.queued_requests())


def check_build_started(answer: dict[str, Any], local: LocalLambda) -> None:
    event = json.loads((EVENTS / "build-starter/push-main.json").read_text())
    request = BuildRequestMessage.from_message(event["Records"][0]["body"])
    assert answer == {"batchItemFailures": []}
    assert request.commit in {build["sourceVersion"] for build in local.builds()}


def check_batch_done(answer: dict[str, Any], _: LocalLambda) -> None:
    assert answer == {"batchItemFailures": []}


def check_recorded(status: str, notified: bool) -> Callable[[dict[str, Any], LocalLambda], None]:
    def check(answer: dict[str, Any], local: LocalLambda) -> None:
        assert answer["recorded"] is True
        assert answer["status"] == status
        assert answer["notified"] is notified
        assert any(answer["build_id"] in json.dumps(item) for item in local.records())

    return check


def check_pruned(answer: dict[str, Any], _: LocalLambda) -> None:
    assert answer["status"] == "pruned"
    summaries = {summary["repository"]: summary for summary in answer["repositories"]}
    assert {"layercache/demo", "layercache/demo-cache"} <= summaries.keys()
    assert all(summary["dry_run"] for summary in summaries.values())


def check_prune_ignored(answer: dict[str, Any], _: LocalLambda) -> None:
    assert answer["status"] == "ignored"


CHECKS: dict[str, Callable[[dict[str, Any], LocalLambda], None]] = {
    "github-webhook/bad-signature": check_webhook_rejected,
    "github-webhook/ping": check_webhook_pong,
    "github-webhook/push-main": check_webhook_push_accepted,
    "github-webhook/push-main-form": check_webhook_push_accepted,
    "github-webhook/push-other-branch": check_webhook_no_build,
    "github-webhook/push-skip-ci": check_webhook_no_build,
    "github-webhook/push-tag": check_webhook_no_build,
    "github-webhook/delete-branch": check_webhook_no_build,
    # GetDifferences says the push changed the Dockerfile, under the path filter.
    "codecommit-trigger/reference-updated": check_codecommit_requested(
        "codecommit-trigger/reference-updated", "Dockerfile changed"
    ),
    # A new branch has no old commit to compare with: built to be safe.
    "codecommit-trigger/reference-created": check_codecommit_requested(
        "codecommit-trigger/reference-created", "changed files unknown; building to be safe"
    ),
    "codecommit-trigger/reference-updated-other-branch": check_no_build_requested,
    "codecommit-trigger/tag-created": check_no_build_requested,
    "nightly-rebuild/schedule": check_nightly_requested,
    "nightly-rebuild/manual-clean": check_nightly_requested,
    "build-starter/push-main": check_build_started,
    "build-starter/nightly-main": check_batch_done,
    "build-starter/not-a-request": check_batch_done,
    "build-recorder/failed": check_recorded("FAILED", notified=True),
    "build-recorder/stopped": check_recorded("STOPPED", notified=True),
    # One build's two events, in the order CodeBuild sends them: the recorder never takes
    # a finished build back to IN_PROGRESS.
    "build-recorder/in-progress": check_recorded("IN_PROGRESS", notified=False),
    "build-recorder/succeeded": check_recorded("SUCCEEDED", notified=False),
    "image-pruner/daily-schedule": check_pruned,
    "image-pruner/build-succeeded": check_pruned,
    "image-pruner/build-other-project": check_prune_ignored,
}
ALL = os.environ.get("LAYERCACHE_LOCAL_INVOKE") == "all"


def test_every_sample_has_a_check() -> None:
    samples = {f"{path.parent.name}/{path.stem}" for path in EVENTS.glob("*/*.json")}
    assert samples == CHECKS.keys()
    assert {sample.split("/")[0] for sample in samples} == FUNCTIONS.keys()


@pytest.mark.parametrize(
    "sample", [s for s in CHECKS if ALL or s in DEFAULT_SAMPLES], ids=lambda s: str(s)
)
def test_sample_through_sam_local_invoke(local_lambda: LocalLambda, sample: str) -> None:
    CHECKS[sample](local_lambda.invoke(sample), local_lambda)
