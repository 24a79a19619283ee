"""A CNCF distribution registry on 127.0.0.1, and what its log says moved.

`Registry` runs Debian's `docker-registry` with deletes enabled and a JSON log;
`traffic(since=mark())` reads the blob downloads, uploads and mounts from that log
(`parse_registry_log`), and a few API calls (manifest, digest, tags, move_tag) let
tests and the demo read and change what it stores.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from layercache.pruning.model import INDEX_MEDIA_TYPES
from layercache_dev.kit.lifecycle import Lifecycle
from layercache_dev.kit.processes import RigError, free_port, wait_for

_BLOB_URI = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
_UPLOAD_DIGEST = re.compile(r"[?&]digest=sha256%3A(?P<hex>[0-9a-f]{64})")
# Every manifest type a build pushes: image indexes and image manifests, OCI and Docker.
MANIFEST_ACCEPT = ",".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


@dataclass(frozen=True)
class BlobTransfer:
    repository: str
    digest: str
    size: int


@dataclass
class RegistryTraffic:
    """Blob traffic seen in the registry's log over some span of requests."""

    downloads: list[BlobTransfer] = field(default_factory=list)
    uploads: list[BlobTransfer] = field(default_factory=list)
    mounts: int = 0  # cross-repository mounts: no bytes moved
    layer_digests: frozenset[str] = frozenset()

    @property
    def downloaded_bytes(self) -> int:
        return sum(blob.size for blob in self.downloads)

    @property
    def uploaded_bytes(self) -> int:
        return sum(blob.size for blob in self.uploads)

    @property
    def layer_downloads(self) -> list[BlobTransfer]:
        """Downloads of layer blobs (not configs or manifests)."""
        return [blob for blob in self.downloads if blob.digest in self.layer_digests]

    @property
    def downloaded_layer_bytes(self) -> int:
        return sum(blob.size for blob in self.layer_downloads)


def parse_registry_log(
    lines: Iterable[str],
    blob_size: Callable[[str], int],
    layer_digests: frozenset[str] = frozenset(),
) -> RegistryTraffic:
    """Blob downloads and uploads from a distribution registry's JSON log.

    Each request ends in a "response completed" entry with its method, URI, status and
    bytes written. A download is a GET of /v2/<name>/blobs/<digest> (its size is the
    bytes written); an upload is the PUT that completes /blobs/uploads/ with a digest,
    whose size the log does not carry, so `blob_size(digest)` looks it up in storage.
    """
    traffic = RegistryTraffic(layer_digests=layer_digests)
    for line in lines:
        if not line.startswith("{"):
            continue  # the access log's combined-format lines repeat the JSON ones
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("msg") != "response completed":
            continue
        method = entry.get("http.request.method")
        uri = str(entry.get("http.request.uri", ""))
        status = int(entry.get("http.response.status", 0))
        path = uri.split("?", 1)[0]
        blob = _BLOB_URI.match(path)
        if method == "GET" and blob and status in (200, 206):
            size = int(entry.get("http.response.written", 0))
            traffic.downloads.append(BlobTransfer(blob["name"], blob["digest"], size))
        elif method == "PUT" and "/blobs/uploads/" in path and status == 201:
            upload = _UPLOAD_DIGEST.search(uri)
            if upload:
                digest = f"sha256:{upload['hex']}"
                name = path.removeprefix("/v2/").split("/blobs/uploads/")[0]
                traffic.uploads.append(BlobTransfer(name, digest, int(blob_size(digest))))
        elif method == "POST" and "mount=" in uri and status == 201:
            traffic.mounts += 1
    return traffic


@dataclass(frozen=True)
class Manifest:
    """One manifest as a registry holds it: digest, text, media type, tags, push time."""

    digest: str
    text: str
    media_type: str
    tags: tuple[str, ...]
    pushed_at: datetime

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES


class Registry(Lifecycle):
    """A CNCF distribution registry on 127.0.0.1 with deletes enabled and its own log."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.root = workdir / "storage"
        self.log_path = workdir / "registry.log"
        self.config_path = workdir / "config.yml"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "json"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root)},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host, "secret": uuid.uuid4().hex},
        }
        self.config_path.write_text(yaml.safe_dump(config))
        binary = shutil.which("docker-registry") or "docker-registry"
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [binary, "serve", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._answers, f"registry on {self.host}")

    def _answers(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RigError(f"registry exited; see {self.log_path}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process = None

    # -- storage and log

    def blob_path(self, digest: str) -> Path:
        algorithm, hex_digest = digest.split(":", 1)
        return (
            self.root
            / "docker/registry/v2/blobs"
            / algorithm
            / hex_digest[:2]
            / hex_digest
            / "data"
        )

    def blob_size(self, digest: str) -> int:
        path = self.blob_path(digest)
        return path.stat().st_size if path.exists() else 0

    def stored_blobs(self) -> dict[str, Path]:
        """Every blob in storage (layers, configs, manifests, caches, attestations), of
        every repository: digest -> its data file, in digest order."""
        return {
            f"{data.parents[2].name}:{data.parent.name}": data
            for data in sorted((self.root / "docker/registry/v2/blobs").glob("*/*/*/data"))
        }

    def layer_digests(self) -> frozenset[str]:
        """Digests named as layers by any manifest the registry stores (images and caches)."""
        layers: set[str] = set()
        for data in (self.root / "docker/registry/v2/blobs").glob("*/*/*/data"):
            if data.stat().st_size > 4 * 1024 * 1024:
                continue  # manifests are small; skip reading big layers
            try:
                manifest = json.loads(data.read_bytes())
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(manifest, dict):
                layers.update(str(layer.get("digest")) for layer in manifest.get("layers") or [])
        return frozenset(layers)

    def mark(self) -> int:
        """A position in the log; `traffic(since=mark)` counts what came after it."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def traffic(self, since: int = 0) -> RegistryTraffic:
        with self.log_path.open("rb") as log:
            log.seek(since)
            text = log.read().decode("utf-8", "replace")
        return parse_registry_log(text.splitlines(), self.blob_size, self.layer_digests())

    # -- API calls the tests use

    def request(
        self,
        method: str,
        path: str,
        accept: str = "",
        *,
        body: bytes | None = None,
        content_type: str = "",
    ) -> tuple[int, bytes, dict[str, str]]:
        """One HTTP request to the registry API (plain HTTP on loopback)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Accept": accept} if accept else {}
        if content_type:
            headers["Content-Type"] = content_type
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        return response.status, body, {k.lower(): v for k, v in response.getheaders()}

    def manifest(self, repository: str, reference: str) -> dict[str, Any] | None:
        status, body, _ = self.request(
            "GET", f"/v2/{repository}/manifests/{reference}", MANIFEST_ACCEPT
        )
        if status != 200:
            return None
        document: dict[str, Any] = json.loads(body)
        return document

    def digest(self, repository: str, reference: str) -> str | None:
        """The digest of the manifest a tag (or digest) names, or None if there is none."""
        status, _, headers = self.request(
            "HEAD", f"/v2/{repository}/manifests/{reference}", MANIFEST_ACCEPT
        )
        return headers.get("docker-content-digest") if status == 200 else None

    def move_tag(self, repository: str, tag: str, digest: str) -> str:
        """Point `tag` at the manifest `digest`, as the build recorder moves a moving tag.

        The manifest's bytes are put again, unchanged, under the tag (what ECR's PutImage
        with the BatchGetImage manifest does), so the tag names the very same digest.
        """
        status, body, headers = self.request(
            "GET", f"/v2/{repository}/manifests/{digest}", MANIFEST_ACCEPT
        )
        if status != 200:
            raise RigError(f"no manifest {repository}@{digest} ({status})")
        status, answer, put = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{tag}",
            body=body,
            content_type=headers["content-type"],
        )
        if status != 201:
            raise RigError(f"PUT {repository}:{tag} failed ({status}): {answer[:300]!r}")
        return put["docker-content-digest"]

    def tags(self, repository: str) -> list[str]:
        status, body, _ = self.request("GET", f"/v2/{repository}/tags/list")
        if status != 200:
            return []
        return sorted(json.loads(body).get("tags") or [])

    def delete_blob(self, repository: str, digest: str) -> int:
        status, _, _ = self.request("DELETE", f"/v2/{repository}/blobs/{digest}")
        return status
