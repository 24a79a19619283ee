"""A local stand-in for CodeBuild + ECR: a real registry, a real builder, the real buildspec.

The docker tests, the demo and the benchmark all use it::

    from layercache_dev.rig import Rig, missing_prerequisites

    if missing := missing_prerequisites():           # readable reasons, [] when all there
        raise SystemExit("; ".join(missing))
    with Rig(Path(tmp)) as rig:                      # registry, builder, base image pushed
        repo = rig.repository("team/service")        # "127.0.0.1:PORT/team/service"
        context = rig.write_context(Path(tmp) / "ctx", dockerfile_text, {"src/a.txt": "1"})
        mark = rig.registry.mark()
        outcome = rig.build(context, repository=repo, branch="main", commit=sha)
        outcome.ok, outcome.seconds                  # exit status 0, wall time of the buildspec
        outcome.variables["LAYERCACHE_CACHE_HIT_RATIO"]   # what the buildspec exports
        outcome.step("RUN make deps")["cached"]      # per step, from the driver's report
        rig.registry.traffic(since=mark).downloaded_layer_bytes

`{base}` in a Dockerfile stands for the rig's base image (`FROM scratch` + a static
busybox, pushed to the registry: there is no Docker Hub here). Every `Rig.build` first
empties the builder's local cache (`reset=False` keeps it), as on a fresh CodeBuild host,
and builds with `--network none`. `mode=` takes normal/refresh/clean, `extra_env=` any
`LAYERCACHE_*` override (e.g. `LAYERCACHE_REFRESH_DATE`, `LAYERCACHE_CACHE_REPOSITORY_URI`).

`Rig.build` runs the phases of ``buildspecs/buildspec.yml`` in bash the way CodeBuild
does, with ``LAYERCACHE_DRIVER_DIR`` pointing at ``buildspecs/`` (so the driver the
tests exercise is the file CodeBuild runs), and returns the variables the buildspec
exports.

The builder: CodeBuild builds on a standalone BuildKit (buildx ``docker-container``
driver). Its image is on Docker Hub, out of reach here, so the rig runs a ``buildkitd``
binary itself (``.ci/setup-docker`` builds one from Debian's sources) and reaches it
through buildx's ``remote`` driver: the same daemon, started differently. With
``builder_kind="docker"`` it uses the engine's own builder instead (which downloads
every layer of the image on a cached rebuild).

That buildkitd runs its containers through a thin wrapper around ``runc`` that passes
every call through, except that ``rig.fail_next_container_start()`` makes the next
container start fail the way a loaded host sometimes does (``runc run failed: ...
read init-p: connection reset by peer``), once.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import yaml

ROOT = Path(__file__).resolve().parents[2]
BUILDSPECS = ROOT / "buildspecs"
BUILDSPEC = BUILDSPECS / "buildspec.yml"

# A small service-shaped image for the docker tests and the demo: two stages, each step
# writing a few MB and sleeping a little (a stand-in for compiling or installing); the
# final stage declares the refresh build-arg right before its OS-package step, as the
# docs ask. `{base}` is the rig's busybox image; the context needs `src/*.txt`.
SAMPLE_DOCKERFILE = """\
FROM {base} AS builder
RUN dd if=/dev/urandom of=/deps-a bs=1M count=3 && sleep 2
RUN dd if=/dev/urandom of=/deps-b bs=1M count=3 && sleep 2
COPY src/ /src/
RUN cat /src/*.txt > /app.bin && dd if=/dev/urandom bs=1M count=2 >> /app.bin && sleep 1

FROM {base}
RUN dd if=/dev/urandom of=/runtime bs=1M count=3 && sleep 2
ARG LAYERCACHE_REFRESH_DATE
RUN echo "$LAYERCACHE_REFRESH_DATE" > /os-packages && dd if=/dev/urandom of=/os bs=1M count=3 \\
    && sleep 1
RUN dd if=/dev/urandom of=/app-deps bs=1M count=3 && sleep 1
COPY --from=builder /app.bin /app.bin
RUN wc -c /app.bin > /manifest.txt
"""
BuilderKind = Literal["remote", "docker"]
PHASES = ("install", "pre_build", "build", "post_build")
_BLOB_URI = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
_UPLOAD_DIGEST = re.compile(r"[?&]digest=sha256%3A(?P<hex>[0-9a-f]{64})")
MANIFEST_ACCEPT = ",".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


class RigError(RuntimeError):
    """The rig could not start or drive one of its parts."""


# ---------------------------------------------------------------- prerequisites


def docker_binary() -> str:
    """The docker CLI to use: LAYERCACHE_DOCKER, else the engine package's own, else PATH's.

    A client-only docker may come first on PATH; the engine's package installs its
    client (and finds its buildx plugin) at /usr/bin/docker.
    """
    configured = os.environ.get("LAYERCACHE_DOCKER")
    if configured:
        return configured
    if Path("/usr/bin/docker").exists():
        return "/usr/bin/docker"
    return shutil.which("docker") or "docker"


def _works(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def missing_prerequisites(builder_kind: BuilderKind = "remote") -> list[str]:
    """What this machine lacks for the rig, as readable reasons (empty: all there)."""
    docker = docker_binary()
    missing = []
    if not _works([docker, "info"]):
        missing.append(f"no running Docker engine ({docker} info failed)")
    if not _works([docker, "buildx", "version"]):
        missing.append("no docker buildx plugin")
    if shutil.which("docker-registry") is None:
        missing.append("no docker-registry binary (Debian package docker-registry)")
    if not Path("/bin/busybox").exists() and shutil.which("busybox") is None:
        missing.append("no static busybox (Debian package busybox-static)")
    if builder_kind == "remote" and shutil.which("buildkitd") is None:
        missing.append("no standalone buildkitd (built by .ci/setup-docker)")
    return missing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RigError(f"{what} did not come up within {timeout:.0f}s")


# ---------------------------------------------------------------- the registry


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


class Registry:
    """A CNCF distribution registry on 127.0.0.1 with deletes enabled and its own log."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or _free_port()
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
        _wait_for(self._answers, f"registry on {self.host}")

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


# ---------------------------------------------------------------- the standalone BuildKit


#: What runc prints when a container's init process dies before it starts; seen on
#: a loaded 2-core host, and what `StandaloneBuildKit.fail_next_container_start` mimics.
START_FAILURE_MESSAGE = (
    "runc run failed: unable to start container process: error during container init: "
    "read init-p: connection reset by peer"
)
_RUNC_WRAPPER = """#!/bin/sh
# The rig's runc: the real one, except that one `run` fails while {flag} exists.
case " $* " in
*" run "*)
  if rm {flag} 2>/dev/null; then
    echo {message} >&2
    exit 1
  fi ;;
esac
exec {runc} "$@"
"""


class StandaloneBuildKit:
    """A buildkitd of our own (OCI worker), as a buildx `remote` builder."""

    def __init__(self, workdir: Path, docker: str, name: str) -> None:
        self.workdir = workdir
        self.docker = docker
        self.name = name
        self.socket = workdir / "buildkitd.sock"
        self.log_path = workdir / "buildkitd.log"
        self.runc_wrapper = workdir / "runc"
        self.fail_start_flag = workdir / "fail-next-container-start"
        self._process: subprocess.Popen[bytes] | None = None

    def fail_next_container_start(self) -> None:
        """Make the next container BuildKit starts fail to start, once."""
        self.fail_start_flag.touch()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("buildkitd") or "buildkitd"
        self.runc_wrapper.write_text(
            _RUNC_WRAPPER.format(
                flag=shlex.quote(str(self.fail_start_flag)),
                message=shlex.quote(START_FAILURE_MESSAGE),
                runc=shlex.quote(shutil.which("runc") or "runc"),
            )
        )
        self.runc_wrapper.chmod(0o755)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    binary,
                    "--root", str(self.workdir / "root"),
                    "--addr", f"unix://{self.socket}",
                    "--oci-worker=true",
                    "--oci-worker-binary", str(self.runc_wrapper),
                    "--containerd-worker=false",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        _wait_for(self.socket.exists, f"buildkitd ({self.log_path})")
        _run([self.docker, "buildx", "rm", self.name], check=False)
        _run(
            [self.docker, "buildx", "create", "--name", self.name, "--driver", "remote",
             f"unix://{self.socket}"]
        )  # fmt: skip
        _run([self.docker, "buildx", "inspect", "--bootstrap", self.name])

    def stop(self) -> None:
        _run([self.docker, "buildx", "rm", self.name], check=False)
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None


def _run(
    command: list[str], *, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if check and result.returncode != 0:
        raise RigError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result


# ---------------------------------------------------------------- one build through the buildspec


@dataclass
class BuildOutcome:
    """One run of the buildspec: exit status, exported variables, driver report, log."""

    returncode: int
    variables: dict[str, str]
    report: dict[str, Any]
    log: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def steps(self) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = self.report.get("steps", [])
        return steps

    def step(self, fragment: str) -> dict[str, Any]:
        """The one step whose name contains `fragment`."""
        found = [step for step in self.steps if fragment in step["name"]]
        if len(found) != 1:
            raise KeyError(
                f"{len(found)} steps match {fragment!r}: {[s['name'] for s in self.steps]}"
            )
        return found[0]

    @property
    def hit_ratio(self) -> float:
        return float(self.variables.get("LAYERCACHE_CACHE_HIT_RATIO", "nan"))


def buildspec_script(buildspec: Mapping[str, Any], exported: Iterable[str], dump: Path) -> str:
    """A bash script that runs the buildspec's phases as CodeBuild does.

    Commands share one shell (buildspec version 0.2), a failing command ends its phase
    and skips the later phases except post_build, and at the end the exported
    variables are written NUL-separated to `dump`.
    """
    lines = ["status=0"]
    for phase in PHASES:
        commands = (buildspec.get("phases", {}).get(phase) or {}).get("commands") or []
        guard = "true" if phase == "post_build" else '[ "$status" = 0 ]'
        for command in commands:
            lines.append(f"if {guard}; then eval {_shell_quote(command)} || status=$?; fi")
    names = " ".join(exported)
    lines.append(
        f'for name in {names}; do printf \'%s=%s\\0\' "$name" "${{!name-}}"; done > {dump}'
    )
    lines.append('exit "$status"')
    return "\n".join(lines) + "\n"


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


class Rig:
    """Registry + base image + builder, started together; see the module docstring."""

    BASE_REPOSITORY = "layercache/base"
    BASE_TAG = "busybox"

    def __init__(self, workdir: Path, *, builder_kind: BuilderKind = "remote") -> None:
        self.workdir = workdir
        self.builder_kind = builder_kind
        self.docker = docker_binary()
        self.registry = Registry(workdir / "registry")
        suffix = uuid.uuid4().hex[:8]
        self._buildkit: StandaloneBuildKit | None = None
        if builder_kind == "remote":
            self._buildkit = StandaloneBuildKit(
                workdir / "buildkit", self.docker, f"lc-rig-{suffix}"
            )
            self.builder = self._buildkit.name
        else:
            self.builder = "default"  # the engine's own BuildKit (buildx docker driver)
        self.base_image = f"{self.registry.host}/{self.BASE_REPOSITORY}:{self.BASE_TAG}"

    # -- lifecycle

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        missing = missing_prerequisites(self.builder_kind)
        if missing:
            raise RigError("; ".join(missing))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.registry.start()
        if self._buildkit is not None:
            self._buildkit.start()
        self.push_base_image()

    def stop(self) -> None:
        if self._buildkit is not None:
            self._buildkit.stop()
        self.registry.stop()

    def fail_next_container_start(self) -> None:
        """The next container the builder starts fails to start, once (see the docstring)."""
        if self._buildkit is None:
            raise RigError("only the rig's own BuildKit can fail a container start on purpose")
        self._buildkit.fail_next_container_start()

    # -- images and contexts

    def repository(self, name: str) -> str:
        return f"{self.registry.host}/{name}"

    def push_base_image(self) -> None:
        """`FROM scratch` + a static busybox, pushed to the registry (no Docker Hub here)."""
        context = self.workdir / "base-image"
        context.mkdir(parents=True, exist_ok=True)
        busybox = Path("/bin/busybox") if Path("/bin/busybox").exists() else None
        source = busybox or Path(shutil.which("busybox") or "/usr/bin/busybox")
        shutil.copy2(source, context / "busybox")
        (context / "Dockerfile").write_text(
            "FROM scratch\n"
            "COPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        )
        _run(
            [self.docker, "buildx", "build", "--builder", self.builder, "--network", "none",
             "--provenance=false", "--tag", self.base_image, "--push", str(context)]
        )  # fmt: skip

    def copy_image(self, source: str, target: str) -> None:
        """Copy an image (or any manifest) to another ref in the registry."""
        _run([self.docker, "buildx", "imagetools", "create", "--tag", target, source])

    def write_context(
        self, directory: Path, dockerfile: str, files: Mapping[str, str] | None = None
    ) -> Path:
        """A build context: the Dockerfile (`{base}` stands for the base image) and files."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "Dockerfile").write_text(dockerfile.replace("{base}", self.base_image))
        for name, text in (files or {}).items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return directory

    # -- the builder

    def reset_builder(self) -> None:
        """Empty the builder's local cache: a fresh build host.

        On the engine's own builder that is the engine's whole build cache, and the
        images this rig's builds left in the engine's store.
        """
        _run([self.docker, "buildx", "prune", "--builder", self.builder, "--all", "--force"])
        if self.builder_kind == "docker":
            listed = _run([self.docker, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
            ours = sorted(
                {ref for ref in listed.stdout.split() if ref.startswith(f"{self.registry.host}/")}
            )
            if ours:
                _run([self.docker, "image", "rm", "--force", *ours], check=False)

    # -- builds

    def build_env(
        self,
        context: Path,
        *,
        repository: str,
        branch: str,
        commit: str,
        mode: str = "normal",
        default_branch: str = "main",
        extra: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """The environment CodeBuild would give the buildspec, pointed at this rig."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("LAYERCACHE_", "CODEBUILD_"))
        }
        env.update(
            {
                "LAYERCACHE_DRIVER_DIR": str(BUILDSPECS),
                "LAYERCACHE_IMAGE_REPOSITORY_URI": repository,
                "LAYERCACHE_DOCKERFILE": str(context / "Dockerfile"),
                "LAYERCACHE_BUILD_CONTEXT": str(context),
                "LAYERCACHE_DEFAULT_BRANCH": default_branch,
                "LAYERCACHE_BRANCH": branch,
                "LAYERCACHE_COMMIT": commit,
                "LAYERCACHE_TRIGGER": "manual",
                "LAYERCACHE_MODE": mode,
                "LAYERCACHE_BUILDER": self.builder,
                "LAYERCACHE_BUILD_NETWORK": "none",
                "LAYERCACHE_DOCKER": self.docker,
                "CODEBUILD_RESOLVED_SOURCE_VERSION": commit,
            }
        )
        env.update(extra or {})
        return env

    def build(
        self,
        context: Path,
        *,
        repository: str,
        branch: str,
        commit: str,
        mode: str = "normal",
        default_branch: str = "main",
        extra_env: Mapping[str, str] | None = None,
        reset: bool = True,
    ) -> BuildOutcome:
        """Run the buildspec once, on an emptied builder unless `reset=False`."""
        if reset:
            self.reset_builder()
        buildspec = yaml.safe_load(BUILDSPEC.read_text())
        exported = list(buildspec.get("env", {}).get("exported-variables") or [])
        run_dir = self.workdir / "runs" / uuid.uuid4().hex[:12]
        run_dir.mkdir(parents=True)
        dump = run_dir / "exported"
        report_file = run_dir / "report.json"
        script = run_dir / "buildspec.sh"
        script.write_text(buildspec_script(buildspec, exported, dump))
        env = self.build_env(
            context,
            repository=repository,
            branch=branch,
            commit=commit,
            mode=mode,
            default_branch=default_branch,
            # TMPDIR: the buildspec's temporary files go with the run, not into /tmp.
            extra={
                "TMPDIR": str(run_dir),
                "LAYERCACHE_REPORT_FILE": str(report_file),
                **(extra_env or {}),
            },
        )
        started = time.monotonic()
        result = subprocess.run(
            ["bash", str(script)], env=env, cwd=context, capture_output=True, text=True, check=False
        )
        seconds = time.monotonic() - started
        variables: dict[str, str] = {}
        if dump.exists():
            for item in dump.read_text().split("\0"):
                if "=" in item:
                    name, value = item.split("=", 1)
                    if value:
                        variables[name] = value
        report = json.loads(report_file.read_text()) if report_file.exists() else {}
        return BuildOutcome(
            result.returncode, variables, report, result.stdout + result.stderr, seconds
        )
