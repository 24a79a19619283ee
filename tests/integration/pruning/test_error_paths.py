"""Error paths: throttling under the SDK's retries, and against botocore Stubbers per-image
retries, unreadable indexes, ECS and Lambda in use."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.compat import HTTPHeaders
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from layercache import aws
from layercache.pruning.ecr import ACCEPTED_MEDIA_TYPES, EcrRegistry, SnapshotError
from layercache.pruning.in_use import (
    EcsTasks,
    LambdaFunctions,
    UnreadableFunctionDigest,
    collect,
)
from layercache.pruning.model import Image
from layercache.pruning.plan import Policy, make_plan
from layercache.pruning.service import Pruner
from layercache.pruning.settings import PrunerSettings

NOW = datetime(2025, 6, 1, tzinfo=UTC)
REPOSITORY = "team/service"
ECR_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/service"


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


@pytest.fixture
def ecr() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("ecr", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def old_plan(count: int) -> Any:
    images = [Image(digest(n), NOW - timedelta(days=30)) for n in range(count)]
    return make_plan(images, Policy(), NOW)


def tags_unchanged(stubber: Stubber, *digests: str) -> None:
    """The re-read before a delete batch: the images still carry no tag."""
    stubber.add_response(
        "describe_images",
        {"imageDetails": [{"imageDigest": d, "imagePushedAt": NOW} for d in digests]},
        {"repositoryName": REPOSITORY, "imageIds": [{"imageDigest": d} for d in digests]},
    )


class ThrottlingEcr:
    """ECR at the HTTP layer, under the SDK's retries (a Stubber answers above them).

    Answers each operation's requests from `answers` in turn, after refusing the first
    `throttled` requests with ThrottlingException; `requests` counts what was sent.
    """

    def __init__(self, client: Any, throttled: int, answers: dict[str, list[Any]]) -> None:
        self.throttled = throttled
        self.answers = answers
        self.requests: list[str] = []
        client.meta.events.register_first("before-send.ecr.*", self.answer)

    def answer(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        target = request.headers["X-Amz-Target"]
        operation = (target.decode() if isinstance(target, bytes) else target).rpartition(".")[2]
        self.requests.append(operation)
        if len(self.requests) <= self.throttled:
            return _response(400, {"__type": "ThrottlingException", "message": "Rate exceeded"})
        return _response(200, self.answers[operation].pop(0))


def _response(status: int, body: Any) -> AWSResponse:
    return AWSResponse("https://ecr", status, HTTPHeaders(), _Raw(json.dumps(body).encode()))


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The SDK's backoff, recorded instead of waited for."""
    waited: list[float] = []
    monkeypatch.setattr("botocore.endpoint.time.sleep", waited.append)
    return waited


def test_throttling_is_retried_by_the_client_alone_then_succeeds(sleeps: list[float]) -> None:
    registry = EcrRegistry()  # the deployed function's client and budget
    ecr = ThrottlingEcr(
        registry._client,
        throttled=3,
        answers={
            "DescribeImages": [{"imageDetails": [{"imageDigest": digest(0), "imagePushedAt": 0}]}],
            "BatchDeleteImage": [{"imageIds": [{"imageDigest": digest(0)}], "failures": []}],
        },
    )

    outcome = registry.delete(REPOSITORY, old_plan(1))

    assert [image.digest for image in outcome.deleted] == [digest(0)]
    # The tag re-read was refused three times and retried by the SDK: one layer of retries,
    # each request counted, each retry after one backoff.
    assert ecr.requests == ["DescribeImages"] * 4 + ["BatchDeleteImage"]
    assert registry.calls == {"describe_images": 4, "batch_delete_image": 1}
    assert len(sleeps) == 3
    assert all(0 <= delay <= 20 for delay in sleeps)


def test_throttling_that_does_not_end_is_raised_after_the_budget(sleeps: list[float]) -> None:
    registry = EcrRegistry()
    ecr = ThrottlingEcr(registry._client, throttled=100, answers={})

    with pytest.raises(ClientError, match="ThrottlingException"):
        registry.snapshot(REPOSITORY)

    # Exactly the client's attempts: no second layer multiplies them.
    assert ecr.requests == ["DescribeImages"] * aws.LONG_RUNNING.attempts
    assert registry.calls["describe_images"] == aws.LONG_RUNNING.attempts
    assert len(sleeps) == aws.LONG_RUNNING.attempts - 1


def test_a_throttled_repository_is_reported_failed_and_the_others_pruned(
    sleeps: list[float],
) -> None:
    """Through the pruner: the error surfaces in the report (the handler then fails the
    invocation, so Lambda retries it), and other repositories are still pruned."""
    registry = EcrRegistry()
    ThrottlingEcr(
        registry._client,
        throttled=aws.LONG_RUNNING.attempts,
        answers={"DescribeImages": [{"imageDetails": []}]},
    )
    settings = PrunerSettings.from_env(
        {"IMAGE_REPOSITORY_NAME": REPOSITORY, "PRUNE_REPOSITORIES": f"{REPOSITORY},team/other"}
    )
    reports = Pruner(settings, registry, []).run()

    assert [(r.repository, r.error is not None) for r in reports] == [
        (REPOSITORY, True),
        ("team/other", False),
    ]
    assert "ThrottlingException" in (reports[0].error or "")
    assert reports[0].aws_calls == aws.LONG_RUNNING.attempts


def test_per_image_failures_are_retried_once_then_reported(ecr: tuple[Any, Stubber]) -> None:
    client, stubber = ecr
    ids = [{"imageDigest": digest(n)} for n in range(3)]
    kms = {"failureCode": "KmsError", "failureReason": "KMS throttled the decrypt"}
    tags_unchanged(stubber, *(i["imageDigest"] for i in ids))
    stubber.add_response(
        "batch_delete_image",
        {
            "imageIds": [ids[0]],
            "failures": [{"imageId": ids[1], **kms}, {"imageId": ids[2], **kms}],
        },
        {"repositoryName": REPOSITORY, "imageIds": ids},
    )
    stubber.add_response(
        "batch_delete_image",
        {"imageIds": [ids[1]], "failures": [{"imageId": ids[2], **kms}]},
        {"repositoryName": REPOSITORY, "imageIds": ids[1:]},
    )
    outcome = EcrRegistry(client, sleep=lambda _: None).delete(REPOSITORY, old_plan(3))

    assert {image.digest for image in outcome.deleted} == {digest(0), digest(1)}
    assert [(f.digest, f.code) for f in outcome.failed] == [(digest(2), "KmsError")]


def test_an_index_that_cannot_be_read_stops_the_run(ecr: tuple[Any, Stubber]) -> None:
    """Without an index's children, any untagged manifest might be one: plan nothing."""
    client, stubber = ecr
    index = {
        "imageDigest": digest(1),
        "imageTags": ["main"],
        "imagePushedAt": NOW,
        "imageManifestMediaType": "application/vnd.oci.image.index.v1+json",
    }
    stubber.add_response(
        "describe_images",
        {"imageDetails": [index]},
        {"repositoryName": REPOSITORY, "maxResults": 1000},
    )
    failure = {
        "imageId": {"imageDigest": digest(1)},
        "failureCode": "KmsError",
        "failureReason": "no key",
    }
    for _ in range(2):
        stubber.add_response(
            "batch_get_image",
            {"images": [], "failures": [failure]},
            {
                "repositoryName": REPOSITORY,
                "imageIds": [{"imageDigest": digest(1)}],
                "acceptedMediaTypes": [
                    "application/vnd.oci.image.index.v1+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                ],
            },
        )
    with pytest.raises(SnapshotError, match="KmsError"):
        EcrRegistry(client, sleep=lambda _: None).snapshot(REPOSITORY)


def test_ecs_running_tasks_report_their_container_digests() -> None:
    client = boto3.client("ecs", region_name="us-east-1")
    cluster = "arn:aws:ecs:us-east-1:123456789012:cluster/prod"
    task = "arn:aws:ecs:us-east-1:123456789012:task/prod/0f1e2d3c"
    with Stubber(client) as stubber:
        stubber.add_response("list_clusters", {"clusterArns": [cluster]}, {})
        stubber.add_response(
            "list_tasks",
            {"taskArns": [task]},
            {"cluster": cluster, "desiredStatus": "RUNNING"},
        )
        stubber.add_response(
            "describe_tasks",
            {
                "tasks": [
                    {
                        "taskArn": task,
                        "containers": [
                            {"name": "app", "image": "repo:main", "imageDigest": digest(7)},
                            {"name": "sidecar", "image": f"repo@{digest(8)}"},
                        ],
                    }
                ],
                "failures": [],
            },
            {"cluster": cluster, "tasks": [task]},
        )
        found = EcsTasks(client).digests()
    assert found == {digest(7): f"ECS task {task}", digest(8): f"ECS task {task}"}


def test_lambda_functions_report_the_digest_of_every_version_from_the_listing_alone() -> None:
    """No GetFunction: the Stubber refuses any call it was not given."""
    client = boto3.client("lambda", region_name="us-east-1")
    arn = "arn:aws:lambda:us-east-1:123456789012:function:api"
    hex_of = {n: digest(n).removeprefix("sha256:") for n in (1, 2)}
    with Stubber(client) as stubber:
        stubber.add_response(
            "list_functions",
            {
                "Functions": [
                    {"FunctionArn": f"{arn}:$LATEST", "PackageType": "Image",
                     "CodeSha256": hex_of[1]},
                    {"FunctionArn": f"{arn}:3", "PackageType": "Image", "CodeSha256": hex_of[2]},
                    {"FunctionArn": f"{arn}-zip:$LATEST", "PackageType": "Zip",
                     "CodeSha256": "k1Uo3bW0aB6i3cJ3Y3j1fU2m0Vn5kqk7e2gK3C1b0fU="},
                ]
            },
            {"FunctionVersion": "ALL"},
        )  # fmt: skip
        found = collect([LambdaFunctions(client)])
    assert found == {
        digest(1): f"Lambda function {arn}:$LATEST",
        digest(2): f"Lambda function {arn}:3",
    }


def test_an_image_function_without_a_readable_digest_stops_the_run() -> None:
    client = boto3.client("lambda", region_name="us-east-1")
    arn = "arn:aws:lambda:us-east-1:123456789012:function:api:7"
    with Stubber(client) as stubber:
        stubber.add_response(
            "list_functions",
            {"Functions": [{"FunctionArn": arn, "PackageType": "Image", "CodeSha256": ""}]},
            {"FunctionVersion": "ALL"},
        )
        with pytest.raises(UnreadableFunctionDigest, match="function:api:7"):
            collect([LambdaFunctions(client)])


def test_an_in_use_check_that_fails_stops_the_run() -> None:
    client = boto3.client("ecs", region_name="us-east-1")
    with Stubber(client) as stubber:
        stubber.add_client_error("list_clusters", "AccessDeniedException", "not allowed", 400)
        with pytest.raises(ClientError, match="AccessDenied"):
            collect([EcsTasks(client)])


def batch_get_params(*digests: str) -> dict[str, Any]:
    return {
        "repositoryName": REPOSITORY,
        "imageIds": [{"imageDigest": d} for d in digests],
        "acceptedMediaTypes": ACCEPTED_MEDIA_TYPES,
    }


def test_an_image_without_a_media_type_is_read_before_planning(ecr: tuple[Any, Stubber]) -> None:
    client, stubber = ecr
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(2)}
            ],
        }
    )
    stubber.add_response(
        "describe_images",
        {
            "imageDetails": [
                {"imageDigest": digest(1), "imageTags": ["main"], "imagePushedAt": NOW},
                {"imageDigest": digest(2), "imagePushedAt": NOW},
            ]
        },
        {"repositoryName": REPOSITORY, "maxResults": 1000},
    )
    stubber.add_response(
        "batch_get_image",
        {
            "images": [{"imageId": {"imageDigest": digest(1)}, "imageManifest": index}],
            "failures": [
                {
                    "imageId": {"imageDigest": digest(2)},
                    "failureCode": "ImageNotFound",
                    "failureReason": "gone",
                }
            ],
        },
        batch_get_params(digest(1), digest(2)),
    )
    images = EcrRegistry(client, sleep=lambda _: None).snapshot(REPOSITORY)
    assert [(i.digest, i.is_index, [c.digest for c in i.children]) for i in images] == [
        (digest(1), True, [digest(2)])
    ]


def test_an_index_whose_manifest_lists_no_manifests_stops_the_run(
    ecr: tuple[Any, Stubber],
) -> None:
    client, stubber = ecr
    stubber.add_response(
        "describe_images",
        {
            "imageDetails": [
                {
                    "imageDigest": digest(1),
                    "imagePushedAt": NOW,
                    "imageManifestMediaType": "application/vnd.oci.image.index.v1+json",
                }
            ]
        },
        {"repositoryName": REPOSITORY, "maxResults": 1000},
    )
    manifest = json.dumps({"schemaVersion": 2, "config": {}, "layers": []})
    stubber.add_response(
        "batch_get_image",
        {"images": [{"imageId": {"imageDigest": digest(1)}, "imageManifest": manifest}]},
        batch_get_params(digest(1)),
    )
    with pytest.raises(SnapshotError, match="children are unknown"):
        EcrRegistry(client, sleep=lambda _: None).snapshot(REPOSITORY)
