"""moto's ECR made to delete as ECR does, for the tests and the demo.

moto deletes a manifest that an image index still references, where ECR refuses with
`ImageReferencedByManifestList`; and it reports a deleted image once per tag, so an
untagged one not at all, where ECR reports every deleted image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from layercache.pruning.model import INDEX_MEDIA_TYPES, parse_index_children

BatchDelete = Callable[[Any, str, str | None, list[dict[str, str]]], dict[str, Any]]
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
