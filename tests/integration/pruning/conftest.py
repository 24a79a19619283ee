"""moto's ECR made to behave like ECR where the pruner depends on it; builds pushed as buildx does.

moto 5.2 differs from ECR in four ways that matter here (see DESIGN.md); the fixtures fix
each of them:
- BatchDeleteImage does not report deleted untagged images: `ecr_like` reports them.
- DescribeImages returns every image in one page: `ecr_like` pages it as ECR does
  (maxResults 1..1000, default 100, nextToken) and records the page sizes asked for.
- moto deletes a manifest an index still references: `ecr_like` refuses it as ECR does,
  with the failure code ImageReferencedByManifestList, and counts the refusals.
(`ecr_like` installs the kit's models: layercache_dev.kit.moto_ecr.)
- moving a tag deletes the old image when it had no other tag, where ECR leaves it untagged:
  `Registry` moves tags itself, so superseded indexes and cache manifests stay, untagged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ecr.models import ECRBackend, ecr_backends
from moto.ecr.responses import ECRResponse

from layercache.pruning.ecr import EcrRegistry
from layercache.pruning.model import (
    BUILDKIT_CACHE_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    branch_slug,
)
from layercache_dev.kit.functions import fresh_service
from layercache_dev.kit.moto_ecr import (
    EcrCalls,
    ecr_like_batch_delete_image,
    ecr_like_describe_images,
)
from tests.conftest import emitted_metrics

REGION = "us-east-1"
NOW = datetime.now(UTC).replace(microsecond=0)
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
IN_TOTO = "application/vnd.in-toto+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
NOTATION_SIGNATURE = "application/vnd.cncf.notary.signature"
SPDX_SBOM = "application/spdx+json"


def sha256(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def commit_of(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()  # noqa: S324 - a fake git commit id


@pytest.fixture
def ecr_like(monkeypatch: pytest.MonkeyPatch) -> EcrCalls:
    """moto's ECR answering BatchDeleteImage and DescribeImages as ECR; what they saw."""
    seen = EcrCalls()
    monkeypatch.setattr(
        ECRBackend,
        "batch_delete_image",
        ecr_like_batch_delete_image(ECRBackend.batch_delete_image, seen),
    )
    monkeypatch.setattr(
        ECRResponse, "describe_images", ecr_like_describe_images(ECRResponse.describe_images, seen)
    )
    return seen


@dataclass
class Pushed:
    """The manifests of one build: its index and the index's children."""

    index: str
    platforms: list[str]
    attestation: str
    tags: list[str]

    @property
    def digests(self) -> set[str]:
        return {self.index, self.attestation, *self.platforms}


class Registry:
    """Pushes what the build driver pushes, with real OCI manifests, into moto's ECR."""

    def __init__(self, repository: str) -> None:
        self.repository = repository
        self.client = boto3.client("ecr", region_name=REGION)
        self._counter = 0

    # ------------------------------------------------------------ pushing

    def push_build(
        self,
        branch: str,
        name: str,
        *,
        days_ago: float = 30,
        platforms: tuple[str, ...] = ("linux/amd64",),
        latest: bool = False,
        extra_tags: tuple[str, ...] = (),
    ) -> Pushed:
        sha = commit_of(name)
        slug = branch_slug(branch)
        descriptors: list[dict[str, Any]] = []
        platform_digests: list[str] = []
        for platform in platforms:
            os_name, architecture = platform.split("/")[:2]
            manifest = self._image_manifest(f"{name}/{platform}", OCI_CONFIG, OCI_LAYER, 3)
            digest = self._put(manifest, None, days_ago)
            platform_digests.append(digest)
            descriptors.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": len(manifest),
                    "platform": {"architecture": architecture, "os": os_name},
                }
            )
        attestation = self._image_manifest(f"{name}/attestation", OCI_CONFIG, IN_TOTO, 1)
        attestation_digest = self._put(attestation, None, days_ago)
        descriptors.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": attestation_digest,
                "size": len(attestation),
                "annotations": {
                    "vnd.docker.reference.digest": platform_digests[0],
                    "vnd.docker.reference.type": "attestation-manifest",
                },
                "platform": {"architecture": "unknown", "os": "unknown"},
            }
        )
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}, indent=2
        )
        tags = [sha, f"{slug}-{sha[:7]}", *extra_tags, *(["latest"] if latest else []), slug]
        index_digest = self._put(index, tags, days_ago)
        return Pushed(index_digest, platform_digests, attestation_digest, tags)

    def push_cache(self, branch: str, name: str, *, days_ago: float = 30) -> str:
        """A cache export: the new cache manifest takes `cache-<slug>` from the previous one."""
        manifest = self._image_manifest(f"cache/{name}", BUILDKIT_CACHE_CONFIG, OCI_LAYER, 4)
        return self._put(manifest, [f"cache-{branch_slug(branch)}"], days_ago)

    def push_untagged(self, name: str, *, days_ago: float = 30, cache: bool = False) -> str:
        config = BUILDKIT_CACHE_CONFIG if cache else OCI_CONFIG
        return self._put(self._image_manifest(name, config, OCI_LAYER, 2), None, days_ago)

    def push_referrer(
        self,
        subject: str,
        name: str,
        *,
        artifact_type: str = NOTATION_SIGNATURE,
        days_ago: float = 30,
    ) -> str:
        """An OCI 1.1 referrer of `subject`, as Notation or ECR managed signing push one:
        an untagged manifest with an empty config, one layer and `subject`."""
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": artifact_type,
                "config": {"mediaType": OCI_EMPTY, "digest": sha256("{}"), "size": 2},
                "layers": [
                    {"mediaType": "application/jose+json", "digest": sha256(name), "size": 2048}
                ],
                "subject": {"mediaType": OCI_INDEX, "digest": subject, "size": 1024},
            },
            indent=2,
        )
        return self._put(manifest, None, days_ago)

    def push_identical_rebuild(self, index_digest: str) -> str:
        """What an identical rebuild pushes: a new index referencing the same children."""
        manifest = self.client.batch_get_image(
            repositoryName=self.repository, imageIds=[{"imageDigest": index_digest}]
        )["images"][0]["imageManifest"]
        rebuilt = manifest.replace("attestation-manifest", "attestation-manifest ")
        self.client.put_image(
            repositoryName=self.repository,
            imageManifest=rebuilt,
            imageTag="main-rebuilt",
            imageDigest=sha256(rebuilt),
        )
        return sha256(rebuilt)

    def move_tag(self, tag: str, digest: str) -> None:
        """Move `tag` onto `digest`, as a rollback does (PutImage of the same manifest)."""
        manifest = self.client.batch_get_image(
            repositoryName=self.repository,
            imageIds=[{"imageDigest": digest}],
            acceptedMediaTypes=[OCI_INDEX, OCI_MANIFEST],
        )["images"][0]["imageManifest"]
        self._untag_elsewhere(tag, digest)
        self.client.put_image(
            repositoryName=self.repository,
            imageManifest=manifest,
            imageManifestMediaType=json.loads(manifest)["mediaType"],
            imageDigest=digest,
            imageTag=tag,
        )

    def _image_manifest(self, name: str, config_type: str, layer_type: str, layers: int) -> str:
        self._counter += 1
        return json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": config_type,
                    "digest": sha256(f"{name}/config"),
                    "size": 1500,
                },
                "layers": [
                    {"mediaType": layer_type, "digest": sha256(f"{name}/{n}"), "size": 1_000_000}
                    for n in range(layers)
                ],
            },
            indent=2,
        )

    def _put(self, manifest: str, tags: list[str] | None, days_ago: float) -> str:
        digest = sha256(manifest)
        media_type = json.loads(manifest)["mediaType"]
        arguments: dict[str, Any] = {
            "repositoryName": self.repository,
            "imageManifest": manifest,
            "imageManifestMediaType": media_type,
            "imageDigest": digest,
        }
        if not tags:
            self.client.put_image(**arguments)
        for tag in tags or []:
            self._untag_elsewhere(tag, digest)
            self.client.put_image(**arguments, imageTag=tag)
        self.set_pushed_at(digest, NOW - timedelta(days=days_ago))
        return digest

    # ------------------------------------------------------------ ECR's behaviour moto lacks

    def _images(self) -> list[Any]:
        backend = ecr_backends[DEFAULT_ACCOUNT_ID][REGION]
        return list(backend.repositories[self.repository].images)

    def _untag_elsewhere(self, tag: str, digest: str) -> None:
        """ECR moves a tag and leaves the image it left, even untagged; moto would delete it."""
        for image in self._images():
            if tag in image.image_tags and image.image_digest != digest:
                image.image_tags.remove(tag)
                image.image_tag = image.image_tags[-1] if image.image_tags else None

    def set_pushed_at(self, digest: str, when: datetime) -> None:
        for image in self._images():
            if image.image_digest == digest:
                image.image_pushed_at = int(when.timestamp())

    # ------------------------------------------------------------ reading back

    def digests(self) -> set[str]:
        return {image.image_digest for image in self._images()}

    def tags_of(self, digest: str) -> list[str]:
        return next(list(i.image_tags) for i in self._images() if i.image_digest == digest)


@pytest.fixture
def registry(stack: Any) -> Registry:
    return Registry(stack.repository_name)


# ---------------------------------------------------------------- the function and its output

PRUNER_FUNCTION = "ImagePrunerFunction"
EVENTS = Path(__file__).resolve().parents[3] / "events" / "image-pruner"
PrunerHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


@pytest.fixture
def pruner_handler() -> Iterator[PrunerHandler]:
    """ImagePrunerFunction's handler, by the template's Handler string, with a fresh service."""
    with fresh_service(PRUNER_FUNCTION) as handler:
        yield handler


def sample(name: str) -> dict[str, Any]:
    """A sample event of events/image-pruner/."""
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def emf_metrics(output: str) -> dict[str, float]:
    """Metric name -> value, summed over the EMF records a run printed."""
    metrics: dict[str, float] = {}
    for record in emitted_metrics(output):
        for definition in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            value = record[definition["Name"]]
            metrics[definition["Name"]] = sum(value) if isinstance(value, list) else value
    return metrics


def refuse_deleting(
    monkeypatch: pytest.MonkeyPatch, ecr: EcrRegistry, digest: str, code: str = "KmsError"
) -> None:
    """Make BatchDeleteImage refuse `digest` every time, and delete the others as usual."""
    real = ecr._client.batch_delete_image

    def refusing(**arguments: Any) -> dict[str, Any]:
        ids = [i for i in arguments["imageIds"] if i["imageDigest"] != digest]
        response: dict[str, Any] = (
            real(**{**arguments, "imageIds": ids}) if ids else {"imageIds": [], "failures": []}
        )
        if len(ids) < len(arguments["imageIds"]):
            failure = {"failureCode": code, "failureReason": "The KMS key is not enabled"}
            response["failures"].append({"imageId": {"imageDigest": digest}, **failure})
        return response

    monkeypatch.setattr(ecr._client, "batch_delete_image", refusing)
