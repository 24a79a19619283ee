#!/usr/bin/env python3
"""The layercache build driver: one cached image build with BuildKit's registry cache.

CodeBuild runs it from the buildspec; tests and developers run the very same file
against any registry. Standard library only, so it runs on the system python3 of the
CodeBuild standard image.

What one run does:

1. logs in to ECR when the repository is in ECR (CodeBuild); any other registry is
   used as the local Docker configuration allows;
2. picks the builder: a standalone BuildKit (`docker-container`, created on demand) on
   CodeBuild, or any named buildx builder (the local rig's);
3. runs ``docker buildx build --push`` with ``--cache-from`` the branch's cache ref and
   then the default branch's, and ``--cache-to`` the branch's cache ref
   (``mode=max,image-manifest=true,oci-mediatypes=true``, which ECR accepts); there is
   no pre-pull: BuildKit reads the cache manifest and fetches a layer only when a step
   that is not cached needs its contents;
4. reads BuildKit's progress stream (``--progress=rawjson``) and metadata file, and
   writes what happened as shell ``export`` lines that the buildspec sources and lists
   under ``exported-variables``.

Tags: the build pushes only the image's immutable tags, ``<commit>`` and
``<branch-slug>-<sha7>`` (`image_tags`). The moving tags, ``<branch-slug>`` and ``latest``
on the default branch (`moving_tags`), are not pushed here: the driver exports them as
``LAYERCACHE_MOVING_TAGS`` and the build recorder moves them to this build's digest
after the build succeeded, with a conditional write on the branch's head, so an older
build that finishes later can never move them back.

The branch comes from ``LAYERCACHE_BRANCH`` (the triggers set it). A build started by
hand (``aws codebuild start-build --source-version refs/heads/<branch>``) has none; the
driver then reads it from ``CODEBUILD_SOURCE_VERSION`` (`branch_from_source_version`).

Failure policy:

- a cache ref that does not exist yet (the first build of a branch) is normal;
- a build that fails while a cache was imported is retried once with ``--no-cache``
  (an unreachable or corrupt cache must not fail the build), with a warning;
- a build whose image was pushed but whose cache export failed counts: the image is
  kept, the export is reported as a warning, and the cache ref stays as it was. The
  driver then repeats the build without ``--cache-to`` on the same builder (every step
  is in the builder's local cache, so this takes a second) to learn the digest;
- a failed image push fails the build (exit status 1).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODES = ("normal", "refresh", "clean")
#: The build-arg a refresh build sets to today's date; Dockerfiles declare it right
#: before their OS-package step (`ARG LAYERCACHE_REFRESH_DATE`), so that step and every
#: later one rebuild once a day on a refresh, while earlier steps stay cached.
REFRESH_ARG = "LAYERCACHE_REFRESH_DATE"
#: The builder the driver creates when asked for a standalone BuildKit.
STANDALONE_BUILDER = "layercache"
DEFAULT_BUILDKIT_IMAGE = "moby/buildkit:buildx-stable-1"
MAX_TAG_LENGTH = 128  # Docker's limit
SHORT_SHA = 7
# Both "cache-<slug>" and "<slug>-<sha7>" must fit in one tag.
MAX_SLUG_LENGTH = MAX_TAG_LENGTH - max(len("cache-"), len("-") + SHORT_SHA)
# A full or abbreviated commit id (SHA-1 or SHA-256 repositories).
COMMIT_ID = re.compile(r"^[0-9a-fA-F]{7,64}$")
# CodeBuild's "reference and commit" source version: `refs/heads/main^{<full sha>}`.
PINNED_REF = re.compile(r"^(?P<ref>.+)\^\{[0-9a-fA-F]{7,64}\}$")
# Bare names that git or CodeBuild read as something other than a branch name.
NOT_BRANCH_PREFIXES = ("refs/", "pr/", "heads/", "tags/", "pull/", "remotes/")
ECR_HOST = re.compile(r"^\d{12}\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
# A Dockerfile step as BuildKit names it: "[stage-1 2/4] RUN ..." or "[2/4] COPY ...".
STEP_NAME = re.compile(r"^\[(?:[^\]\s]+ )?\d+/\d+\] (?P<instruction>[A-Z]+)")
CACHE_IMPORT_NAME = re.compile(r"^importing cache manifest from (?P<ref>\S+)")
IMAGE_EXPORT_NAMES = ("exporting to image", "exporting to docker image format")
CACHE_EXPORT_PREFIX = "exporting cache"

#: The variables the buildspec exports (its `exported-variables`), in this order.
EXPORTED_VARIABLES = (
    "LAYERCACHE_IMAGE_DIGEST",
    "LAYERCACHE_IMAGE_TAGS",
    "LAYERCACHE_MOVING_TAGS",
    "LAYERCACHE_CACHE_HIT_RATIO",
    "LAYERCACHE_CACHE_REF_HIT",
    "LAYERCACHE_BUILD_SECONDS",
    "LAYERCACHE_PUSH_SECONDS",
    "LAYERCACHE_CACHE_EXPORT_SECONDS",
    "LAYERCACHE_CACHED_STEPS",
    "LAYERCACHE_TOTAL_STEPS",
    "LAYERCACHE_CACHE_STATUS",
)


AttemptRunner = Callable[[Sequence[str], str | None, bool], "Attempt"]
"""Runs one build attempt: (cache_from refs, cache_to ref or None, no_cache)."""


class BuildFailed(Exception):
    """The image could not be built or pushed."""


# ---------------------------------------------------------------- names and tags


def branch_slug(branch: str) -> str:
    """The branch as it appears in tags: `feature/x` -> `feature-x`.

    Every character outside [A-Za-z0-9_.-] becomes `-`, leading `.` and `-` go (a tag
    must start with a word character), and the result is cut so that both
    `cache-<slug>` and `<slug>-<sha7>` fit Docker's 128-character tag limit.
    """
    name = branch.removeprefix("refs/heads/")
    slug = re.sub(r"[^A-Za-z0-9_.-]", "-", name).lstrip(".-")[:MAX_SLUG_LENGTH]
    return slug or "unnamed"


def cache_tag(branch: str) -> str:
    return f"cache-{branch_slug(branch)}"


def image_tags(branch: str, commit: str) -> list[str]:
    """The tags the build pushes: the immutable ones, `<commit>` and `<slug>-<sha7>`.

    No other build ever writes them with another image. `<slug>-<sha7>` is the one the
    pruner reads to tell which branch an image belongs to.
    """
    return [commit, f"{branch_slug(branch)}-{commit[:SHORT_SHA]}"]


def moving_tags(branch: str, default_branch: str) -> list[str]:
    """The tags that follow a branch: `<slug>`, and `latest` on the default branch.

    The build does not push them (see the module docstring): it exports them as
    LAYERCACHE_MOVING_TAGS for the recorder, which moves them only forward.
    """
    tags = [branch_slug(branch)]
    if branch.removeprefix("refs/heads/") == default_branch.removeprefix("refs/heads/"):
        tags.append("latest")
    return tags


class SourceVersionError(ValueError):
    """CODEBUILD_SOURCE_VERSION names no branch, so the build cannot tell its branch."""


def branch_from_source_version(source_version: str) -> str:
    """The branch CodeBuild was asked to build, from `CODEBUILD_SOURCE_VERSION`.

    CodeBuild sets that variable to the `--source-version` given to StartBuild:
    `refs/heads/feature/x` -> `feature/x` (also with CodeBuild's `^{<sha>}` suffix),
    and a bare name, `main` -> `main`. A bare name is ambiguous to git, which resolves
    it to a *tag* of that name before the branch: `refs/heads/<branch>` is the safe
    form. A source version that names no branch (a commit id, `refs/tags/...`, a pull
    request `pr/12` or `refs/pull/...`, an S3 version or a CodePipeline ARN) raises
    SourceVersionError: set LAYERCACHE_BRANCH, or start the build from the branch.
    """
    version = source_version.strip()
    pinned = PINNED_REF.match(version)
    if pinned:
        version = pinned.group("ref")
    if version.startswith("refs/heads/"):
        branch = version.removeprefix("refs/heads/")
    elif not version.startswith(NOT_BRANCH_PREFIXES) and not COMMIT_ID.match(version):
        branch = version
    else:
        branch = ""
    if not branch or not is_branch_name(branch):
        raise SourceVersionError(
            f"the source version {source_version!r} names no branch, so the build cannot "
            "tell which branch it builds: start it with "
            "`--source-version refs/heads/<branch>` (the safe form: git resolves a bare "
            "name to a tag before a branch) or set LAYERCACHE_BRANCH"
        )
    return branch


def is_branch_name(name: str) -> bool:
    """Whether git accepts `name` as a branch name (`git check-ref-format --branch`)."""
    if name in ("", "@", "HEAD") or name.startswith("-") or name.endswith((".", "/", ".lock")):
        return False
    if ".." in name or "@{" in name or "//" in name:
        return False
    if any(ord(char) < 0x20 or char in " ~^:?*[\\\x7f" for char in name):
        return False
    return not any(part.startswith(".") for part in name.split("/"))


# ---------------------------------------------------------------- the request


@dataclass(frozen=True)
class BuildRequest:
    """Everything one build needs, read from the environment or the command line."""

    repository: str  # registry/name, no tag
    branch: str
    commit: str
    default_branch: str
    mode: str = "normal"
    dockerfile: str = "Dockerfile"
    context: str = "."
    cache_repository: str = ""  # where the cache refs live; the image repository if empty
    refresh_date: str = ""  # the refresh build-arg's value; today (UTC) if empty
    network: str = ""  # `--network` for RUN steps (tests use "none")
    builder: str = ""  # "docker-container", a buildx builder name, or "" for the current one
    buildkit_image: str = DEFAULT_BUILDKIT_IMAGE
    build_args: tuple[str, ...] = ()

    @property
    def cache_repo(self) -> str:
        return self.cache_repository or self.repository

    def cache_ref(self, branch: str) -> str:
        return f"{self.cache_repo}:{cache_tag(branch)}"

    def cache_from_refs(self) -> list[str]:
        """The branch's cache first, then the default branch's (a new branch starts warm)."""
        refs = [self.cache_ref(self.branch)]
        fallback = self.cache_ref(self.default_branch)
        if fallback not in refs:
            refs.append(fallback)
        return refs

    def tags(self) -> list[str]:
        """The tags this build pushes (immutable)."""
        return image_tags(self.branch, self.commit)

    def moving_tags(self) -> list[str]:
        """The tags the recorder moves to this build's image once it succeeded."""
        return moving_tags(self.branch, self.default_branch)

    def refresh_value(self) -> str:
        return self.refresh_date or dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


def buildx_command(
    request: BuildRequest,
    *,
    builder: str,
    cache_from: Sequence[str],
    cache_to: str | None,
    no_cache: bool,
    metadata_file: Path,
) -> list[str]:
    """The `docker buildx build` arguments (without the docker binary) for one attempt."""
    args = ["buildx", "build", "--progress=rawjson", "--metadata-file", str(metadata_file)]
    if builder:
        args += ["--builder", builder]
    args += ["--file", request.dockerfile, "--push"]
    for tag in request.tags():
        args += ["--tag", f"{request.repository}:{tag}"]
    if request.network:
        args += ["--network", request.network]
    for ref in cache_from:
        args += ["--cache-from", f"type=registry,ref={ref}"]
    if cache_to:
        args += [
            "--cache-to",
            f"type=registry,ref={cache_to},mode=max,image-manifest=true,oci-mediatypes=true",
        ]
    if no_cache:
        args.append("--no-cache")
    if request.mode == "refresh":
        args += ["--pull", "--build-arg", f"{REFRESH_ARG}={request.refresh_value()}"]
    for build_arg in request.build_args:
        args += ["--build-arg", build_arg]
    args.append(request.context)
    return args


# ---------------------------------------------------------------- BuildKit's progress


@dataclass
class Vertex:
    """One node of the build graph as BuildKit reported it (merged over its updates)."""

    digest: str
    name: str = ""
    cached: bool = False
    started: dt.datetime | None = None
    completed: dt.datetime | None = None
    error: str = ""

    @property
    def is_step(self) -> bool:
        """A Dockerfile instruction other than FROM (base images are not cacheable work)."""
        match = STEP_NAME.match(self.name)
        return match is not None and match.group("instruction") != "FROM"

    @property
    def seconds(self) -> float:
        if self.started is None or self.completed is None:
            return 0.0
        return max(0.0, (self.completed - self.started).total_seconds())


def _timestamp(value: Any) -> dt.datetime | None:
    """Parse BuildKit's RFC 3339 timestamps (nanoseconds, `Z`) to aware datetimes."""
    if not isinstance(value, str) or not value:
        return None
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", value)
    if not match:
        return None
    whole, fraction, zone = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    zone = "+00:00" if zone == "Z" else zone
    return dt.datetime.fromisoformat(f"{whole}.{micro}{zone}")


def iter_json_objects(text: str) -> Iterator[dict[str, Any]]:
    """The JSON objects in `text`, which holds pretty-printed objects and stray lines."""
    decoder = json.JSONDecoder()
    index = 0
    while index < len(text):
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return
        try:
            obj, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            newline = text.find("\n", index)
            index = len(text) if newline < 0 else newline + 1
            continue
        if isinstance(obj, dict):
            yield obj


def parse_progress(text: str) -> list[Vertex]:
    """The vertices of a `--progress=rawjson` stream, in the order they first appeared."""
    vertices: dict[str, Vertex] = {}
    for status in iter_json_objects(text):
        for update in status.get("vertexes") or []:
            digest = str(update.get("digest", ""))
            vertex = vertices.setdefault(digest, Vertex(digest=digest))
            vertex.name = str(update.get("name") or vertex.name)
            vertex.cached = vertex.cached or bool(update.get("cached"))
            vertex.started = _timestamp(update.get("started")) or vertex.started
            vertex.completed = _timestamp(update.get("completed")) or vertex.completed
            vertex.error = str(update.get("error") or vertex.error)
    return list(vertices.values())


@dataclass
class ProgressSummary:
    """What one attempt's progress stream says about the cache and the timings."""

    steps: list[Vertex]
    imported_refs: list[str]  # cache refs whose manifest was read
    import_errors: dict[str, str]  # cache ref -> BuildKit's error
    image_exported: bool  # the image export (and push) completed without error
    image_export_error: str
    cache_export_error: str
    build_seconds: float
    push_seconds: float
    cache_export_seconds: float

    @property
    def cached_steps(self) -> int:
        return sum(1 for step in self.steps if step.cached)

    @property
    def hit_ratio(self) -> float:
        return self.cached_steps / len(self.steps) if self.steps else 0.0

    def failed_steps(self) -> list[Vertex]:
        return [step for step in self.steps if step.error]


def summarize(vertices: Sequence[Vertex]) -> ProgressSummary:
    steps = [vertex for vertex in vertices if vertex.is_step]
    imported: list[str] = []
    import_errors: dict[str, str] = {}
    image_exports: list[Vertex] = []
    cache_exports: list[Vertex] = []
    for vertex in vertices:
        match = CACHE_IMPORT_NAME.match(vertex.name)
        if match:
            if vertex.error:
                import_errors[match.group("ref")] = vertex.error
            elif vertex.completed:
                imported.append(match.group("ref"))
        elif vertex.name.startswith(IMAGE_EXPORT_NAMES) or vertex.name.startswith("pushing "):
            image_exports.append(vertex)
        elif vertex.name.startswith(CACHE_EXPORT_PREFIX):
            cache_exports.append(vertex)
    starts = [vertex.started for vertex in vertices if vertex.started]
    export_starts = [vertex.started for vertex in image_exports if vertex.started]
    build_seconds = 0.0
    if starts:
        build_end = (
            min(export_starts)
            if export_starts
            else max(
                (vertex.completed for vertex in vertices if vertex.completed), default=min(starts)
            )
        )
        build_seconds = max(0.0, (build_end - min(starts)).total_seconds())
    image_error = next((vertex.error for vertex in image_exports if vertex.error), "")
    return ProgressSummary(
        steps=steps,
        imported_refs=imported,
        import_errors=import_errors,
        image_exported=bool(image_exports)
        and not image_error
        and all(vertex.completed for vertex in image_exports),
        image_export_error=image_error,
        cache_export_error=next((vertex.error for vertex in cache_exports if vertex.error), ""),
        build_seconds=build_seconds,
        push_seconds=sum(vertex.seconds for vertex in image_exports),
        cache_export_seconds=sum(vertex.seconds for vertex in cache_exports),
    )


def is_missing_ref(error: str) -> bool:
    """BuildKit's error for a cache ref that does not exist (yet): normal, not a warning."""
    return "not found" in error.lower()


# ---------------------------------------------------------------- the report


@dataclass
class BuildReport:
    """What the buildspec exports and the recorder reads."""

    digest: str
    tags: list[str]  # pushed by the build
    summary: ProgressSummary
    cache_status: str  # cold | warm | fallback | export-failed | clean
    warnings: list[str] = field(default_factory=list)
    moving_tags: list[str] = field(default_factory=list)  # for the recorder to move

    @property
    def cache_ref_hit(self) -> str:
        """The first imported cache ref, if any step came from the cache; else `none`."""
        if self.summary.cached_steps and self.summary.imported_refs:
            return self.summary.imported_refs[0]
        return "none"

    def variables(self) -> dict[str, str]:
        summary = self.summary
        values = {
            "LAYERCACHE_IMAGE_DIGEST": self.digest,
            "LAYERCACHE_IMAGE_TAGS": ",".join(self.tags),
            "LAYERCACHE_MOVING_TAGS": ",".join(self.moving_tags),
            "LAYERCACHE_CACHE_HIT_RATIO": f"{summary.hit_ratio:.3f}",
            "LAYERCACHE_CACHE_REF_HIT": self.cache_ref_hit,
            "LAYERCACHE_BUILD_SECONDS": f"{summary.build_seconds:.1f}",
            "LAYERCACHE_PUSH_SECONDS": f"{summary.push_seconds:.1f}",
            "LAYERCACHE_CACHE_EXPORT_SECONDS": f"{summary.cache_export_seconds:.1f}",
            "LAYERCACHE_CACHED_STEPS": str(summary.cached_steps),
            "LAYERCACHE_TOTAL_STEPS": str(len(summary.steps)),
            "LAYERCACHE_CACHE_STATUS": self.cache_status,
        }
        assert tuple(values) == EXPORTED_VARIABLES
        return values

    def as_json(self) -> dict[str, Any]:
        """The detailed report (every step, cached or not) for tests and the benchmark."""
        return {
            "variables": self.variables(),
            "warnings": self.warnings,
            "imported_refs": self.summary.imported_refs,
            "steps": [{"name": step.name, "cached": step.cached} for step in self.summary.steps],
        }


def export_lines(variables: Mapping[str, str]) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in variables.items())


# ---------------------------------------------------------------- running docker


@dataclass(frozen=True)
class Attempt:
    returncode: int
    progress: str
    metadata: dict[str, Any]

    @property
    def summary(self) -> ProgressSummary:
        return summarize(parse_progress(self.progress))

    @property
    def digest(self) -> str:
        return str(self.metadata.get("containerimage.digest", ""))


def warn(message: str) -> None:
    sys.stderr.write(f"layercache: warning: {message}\n")


def info(message: str) -> None:
    sys.stderr.write(f"layercache: {message}\n")


def run_attempt(docker: str, args: Sequence[str], metadata_file: Path) -> Attempt:
    """Run one `docker buildx build`, echoing its progress as it goes, and keep the stream."""
    metadata_file.unlink(missing_ok=True)
    info("$ " + shlex.join([docker, *args]))
    echo = ProgressEcho()
    kept: list[str] = []
    with subprocess.Popen(
        [docker, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            kept.append(line)
            echo.feed(line)
    metadata: dict[str, Any] = {}
    if proc.returncode == 0 and metadata_file.exists():
        metadata = json.loads(metadata_file.read_text() or "{}")
    return Attempt(proc.returncode, "".join(kept), metadata)


class ProgressEcho:
    """Turns the rawjson stream into a readable build log, line by line, while it runs.

    buildx prints each status as pretty-printed JSON ending with a `}` line of its own;
    anything else (buildx's own ERROR and WARNING lines) is passed through.
    """

    def __init__(self) -> None:
        self._buffer: list[str] = []
        self._done: set[str] = set()

    def feed(self, line: str) -> None:
        if not self._buffer and not line.startswith("{"):
            sys.stderr.write(line)
            return
        self._buffer.append(line)
        if line.rstrip("\n") != "}":
            return
        text, self._buffer = "".join(self._buffer), []
        for status in iter_json_objects(text):
            self._show(status)

    def _show(self, status: dict[str, Any]) -> None:
        for entry in status.get("logs") or []:
            data = entry.get("data")
            if isinstance(data, str):
                sys.stderr.write(base64.b64decode(data).decode("utf-8", "replace"))
        for vertex in status.get("vertexes") or []:
            name, digest = vertex.get("name"), vertex.get("digest")
            if vertex.get("completed") and name and digest not in self._done:
                self._done.add(digest)
                sys.stderr.write(self._line(name, bool(vertex.get("cached")), vertex.get("error")))
        sys.stderr.flush()

    @staticmethod
    def _line(name: str, cached: bool, error: str | None) -> str:
        if error and CACHE_IMPORT_NAME.match(name) and is_missing_ref(error):
            return f"  none   {name} (no cache there yet: normal on a branch's first build)\n"
        state = "CACHED" if cached else "done"
        return f"  {state:6} {name}" + (f" ERROR: {error}" if error else "") + "\n"


def ecr_login(docker: str, registry: str) -> None:
    """`aws ecr get-login-password | docker login` for an ECR registry host."""
    match = ECR_HOST.match(registry)
    if not match:
        return
    region = match.group(1)
    info(f"logging in to {registry}")
    password = subprocess.run(
        ["aws", "ecr", "get-login-password", "--region", region],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    subprocess.run(
        [docker, "login", "--username", "AWS", "--password-stdin", registry],
        input=password,
        text=True,
        check=True,
        stdout=subprocess.DEVNULL,
    )


MIN_BUILDX = (0, 12)  # --progress=rawjson


def buildx_version(text: str) -> tuple[int, int] | None:
    """(major, minor) from `docker buildx version` output, e.g. "... v0.13.1 ..."."""
    match = re.search(r"\bv?(\d+)\.(\d+)\.\d+", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_buildx(docker: str) -> None:
    """Fail clearly when buildx is missing or too old for the progress stream we read."""
    found = subprocess.run(
        [docker, "buildx", "version"], capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        raise BuildFailed(f"docker buildx is not available: {found.stderr.strip()}")
    version = buildx_version(found.stdout)
    if version is not None and version < MIN_BUILDX:
        raise BuildFailed(
            f"buildx {version[0]}.{version[1]} is too old: the driver needs "
            f">= {MIN_BUILDX[0]}.{MIN_BUILDX[1]} (--progress=rawjson)"
        )


def ensure_builder(docker: str, setting: str, buildkit_image: str) -> str:
    """The buildx builder to use, created first when the setting asks for a standalone one."""
    if setting != "docker-container":
        return setting
    found = subprocess.run(
        [docker, "buildx", "inspect", STANDALONE_BUILDER],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        info(f"creating the standalone BuildKit builder {STANDALONE_BUILDER} ({buildkit_image})")
        subprocess.run(
            [docker, "buildx", "create", "--name", STANDALONE_BUILDER, "--driver",
             "docker-container", "--driver-opt", f"image={buildkit_image}", "--bootstrap"],
            check=True,
        )  # fmt: skip
    return STANDALONE_BUILDER


# ---------------------------------------------------------------- the build


def build(request: BuildRequest, *, docker: str = "docker", workdir: Path) -> BuildReport:
    """Build and push one image with the registry cache; raise BuildFailed if no image."""
    check_buildx(docker)
    builder = ensure_builder(docker, request.builder, request.buildkit_image)
    metadata_file = workdir / "metadata.json"
    cache_to = request.cache_ref(request.branch)
    cache_from = [] if request.mode == "clean" else request.cache_from_refs()
    warnings: list[str] = []

    def attempt(cache_from: Sequence[str], cache_to: str | None, no_cache: bool) -> Attempt:
        args = buildx_command(
            request,
            builder=builder,
            cache_from=cache_from,
            cache_to=cache_to,
            no_cache=no_cache,
            metadata_file=metadata_file,
        )
        return run_attempt(docker, args, metadata_file)

    no_cache = request.mode == "clean"
    first = attempt(cache_from, cache_to, no_cache)
    summary = first.summary
    for ref, error in summary.import_errors.items():
        if not is_missing_ref(error):
            warnings.append(f"cache {ref} could not be read, building without it: {error}")
            warn(warnings[-1])

    if first.returncode == 0:
        status = cold_or_warm(request, summary)
        return report_of(request, first.digest, summary, status, warnings)

    if summary.image_exported and summary.cache_export_error:
        return keep_image_without_cache(request, summary, attempt, cache_from, warnings)

    if cache_from and summary.cached_steps and not summary.failed_steps():
        # The image could not be made from the cache (a layer missing, a corrupt or
        # unreachable cache): build everything once more, without it.
        warnings.append(
            "the build failed with the cache "
            f"({summary.image_export_error or last_error(first.progress)}); "
            "rebuilding without it"
        )
        warn(warnings[-1])
        retry = attempt([], cache_to, True)
        retry_summary = retry.summary
        if retry.returncode == 0:
            return report_of(request, retry.digest, retry_summary, "fallback", warnings)
        if retry_summary.image_exported and retry_summary.cache_export_error:
            return keep_image_without_cache(request, retry_summary, attempt, [], warnings)
        first = retry
    raise BuildFailed(last_error(first.progress))


def keep_image_without_cache(
    request: BuildRequest,
    summary: ProgressSummary,
    attempt: AttemptRunner,
    cache_from: Sequence[str],
    warnings: list[str],
) -> BuildReport:
    """The image is pushed but the cache export failed: keep the image, warn, learn the digest.

    The repeat runs on the same builder without `--cache-to`: every step is in its local
    cache, so it only pushes the (already present) image again and writes the metadata.
    """
    warnings.append(
        f"the image was pushed but the cache export failed: {summary.cache_export_error}; "
        f"the cache ref {request.cache_ref(request.branch)} was not updated"
    )
    warn(warnings[-1])
    repeat = attempt(cache_from, None, False)
    if repeat.returncode != 0:
        raise BuildFailed(last_error(repeat.progress))
    return report_of(request, repeat.digest, summary, "export-failed", warnings)


def report_of(
    request: BuildRequest,
    digest: str,
    summary: ProgressSummary,
    cache_status: str,
    warnings: list[str],
) -> BuildReport:
    return BuildReport(
        digest, request.tags(), summary, cache_status, warnings, request.moving_tags()
    )


def cold_or_warm(request: BuildRequest, summary: ProgressSummary) -> str:
    if request.mode == "clean":
        return "clean"
    return "warm" if summary.cached_steps else "cold"


def last_error(stream: str) -> str:
    """BuildKit's most telling error: a failed vertex's, else the last ERROR line."""
    failed = [vertex for vertex in parse_progress(stream) if vertex.error]
    if failed:
        return f"{failed[-1].name}: {failed[-1].error}"
    errors = [line for line in stream.splitlines() if line.startswith("ERROR")]
    return errors[-1] if errors else "docker buildx build failed"


# ---------------------------------------------------------------- command line


def branch_from(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    """--branch, else LAYERCACHE_BRANCH, else the branch CODEBUILD_SOURCE_VERSION names."""
    branch = args.branch or env.get("LAYERCACHE_BRANCH", "")
    source_version = env.get("CODEBUILD_SOURCE_VERSION", "")
    if branch or not source_version:
        return branch
    try:
        branch = branch_from_source_version(source_version)
    except SourceVersionError as error:
        raise SystemExit(f"layercache: {error}") from None
    info(f"branch {branch!r} from CODEBUILD_SOURCE_VERSION={source_version}")
    if not source_version.startswith("refs/heads/"):
        warn(
            f"git resolves the bare source version {source_version!r} to a tag of that "
            "name, if there is one, before the branch: start builds with "
            f"--source-version refs/heads/{branch}"
        )
    return branch


def request_from(args: argparse.Namespace, env: Mapping[str, str]) -> BuildRequest:
    commit = (
        args.commit
        or env.get("LAYERCACHE_COMMIT")
        or env.get("CODEBUILD_RESOLVED_SOURCE_VERSION", "")
    )
    request = BuildRequest(
        repository=args.repository or env.get("LAYERCACHE_IMAGE_REPOSITORY_URI", ""),
        branch=branch_from(args, env),
        commit=commit,
        default_branch=args.default_branch or env.get("LAYERCACHE_DEFAULT_BRANCH", "main"),
        mode=(args.mode or env.get("LAYERCACHE_MODE") or "normal").lower(),
        dockerfile=args.dockerfile or env.get("LAYERCACHE_DOCKERFILE") or "Dockerfile",
        context=args.context or env.get("LAYERCACHE_BUILD_CONTEXT") or ".",
        cache_repository=args.cache_repository or env.get("LAYERCACHE_CACHE_REPOSITORY_URI", ""),
        refresh_date=env.get("LAYERCACHE_REFRESH_DATE", ""),
        network=args.network or env.get("LAYERCACHE_BUILD_NETWORK", ""),
        builder=args.builder if args.builder is not None else env.get("LAYERCACHE_BUILDER", ""),
        buildkit_image=env.get("LAYERCACHE_BUILDKIT_IMAGE") or DEFAULT_BUILDKIT_IMAGE,
        build_args=tuple(args.build_arg or ()),
    )
    missing = [
        name
        for name, value in (
            ("repository (LAYERCACHE_IMAGE_REPOSITORY_URI)", request.repository),
            (
                "branch (LAYERCACHE_BRANCH, or CODEBUILD_SOURCE_VERSION=refs/heads/<branch>)",
                request.branch,
            ),
            ("commit (LAYERCACHE_COMMIT or CODEBUILD_RESOLVED_SOURCE_VERSION)", request.commit),
        )
        if not value
    ]
    if missing:
        raise SystemExit(f"layercache: missing {', '.join(missing)}")
    if request.mode not in MODES:
        raise SystemExit(f"layercache: unknown mode {request.mode!r} (one of {', '.join(MODES)})")
    return request


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build and push one image with a BuildKit registry cache. Every option "
        "defaults to the LAYERCACHE_* variable the buildspec sets."
    )
    parser.add_argument("--repository", help="image repository, registry/name")
    parser.add_argument("--branch")
    parser.add_argument("--commit", help="full commit SHA")
    parser.add_argument("--default-branch")
    parser.add_argument("--mode", choices=MODES)
    parser.add_argument("--dockerfile")
    parser.add_argument("--context")
    parser.add_argument("--cache-repository", help="where cache refs live (default: repository)")
    parser.add_argument("--network", help="network for RUN steps, e.g. none")
    parser.add_argument(
        "--builder",
        help="docker-container (create a standalone BuildKit), a buildx builder name, "
        "or '' for the current builder (env LAYERCACHE_BUILDER)",
    )
    parser.add_argument("--build-arg", action="append", help="KEY=VALUE, repeatable")
    parser.add_argument("--export-file", help="write `export NAME=value` lines here")
    parser.add_argument("--report-file", help="write the detailed JSON report here")
    parser.add_argument("--no-login", action="store_true", help="skip the ECR login")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = parse_args(argv)
    request = request_from(args, env)
    docker = env.get("LAYERCACHE_DOCKER") or "docker"
    export_file = args.export_file or env.get("LAYERCACHE_EXPORT_FILE")
    report_file = args.report_file or env.get("LAYERCACHE_REPORT_FILE")
    info(
        f"building {request.repository} for {request.branch}@{request.commit[:SHORT_SHA]} "
        f"({request.mode}); cache {', '.join(request.cache_from_refs())}"
    )
    started = time.monotonic()
    try:
        if not args.no_login:
            for host in {request.repository.split("/")[0], request.cache_repo.split("/")[0]}:
                ecr_login(docker, host)
        with tempfile.TemporaryDirectory(prefix="layercache-") as tmp:
            report = build(request, docker=docker, workdir=Path(tmp))
    except (BuildFailed, subprocess.CalledProcessError) as error:
        sys.stderr.write(f"layercache: build failed: {error}\n")
        return 1
    variables = report.variables()
    if export_file:
        Path(export_file).write_text(export_lines(variables))
    if report_file:
        Path(report_file).write_text(json.dumps(report.as_json(), indent=2) + "\n")
    for name, value in variables.items():
        info(f"{name}={value}")
    info(f"done in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
