"""Read a repository into plain `Image`s, and carry out a plan's deletions in safe order.

- DescribeImages pages at 1000 images per call (nextToken).
- BatchGetImage reads the index manifests (100 per call), so children are known.
- BatchDeleteImage in chunks of 100, wave by wave: an index before the manifests it
  references, an image before its referrers (signatures, SBOMs). A manifest whose index
  or subject was not deleted is skipped, never forced.
- Right before each chunk, DescribeImages re-reads its tags: an image that gained a tag
  since planning (a rollback moved `latest` onto it) is skipped, for the next run to plan.
- Per-image failures are retried once; `ImageNotFound` counts as already gone (another
  pruner got there first).
- Throttling and transient errors are retried by the SDK alone (standard mode, with
  exponential backoff and jitter, `aws.LONG_RUNNING`'s attempts); one that outlasts them
  raises.
- Every request sent to AWS is counted (`calls`, the SDK's retries included), so a
  benchmark can report the calls a plan costs.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from layercache import aws
from layercache.pruning.model import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    INDEX_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    parse_config_media_type,
    parse_index_children,
    parse_subject,
    short_digest,
)
from layercache.pruning.plan import Plan

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient

logger = Logger(child=True)

DESCRIBE_PAGE_SIZE = 1000  # DescribeImages' maximum maxResults
BATCH_SIZE = 100  # BatchGetImage and BatchDeleteImage take at most 100 image ids
# Index types first: ECR returns a stored index as it is only when the caller accepts it.
ACCEPTED_MEDIA_TYPES = [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST]
IMAGE_NOT_FOUND = "ImageNotFound"

T = TypeVar("T")


class SnapshotError(RuntimeError):
    """The repository could not be read completely; planning on a partial view is unsafe."""


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True, slots=True)
class Failure:
    digest: str
    code: str
    reason: str


@dataclass
class DeleteOutcome:
    """What happened to a plan's deletions."""

    deleted: list[Image] = field(default_factory=list)
    already_gone: list[Image] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    # Not attempted: an index that references it is still there.
    skipped: list[Failure] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        return sum(image.size_bytes for image in self.deleted)


class EcrRegistry:
    """ECR as the pruner needs it.

    `client` defaults to a boto3 ECR client with the `aws.LONG_RUNNING` budget: its
    standard-mode retries are the only retries of throttling (see `_call`). `sleep` and
    `retry_delay` pace the one retry of images ECR failed one by one.
    """

    def __init__(
        self,
        client: ECRClient | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        retry_delay: float = 0.5,
    ) -> None:
        self._client: Any = client if client is not None else aws.client("ecr", aws.LONG_RUNNING)
        self._sleep = sleep
        self._retry_delay = retry_delay
        self.calls: Counter[str] = Counter()
        self._registry_ids: dict[str, str] = {}

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    # ------------------------------------------------------------------ reading

    def repository_uri(self, repository: str) -> str:
        """`<account>.dkr.ecr.<region>.amazonaws.com/<name>`, once a snapshot saw its account."""
        account = self._registry_ids.get(repository, "")
        region = self._client.meta.region_name
        return f"{account}.dkr.ecr.{region}.amazonaws.com/{repository}" if account else ""

    def snapshot(self, repository: str) -> list[Image]:
        """Every image of `repository`, with the children of each index."""
        details = self._describe_all(repository)
        images = {detail["imageDigest"]: _image(detail) for detail in details}
        # Indexes, and anything whose media type ECR did not say, are read: an index whose
        # children are unknown would leave them looking like orphans.
        untyped = {d["imageDigest"] for d in details if not d.get("imageManifestMediaType")}
        to_read = [
            digest for digest, image in images.items() if image.is_index or digest in untyped
        ]
        manifests = self._get_manifests(repository, to_read)
        for digest in to_read:
            manifest = manifests.get(digest)
            if manifest is None:
                # Deleted since DescribeImages (another pruner): its children are orphans now.
                del images[digest]
                continue
            document = json.loads(manifest)
            is_index = "manifests" in document
            if images[digest].is_index and not is_index:
                raise SnapshotError(
                    f"{repository}: {digest} is listed as an index, but its manifest lists no "
                    "manifests; its children are unknown"
                )
            images[digest] = replace(
                images[digest],
                media_type=str(document.get("mediaType") or images[digest].media_type),
                children=parse_index_children(manifest) if is_index else (),
                config_media_type=None if is_index else parse_config_media_type(manifest),
                subject=images[digest].subject or parse_subject(manifest),
            )
        referenced = {c.digest for image in images.values() for c in image.children}
        # DescribeImages reports a manifest's config media type as artifactMediaType; where it
        # is missing, read the untagged leaf manifests so superseded caches can be told apart.
        unknown = [
            digest
            for digest, image in images.items()
            if not image.is_index
            and not image.tags
            and image.config_media_type is None
            and digest not in referenced
            and digest not in untyped
        ]
        if unknown:
            for digest, manifest in self._get_manifests(repository, unknown, strict=False).items():
                images[digest] = replace(
                    images[digest],
                    config_media_type=parse_config_media_type(manifest),
                    subject=images[digest].subject or parse_subject(manifest),
                )
        return list(images.values())

    def _describe_all(self, repository: str) -> list[dict[str, Any]]:
        details: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            arguments: dict[str, Any] = {
                "repositoryName": repository,
                "maxResults": DESCRIBE_PAGE_SIZE,
            }
            if token:
                arguments["nextToken"] = token
            page = self._call("describe_images", **arguments)
            details.extend(page.get("imageDetails", []))
            for detail in page.get("imageDetails", [])[:1]:
                if detail.get("registryId"):
                    self._registry_ids[repository] = str(detail["registryId"])
            token = page.get("nextToken")
            if not token:
                return details

    def _get_manifests(
        self, repository: str, digests: Sequence[str], *, strict: bool = True
    ) -> dict[str, str]:
        """Manifest text by digest. Images that are gone are left out; other failures raise
        (with `strict`) after one retry, since an unread index hides which manifests it needs."""
        manifests: dict[str, str] = {}
        pending = list(digests)
        for attempt in (1, 2):
            failures: list[Failure] = []
            for chunk in chunks(pending, BATCH_SIZE):
                response = self._call(
                    "batch_get_image",
                    repositoryName=repository,
                    imageIds=[{"imageDigest": digest} for digest in chunk],
                    acceptedMediaTypes=ACCEPTED_MEDIA_TYPES,
                )
                for image in response.get("images", []):
                    manifests[image["imageId"]["imageDigest"]] = image["imageManifest"]
                failed = {
                    f.get("imageId", {}).get("imageDigest"): f for f in response.get("failures", [])
                }
                for digest in chunk:
                    if digest in manifests:
                        continue
                    failure = failed.get(digest, {})
                    # A failure without a digest, or no answer at all: the image is not there.
                    code = failure.get("failureCode", IMAGE_NOT_FOUND)
                    if code != IMAGE_NOT_FOUND:
                        failures.append(Failure(digest, code, failure.get("failureReason", "")))
            if not failures:
                return manifests
            pending = [failure.digest for failure in failures]
            if attempt == 1:
                self._sleep(self._retry_delay)
        if strict:
            first = failures[0]
            raise SnapshotError(
                f"{repository}: could not read {len(failures)} index manifest(s), e.g. "
                f"{first.digest}: {first.code} {first.reason}"
            )
        return manifests

    # ------------------------------------------------------------------ deleting

    def delete(self, repository: str, plan: Plan) -> DeleteOutcome:
        """Delete the plan's images wave by wave; never a manifest whose index survived."""
        outcome = DeleteOutcome()
        removed: set[str] = set()  # deleted by this run or found already gone
        for wave in plan.waves():
            ready: list[Image] = []
            for decision in wave:
                blocking = [parent for parent in decision.parents if parent not in removed]
                if not blocking:
                    ready.append(decision.image)
                elif blocking[0] == decision.image.refers_to:
                    outcome.skipped.append(
                        Failure(
                            decision.image.digest,
                            "SubjectNotDeleted",
                            f"the image it describes, {short_digest(blocking[0])}, is still there",
                        )
                    )
                else:
                    outcome.skipped.append(
                        Failure(
                            decision.image.digest,
                            "IndexNotDeleted",
                            f"index {short_digest(blocking[0])} that references it is still there",
                        )
                    )
            for chunk in chunks(ready, BATCH_SIZE):
                unchanged = self._drop_retagged(repository, chunk, outcome)
                self._delete_images(repository, unchanged, outcome)
            removed.update(image.digest for image in outcome.deleted)
            removed.update(image.digest for image in outcome.already_gone)
        return outcome

    def _drop_retagged(
        self, repository: str, images: Sequence[Image], outcome: DeleteOutcome
    ) -> list[Image]:
        """`images` less those that gained a tag since the snapshot (reported as skipped)."""
        current = self._current_tags(repository, [image.digest for image in images])
        unchanged: list[Image] = []
        for image in images:
            added = sorted(set(current.get(image.digest, ())) - set(image.tags))
            if added:
                outcome.skipped.append(
                    Failure(
                        image.digest,
                        "TagsChanged",
                        f"tagged {', '.join(added)} since planning; the next run decides",
                    )
                )
                logger.warning(
                    "Not deleting an image whose tags changed",
                    extra={"repository": repository, "digest": image.digest, "added": added},
                )
            else:
                unchanged.append(image)
        return unchanged

    def _current_tags(self, repository: str, digests: Sequence[str]) -> dict[str, list[str]]:
        """Digest -> its tags now; an image that is gone is left out."""
        if not digests:
            return {}
        try:
            response = self._call(
                "describe_images",
                repositoryName=repository,
                imageIds=[{"imageDigest": digest} for digest in digests],
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ImageNotFoundException":
                raise
            if len(digests) == 1:
                return {}
            # One of them is gone (another pruner): ask for each on its own.
            found: dict[str, list[str]] = {}
            for digest in digests:
                found |= self._current_tags(repository, [digest])
            return found
        return {
            detail["imageDigest"]: list(detail.get("imageTags") or ())
            for detail in response.get("imageDetails", [])
        }

    def _delete_images(
        self, repository: str, images: Iterable[Image], outcome: DeleteOutcome
    ) -> None:
        pending = {image.digest: image for image in images}
        for attempt in (1, 2):
            failures: list[Failure] = []
            for chunk in chunks(list(pending), BATCH_SIZE):
                response = self._call(
                    "batch_delete_image",
                    repositoryName=repository,
                    imageIds=[{"imageDigest": digest} for digest in chunk],
                )
                answered: set[str] = set()
                for image_id in response.get("imageIds", []):
                    digest = image_id.get("imageDigest")
                    if digest in pending and digest not in answered:
                        answered.add(digest)
                        outcome.deleted.append(pending[digest])
                for failure in response.get("failures", []):
                    digest = failure.get("imageId", {}).get("imageDigest")
                    if digest not in pending or digest in answered:
                        continue
                    answered.add(digest)
                    if failure.get("failureCode") == IMAGE_NOT_FOUND:
                        outcome.already_gone.append(pending[digest])
                    else:
                        failures.append(
                            Failure(
                                digest,
                                str(failure.get("failureCode")),
                                str(failure.get("failureReason", "")),
                            )
                        )
                failures.extend(
                    Failure(digest, "NoAnswer", "BatchDeleteImage did not report this image")
                    for digest in chunk
                    if digest not in answered
                )
            if not failures:
                return
            if attempt == 1:
                logger.info(
                    "Retrying failed deletions once",
                    extra={"repository": repository, "count": len(failures)},
                )
                self._sleep(self._retry_delay)
                pending = {failure.digest: pending[failure.digest] for failure in failures}
        for failure in failures:
            logger.warning(
                "Could not delete image",
                extra={
                    "repository": repository,
                    "digest": failure.digest,
                    "code": failure.code,
                    "reason": failure.reason,
                },
            )
        outcome.failed.extend(failures)

    # ------------------------------------------------------------------ calls

    def _call(self, operation: str, **arguments: Any) -> dict[str, Any]:
        """One AWS call, and every request it took counted in `calls`.

        Throttling is retried in one layer only, the client's: botocore's standard mode
        backs off exponentially with jitter, draws on a retry quota that stops a storm of
        retries, and retries transient errors (5xx, timeouts, lost connections) too, which a
        loop here would have to copy. A loop on top of it multiplied the attempts (6 times
        4: up to 24 requests a call, each layer waiting out its own backoff), and a call's
        cost was no longer the budget the client's timeouts were sized by. So the attempts
        are the client's (`aws.LONG_RUNNING` by default); a throttling that outlasts them
        raises, and the run reports the repository as failed.
        """
        method = getattr(self._client, operation)
        retries = 0  # as the SDK reports them; a lost connection reports none
        try:
            response: dict[str, Any] = method(**arguments)
            retries = _retries(response)
            return response
        except ClientError as error:
            retries = _retries(error.response)
            raise
        finally:
            self.calls[operation] += 1 + retries


def _retries(response: Mapping[str, Any]) -> int:
    """How many times the SDK retried the call that answered `response`."""
    return int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0))


def _image(detail: dict[str, Any]) -> Image:
    pushed_at = detail.get("imagePushedAt")
    if not isinstance(pushed_at, datetime):
        pushed_at = datetime.fromtimestamp(float(pushed_at or 0), tz=UTC)
    media_type = detail.get("imageManifestMediaType") or OCI_MANIFEST
    return Image(
        digest=detail["imageDigest"],
        pushed_at=pushed_at,
        tags=tuple(detail.get("imageTags") or ()),
        size_bytes=int(detail.get("imageSizeInBytes") or 0),
        media_type=media_type,
        config_media_type=None
        if media_type in INDEX_MEDIA_TYPES
        else detail.get("artifactMediaType"),
        subject=detail.get("subjectManifestDigest") or None,
    )
