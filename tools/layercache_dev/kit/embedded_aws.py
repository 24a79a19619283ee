"""An embedded AWS: moto's server in this process, with the stack's resources in it.

The demo plays its story against it, and `layercache-dev demo --serve` keeps it up for
`sam local invoke` (events/env.json points functions at it). The resources are made
from template.yaml's own definitions where they matter (the table's keys and indexes,
the build project's environment) under the names events/env.json gives them, so neither
can drift from the template.

    aws = EmbeddedAws()                      # 127.0.0.1, a free port
    aws.start()
    stack = aws.deploy(parameters={"WatchedBranches": ["main"]}, build_repository_uri=uri)
    stack.environment("GitHubWebhookFunction")   # the function's env, AWS_ENDPOINT_URL set
    aws.client("dynamodb").scan(TableName=stack.table_name)
    aws.stop()
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer

from layercache_dev.kit.github_events import LOCAL_WEBHOOK_SECRET
from layercache_dev.kit.lifecycle import Lifecycle
from layercache_dev.kit.moto_codecommit import install as install_codecommit_reads
from layercache_dev.kit.moto_codecommit import put_commits, sample_commits
from layercache_dev.kit.paths import BUILDSPEC, EVENTS
from layercache_dev.kit.template import (
    create_table_arguments,
    function_environment,
    parameter_defaults,
    resolve,
    resource,
)

REGION = "us-east-1"
ACCOUNT = DEFAULT_ACCOUNT_ID
STACK_NAME = "layercache"
ENV_JSON = EVENTS / "env.json"
# Fake credentials: whatever talks to the embedded AWS must never reach a real account.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "embedded",
    "AWS_SECRET_ACCESS_KEY": "embedded",
    "AWS_SESSION_TOKEN": "embedded",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True)
class StackNames:
    """The names events/env.json gives the resources (read from that file)."""

    table: str
    project: str
    repository: str
    secret: str
    topic: str = "layercache-build-notifications"
    queue: str = "layercache-build-requests.fifo"
    # CodeCommitTriggerFunction's repository: created (with the samples' commits) if set.
    source_repository: str | None = None

    @classmethod
    def from_env_json(cls, path: Path = ENV_JSON) -> StackNames:
        env = json.loads(path.read_text())
        return cls(
            table=env["Parameters"]["BUILDS_TABLE_NAME"],
            project=env["Parameters"]["BUILD_PROJECT_NAME"],
            repository=env["Parameters"]["IMAGE_REPOSITORY_NAME"],
            secret=env["GitHubWebhookFunction"]["WEBHOOK_SECRET_ARN"],
            topic=env["BuildRecorderFunction"]["BUILD_NOTIFICATIONS_TOPIC_ARN"].rsplit(":", 1)[1],
            queue=env["Parameters"]["BUILD_REQUEST_QUEUE_URL"].rsplit("/", 1)[1],
            source_repository=env["CodeCommitTriggerFunction"]["SOURCE_REPOSITORY"],
        )


@dataclass
class Stack:
    """What `deploy` created: names, and the values the template's references resolve to."""

    names: StackNames
    endpoint: str
    refs: dict[str, Any] = field(default_factory=dict)

    @property
    def table_name(self) -> str:
        return self.names.table

    @property
    def project_name(self) -> str:
        return self.names.project

    @property
    def repository_name(self) -> str:
        return self.names.repository

    @property
    def queue_url(self) -> str:
        return str(self.refs["BuildRequestQueue"])

    @property
    def failure_queue_url(self) -> str:
        return str(self.refs["BuildRequestFailureQueue"])

    def environment(self, logical_id: str, **overrides: str) -> dict[str, str]:
        """The environment template.yaml gives `logical_id`, resolved, aimed at this AWS."""
        env = {
            name: str(resolve(value, self.refs))
            for name, value in function_environment(logical_id).items()
        }
        env["AWS_ENDPOINT_URL"] = self.endpoint
        env.update(overrides)
        return env


class EmbeddedAws(Lifecycle):
    """moto's server on a thread of this process (its backends are this process's own);
    `with EmbeddedAws() as aws:` starts and stops it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        self._started = False
        self.port = port

    def start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log on our stdout
        install_codecommit_reads()  # GetCommit, GetDifferences: moto_codecommit
        self._server.start()
        self._started = True
        self.port = self._server.get_host_and_port()[1]

    def stop(self) -> None:
        if self._started:
            self._server.stop()
            self._started = False

    @property
    def endpoint(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

    def client(self, service: str) -> Any:
        """A boto3 client of this AWS (fake credentials, whatever the environment holds)."""
        return boto3.client(service, **self._connection())  # type: ignore[call-overload]

    def resource(self, service: str) -> Any:
        """A boto3 resource of this AWS, as `client`."""
        return boto3.resource(service, **self._connection())  # type: ignore[call-overload]

    def _connection(self) -> dict[str, str]:
        return {
            "endpoint_url": self.endpoint,
            "region_name": REGION,
            "aws_access_key_id": FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "aws_session_token": FAKE_CREDENTIALS["AWS_SESSION_TOKEN"],
        }

    def deploy(
        self,
        parameters: Mapping[str, Any],
        build_repository_uri: str,
        names: StackNames | None = None,
    ) -> Stack:
        """The stack's resources in this embedded AWS (see `deploy_stack`)."""
        return deploy_stack(self.client, self.endpoint, parameters, names, build_repository_uri)


def deploy_stack(
    client: Callable[[str], Any],
    endpoint: str,
    parameters: Mapping[str, Any],
    names: StackNames | None = None,
    build_repository_uri: str | None = None,
) -> Stack:
    """Create the table, image repository, build project, webhook secret and topic, and
    the CodeCommit repository `names.source_repository` if set.

    `client(service)` makes a boto3 client of the AWS to deploy into: the embedded
    server, or moto's in-process mock (the tests, with `endpoint` empty). `parameters`
    override the template's parameter defaults. The project's image repository URI is
    `build_repository_uri` when builds push elsewhere (the demo's local registry), else
    the created repository's.
    """
    names = names or StackNames.from_env_json()
    refs: dict[str, Any] = {
        **parameter_defaults(),
        **parameters,
        "AWS::StackName": STACK_NAME,
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
    }
    client("dynamodb").create_table(**create_table_arguments("BuildsTable", names.table))
    # MUTABLE, not the template's MUTABLE_WITH_EXCLUSION: moto reads the wildcard filter
    # as a regular expression (`v*.*.*` then covers every tag) and fails on untagged pushes.
    repository = client("ecr").create_repository(
        repositoryName=names.repository,
        imageTagMutability="MUTABLE",
        imageScanningConfiguration={"scanOnPush": True},
    )["repository"]
    cache_repository = client("ecr").create_repository(
        repositoryName=f"{names.repository}-cache", imageTagMutability="MUTABLE"
    )["repository"]
    secret = client("secretsmanager").create_secret(
        Name=names.secret, SecretString=LOCAL_WEBHOOK_SECRET
    )
    topic = client("sns").create_topic(Name=names.topic)["TopicArn"]
    queues = _create_request_queues(client, names.queue)
    if names.source_repository:
        _create_source_repository(client, names.source_repository)
    refs.update(
        {
            "ImageRepositoryName": names.repository,
            "ImageRepository": names.repository,
            "ImageRepository.RepositoryUri": build_repository_uri or repository["repositoryUri"],
            "ImageRepository.Arn": repository["repositoryArn"],
            "CacheRepository": cache_repository["repositoryName"],
            "CacheRepository.RepositoryUri": (
                f"{build_repository_uri}-cache"
                if build_repository_uri
                else cache_repository["repositoryUri"]
            ),
            "CacheRepository.Arn": cache_repository["repositoryArn"],
            "BuildsTable": names.table,
            "ImageBuildProject": names.project,
            "WebhookSecret": secret["ARN"],
            "BuildNotificationsTopic": topic,
            **queues,
            "BuildDriverBundle": "(local: buildspecs/build_driver.py)",
            # The rig runs builds on its own BuildKit, so no BuildKit image is mirrored.
            "BuildKitMirrorRepository.RepositoryUri": "",
        }
    )
    _create_project(client, names.project, refs)
    return Stack(names=names, endpoint=endpoint, refs=refs)


def _create_source_repository(client: Callable[[str], Any], name: str) -> None:
    """The CodeCommit repository, holding every commit events/codecommit-trigger names
    (each changes the Dockerfile), so those samples run against this AWS."""
    codecommit = client("codecommit")
    # A second stack of the same names in this process finds it there.
    with contextlib.suppress(codecommit.exceptions.RepositoryNameExistsException):
        codecommit.create_repository(repositoryName=name)
    put_commits(name, sample_commits(EVENTS), account=ACCOUNT, region=REGION)


def _create_request_queues(client: Callable[[str], Any], name: str) -> dict[str, str]:
    """BuildRequestQueue and its failure queue, with the template's FIFO and redrive settings."""
    sqs = client("sqs")
    failure_props = resource("BuildRequestFailureQueue")["Properties"]
    failure_url = sqs.create_queue(
        QueueName=name.removesuffix(".fifo") + "-failed.fifo",
        Attributes={"FifoQueue": "true", **_queue_attributes(failure_props)},
    )["QueueUrl"]
    failure_arn = sqs.get_queue_attributes(QueueUrl=failure_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    props = resource("BuildRequestQueue")["Properties"]
    redrive = props["RedrivePolicy"]
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "FifoQueue": "true",
            **_queue_attributes(props),
            "RedrivePolicy": json.dumps(
                {
                    "deadLetterTargetArn": failure_arn,
                    "maxReceiveCount": str(redrive["maxReceiveCount"]),
                }
            ),
        },
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return {
        "BuildRequestQueue": url,
        "BuildRequestQueue.Arn": arn,
        "BuildRequestFailureQueue": failure_url,
        "BuildRequestFailureQueue.Arn": failure_arn,
    }


def _queue_attributes(props: Mapping[str, Any]) -> dict[str, str]:
    names = {
        "VisibilityTimeout": "VisibilityTimeout",
        "MessageRetentionPeriod": "MessageRetentionPeriod",
    }
    return {attribute: str(props[key]) for key, attribute in names.items() if key in props}


def _create_project(client: Callable[[str], Any], name: str, refs: Mapping[str, Any]) -> None:
    """The ImageBuildProject, from the template's Environment and Source."""
    props = resource("ImageBuildProject")["Properties"]
    environment = props["Environment"]
    variables = [
        {"name": v["Name"], "value": str(v["Value"]), "type": v.get("Type", "PLAINTEXT")}
        for v in resolve(environment["EnvironmentVariables"], dict(refs))
    ]
    client("codebuild").create_project(
        name=name,
        source={
            "type": str(resolve(props["Source"]["Type"], dict(refs))),
            "location": f"https://github.com/{refs['SourceRepository']}.git",
            "gitCloneDepth": 1,
            "buildspec": BUILDSPEC.read_text(),
        },
        artifacts={"type": "NO_ARTIFACTS"},
        environment={
            "type": str(resolve(environment["Type"], dict(refs))),
            "image": str(resolve(environment["Image"], dict(refs))),
            "computeType": str(resolve(environment["ComputeType"], dict(refs))),
            "privilegedMode": bool(environment["PrivilegedMode"]),
            "environmentVariables": variables,
        },
        serviceRole=f"arn:aws:iam::{ACCOUNT}:role/{STACK_NAME}-BuildProjectRole",
        timeoutInMinutes=int(resolve(props["TimeoutInMinutes"], dict(refs))),
    )
