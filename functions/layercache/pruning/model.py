"""A repository's images as plain data, and the tags the build driver gives them.

The build driver pushes, per build: an OCI image index tagged `<40-hex commit sha>`,
`<branch-slug>-<sha[:7]>` and `<branch-slug>` (the last moves to the branch's newest image;
`latest` too on the default branch), whose untagged children are the platform manifest(s)
and an attestation manifest; and a BuildKit cache manifest tagged `cache-<branch-slug>`,
which leaves the previous cache manifest untagged.

The pruner reads branches from those tags and never computes a slug itself; `branch_slug`
is here so that whatever models those tags (the tests, the demo) spells them exactly as
the build does. It is the driver's own block, copied by scripts/sync_slug.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_MEDIA_TYPES = INDEX_MEDIA_TYPES | {OCI_MANIFEST, DOCKER_MANIFEST, DOCKER_MANIFEST_V1}
# The config media type of a BuildKit registry cache exported with image-manifest=true.
BUILDKIT_CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"
# buildx marks the attestation manifest in an index with this annotation.
REFERENCE_TYPE_ANNOTATION = "vnd.docker.reference.type"
ATTESTATION_MANIFEST = "attestation-manifest"

CACHE_TAG_PREFIX = "cache-"
FULL_SHA = re.compile(r"[0-9a-f]{40}")
BUILD_TAG = re.compile(r"(?P<slug>.+)-(?P<short>[0-9a-f]{7})")
# The tags of a multi-platform build's parts (build_driver.BuildRequest.platform_tag and
# join_platforms.index_tags): a platform's image `<commit>-<arch>[-<attempt>]`, and the
# index of a rebuilt commit `<commit>-index[-<attempt>]`. They name what the join and the
# build records need, never what a user deploys: an image is kept or deleted with the
# index that holds it, or by its branch's moving tag.
PART_TAG = re.compile(
    r"[0-9a-f]{40}(?:[0-9a-f]{24})?-(?:amd64|arm64|arm-v[5-8]|index)(?:-[0-9a-f]{8})?"
)


# >>> branch slug: written in buildspecs/build_driver.py and copied as it is into
# functions/layercache/pruning/model.py by scripts/sync_slug.py (`make lint` checks).
SLUG_MAX_LENGTH = 120  # so `cache-<slug>` and `<slug>-<sha7>` fit Docker's 128-character tags
SLUG_HASH_LENGTH = 12
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
# A name kept as it is must not pass for a tag the pipeline writes itself: `latest`, a
# cache ref `cache-*`, a commit (40 or 64 hex digits), a build tag `<slug>-<sha7>`, or a
# slug that was given a hash suffix `<name>-<12 hex digits>`.
_SLUG_RESERVED = re.compile(
    r"latest|cache-.*|[0-9a-fA-F]{40}|[0-9a-fA-F]{64}|.*-[0-9a-f]{7}|.*-[0-9a-f]{12}", re.DOTALL
)


def branch_slug(branch: str) -> str:
    """The branch as it appears in tags; two branches never share a slug.

    A name that is already a safe tag (only [A-Za-z0-9_.-], not starting with `.` or
    `-`, at most SLUG_MAX_LENGTH characters) and is not reserved is its own slug:
    `main`, `release-1.0`. Any other name is made safe (every other character becomes
    `-`, leading `.` and `-` go, `unnamed` if nothing is left), cut, and suffixed with
    `-` and the first SLUG_HASH_LENGTH hex digits of the SHA-256 of the whole name:
    `feature/a` -> `feature-a-<hash>`, never `feature-a`; `latest` -> `latest-<hash>`.
    Kept names never end like a suffix, so a changed name can't meet a kept one.
    """
    name = branch.removeprefix("refs/heads/")
    safe = _SLUG_UNSAFE.sub("-", name).lstrip(".-")
    if name == safe and 0 < len(name) <= SLUG_MAX_LENGTH and not _SLUG_RESERVED.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()
    stem = (safe or "unnamed")[: SLUG_MAX_LENGTH - 1 - SLUG_HASH_LENGTH]
    return f"{stem}-{digest[:SLUG_HASH_LENGTH]}"


# <<< branch slug


def cache_tag(slug: str) -> str:
    return f"{CACHE_TAG_PREFIX}{slug}"


def short_digest(digest: str) -> str:
    """`sha256:0123456789ab` for logs and reasons."""
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}:{hexdigest[:12]}"


class ChildRole(StrEnum):
    PLATFORM = "platform manifest"
    ATTESTATION = "attestation manifest"
    INDEX = "nested index"


@dataclass(frozen=True, slots=True)
class ChildRef:
    """A manifest an image index references (ECR lists it as an untagged image of its own)."""

    digest: str
    role: ChildRole = ChildRole.PLATFORM
    platform: str = ""

    def describe(self) -> str:
        return f"{self.role} {self.platform}".strip() if self.platform else str(self.role)


@dataclass(frozen=True, slots=True)
class Image:
    """One manifest in a repository, as DescribeImages (and BatchGetImage for indexes) show it."""

    digest: str
    pushed_at: datetime
    tags: tuple[str, ...] = ()
    size_bytes: int = 0
    media_type: str = OCI_MANIFEST
    # DescribeImages' artifactMediaType: the config media type of an image manifest.
    config_media_type: str | None = None
    # For an index: the manifests it references, read with BatchGetImage.
    children: tuple[ChildRef, ...] = ()
    # An OCI 1.1 referrer (a signature, an SBOM, an attestation pushed on its own): the
    # image it describes. DescribeImages' subjectManifestDigest, or the manifest's subject.
    subject: str | None = None

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    @property
    def is_cache(self) -> bool:
        return self.config_media_type == BUILDKIT_CACHE_CONFIG

    @property
    def refers_to(self) -> str | None:
        """The image this one describes: its OCI `subject`, or a cosign `sha256-<hex>.sig` tag's."""
        if self.subject is not None:
            return self.subject
        return next((d for d in map(cosign_subject, self.tags) if d is not None), None)

    def build_branches(self) -> frozenset[str]:
        """Slugs of the branches this image was built for, from its `<slug>-<sha[:7]>` tags.

        With a full-sha tag present, only tags ending in that sha's first 7 characters
        count, so a branch named like `fix-1234567` is not mistaken for a build tag.
        """
        shas = [tag for tag in self.tags if FULL_SHA.fullmatch(tag)]
        slugs: set[str] = set()
        if shas:
            for sha in shas:
                suffix = f"-{sha[:7]}"
                slugs.update(
                    tag[: -len(suffix)]
                    for tag in self.tags
                    if tag.endswith(suffix) and len(tag) > len(suffix)
                )
            return frozenset(slugs)
        for tag in self.tags:
            match = BUILD_TAG.fullmatch(tag)
            if match and not tag.startswith(CACHE_TAG_PREFIX):
                slugs.add(match["slug"])
        return frozenset(slugs)


def parse_index_children(manifest: str) -> tuple[ChildRef, ...]:
    """The manifests an image index references; blob entries (old cache formats) are skipped."""
    document = json.loads(manifest)
    children: list[ChildRef] = []
    for entry in document.get("manifests") or []:
        media_type = entry.get("mediaType")
        if media_type is not None and media_type not in MANIFEST_MEDIA_TYPES:
            continue
        annotations = entry.get("annotations") or {}
        platform = entry.get("platform") or {}
        if annotations.get(REFERENCE_TYPE_ANNOTATION) == ATTESTATION_MANIFEST:
            role = ChildRole.ATTESTATION
        elif media_type in INDEX_MEDIA_TYPES:
            role = ChildRole.INDEX
        else:
            role = ChildRole.PLATFORM
        platform_text = "/".join(
            part
            for part in (platform.get("os"), platform.get("architecture"), platform.get("variant"))
            if part
        )
        if role is ChildRole.ATTESTATION:
            platform_text = ""
        children.append(ChildRef(digest=entry["digest"], role=role, platform=platform_text))
    return tuple(children)


def parse_config_media_type(manifest: str) -> str | None:
    """The config media type of an image manifest (None for an index or a v1 manifest)."""
    document = json.loads(manifest)
    config = document.get("config")
    if isinstance(config, dict):
        media_type = config.get("mediaType")
        return str(media_type) if media_type else None
    return None


_COSIGN_TAG = re.compile(r"sha256-(?P<hex>[0-9a-f]{64})\.(?:sig|att|sbom)")


def cosign_subject(tag: str) -> str | None:
    """The image a cosign tag-scheme artifact describes: `sha256-<hex>.sig` -> `sha256:<hex>`."""
    match = _COSIGN_TAG.fullmatch(tag)
    return f"sha256:{match['hex']}" if match else None


def parse_subject(manifest: str) -> str | None:
    """The digest in a manifest's `subject` (OCI 1.1 referrers), or None."""
    subject = json.loads(manifest).get("subject")
    if isinstance(subject, dict) and subject.get("digest"):
        return str(subject["digest"])
    return None
