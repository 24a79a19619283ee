"""The demo's images in the embedded ECR, where the recorder and the pruner reach them.

The builds push to the local registry; BuildRecorderFunction moves the moving tags and
ImagePrunerFunction reads and deletes through the ECR API.

During the story, `registry_backed_images` makes the embedded ECR's BatchGetImage and
PutImage of the demo's repository (and, for a Bake file's stack, of every repository
under its prefix) act on the local registry: the recorder's publication
of `<branch>` and `latest` (BatchGetImage of the build's manifest by digest, PutImage of
those bytes under each tag) really moves the registry's tags, so whatever the demo
later reads as `main` or `latest` is what the recorder published.

Before the pruner runs, that is undone, and `mirror_registry` copies every manifest
revision the registry stores (tagged or not) into moto's ECR with its true digest,
bytes, media type and tags, and dates it `backdate` earlier than the registry did: the
demo's builds are minutes old, and the pruner never deletes anything younger than an
hour (its in-flight grace).

moto creates no repository on a push, and ECR does when a repository creation template
(`AppliedFor: CREATE_ON_PUSH`) covers the pushed name: `CreateOnPush` does the same for
the embedded ECR, with the settings of template.yaml's `ImageRepositoriesTemplate`, for
each repository under the prefix the local registry holds and the embedded ECR does not,
each time a build has pushed (before the recorder hears of it).

moto's BatchDeleteImage differs from ECR in two ways the pruner would notice (see
layercache_dev.kit.moto_ecr): it does not report deleted
untagged images, and it deletes a manifest an index still references.
`ecr_like_deletes` makes the embedded ECR answer as ECR does.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.backends import get_backend
from moto.ecr.exceptions import ImageAlreadyExistsException, InvalidParameterException
from moto.ecr.models import Image

from layercache_dev.kit.embedded_aws import ACCOUNT, REGION
from layercache_dev.kit.moto_ecr import ecr_like_batch_delete_image, put_manifests
from layercache_dev.kit.processes import RigError
from layercache_dev.kit.registry import MANIFEST_ACCEPT, Manifest, Registry
from layercache_dev.kit.template import resource


def registry_manifests(registry: Registry, name: str) -> list[Manifest]:
    """Every manifest revision the registry stores for repository `name`, with its tags.

    Push times are the revision links' modification times.
    """
    revisions = registry.root / "docker/registry/v2/repositories" / name / "_manifests"
    tags: dict[str, list[str]] = {}
    for tag in registry.tags(name):
        _, _, headers = registry.request("HEAD", f"/v2/{name}/manifests/{tag}", MANIFEST_ACCEPT)
        tags.setdefault(headers["docker-content-digest"], []).append(tag)
    manifests = []
    for link in sorted((revisions / "revisions/sha256").glob("*/link")):
        digest = link.read_text().strip()
        body = registry.blob_path(digest).read_bytes()
        manifests.append(
            Manifest(
                digest=digest,
                media_type=str(json.loads(body).get("mediaType", "")),
                text=body.decode(),
                tags=tuple(sorted(tags.get(digest, []))),
                pushed_at=datetime.fromtimestamp(link.stat().st_mtime, tz=UTC),
            )
        )
    return manifests


def mirror_registry(
    manifests: Iterable[Manifest], ecr: Any, repository: str, backdate: timedelta
) -> int:
    """Put `manifests` into the embedded ECR repository (manifests before the indexes)."""
    ordered = sorted(manifests, key=lambda m: (m.is_index, m.pushed_at))
    put_manifests(ecr, repository, ordered, backdate)
    return len(ordered)


def ecr_digests(ecr: Any, repository: str) -> set[str]:
    digests: set[str] = set()
    for page in ecr.get_paginator("describe_images").paginate(repositoryName=repository):
        digests.update(detail["imageDigest"] for detail in page["imageDetails"])
    return digests


def delete_from_registry(registry: Registry, name: str, manifests: Iterable[Manifest]) -> int:
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
    backend.batch_delete_image = functools.partial(
        ecr_like_batch_delete_image(type(backend).batch_delete_image), backend
    )
    return lambda: backend.__dict__.pop("batch_delete_image", None)


def registry_backed_images(
    registry: Registry, repository: str, *, prefix: str | None = None
) -> Callable[[], None]:
    """Make the embedded ECR's BatchGetImage and PutImage of `repository` (and, with
    `prefix`, of every `<prefix>/...` repository) act on the local registry; other
    repositories keep what answered before (moto's own, or another stack's such stand-in);
    returns undo (safe to call twice, in any order with the others').

    - BatchGetImage by digest (or tag) GETs the manifest from the registry: its bytes,
      media type and digest, as ECR answers; a missing one is an `ImageNotFound` failure.
    - PutImage PUTs the manifest's bytes under the tag (`/v2/<name>/manifests/<tag>`,
      with its media type). As ECR, it refuses a digest that is not the bytes' own, and
      answers `ImageAlreadyExistsException` when the tag already names that manifest.
    """
    backend = _ecr_backend()
    # What answered before: another stand-in (an instance attribute) or moto's own method.
    before = {name: backend.__dict__.get(name) for name in ("batch_get_image", "put_image")}
    previous_get = before["batch_get_image"] or functools.partial(
        type(backend).batch_get_image, backend
    )
    previous_put = before["put_image"] or functools.partial(type(backend).put_image, backend)
    active = [True]

    def covers(name: str) -> bool:
        return active[0] and (
            name == repository or (prefix is not None and name.startswith(f"{prefix}/"))
        )

    def batch_get_image(
        repository_name: str,
        registry_id: str | None = None,
        image_ids: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        if not covers(repository_name):
            theirs: dict[str, Any] = previous_get(repository_name, registry_id, image_ids)
            return theirs
        response: dict[str, Any] = {"images": [], "failures": []}
        for image_id in image_ids or []:
            reference = image_id.get("imageDigest") or image_id.get("imageTag") or ""
            status, body, headers = registry.request(
                "GET", f"/v2/{repository_name}/manifests/{reference}", MANIFEST_ACCEPT
            )
            if status != 200:
                response["failures"].append(
                    {
                        "imageId": dict(image_id),
                        "failureCode": "ImageNotFound",
                        "failureReason": "Requested image not found",
                    }
                )
                continue
            image = Image(
                ACCOUNT,
                image_id.get("imageTag"),  # type: ignore[arg-type]  # ECR: absent when by digest
                body.decode(),
                repository_name,
                headers.get("content-type"),
                headers["docker-content-digest"],
            )
            response["images"].append(image)
        return response

    def put_image(
        repository_name: str,
        image_manifest: str,
        image_tag: str,
        image_manifest_mediatype: str | None = None,
        digest: str | None = None,
    ) -> Any:
        if not covers(repository_name):
            return previous_put(
                repository_name,
                image_manifest,
                image_tag,
                image_manifest_mediatype,
                digest,
            )
        body = image_manifest.encode()
        media_type = image_manifest_mediatype or str(json.loads(body).get("mediaType") or "")
        if not media_type:
            raise InvalidParameterException("image manifest mediatype not provided")
        own = "sha256:" + hashlib.sha256(body).hexdigest()
        if digest and digest != own:
            raise InvalidParameterException(
                f"Invalid parameter at 'imageDigest': {digest} is not the manifest's ({own})"
            )
        if image_tag and registry.digest(repository_name, image_tag) == own:
            raise ImageAlreadyExistsException(repository_name, ACCOUNT, own, image_tag)
        status, answer, _ = registry.request(
            "PUT",
            f"/v2/{repository_name}/manifests/{image_tag or own}",
            body=body,
            content_type=media_type,
        )
        if status != 201:
            raise InvalidParameterException(
                f"the local registry refused {repository_name}:{image_tag} ({status}): "
                f"{answer[:200]!r}"
            )
        return Image(ACCOUNT, image_tag, image_manifest, repository_name, media_type, own)

    backend.batch_get_image = batch_get_image
    backend.put_image = put_image

    def undo() -> None:
        """Stop covering; if no stand-in was put on top since, put back what was before."""
        active[0] = False
        for name, ours in (("batch_get_image", batch_get_image), ("put_image", put_image)):
            if backend.__dict__.get(name) is ours:
                if before[name] is None:  # moto's own again
                    backend.__dict__.pop(name)
                else:
                    backend.__dict__[name] = before[name]

    return undo


def registry_repositories(registry: Registry, prefix: str) -> list[str]:
    """The repositories under `<prefix>/` the local registry holds (its catalog)."""
    status, body, _ = registry.request("GET", "/v2/_catalog?n=1000")  # the registry's most
    if status != 200:
        raise RigError(f"the local registry's catalog: {status} {body[:200]!r}")
    names = json.loads(body).get("repositories") or []
    return sorted(str(name) for name in names if str(name).startswith(f"{prefix}/"))


class CreateOnPush:
    """ECR's repository creation template for `<prefix>/...` (template.yaml's
    `ImageRepositoriesTemplate`, `AppliedFor: CREATE_ON_PUSH`), on the embedded ECR: call
    it after a build pushed, and each repository under the prefix that the local registry
    holds and the embedded ECR does not is created, with the template's settings.
    `created` lists them, in the order they were created."""

    def __init__(self, registry: Registry, ecr: Any, prefix: str) -> None:
        properties = resource("ImageRepositoriesTemplate")["Properties"]
        if "CREATE_ON_PUSH" not in properties["AppliedFor"]:
            raise ValueError("ImageRepositoriesTemplate no longer applies on push")
        self.registry = registry
        self.ecr = ecr
        self.prefix = prefix
        self.encryption = {
            "encryptionType": properties["EncryptionConfiguration"]["EncryptionType"]
        }
        self.created: list[str] = []

    def __call__(self, *_: Any) -> list[str]:
        pushed = registry_repositories(self.registry, self.prefix)
        existing: set[str] = set()
        for page in self.ecr.get_paginator("describe_repositories").paginate():
            existing.update(r["repositoryName"] for r in page["repositories"])
        new = [name for name in pushed if name not in existing]
        for name in new:
            # MUTABLE, not the template's MUTABLE_WITH_EXCLUSION: moto reads the wildcard
            # filter as a regular expression (see embedded_aws.deploy_stack).
            self.ecr.create_repository(
                repositoryName=name,
                imageTagMutability="MUTABLE",
                encryptionConfiguration=self.encryption,
            )
        self.created += new
        return new
