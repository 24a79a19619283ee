"""The image digests that run right now: ECS tasks and Lambda functions in this account and Region.

Neither API can be narrowed to one repository: ECS reports the digest each running container
resolved, Lambda the digest each function version is pinned to. A digest counts wherever it
comes from; keeping an image because the same digest runs from another repository is harmless.
Errors propagate: a pruner that cannot tell what runs must not delete anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from aws_lambda_powertools import Logger

from layercache import aws
from layercache.pruning.ecr import chunks

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_lambda import LambdaClient

logger = Logger(child=True)

DESCRIBE_TASKS_BATCH = 100


class InUseSource(Protocol):
    def digests(self) -> dict[str, str]:
        """Digest -> where it runs (for the plan's reason text)."""
        ...


def digest_of(image_uri: str | None) -> str | None:
    """`sha256:...` from `repo@sha256:...`, else None (a tag alone names no digest)."""
    if image_uri and "@" in image_uri:
        return image_uri.rsplit("@", 1)[1]
    return None


class EcsTasks:
    """Digests of the containers of every ECS task that is running or about to."""

    def __init__(self, client: ECSClient | None = None) -> None:
        self._client: Any = client if client is not None else aws.client("ecs")

    def digests(self) -> dict[str, str]:
        found: dict[str, str] = {}
        clusters = [
            arn
            for page in self._client.get_paginator("list_clusters").paginate()
            for arn in page.get("clusterArns", [])
        ]
        for cluster in clusters:
            tasks = [
                arn
                for page in self._client.get_paginator("list_tasks").paginate(
                    cluster=cluster, desiredStatus="RUNNING"
                )
                for arn in page.get("taskArns", [])
            ]
            for chunk in chunks(tasks, DESCRIBE_TASKS_BATCH):
                response = self._client.describe_tasks(cluster=cluster, tasks=list(chunk))
                for task in response.get("tasks", []):
                    for digest in _container_digests(task.get("containers", [])):
                        found.setdefault(digest, f"ECS task {task.get('taskArn', '?')}")
        logger.info("ECS in-use digests", extra={"clusters": len(clusters), "digests": len(found)})
        return found


def _container_digests(containers: Iterable[Mapping[str, Any]]) -> Iterable[str]:
    for container in containers:
        for digest in (container.get("imageDigest"), digest_of(container.get("image"))):
            if digest:
                yield digest


class LambdaFunctions:
    """Digests every version of every container-image Lambda function is pinned to."""

    def __init__(self, client: LambdaClient | None = None) -> None:
        self._client: Any = client if client is not None else aws.client("lambda")

    def digests(self) -> dict[str, str]:
        found: dict[str, str] = {}
        functions = [
            function["FunctionArn"]
            for page in self._client.get_paginator("list_functions").paginate(FunctionVersion="ALL")
            for function in page.get("Functions", [])
            if function.get("PackageType") == "Image"
        ]
        for arn in functions:
            code = self._client.get_function(FunctionName=arn).get("Code", {})
            for uri in (code.get("ResolvedImageUri"), code.get("ImageUri")):
                digest = digest_of(uri)
                if digest:
                    found.setdefault(digest, f"Lambda function {arn}")
        logger.info(
            "Lambda in-use digests", extra={"versions": len(functions), "digests": len(found)}
        )
        return found


def collect(sources: Sequence[InUseSource]) -> dict[str, str]:
    found: dict[str, str] = {}
    for source in sources:
        for digest, where in source.digests().items():
            found.setdefault(digest, where)
    return found
