"""The image digests that run right now: ECS tasks and Lambda functions in this account and Region.

Neither API can be narrowed to one repository: ECS reports the digest each running container
resolved, Lambda the digest each function version is pinned to. A digest counts wherever it
comes from; keeping an image because the same digest runs from another repository is harmless.
Errors propagate: a pruner that cannot tell what runs must not delete anything.
"""

from __future__ import annotations

import re
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
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


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


class UnreadableFunctionDigest(RuntimeError):
    """A container-image function version whose configuration names no digest."""


class LambdaFunctions:
    """Digests every version of every container-image Lambda function is pinned to.

    Read from `ListFunctions` alone: for a container-image function, `CodeSha256` is
    the hex digest of the image manifest Lambda resolved the function's image to (what
    `GetFunction` reports as `ResolvedImageUri`), so the pruner needs no `GetFunction`,
    which could also download every zip function's code (docs/pruning.md). An image
    version whose `CodeSha256` is not a 64-digit hex digest stops the run: a pruner that
    cannot tell what a function runs must not delete anything.
    """

    def __init__(self, client: LambdaClient | None = None) -> None:
        self._client: Any = client if client is not None else aws.client("lambda")

    def digests(self) -> dict[str, str]:
        found: dict[str, str] = {}
        versions = 0
        for page in self._client.get_paginator("list_functions").paginate(FunctionVersion="ALL"):
            for function in page.get("Functions", []):
                if function.get("PackageType") != "Image":
                    continue
                versions += 1
                arn = function.get("FunctionArn", "?")
                code_sha = str(function.get("CodeSha256", ""))
                if not _HEX_DIGEST.fullmatch(code_sha):
                    raise UnreadableFunctionDigest(
                        f"Lambda function {arn} is a container image, but its CodeSha256 "
                        f"{code_sha!r} is no image digest; pruning nothing"
                    )
                found.setdefault(f"sha256:{code_sha}", f"Lambda function {arn}")
        logger.info("Lambda in-use digests", extra={"versions": versions, "digests": len(found)})
        return found


def collect(sources: Sequence[InUseSource]) -> dict[str, str]:
    found: dict[str, str] = {}
    for source in sources:
        for digest, where in source.digests().items():
            found.setdefault(digest, where)
    return found
