"""A multi-platform batch on a real registry and BuildKit, through the real buildspec.

On CodeBuild a request for several platforms is one batch (starting/platforms.py): one
build per platform, each on a host of its architecture, then the join, which puts the
platform images together in one index. Here the batch is played on one machine: the
linux/arm64 build runs its RUN steps under qemu (`.ci/setup-docker` registers it), each
platform's build on an emptied builder as on a fresh host, and every build of a batch
with the same LAYERCACHE_REQUEST_ID. The images start from the rig's multi-platform
base (`Rig.write_platforms_context`), and a RUN step writes `uname -m`, so each
platform's layer tells which architecture ran it.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from layercache_dev.kit import prerequisites
from layercache_dev.kit.buildspec import BuildOutcome
from layercache_dev.kit.prerequisites import missing_emulation_prerequisites
from layercache_dev.kit.registry import BlobTransfer, RegistryTraffic, parse_registry_log
from layercache_dev.kit.rig import Rig
from tests.conftest import require

pytestmark = pytest.mark.docker

PLATFORMS = ("linux/amd64", "linux/arm64")
ARCH = {"linux/amd64": "amd64", "linux/arm64": "arm64"}
UNAME = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
# A dependency step whose layer differs per architecture (`uname -m`), the source, and
# a step after it. Small layers: the arm64 steps run under emulation.
DOCKERFILE = """\
FROM {base}
RUN uname -m > /arch && head -c 262144 /dev/urandom > /deps.bin
COPY src/ /src/
RUN cat /arch /src/app.txt > /app.txt
"""
STEPS = 3
ATTESTATION_BYTES = 16 * 1024
BAKE_FILE_NAME = "docker-bake.hcl"
BAKE_FILE = """\
group "default" {
  targets = ["api", "worker"]
}
target "api" {
  context = "api"
}
target "worker" {
  context = "worker"
}
"""
BAKE_TARGETS = ("api", "worker")
BAKE_DOCKERFILE = """\
FROM {base}
RUN uname -m > /arch && head -c 131072 /dev/urandom > /own.bin
COPY src/ /src/
"""


def require_emulation() -> None:
    """Skip without linux/arm64 emulation, with the reason; under
    LAYERCACHE_REQUIRE_DOCKER=1 (CI) a missing piece fails the test instead."""
    require("docker tier, linux/arm64", missing_emulation_prerequisites())


def test_missing_emulation_is_named_and_fails_the_required_tier(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(prerequisites, "ARM64_BUSYBOX", tmp_path / "busybox-arm64")
    monkeypatch.setattr(prerequisites, "BINFMT_MISC", tmp_path / "binfmt_misc")

    missing = missing_emulation_prerequisites()

    assert f"binfmt_misc is not mounted at {tmp_path / 'binfmt_misc'}" in missing
    assert f"no arm64 static busybox at {tmp_path / 'busybox-arm64'}" in missing
    monkeypatch.setenv("LAYERCACHE_REQUIRE_DOCKER", "1")
    with pytest.raises(pytest.fail.Exception, match="no arm64 static busybox"):
        require_emulation()
    monkeypatch.delenv("LAYERCACHE_REQUIRE_DOCKER")
    with pytest.raises(pytest.skip.Exception, match="binfmt_misc is not mounted"):
        require_emulation()


@pytest.fixture(scope="module")
def platforms_rig(rig: Rig) -> Rig:
    """The rig, able to build linux/arm64, with its multi-platform base pushed."""
    require_emulation()
    rig.push_platforms_base_image()
    return rig


# ---------------------------------------------------------------- one batch


@dataclass
class Batch:
    """One multi-platform request played as CodeBuild's batch plays it."""

    request_id: str
    platforms: dict[str, BuildOutcome]  # platform -> its build
    join: BuildOutcome
    marks: dict[str, tuple[int, int]]  # platform -> registry log span of its build


def assert_ok(outcome: BuildOutcome) -> None:
    assert outcome.ok, outcome.log[-4000:]


def run_batch(
    rig: Rig,
    context: Path,
    *,
    repository: str,
    cache_repository: str,
    commit: str,
    extra: dict[str, str] | None = None,
) -> Batch:
    """Each platform's build on an emptied builder, then the join, with one request id."""
    request_id = uuid.uuid4().hex
    common = {
        "LAYERCACHE_REQUEST_ID": request_id,
        "LAYERCACHE_CACHE_REPOSITORY_URI": cache_repository,
        **(extra or {}),
    }
    outcomes: dict[str, BuildOutcome] = {}
    marks: dict[str, tuple[int, int]] = {}
    for platform in PLATFORMS:
        start = rig.registry.mark()
        outcome = rig.build(
            context,
            repository=repository,
            branch="main",
            commit=commit,
            extra_env={**common, "LAYERCACHE_PLATFORM": platform},
        )
        assert_ok(outcome)
        outcomes[platform] = outcome
        marks[platform] = (start, rig.registry.mark())
    join = rig.build(
        context,
        repository=repository,
        branch="main",
        commit=commit,
        extra_env={**common, "LAYERCACHE_JOIN_PLATFORMS": ",".join(PLATFORMS)},
        reset=False,  # the join builds nothing
    )
    assert_ok(join)
    return Batch(request_id, outcomes, join, marks)


def traffic_between(rig: Rig, span: tuple[int, int]) -> RegistryTraffic:
    """The registry's blob traffic within one span of its log."""
    start, end = span
    with rig.registry.log_path.open("rb") as log:
        log.seek(start)
        text = log.read(end - start).decode("utf-8", "replace")
    return parse_registry_log(
        text.splitlines(), rig.registry.blob_size, rig.registry.layer_digests()
    )


def moved_layers(rig: Rig, traffic: RegistryTraffic) -> list[BlobTransfer]:
    """Image and cache layers that went down or up: not a build's provenance attestation
    (a new one, a kilobyte or so, with every build)."""
    attestations = attestation_layers(rig)
    return [
        blob
        for blob in traffic.layer_downloads + traffic.uploads
        if blob.digest in traffic.layer_digests and blob.digest not in attestations
    ]


def attestation_layers(rig: Rig) -> set[str]:
    """The layers of every attestation manifest the registry stores (in-toto statements)."""
    found = set()
    for data in rig.registry.stored_blobs().values():
        if data.stat().st_size > 64 * 1024:
            continue
        try:
            manifest = json.loads(data.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(manifest, dict):
            found |= {
                str(layer.get("digest"))
                for layer in manifest.get("layers") or []
                if str(layer.get("mediaType", "")).startswith("application/vnd.in-toto")
            }
    return found


# ---------------------------------------------------------------- reading the registry


def name_of(repository: str) -> str:
    return repository.split("/", 1)[1]


def manifest_of(rig: Rig, name: str, reference: str) -> dict[str, Any]:
    manifest = rig.registry.manifest(name, reference)
    assert manifest is not None, f"no manifest {name}:{reference}"
    return manifest


def platform_entries(index: dict[str, Any]) -> dict[str, str]:
    """An index's image manifests by platform (`linux/arm64` -> digest); attestation
    manifests (platform unknown/unknown) left out."""
    entries = {}
    for entry in index["manifests"]:
        platform = entry.get("platform", {})
        if platform.get("os") in (None, "unknown"):
            continue
        entries[f"{platform['os']}/{platform['architecture']}"] = entry["digest"]
    return entries


def image_manifest(rig: Rig, name: str, digest: str) -> dict[str, Any]:
    """The image manifest `digest` names: itself, or an index's one image manifest."""
    manifest = manifest_of(rig, name, digest)
    if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
        (only,) = platform_entries(manifest).values()
        manifest = manifest_of(rig, name, only)
    return manifest


def file_in_image(rig: Rig, manifest: dict[str, Any], path: str) -> str:
    """The text of `path` in an image, read from its layers in the registry's storage."""
    member_name = path.lstrip("/")
    for layer in reversed(manifest["layers"]):
        with tarfile.open(rig.registry.blob_path(layer["digest"])) as tar:
            try:
                member = tar.extractfile(member_name)
            except KeyError:
                continue
            if member is not None:
                return member.read().decode()
    raise AssertionError(f"{path} is in no layer of the image")


def raw_digest(rig: Rig, name: str, reference: str) -> str:
    """sha256 of the manifest's bytes as the registry serves them."""
    status, body, _ = rig.registry.request(
        "GET",
        f"/v2/{name}/manifests/{reference}",
        "application/vnd.oci.image.index.v1+json,"
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
    assert status == 200
    return "sha256:" + hashlib.sha256(body).hexdigest()


# ---------------------------------------------------------------- one image


COMMIT = hashlib.sha1(b"platforms commit 1").hexdigest()  # noqa: S324
IMAGE = "platforms/app"
CACHE = "platforms/app-cache"


@pytest.fixture(scope="module")
def image_context(platforms_rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return platforms_rig.write_platforms_context(
        tmp_path_factory.mktemp("platforms-ctx"), DOCKERFILE, {"src/app.txt": "app v1\n"}
    )


@pytest.fixture(scope="module")
def first_batch(platforms_rig: Rig, image_context: Path) -> Batch:
    return run_batch(
        platforms_rig,
        image_context,
        repository=platforms_rig.repository(IMAGE),
        cache_repository=platforms_rig.repository(CACHE),
        commit=COMMIT,
    )


def test_each_platform_builds_its_own_image_under_its_own_tag(
    platforms_rig: Rig, first_batch: Batch
) -> None:
    rig, part = platforms_rig, first_batch.request_id[:8]
    for platform, outcome in first_batch.platforms.items():
        tag = f"{COMMIT}-{ARCH[platform]}-{part}"
        variables = outcome.variables
        assert variables["LAYERCACHE_IMAGE_TAGS"] == tag
        assert variables["LAYERCACHE_IMAGE_DIGEST"] == rig.registry.digest(IMAGE, tag)
        assert variables["LAYERCACHE_PLATFORMS"] == platform
        assert "LAYERCACHE_MOVING_TAGS" not in variables  # the join's to export
        assert f"--platform {platform}" in outcome.log
        assert variables["LAYERCACHE_TOTAL_STEPS"] == str(STEPS)
        assert variables["LAYERCACHE_CACHE_STATUS"] == "cold"
        manifest = image_manifest(rig, IMAGE, tag)
        assert file_in_image(rig, manifest, "/arch") == UNAME[platform] + "\n"
        assert file_in_image(rig, manifest, "/app.txt") == f"{UNAME[platform]}\napp v1\n"
    # The platform tags and the join's build tags: no moving tag (the recorder's), no
    # cache ref (those are in the cache repository).
    assert set(rig.registry.tags(IMAGE)) == {
        f"{COMMIT}-amd64-{part}",
        f"{COMMIT}-arm64-{part}",
        COMMIT,
        f"main-{COMMIT[:7]}",
    }


def test_each_platform_exports_its_own_cache_ref_to_the_cache_repository(
    platforms_rig: Rig, first_batch: Batch
) -> None:
    rig = platforms_rig
    assert set(rig.registry.tags(CACHE)) == {"cache-main-amd64", "cache-main-arm64"}
    for platform, outcome in first_batch.platforms.items():
        ref = f"{rig.repository(CACHE)}:cache-main-{ARCH[platform]}"
        assert f"type=registry,ref={ref}," in outcome.log  # its --cache-to
        cache = manifest_of(rig, CACHE, f"cache-main-{ARCH[platform]}")
        assert cache["config"]["mediaType"] == "application/vnd.buildkit.cacheconfig.v0"
        image = image_manifest(rig, IMAGE, outcome.variables["LAYERCACHE_IMAGE_DIGEST"])
        cached_layers = {layer["digest"] for layer in cache["layers"]}
        # The platform's own layers (every one but the base's) are in its cache.
        assert {layer["digest"] for layer in image["layers"][1:]} <= cached_layers


def test_the_join_writes_one_index_of_both_platforms_under_the_build_tags(
    platforms_rig: Rig, first_batch: Batch
) -> None:
    rig, join = platforms_rig, first_batch.join
    index = manifest_of(rig, IMAGE, COMMIT)
    assert index["mediaType"] in INDEX_TYPES
    entries = platform_entries(index)
    assert set(entries) == set(PLATFORMS)
    for platform, digest in entries.items():
        manifest = manifest_of(rig, IMAGE, digest)
        assert file_in_image(rig, manifest, "/arch") == UNAME[platform] + "\n"
        # The very manifest the platform's build pushed: the join copied no layer.
        built = first_batch.platforms[platform].variables["LAYERCACHE_IMAGE_DIGEST"]
        assert image_manifest(rig, IMAGE, built) == manifest

    variables = join.variables
    digest = variables["LAYERCACHE_IMAGE_DIGEST"]
    assert digest == rig.registry.digest(IMAGE, COMMIT) == raw_digest(rig, IMAGE, COMMIT)
    assert rig.registry.digest(IMAGE, f"main-{COMMIT[:7]}") == digest
    assert variables["LAYERCACHE_IMAGE_TAGS"].split(",") == [COMMIT, f"main-{COMMIT[:7]}"]
    assert variables["LAYERCACHE_MOVING_TAGS"].split(",") == ["main", "latest"]
    assert variables["LAYERCACHE_PLATFORMS"].split(",") == list(PLATFORMS)
    assert "main" not in rig.registry.tags(IMAGE)  # moving tags are the recorder's


def test_an_unchanged_rebuild_is_all_cache_on_each_platform_and_moves_no_layer(
    platforms_rig: Rig, image_context: Path, first_batch: Batch
) -> None:
    """A re-run of the same commit (a new request): each platform on an emptied builder
    takes every step from its own cache, the join writes a new index of the same
    platform images under a tag of its own, and `<commit>` stays on the first index."""
    rig = platforms_rig
    first_index = first_batch.join.variables["LAYERCACHE_IMAGE_DIGEST"]

    again = run_batch(
        rig,
        image_context,
        repository=rig.repository(IMAGE),
        cache_repository=rig.repository(CACHE),
        commit=COMMIT,
    )

    part = again.request_id[:8]
    for platform, outcome in again.platforms.items():
        variables = outcome.variables
        assert variables["LAYERCACHE_CACHE_HIT_RATIO"] == "1.000", outcome.report["steps"]
        assert variables["LAYERCACHE_CACHED_STEPS"] == str(STEPS)
        assert variables["LAYERCACHE_CACHE_STATUS"] == "warm"
        assert variables["LAYERCACHE_CACHE_REF_HIT"] == (
            f"{rig.repository(CACHE)}:cache-main-{ARCH[platform]}"
        )
        assert variables["LAYERCACHE_IMAGE_TAGS"] == f"{COMMIT}-{ARCH[platform]}-{part}"
        traffic = traffic_between(rig, again.marks[platform])
        assert moved_layers(rig, traffic) == [], moved_layers(rig, traffic)
        assert traffic.uploaded_bytes < ATTESTATION_BYTES  # configs, its attestation
        assert traffic.downloaded_bytes < ATTESTATION_BYTES  # manifests' configs

    join = again.join.variables
    index_tag = f"{COMMIT}-index-{part}"
    assert join["LAYERCACHE_IMAGE_TAGS"] == index_tag  # the build tags are written once
    assert join["LAYERCACHE_IMAGE_DIGEST"] == rig.registry.digest(IMAGE, index_tag)
    assert join["LAYERCACHE_MOVING_TAGS"].split(",") == ["main", "latest"]
    assert rig.registry.digest(IMAGE, COMMIT) == first_index
    first_entries = platform_entries(manifest_of(rig, IMAGE, first_index))
    new_entries = platform_entries(manifest_of(rig, IMAGE, index_tag))
    assert set(new_entries) == set(PLATFORMS)
    for platform in PLATFORMS:
        # Every step cached: the very same image manifest (layers, config) as before.
        assert new_entries[platform] == first_entries[platform]
        assert file_in_image(rig, manifest_of(rig, IMAGE, new_entries[platform]), "/arch") == (
            UNAME[platform] + "\n"
        )


def test_a_new_branch_starts_warm_from_the_default_branch_cache_of_its_platform(
    platforms_rig: Rig, image_context: Path, first_batch: Batch
) -> None:
    rig = platforms_rig
    commit = hashlib.sha1(b"platforms commit on a branch").hexdigest()  # noqa: S324

    outcome = rig.build(
        image_context,
        repository=rig.repository(IMAGE),
        branch="feature-x",
        commit=commit,
        extra_env={
            "LAYERCACHE_REQUEST_ID": uuid.uuid4().hex,
            "LAYERCACHE_CACHE_REPOSITORY_URI": rig.repository(CACHE),
            "LAYERCACHE_PLATFORM": "linux/arm64",
        },
    )

    assert_ok(outcome)
    assert outcome.variables["LAYERCACHE_CACHE_HIT_RATIO"] == "1.000"
    assert outcome.variables["LAYERCACHE_CACHE_REF_HIT"] == (
        f"{rig.repository(CACHE)}:cache-main-arm64"
    )
    assert rig.registry.digest(CACHE, "cache-feature-x-arm64") is not None
    assert rig.registry.digest(CACHE, "cache-feature-x-amd64") is None


# ---------------------------------------------------------------- a Bake file


BAKE_COMMIT = hashlib.sha1(b"platforms bake commit 1").hexdigest()  # noqa: S324
BAKE_PREFIX = "platforms-mono"


def test_a_bake_file_gets_one_index_per_image(platforms_rig: Rig, tmp_path: Path) -> None:
    rig = platforms_rig
    root = tmp_path / "mono"
    (root).mkdir()
    (root / BAKE_FILE_NAME).write_text(BAKE_FILE)
    for target in BAKE_TARGETS:
        rig.write_platforms_context(
            root / target, BAKE_DOCKERFILE, {"src/main.txt": f"{target} v1\n"}
        )

    batch = run_batch(
        rig,
        root,
        repository=rig.repository(BAKE_PREFIX),
        cache_repository=rig.repository(f"{BAKE_PREFIX}-cache"),
        commit=BAKE_COMMIT,
        extra={"LAYERCACHE_BAKE_FILE": BAKE_FILE_NAME, "LAYERCACHE_BAKE_TARGETS": ""},
    )

    part = batch.request_id[:8]
    for platform, outcome in batch.platforms.items():
        results = {r["image"]: r for r in json.loads(outcome.variables["LAYERCACHE_IMAGES"])}
        assert set(results) == set(BAKE_TARGETS)
        for target, result in results.items():
            tag = f"{BAKE_COMMIT}-{ARCH[platform]}-{part}"
            assert result["tags"] == [tag]
            # Built for its platform: its RUN step ran as that architecture.
            manifest = image_manifest(rig, f"{BAKE_PREFIX}/{target}", tag)
            assert file_in_image(rig, manifest, "/arch") == UNAME[platform] + "\n", (
                f"{target}'s {platform} build is not a {platform} image"
            )
            cache = f"{BAKE_PREFIX}-cache/{target}"
            assert rig.registry.digest(cache, f"cache-main-{ARCH[platform]}") is not None
    joined = {r["image"]: r for r in json.loads(batch.join.variables["LAYERCACHE_IMAGES"])}
    assert set(joined) == set(BAKE_TARGETS)
    for target, result in joined.items():
        name = f"{BAKE_PREFIX}/{target}"
        assert result["repository"] == rig.repository(name)
        assert result["tags"] == [BAKE_COMMIT, f"main-{BAKE_COMMIT[:7]}"]
        assert result["moving_tags"] == ["main", "latest"]
        assert result["platforms"] == list(PLATFORMS)
        assert result["digest"] == rig.registry.digest(name, BAKE_COMMIT)
        index = manifest_of(rig, name, BAKE_COMMIT)
        assert index["mediaType"] in INDEX_TYPES
        entries = platform_entries(index)
        assert set(entries) == set(PLATFORMS)
        for platform, digest in entries.items():
            manifest = manifest_of(rig, name, digest)
            assert file_in_image(rig, manifest, "/arch") == UNAME[platform] + "\n"
            assert file_in_image(rig, manifest, "/src/main.txt") == f"{target} v1\n"
    assert batch.join.variables["LAYERCACHE_MOVING_TAGS"] == "main,latest"
    assert batch.join.variables["LAYERCACHE_PLATFORMS"] == ",".join(PLATFORMS)
