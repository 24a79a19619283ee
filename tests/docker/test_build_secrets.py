"""Build secrets through the real buildspec and driver, on a real registry and BuildKit.

A secret (`LAYERCACHE_BUILD_SECRETS` names it, `LAYERCACHE_SECRET_1` holds its value, as
CodeBuild fills it from Secrets Manager) reaches the `RUN --mount=type=secret` steps, and
its value is in nothing the registry stored (every blob of every repository: image
layers, configs, manifests, attestations and the mode=max cache in the cache repository,
decompressed, tar members read), nor in the build log or the exported variables.

The negative control passes the same kind of value the wrong way, as a build-arg a RUN
uses, and the same search finds it in the cache blobs: the search can fail.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import importlib
import io
import itertools
import json
import lzma
import secrets
import shutil
import subprocess
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from layercache_dev.kit.buildspec import BuildOutcome, report_path, run_buildspec
from layercache_dev.kit.paths import BUILDSPEC
from layercache_dev.kit.registry import Registry
from layercache_dev.kit.rig import Rig

pytestmark = pytest.mark.docker

SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ci/token-AbCdEf"
SECRET_VALUE_VARIABLE = "LAYERCACHE_SECRET_1"  # where CodeBuild puts the value
BRANCH = "main"
# The builder stage reads the secret and keeps only its sum (beside some bytes of its
# own, so its layer is the cache's alone), which the final stage copies; the final stage
# mounts it too and keeps only its length. Neither writes the value.
DOCKERFILE = """\
FROM {base} AS builder
RUN --mount=type=secret,id=token,required=true \\
    test -s /run/secrets/token && sha256sum /run/secrets/token > /token.sum \\
    && head -c 4096 /dev/urandom > /builder.bin

FROM {base}
COPY --from=builder /token.sum /token.sum
RUN --mount=type=secret,id=token,required=true wc -c < /run/secrets/token > /token.len
"""
# The wrong way: a build-arg that a RUN of the builder stage writes into its layer.
LEAKY_DOCKERFILE = """\
FROM {base} AS builder
ARG TOKEN
RUN echo "$TOKEN" > /leak && sha256sum /leak > /leak.sum

FROM {base}
COPY --from=builder /leak.sum /leak.sum
"""
BAKE_FILE = """\
group "default" {
  targets = ["app"]
}
target "app" {
  context = "app"
}
"""
DRIVER_COMMAND = 'python3 "$LAYERCACHE_DRIVER_DIR/build_driver.py"'
_commits = itertools.count(1)


def new_commit() -> str:
    return hashlib.sha1(f"secrets commit {next(_commits)}".encode()).hexdigest()  # noqa: S324


def secret_env(value: str) -> dict[str, str]:
    """What CodeBuild gives a build of a stack with BuildSecrets `token=<ARN>`."""
    return {"LAYERCACHE_BUILD_SECRETS": f"token={SECRET_ARN}", SECRET_VALUE_VARIABLE: value}


# ---------------------------------------------------------------- the search


class UnreadableBlobError(AssertionError):
    """A blob the search cannot read, so it cannot say the value is not in it."""


def needles(value: str) -> tuple[bytes, ...]:
    """The value as bytes, and as the part of its base64 that does not depend on what
    precedes or follows it, at each of the three alignments."""
    raw = value.encode()
    found = [raw]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)
        start = -(-shift * 8 // 6)  # the first character made of the value's bits only
        end = (shift + len(raw)) * 8 // 6  # the characters made of its bits only
        found.append(encoded[start:end])
    return tuple(found)


GZIP_MAGIC = b"\x1f\x8b\x08"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
BZIP2_MAGIC = b"BZh"
LZ4_MAGIC = b"\x04\x22\x4d\x18"


def compression_of(data: bytes) -> str:
    """The compression `data` starts with (its magic bytes), or "" for none known."""
    if data.startswith(GZIP_MAGIC):
        return "gzip"
    if data.startswith(ZSTD_MAGIC):
        return "zstd"
    if data.startswith(XZ_MAGIC):
        return "xz"
    if data.startswith(BZIP2_MAGIC) and data[3:4].isdigit() and data[4:10] == b"1AY&SY":
        return "bzip2"
    if data.startswith(LZ4_MAGIC):
        return "lz4"
    return ""


def zstd_decompress(data: bytes, where: str) -> bytes:
    try:
        zstandard: Any = importlib.import_module("zstandard")
    except ImportError:
        zstd = shutil.which("zstd")
        if zstd is None:
            raise UnreadableBlobError(
                f"{where} is zstd-compressed and neither the zstandard module nor the zstd "
                "command is here to read it"
            ) from None
        result = subprocess.run(
            [zstd, "--decompress", "--stdout", "--quiet"], input=data, capture_output=True
        )
        if result.returncode != 0:
            raise UnreadableBlobError(
                f"{where}: zstd could not read it: {result.stderr[-300:]!r}"
            ) from None
        return result.stdout
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
        return bytes(reader.read())


def decompress(data: bytes, compression: str, where: str) -> bytes:
    try:
        if compression == "gzip":
            return gzip.decompress(data)
        if compression == "xz":
            return lzma.decompress(data)
        if compression == "bzip2":
            return bz2.decompress(data)
    except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as error:
        raise UnreadableBlobError(f"{where}: not readable as {compression}: {error}") from None
    if compression == "zstd":
        return zstd_decompress(data, where)
    raise UnreadableBlobError(f"{where} is {compression}-compressed: this search cannot read it")


def is_tar(data: bytes) -> bool:
    return data[257:262] == b"ustar"


def media_type_compression(media_type: str) -> str | None:
    """What a layer's media type says its blob is compressed with ("" for none), or None
    if it is no tar layer (configs, attestations): read raw."""
    if "tar" not in media_type.split("/")[-1]:
        return None
    suffix = media_type.rsplit("tar", 1)[1]
    known = {"": "", "+gzip": "gzip", ".gzip": "gzip", "+zstd": "zstd", ".zstd": "zstd"}
    if suffix not in known:
        raise UnreadableBlobError(f"a layer media type this search cannot read: {media_type}")
    return known[suffix]


@dataclass
class Search:
    """Where the value (any of `needles`) is found, in everything handed to it."""

    needles: tuple[bytes, ...]
    hits: list[str] = field(default_factory=list)
    hit_blobs: set[str] = field(default_factory=set)
    blobs: int = 0
    unpacked: set[str] = field(default_factory=set)  # blobs decompressed or read as tar
    unpacked_bytes: int = 0

    def data(self, data: bytes, where: str, depth: int = 0) -> bool:
        """Search `data`, what it decompresses to and, if a tar, each member; True if found."""
        found = any(needle in data for needle in self.needles)
        if found:
            self.hits.append(where)
        compression = compression_of(data)
        if compression and depth < 4:
            inner = decompress(data, compression, where)
            self.unpacked_bytes += len(inner)
            found |= self.data(inner, f"{where} ({compression})", depth + 1)
        elif is_tar(data) and depth < 4:
            found |= self.tar(data, where, depth)
        return found

    def tar(self, data: bytes, where: str, depth: int) -> bool:
        found = False
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
                for member in archive:
                    place = f"{where} member {member.name}"
                    headers = " ".join(
                        [member.name, member.linkname, member.uname, member.gname]
                        + [f"{key}={text}" for key, text in member.pax_headers.items()]
                    )
                    found |= self.data(headers.encode(), f"{place} (headers)", depth + 1)
                    content = archive.extractfile(member) if member.isfile() else None
                    if content is not None:
                        found |= self.data(content.read(), place, depth + 1)
        except tarfile.TarError as error:
            raise UnreadableBlobError(f"{where}: looks like a tar but is not: {error}") from None
        return found

    def registry(self, registry: Registry) -> None:
        """Every file of the registry's storage (each blob, decompressed and unpacked, and
        the repositories' links and any upload left over), and its log."""
        blobs = registry.stored_blobs()
        expected = self.layer_compressions(blobs)
        for digest, path in blobs.items():
            data = path.read_bytes()
            compression = compression_of(data)
            if digest in expected and expected[digest] != compression:
                raise UnreadableBlobError(
                    f"blob {digest}: a manifest says {expected[digest] or 'uncompressed'}, "
                    f"its bytes say {compression or 'uncompressed'}"
                )
            self.blobs += 1
            if compression or is_tar(data):
                self.unpacked.add(digest)
            if self.data(data, f"blob {digest}"):
                self.hit_blobs.add(digest)
        blob_files = set(blobs.values())
        for path in sorted(registry.root.rglob("*")):
            if path.is_file() and path not in blob_files:
                self.data(path.read_bytes(), f"registry file {path.relative_to(registry.root)}")
        self.data(registry.log_path.read_bytes(), "registry log")

    @staticmethod
    def layer_compressions(blobs: Mapping[str, Path]) -> dict[str, str]:
        """Each tar layer any stored manifest names: digest -> its media type's compression."""
        compressions: dict[str, str] = {}
        for path in blobs.values():
            if path.stat().st_size > 4 * 1024 * 1024:
                continue  # manifests are small
            try:
                document = json.loads(path.read_bytes())
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if not isinstance(document, dict):
                continue
            for layer in document.get("layers") or []:
                if isinstance(layer, dict) and "mediaType" in layer:
                    compression = media_type_compression(str(layer["mediaType"]))
                    if compression is not None:
                        compressions[str(layer["digest"])] = compression
        return compressions

    def run(self, outcome: BuildOutcome, run_dir: Path) -> None:
        """The complete build log, and every file of the run: the exported variables, the
        driver's export file and its report."""
        self.data(outcome.log.encode(), "build log")
        for path in sorted(run_dir.rglob("*")):
            if path.is_file():
                self.data(path.read_bytes(), f"run file {path.name}")


def search_everything(value: str, rig: Rig, outcome: BuildOutcome, run_dir: Path) -> Search:
    search = Search(needles(value))
    search.registry(rig.registry)
    search.run(outcome, run_dir)
    return search


# ---------------------------------------------------------------- builds and images


@dataclass
class Build:
    outcome: BuildOutcome
    run_dir: Path


def run_build(
    rig: Rig,
    context: Path,
    run_dir: Path,
    *,
    repository: str,
    extra_env: Mapping[str, str],
    buildspec: Path = BUILDSPEC,
) -> Build:
    """One buildspec run on an emptied builder, as `Rig.build` does, with its run folder
    (exported variables, export file, report) where the test can read all of it."""
    rig.reset_builder()
    run_dir.mkdir(parents=True)
    env = rig.build_env(
        context,
        extra={
            "TMPDIR": str(run_dir),
            "LAYERCACHE_REPORT_FILE": str(report_path(run_dir)),
            **extra_env,
        },
        repository=repository,
        branch=BRANCH,
        commit=new_commit(),
    )
    outcome = run_buildspec(context, env, run_dir, buildspec_path=buildspec)
    assert outcome.ok, outcome.log[-4000:]
    assert (run_dir / "exported").is_file()
    return Build(outcome, run_dir)


def repository_name(request: pytest.FixtureRequest) -> str:
    """A repository of the test's own: `secrets/<test name>`."""
    return f"secrets/{request.node.name.lower().replace('_', '-')[:50]}"


def platform_manifest(registry: Registry, name: str, reference: str) -> dict[str, Any]:
    """The image manifest `reference` names; of an index, its one platform's (not the
    attestation's, whose platform is unknown)."""
    manifest = registry.manifest(name, reference)
    assert manifest is not None, f"{name}@{reference}"
    if "manifests" in manifest:
        images = [
            entry
            for entry in manifest["manifests"]
            if entry.get("platform", {}).get("os", "unknown") != "unknown"
        ]
        assert len(images) == 1, manifest
        manifest = registry.manifest(name, images[0]["digest"])
        assert manifest is not None
    return manifest


def image_file(registry: Registry, name: str, reference: str, member: str) -> bytes:
    """The file `member` of the image, read from its topmost layer that holds it."""
    manifest = platform_manifest(registry, name, reference)
    for layer in reversed(manifest["layers"]):
        data = registry.blob_path(layer["digest"]).read_bytes()
        if compression := compression_of(data):
            data = decompress(data, compression, layer["digest"])
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for entry in archive:
                if entry.name.lstrip("./") == member and entry.isfile():
                    content = archive.extractfile(entry)
                    assert content is not None
                    return content.read()
    raise AssertionError(f"no {member} in {name}@{reference}")


def cache_export(registry: Registry, cache_name: str) -> tuple[set[str], str]:
    """The branch's cache manifest in `cache_name`: its layers and its cache config."""
    cache = registry.manifest(cache_name, f"cache-{BRANCH}")
    assert cache is not None, f"no {cache_name}:cache-{BRANCH}"
    assert cache["config"]["mediaType"] == "application/vnd.buildkit.cacheconfig.v0"
    return {layer["digest"] for layer in cache["layers"]}, str(cache["config"]["digest"])


def assert_secret_was_read(registry: Registry, name: str, reference: str, value: str) -> None:
    """The build read the secret: the image holds its sum and its length, not the value."""
    expected = f"{hashlib.sha256(value.encode()).hexdigest()}  /run/secrets/token\n"
    assert image_file(registry, name, reference, "token.sum").decode() == expected
    assert image_file(registry, name, reference, "token.len").decode().strip() == str(len(value))


def assert_found_nowhere(search: Search) -> None:
    assert search.hits == [], f"the secret's value leaked into: {search.hits}"


# ---------------------------------------------------------------- the tests


def test_secret_reaches_the_build_and_nothing_stored_logged_or_exported(
    rig: Rig, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    value = secrets.token_hex(16)
    name = repository_name(request)
    cache_name = f"{name}-cache"
    context = rig.write_context(tmp_path / "ctx", DOCKERFILE)

    build = run_build(
        rig,
        context,
        tmp_path / "run",
        repository=rig.repository(name),
        extra_env={
            **secret_env(value),
            "LAYERCACHE_CACHE_REPOSITORY_URI": rig.repository(cache_name),
        },
    )

    variables = build.outcome.variables
    assert variables["LAYERCACHE_CACHE_STATUS"] == "cold"  # built, cache exported
    assert f"cache-{BRANCH}" in rig.registry.tags(cache_name)
    assert f"cache-{BRANCH}" not in rig.registry.tags(name)  # the cache has its own repository
    digest = variables["LAYERCACHE_IMAGE_DIGEST"]
    assert_secret_was_read(rig.registry, name, digest, value)
    assert f"--secret id=token,env={SECRET_VALUE_VARIABLE}" in build.outcome.log

    search = search_everything(value, rig, build.outcome, build.run_dir)

    assert_found_nowhere(search)
    # The search read what it had to: the image's and the cache's layers, unpacked.
    image_layers = {
        layer["digest"] for layer in platform_manifest(rig.registry, name, digest)["layers"]
    }
    cache_layers, _ = cache_export(rig.registry, cache_name)
    assert image_layers | cache_layers <= search.unpacked, (image_layers, cache_layers)
    assert len(cache_layers - image_layers) >= 1  # the builder stage's layer (mode=max)


def test_the_same_search_finds_a_value_passed_as_a_build_arg(
    rig: Rig, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The negative control: the value handed to the driver's `--build-arg` (the buildspec's
    driver command given `--build-arg TOKEN=$LAYERCACHE_SECRET_1`) and written by a RUN of
    the builder stage is found, in the mode=max cache the build exported."""
    value = secrets.token_hex(16)
    name = repository_name(request)
    cache_name = f"{name}-cache"
    context = rig.write_context(tmp_path / "ctx", LEAKY_DOCKERFILE)
    buildspec_text = BUILDSPEC.read_text()
    assert buildspec_text.count(DRIVER_COMMAND) == 1, "the buildspec's driver command moved"
    leaky_buildspec = tmp_path / "buildspec.yml"
    leaky_buildspec.write_text(
        buildspec_text.replace(
            DRIVER_COMMAND, f'{DRIVER_COMMAND} --build-arg "TOKEN=${SECRET_VALUE_VARIABLE}"'
        )
    )

    build = run_build(
        rig,
        context,
        tmp_path / "run",
        repository=rig.repository(name),
        extra_env={
            SECRET_VALUE_VARIABLE: value,
            "LAYERCACHE_CACHE_REPOSITORY_URI": rig.repository(cache_name),
        },
        buildspec=leaky_buildspec,
    )

    assert build.outcome.variables["LAYERCACHE_CACHE_STATUS"] == "cold"
    leak_sum = image_file(rig.registry, name, build.outcome.variables["LAYERCACHE_IMAGE_DIGEST"],
                          "leak.sum")  # fmt: skip
    written = f"{value}\n".encode()  # echo's line
    assert leak_sum.decode() == f"{hashlib.sha256(written).hexdigest()}  /leak\n"

    search = search_everything(value, rig, build.outcome, build.run_dir)

    assert search.hits, "the search found no value that was passed as a build-arg"
    # In the builder stage's layer of the cache: a blob of the cache repository.
    cache_layers, cache_config = cache_export(rig.registry, cache_name)
    assert search.hit_blobs & (cache_layers | {cache_config}), search.hits
    assert any("member leak" in hit for hit in search.hits), search.hits


def test_a_bake_target_reads_the_secret_and_it_is_nowhere(
    rig: Rig, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    value = secrets.token_hex(16)
    prefix = repository_name(request)
    root = tmp_path / "repo"
    rig.write_context(root / "app", DOCKERFILE)
    (root / "docker-bake.hcl").write_text(BAKE_FILE)

    build = run_build(
        rig,
        root,
        tmp_path / "run",
        repository=rig.repository(prefix),
        extra_env={
            **secret_env(value),
            "LAYERCACHE_BAKE_FILE": "docker-bake.hcl",
            "LAYERCACHE_BAKE_TARGETS": "",
            "LAYERCACHE_CACHE_REPOSITORY_URI": rig.repository(f"{prefix}-cache"),
        },
    )

    [result] = json.loads(build.outcome.variables["LAYERCACHE_IMAGES"])
    assert result["image"] == "app"
    assert result["repository"] == rig.repository(f"{prefix}/app")
    assert f"cache-{BRANCH}" in rig.registry.tags(f"{prefix}-cache/app")
    assert_secret_was_read(rig.registry, f"{prefix}/app", result["digest"], value)

    search = search_everything(value, rig, build.outcome, build.run_dir)

    assert_found_nowhere(search)
    cache_layers, _ = cache_export(rig.registry, f"{prefix}-cache/app")
    assert cache_layers <= search.unpacked


def test_the_search_reads_compressed_layers_tar_members_and_base64() -> None:
    """The search itself, without a build: it finds the value inside a gzip file inside a
    zstd-compressed tar, and base64-encoded at any alignment, and refuses what it cannot
    read rather than calling it clean."""
    value = secrets.token_hex(16)
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:") as archive:
        member = gzip.compress(f"token={value}\n".encode())
        info = tarfile.TarInfo("etc/config.gz")
        info.size = len(member)
        archive.addfile(info, io.BytesIO(member))
    zstd = shutil.which("zstd")
    if zstd is None:
        pytest.skip("no zstd command to compress the sample with")
    layer = subprocess.run([zstd, "-c", "-q"], input=inner.getvalue(), capture_output=True,
                           check=True).stdout  # fmt: skip

    search = Search(needles(value))
    assert search.data(layer, "layer")
    assert "layer (zstd) member etc/config.gz (gzip)" in search.hits

    for shift in range(3):
        encoded = base64.b64encode(b"x" * shift + value.encode() + b"y")
        assert Search(needles(value)).data(b'{"data":"' + encoded + b'"}', "json")
    assert not Search(needles(value)).data(layer.replace(ZSTD_MAGIC, b"\0\0\0\0", 1), "x")
    with pytest.raises(UnreadableBlobError, match="lz4"):
        Search(needles(value)).data(LZ4_MAGIC + b"\0" * 64, "blob")
    with pytest.raises(UnreadableBlobError, match="gzip"):
        Search(needles(value)).data(GZIP_MAGIC + b"\0" * 64, "blob")
