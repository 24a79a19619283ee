"""The images in use: ECS tasks and services, and Lambda functions, in this account and Region.

No API can be narrowed to one repository: ECS reports the digest each running container
resolved and the images each service's task definitions name, Lambda the digest each
function version is pinned to. A digest counts wherever it comes from; keeping an image
because the same digest runs from another repository is harmless.
Errors propagate: a pruner that cannot tell what runs must not delete anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from aws_lambda_powertools import Logger

from layercache import aws
from layercache.pruning.ecr import chunks

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_lambda import LambdaClient

logger = Logger(child=True)

DESCRIBE_TASKS_BATCH = 100
DESCRIBE_SERVICES_BATCH = 10  # DescribeServices' maximum
DESCRIBE_REVISIONS_BATCH = 20  # DescribeServiceRevisions' maximum
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
# An ECR registry host in any of its spellings: IPv4, dual-stack (dkr-ecr ... on.aws), FIPS.
_ECR_HOST = re.compile(
    r"(\d{12})\.dkr[.-]ecr(?:-fips)?\.([a-z0-9-]+)\.(?:amazonaws\.com(?:\.cn)?|on\.aws)"
)


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


class TagRef(NamedTuple):
    """An image named by tag: `repository_uri` is `<registry host>/<name>`."""

    repository_uri: str
    tag: str


def tag_ref(image: str) -> TagRef:
    """Docker's reading of `[host/]name[:tag]`: no tag is `latest`, no registry host Docker Hub."""
    name, tag = image.rsplit(":", 1) if ":" in image.rsplit("/", 1)[-1] else (image, "latest")
    host, _, path = name.partition("/")
    if path and ("." in host or ":" in host or host == "localhost"):
        return TagRef(f"{host.lower()}/{path}", tag)
    return TagRef(f"docker.io/{name if path else 'library/' + name}", tag)


def protected_tags_for(repository_uri: str, refs: Mapping[TagRef, str]) -> dict[str, str]:
    """Tag -> where, for the refs that name `repository_uri` (`<registry host>/<name>`).

    An ECR registry matches in any spelling of its host (dual-stack, FIPS); refs of other
    repositories, registries or accounts, and of Docker Hub, are left out.
    """
    wanted = _repository_key(repository_uri)
    found: dict[str, str] = {}
    for ref, where in refs.items():
        if _repository_key(ref.repository_uri) == wanted:
            found.setdefault(ref.tag, where)
    return found


def _repository_key(repository_uri: str) -> tuple[str, str]:
    host, _, name = repository_uri.partition("/")
    host = host.lower()
    if ecr := _ECR_HOST.fullmatch(host):
        host = "{}.dkr.ecr.{}".format(*ecr.groups())
    return host, name


@dataclass(frozen=True)
class ServiceImages:
    """The images ECS services' task definitions name: by digest, and by tag."""

    digests: dict[str, str] = field(default_factory=dict)
    tags: dict[TagRef, str] = field(default_factory=dict)


class UnreadableService(RuntimeError):
    """DescribeServices reported a service it could not describe (other than one just deleted)."""


class EcsServices:
    """The images of every task definition an ECS service may start tasks from.

    A service scaled to zero runs no task, so `EcsTasks` cannot see its image; the next
    scale-up, or a rollback, still pulls it. For every service of every cluster this reads
    the task definition the service names and those of its deployments (the PRIMARY one and
    any ACTIVE one still draining, which a rollback returns to) and of its task sets (the
    blue/green controllers), then each distinct task definition once.

    `images()` answers in one pass: `digests` for images named `repo@sha256:...` (the same
    map as every `InUseSource`), and `tags` for images named `repo:tag` or `repo` (`latest`),
    keyed by `TagRef`; `protected_tags_for(repository_uri, images.tags)` picks out the tags
    of the repository being pruned. `digests()` alone makes this an `InUseSource`. Nothing
    is cached: each call reads ECS again. Errors propagate, and a service that
    DescribeServices cannot describe stops the run (one deleted meanwhile is skipped).

    A tag protects the image it names now. ECS also resolves a tag to a digest when a
    deployment starts and scales up with that digest ("container image resolution"), even
    after the tag has moved: the digests of each service's current service revisions
    (DescribeServiceRevisions, `containerImages[].imageDigest`) are protected too. Services
    deployed before ECS had service revisions (October 2024) have none to read.
    """

    def __init__(self, client: ECSClient | None = None) -> None:
        self._client: Any = client if client is not None else aws.client("ecs")

    def digests(self) -> dict[str, str]:
        return self.images().digests

    def images(self) -> ServiceImages:
        task_definitions, revisions = self._task_definitions()
        found = ServiceImages()
        for chunk in chunks(sorted(revisions), DESCRIBE_REVISIONS_BATCH):
            response = self._client.describe_service_revisions(serviceRevisionArns=list(chunk))
            for revision in response.get("serviceRevisions", []):
                where = f"ECS service revision {revision.get('serviceRevisionArn', '?')}"
                for image in revision.get("containerImages", []):
                    if digest := image.get("imageDigest"):
                        found.digests.setdefault(str(digest), where)
        for arn, service in task_definitions.items():
            response = self._client.describe_task_definition(taskDefinition=arn)
            where = f"ECS service {service} (task definition {arn})"
            for container in response["taskDefinition"].get("containerDefinitions", []):
                image = str(container.get("image", ""))
                if digest := digest_of(image):
                    found.digests.setdefault(digest, where)
                else:
                    found.tags.setdefault(tag_ref(image), where)
        logger.info(
            "ECS service images",
            extra={
                "task_definitions": len(task_definitions),
                "digests": len(found.digests),
                "tags": len(found.tags),
            },
        )
        return found

    def _task_definitions(self) -> tuple[dict[str, str], set[str]]:
        """(task definition ARN -> the first service that uses it, current revision ARNs)."""
        found: dict[str, str] = {}
        revisions: set[str] = set()
        for page in self._client.get_paginator("list_clusters").paginate():
            for cluster in page.get("clusterArns", []):
                for service in self._services(cluster):
                    for arn in _task_definitions_of(service):
                        found.setdefault(arn, service.get("serviceArn", "?"))
                    revisions.update(
                        r["arn"] for r in service.get("currentServiceRevisions", []) if r.get("arn")
                    )
        return found, revisions

    def _services(self, cluster: str) -> Iterable[Mapping[str, Any]]:
        paginator = self._client.get_paginator("list_services")
        arns = [
            arn
            for page in paginator.paginate(cluster=cluster)
            for arn in page.get("serviceArns", [])
        ]
        for chunk in chunks(arns, DESCRIBE_SERVICES_BATCH):
            response = self._client.describe_services(cluster=cluster, services=list(chunk))
            _raise_unless_missing(response.get("failures", []))
            yield from response.get("services", [])


def _task_definitions_of(service: Mapping[str, Any]) -> list[str]:
    """The service's own task definition, its deployments' and its task sets'."""
    entries = [service, *service.get("deployments", []), *service.get("taskSets", [])]
    return [arn for entry in entries if (arn := entry.get("taskDefinition"))]


def _raise_unless_missing(failures: Iterable[Mapping[str, Any]]) -> None:
    for failure in failures:
        if failure.get("reason") != "MISSING":
            raise UnreadableService(
                f"ECS could not describe service {failure.get('arn', '?')}: "
                f"{failure.get('reason')} {failure.get('detail', '')}; pruning nothing"
            )


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
