"""moto's ECR made to answer as ECR does, for the tests, the demo and the benchmark.

- BatchDeleteImage: moto deletes a manifest that an image index still references, where
  ECR refuses with `ImageReferencedByManifestList`; and it reports a deleted image once
  per tag, so an untagged one not at all, where ECR reports every deleted image
  (`ecr_like_batch_delete`, and `ecr_like_batch_delete_image` to install in its place);
- DescribeImages: moto returns every image in one page, where ECR pages at maxResults
  (1..1000, default 100) with a nextToken (`ecr_like_describe_images`);
- pushes: `put_manifests` puts manifests (`registry.Manifest`: digest, text, media
  type, tags, push time) under each of their tags as pushes leave them, dated as ECR's
  imagePushedAt would date them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from moto.backends import get_backend
from moto.core.responses import ActionResult
from moto.ecr.responses import ECRResponse

from layercache.pruning.model import INDEX_MEDIA_TYPES, parse_index_children
from layercache_dev.kit.embedded_aws import ACCOUNT, REGION
from layercache_dev.kit.registry import Manifest

BatchDelete = Callable[[Any, str, str | None, list[dict[str, str]]], dict[str, Any]]
BatchDeleteImage = Callable[..., dict[str, Any]]
DescribeImages = Callable[[ECRResponse], Any]
# ECR takes at most this many image ids per BatchDeleteImage.
MAX_DELETE_BATCH = 100
REFERENCED = {
    "failureCode": "ImageReferencedByManifestList",
    "failureReason": "Requested image referenced by manifest list",
}


def ecr_like_batch_delete(
    original: BatchDelete,
    backend: Any,
    repository_name: str,
    registry_id: str | None,
    image_ids: list[dict[str, str]],
) -> tuple[dict[str, Any], list[str]]:
    """moto's BatchDeleteImage (`original`) answered as ECR would; and the refused digests."""
    repository = backend.repositories[repository_name]
    referenced = {
        child.digest
        for image in repository.images
        if image.image_manifest_media_type in INDEX_MEDIA_TYPES
        for child in parse_index_children(image.image_manifest)
    }
    refused = [i for i in image_ids if i.get("imageDigest") in referenced]
    allowed = [i for i in image_ids if i not in refused]
    before = {image.image_digest for image in repository.images}
    response: dict[str, Any] = (
        original(backend, repository_name, registry_id, allowed)
        if allowed
        else {"imageIds": [], "failures": []}
    )
    after = {image.image_digest for image in repository.images}
    answered = {getattr(i, "image_digest", None) for i in response["imageIds"]}
    response["imageIds"] = list(response["imageIds"]) + [
        {"imageDigest": i["imageDigest"]}
        for i in allowed
        if i.get("imageDigest") in before - after and i["imageDigest"] not in answered
    ]
    response["failures"] = list(response["failures"]) + [
        {"imageId": {"imageDigest": i["imageDigest"]}, **REFERENCED} for i in refused
    ]
    return response, [i["imageDigest"] for i in refused]


@dataclass
class EcrCalls:
    """What the ECR-like calls saw: DescribeImages page sizes asked for, delete batch
    sizes (batches by digest), and the digests refused as still referenced."""

    describe_page_sizes: list[int | None] = field(default_factory=list)
    delete_batch_sizes: list[int] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def ecr_like_batch_delete_image(
    original: BatchDelete, seen: EcrCalls | None = None
) -> BatchDeleteImage:
    """`ECRBackend.batch_delete_image` answering as ECR (see `ecr_like_batch_delete`),
    to set on the class in `original`'s place (or bind to one backend)."""

    def batch_delete_image(
        backend: Any,
        repository_name: str,
        registry_id: str | None = None,
        image_ids: list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        image_ids = list(image_ids or [])
        if not any("imageDigest" in image_id for image_id in image_ids):
            # By tag only: moto's own tag moves come this way; nothing to refuse.
            return original(backend, repository_name, registry_id, image_ids)
        assert len(image_ids) <= MAX_DELETE_BATCH, (
            f"ECR takes at most {MAX_DELETE_BATCH} image ids per BatchDeleteImage"
        )
        response, refused = ecr_like_batch_delete(
            original, backend, repository_name, registry_id, image_ids
        )
        if seen is not None:
            seen.delete_batch_sizes.append(len(image_ids))
            seen.refused.extend(refused)
        return response

    return batch_delete_image


def ecr_like_describe_images(
    original: DescribeImages, seen: EcrCalls | None = None
) -> DescribeImages:
    """`ECRResponse.describe_images` paged as ECR pages it (maxResults 1..1000, default
    100, nextToken), to set on the class in `original`'s place."""

    def describe_images(response: ECRResponse) -> Any:
        max_results = response._get_param("maxResults")
        if seen is not None:
            seen.describe_page_sizes.append(max_results)
        if response._get_param("imageIds"):
            return original(response)
        assert max_results is None or 1 <= max_results <= 1000, "ECR: maxResults 1..1000"
        limit = max_results or 100
        start = int(response._get_param("nextToken") or 0)
        details = cast(dict[str, Any], original(response).result)["imageDetails"]
        page: dict[str, Any] = {"imageDetails": details[start : start + limit]}
        if start + limit < len(details):
            page["nextToken"] = str(start + limit)
        return ActionResult(page)

    return describe_images


def put_manifests(
    ecr: Any, repository: str, manifests: Iterable[Manifest], backdate: timedelta = timedelta(0)
) -> None:
    """PutImage of each manifest, in order, under each of its tags (once untagged without
    any); then each image dated its push time, `backdate` earlier. The dates are set in
    this process's moto backend: ECR's PutImage takes no push time."""
    pushed_at: dict[str, datetime] = {}
    for manifest in manifests:
        arguments: dict[str, Any] = {
            "repositoryName": repository,
            "imageManifest": manifest.text,
            "imageManifestMediaType": manifest.media_type,
            "imageDigest": manifest.digest,
        }
        if not manifest.tags:
            ecr.put_image(**arguments)
        for tag in manifest.tags:
            ecr.put_image(**arguments, imageTag=tag)
        pushed_at[manifest.digest] = manifest.pushed_at - backdate
    backend = get_backend("ecr")[ACCOUNT][REGION]
    for image in backend.repositories[repository].images:
        if image.image_digest in pushed_at:
            image.image_pushed_at = int(pushed_at[image.image_digest].timestamp())
