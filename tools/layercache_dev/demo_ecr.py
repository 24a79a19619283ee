"""The demo's images in the embedded ECR, where the pruner reads them.

The builds push to the local registry; ImagePrunerFunction reads and deletes through
the ECR API. `mirror_registry` copies every manifest revision the registry stores (tagged
or not) into moto's ECR with its true digest, bytes, media type and tags, and dates it
`backdate` earlier than the registry did: the demo's builds are minutes old, and the
pruner never deletes anything younger than an hour (its in-flight grace).

moto's BatchDeleteImage differs from ECR in two ways the pruner would notice (see
tests/integration/pruning/conftest.py and DESIGN.md): it does not report deleted
untagged images, and it deletes a manifest an index still references.
`ecr_like_deletes` makes the embedded ECR answer as ECR does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.backends import get_backend

from layercache.pruning.model import INDEX_MEDIA_TYPES
from layercache_dev.embedded_aws import ACCOUNT, REGION
from layercache_dev.moto_ecr import ecr_like_batch_delete
from layercache_dev.rig import Registry

_ACCEPT = ",".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


@dataclass(frozen=True)
class StoredManifest:
    digest: str
    media_type: str
    body: bytes
    tags: tuple[str, ...]
    pushed_at: datetime

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES


def registry_manifests(registry: Registry, name: str) -> list[StoredManifest]:
    """Every manifest revision the registry stores for repository `name`, with its tags.

    Push times are the revision links' modification times.
    """
    revisions = registry.root / "docker/registry/v2/repositories" / name / "_manifests"
    tags: dict[str, list[str]] = {}
    for tag in registry.tags(name):
        _, _, headers = registry.request("HEAD", f"/v2/{name}/manifests/{tag}", _ACCEPT)
        tags.setdefault(headers["docker-content-digest"], []).append(tag)
    manifests = []
    for link in sorted((revisions / "revisions/sha256").glob("*/link")):
        digest = link.read_text().strip()
        body = registry.blob_path(digest).read_bytes()
        manifests.append(
            StoredManifest(
                digest=digest,
                media_type=str(json.loads(body).get("mediaType", "")),
                body=body,
                tags=tuple(sorted(tags.get(digest, []))),
                pushed_at=datetime.fromtimestamp(link.stat().st_mtime, tz=UTC),
            )
        )
    return manifests


def mirror_registry(
    manifests: Iterable[StoredManifest], ecr: Any, repository: str, backdate: timedelta
) -> int:
    """Put `manifests` into the embedded ECR repository (manifests before the indexes)."""
    ordered = sorted(manifests, key=lambda m: (m.is_index, m.pushed_at))
    pushed_at: dict[str, datetime] = {}
    for manifest in ordered:
        arguments = {
            "repositoryName": repository,
            "imageManifest": manifest.body.decode(),
            "imageManifestMediaType": manifest.media_type,
            "imageDigest": manifest.digest,
        }
        if not manifest.tags:
            ecr.put_image(**arguments)
        for tag in manifest.tags:
            ecr.put_image(**arguments, imageTag=tag)
        pushed_at[manifest.digest] = manifest.pushed_at - backdate
    for image in _ecr_backend().repositories[repository].images:
        if image.image_digest in pushed_at:
            image.image_pushed_at = int(pushed_at[image.image_digest].timestamp())
    return len(ordered)


def ecr_digests(ecr: Any, repository: str) -> set[str]:
    digests: set[str] = set()
    for page in ecr.get_paginator("describe_images").paginate(repositoryName=repository):
        digests.update(detail["imageDigest"] for detail in page["imageDetails"])
    return digests


def delete_from_registry(registry: Registry, name: str, manifests: Iterable[StoredManifest]) -> int:
    """Delete manifests by digest (indexes first, as ECR requires); returns how many went."""
    deleted = 0
    for manifest in sorted(manifests, key=lambda m: not m.is_index):
        status, _, _ = registry.request("DELETE", f"/v2/{name}/manifests/{manifest.digest}")
        deleted += status == 202
    return deleted


def _ecr_backend() -> Any:
    return get_backend("ecr")[ACCOUNT][REGION]


def ecr_like_deletes() -> Callable[[], None]:
    """Make the embedded ECR's BatchDeleteImage report and refuse as ECR does; returns undo."""
    backend = _ecr_backend()
    original = type(backend).batch_delete_image

    def batch_delete_image(
        repository_name: str,
        registry_id: str | None = None,
        image_ids: list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        response, _ = ecr_like_batch_delete(
            original, backend, repository_name, registry_id, list(image_ids or [])
        )
        return response

    backend.batch_delete_image = batch_delete_image
    return lambda: backend.__dict__.pop("batch_delete_image", None)
