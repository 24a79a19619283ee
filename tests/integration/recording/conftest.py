"""Helpers of the build recorder's integration tests: samples, a trigger write, fakes."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from layercache.build_records import (
    ENV_BRANCH,
    ENV_COMMIT,
    ENV_MODE,
    ENV_REQUESTED_AT,
    ENV_TRIGGER,
    BuildMode,
    BuildsTable,
    BuildStart,
    Trigger,
    claim_pk,
    parse_timestamp,
)
from layercache.recording.events import BuildStateChangeEvent, parse_event_time
from layercache_dev.kit.functions import fresh_service

EVENTS = Path(__file__).resolve().parents[3] / "events" / "build-recorder"
REGION = "us-east-1"
IMAGE = "team/service"
RECORDER = "BuildRecorderFunction"


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return loaded


def environment_of(event: dict[str, Any]) -> dict[str, str]:
    variables = event["detail"]["additional-information"]["environment"]["environment-variables"]
    return {variable["name"]: variable["value"] for variable in variables}


def trigger_write(table_name: str, event: dict[str, Any], image: str = IMAGE) -> None:
    """Write what the build starter writes right after StartBuild, with its own code."""
    environment = environment_of(event)
    build_arn = event["detail"]["build-id"]
    commit = environment.get(ENV_COMMIT) or None
    branch = environment[ENV_BRANCH]
    table = BuildsTable(table_name, boto3.client("dynamodb", region_name=REGION))
    table.record_build_start(
        BuildStart(
            build_id=build_arn.split(":build/", 1)[1],
            build_arn=build_arn,
            build_number=int(event["detail"]["additional-information"]["build-number"]),
            image=image,
            branch=branch,
            commit=commit,
            trigger=Trigger(environment[ENV_TRIGGER]),
            mode=BuildMode(environment[ENV_MODE]),
            requested_at=parse_timestamp(environment[ENV_REQUESTED_AT]),
            source_version=commit or f"refs/heads/{branch}",
            claim_pk=claim_pk(image, branch, commit or "manual"),
            sequence=1,
        )
    )


def batch_get_build(
    event: dict[str, Any], exported: dict[str, str] | None = None
) -> dict[str, Any]:
    """A BatchGetBuilds `build` as CodeBuild returns it for the build of `event`."""
    info = event["detail"]["additional-information"]
    facts = BuildStateChangeEvent.model_validate(event).facts()
    phases = []
    for phase in info["phases"]:
        converted: dict[str, Any] = {"phaseType": phase["phase-type"]}
        if phase.get("phase-status"):
            converted["phaseStatus"] = phase["phase-status"]
        for source, target in (("start-time", "startTime"), ("end-time", "endTime")):
            moment = parse_event_time(phase.get(source))
            if moment is not None:
                converted[target] = moment
        if "duration-in-seconds" in phase:
            converted["durationInSeconds"] = int(phase["duration-in-seconds"])
        if phase.get("phase-context"):
            converted["contexts"] = [
                {"statusCode": text.split(":", 1)[0], "message": text.split(": ", 1)[-1]}
                for text in phase["phase-context"]
            ]
        phases.append(converted)
    build: dict[str, Any] = {
        "id": facts.build_id,
        "arn": facts.build_arn,
        "buildNumber": facts.build_number,
        "startTime": facts.started_at,
        "currentPhase": event["detail"]["current-phase"],
        "buildStatus": event["detail"]["build-status"],
        "projectName": facts.project,
        "phases": phases,
        "environment": {
            "type": "LINUX_CONTAINER",
            "image": "aws/codebuild/standard:7.0",
            "computeType": "BUILD_GENERAL1_MEDIUM",
            "privilegedMode": True,
            "environmentVariables": [
                {"name": name, "value": value, "type": "PLAINTEXT"}
                for name, value in facts.environment.items()
            ],
        },
        "buildComplete": facts.status.is_final,
    }
    if facts.ended_at is not None:
        build["endTime"] = facts.ended_at
    if facts.environment.get(ENV_COMMIT):
        build["resolvedSourceVersion"] = facts.environment[ENV_COMMIT]
    if exported is not None:
        build["exportedEnvironmentVariables"] = [
            {"name": name, "value": value} for name, value in exported.items()
        ]
    return build


EXPORTED = {
    "LAYERCACHE_IMAGE_DIGEST": "sha256:" + "5e" * 32,
    "LAYERCACHE_IMAGE_TAGS": "main,9fceb02d0ae5,latest",
    "LAYERCACHE_CACHE_HIT_RATIO": "0.9",
    "LAYERCACHE_CACHE_REF_HIT": "cache-main",
    "LAYERCACHE_BUILD_SECONDS": "88.5",
    "LAYERCACHE_PUSH_SECONDS": "4.2",
}


@dataclass
class StubbedCodeBuild:
    """A CodeBuild client whose BatchGetBuilds answers come from a queue (botocore Stubber)."""

    client: Any
    stubber: Stubber

    def will_return(self, build: dict[str, Any]) -> None:
        self.stubber.add_response("batch_get_builds", {"builds": [build]}, {"ids": [build["id"]]})


@pytest.fixture
def fresh_recorder() -> Iterator[None]:
    """BuildRecorderFunction's cached service forgotten before and after the test: the
    test's environment (`function_env`) is what its first invocation reads."""
    with fresh_service(RECORDER):
        yield


@pytest.fixture
def codebuild_stub() -> Iterator[StubbedCodeBuild]:
    client = boto3.client("codebuild", region_name=REGION)
    with Stubber(client) as stubber:
        yield StubbedCodeBuild(client, stubber)
        stubber.assert_no_pending_responses()


@dataclass
class FakeGitHub:
    """A local stand-in for api.github.com's commit status endpoint."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    # Answers to give, in order; after they run out, 201 Created.
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    # States GitHub took, in the order it took them: the last one is what GitHub shows.
    accepted: list[str] = field(default_factory=list)
    # Called with each request's body before it is answered (in the server's thread).
    on_request: Callable[[dict[str, Any]], None] | None = None

    def statuses(self) -> list[str]:
        return [request["body"]["state"] for request in self.requests]


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            with lock:
                fake.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                code, headers = fake.answers.pop(0) if fake.answers else (201, {})
            if fake.on_request is not None:
                fake.on_request(body)
            if code < 300:
                with lock:
                    fake.accepted.append(body.get("state"))
            payload = json.dumps({"message": "Created" if code < 300 else f"Error {code}"}).encode()
            self.send_response(code)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@dataclass
class Notifications:
    topic_arn: str
    queue_url: str

    def received(self) -> list[dict[str, Any]]:
        """SNS notifications delivered to the subscribed queue, parsed."""
        sqs = boto3.client("sqs", region_name=REGION)
        messages = sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        return [json.loads(message["Body"]) for message in messages]


@pytest.fixture
def notifications(stack: Any) -> Notifications:
    """The SNS topic (registered in stack.refs) with an SQS queue subscribed to it."""
    sns = boto3.client("sns", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    topic_arn = sns.create_topic(Name="layercache-builds")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="build-notifications")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    stack.refs["BuildNotificationsTopic"] = topic_arn
    return Notifications(topic_arn, queue_url)


@pytest.fixture
def github_token_secret(stack: Any) -> str:
    secrets = boto3.client("secretsmanager", region_name=REGION)
    arn: str = secrets.create_secret(Name="layercache-github-token", SecretString="ghp_fake0token")[
        "ARN"
    ]
    return arn


def fixed_clock(moment: datetime = datetime(2024, 5, 14, 9, 40, tzinfo=UTC)) -> Any:
    return lambda: moment
