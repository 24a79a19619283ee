#!/usr/bin/env python3
"""The layercache build driver: one cached image build with BuildKit's registry cache.

CodeBuild runs it from the buildspec; tests and developers run the very same file
against any registry. Standard library only, so it runs on the system python3 of the
CodeBuild standard image.

What one run does:

1. logs in to ECR when the repository is in ECR (CodeBuild); any other registry is
   used as the local Docker configuration allows;
2. picks the builder: a standalone BuildKit (`docker-container`, created on demand from
   the pinned BuildKit image, mirrored into ECR on first use) on CodeBuild, or any named
   buildx builder (the local rig's);
3. runs ``docker buildx build --push`` with ``--cache-from`` the branch's cache ref and
   then the default branch's, and ``--cache-to`` the branch's cache ref
   (``mode=max,image-manifest=true,oci-mediatypes=true``, which ECR accepts); there is
   no pre-pull: BuildKit reads the cache manifest and fetches a layer only when a step
   that is not cached needs its contents;
4. reads BuildKit's progress stream (``--progress=rawjson``) and metadata file, and
   writes what happened as shell ``export`` lines that the buildspec sources and lists
   under ``exported-variables``.

Tags: the build pushes only the image's build tags, ``<commit>`` and
``<branch-slug>-<sha7>`` (`image_tags`), and writes each of them once: a build of a
commit that already has them (a nightly refresh, a re-run) leaves them on the first
image and pushes only the tags still missing, or pushes by digest (`tags_to_write`).
A moving tag that the repository's immutable-tag pattern covers stops the build before
it starts (`check_moving_tags`). The moving tags, ``<branch-slug>`` and ``latest``
on the default branch (`moving_tags`), are not pushed here: the driver exports them as
``LAYERCACHE_MOVING_TAGS`` and the build recorder moves them to this build's digest
after the build succeeded, with a conditional write on the branch's head, so an older
build that finishes later can never move them back.

With ``LAYERCACHE_BAKE_FILE`` set, the images of a Bake file are built instead
(bake_build.py); in a build of a fan-out batch (a CodeBuild batch build), only this
build's share of them (``LAYERCACHE_FANOUT_IMAGES``, ``LAYERCACHE_FANOUT_PLANNED``,
``LAYERCACHE_FANOUT_NEWCOMERS``).

The branch comes from ``LAYERCACHE_BRANCH`` (the triggers set it). A build started by
hand (``aws codebuild start-build --source-version refs/heads/<branch>``) has none; the
driver then reads it from ``CODEBUILD_SOURCE_VERSION`` (`branch_from_source_version`).

Failure policy (`classify_failure`):

- a cache ref that does not exist yet (the first build of a branch) is normal;
- only a failure to fetch what the cache holds (a cache layer the registry no longer
  has, a corrupt cache) is retried, once, with ``--no-cache``, with a warning: an
  unreachable or corrupt cache must not fail the build;
- a push the registry refuses (401/403, denied, unauthorized) fails the build at once
  with the registry's own error: no rebuild can fix it, and the cache is not to blame;
- a build whose image was pushed but whose cache export failed counts: the image is
  kept, the export is reported as a warning, and the cache ref stays as it was. The
  driver then repeats the build without ``--cache-to`` on the same builder (every step
  is in the builder's local cache, so this takes a second) to learn the digest;
- a step whose container failed to start (BuildKit's ``runc run failed: ...``, "failed
  to create shim task", "failed to start"; seen under load as ``read init-p: connection
  reset by peer``) is retried once, on the same builder; any other failure is not;
- the failure summary names the step that failed (`failure_reason`), never the benign
  "importing cache manifest ... not found" of a first build.

The progress stream is summarised while it streams (`ProgressReader`): memory does not
grow with the build's log.

The standalone BuildKit runs the image LAYERCACHE_BUILDKIT_IMAGE (default: a release
pinned by digest). With LAYERCACHE_BUILDKIT_MIRROR set to a repository (the stack's own
ECR repository), the first build copies that image there, and every build pulls it from
there (`buildkit_image`): Docker Hub is asked once per stack, not once per build.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TextIO, TypeVar

MODES = ("normal", "refresh", "clean")
#: The build-arg a refresh build sets to today's date; Dockerfiles declare it right
#: before their OS-package step (`ARG LAYERCACHE_REFRESH_DATE`), so that step and every
#: later one rebuild once a day on a refresh, while earlier steps stay cached.
REFRESH_ARG = "LAYERCACHE_REFRESH_DATE"
#: The builder the driver creates when asked for a standalone BuildKit.
STANDALONE_BUILDER = "layercache"
#: The BuildKit the standalone builder runs: the release buildx-stable-1 pointed at when
#: this was written (v0.32.2), pinned by the digest of its multi-platform index (amd64
#: and arm64), so a moved tag can never change what runs privileged with the push
#: credentials. Override with LAYERCACHE_BUILDKIT_IMAGE; docs/build-cache.md says how
#: to move the pin.
DEFAULT_BUILDKIT_IMAGE = (
    "moby/buildkit:v0.32.2@sha256:28a898719c18a33f4e8000685287fa36fd0dd9560c6440227d3a732d79bb41d8"
)
#: What follows the ref in `--cache-to` (bake_build.py's too): every stage's steps
#: (`mode=max`), as an OCI image manifest, which ECR accepts; the layers only the cache
#: holds compressed with zstd, which costs a cold build less than gzip (the image's own
#: layers keep the gzip they were pushed with: see docs/build-cache.md).
CACHE_EXPORT_OPTIONS = "mode=max,image-manifest=true,oci-mediatypes=true,compression=zstd"
MAX_TAG_LENGTH = 128  # Docker's limit
SHORT_SHA = 7
# A full or abbreviated commit id (SHA-1 or SHA-256 repositories).
COMMIT_ID = re.compile(r"^[0-9a-fA-F]{7,64}$")
# CodeBuild's "reference and commit" source version: `refs/heads/main^{<full sha>}`.
PINNED_REF = re.compile(r"^(?P<ref>.+)\^\{[0-9a-fA-F]{7,64}\}$")
# Bare names that git or CodeBuild read as something other than a branch name.
NOT_BRANCH_PREFIXES = ("refs/", "pr/", "heads/", "tags/", "pull/", "remotes/")
ECR_HOST = re.compile(r"^\d{12}\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
# A Dockerfile step as BuildKit names it: "[stage-1 2/4] RUN ..." or "[2/4] COPY ...";
# bake puts the target first: "[api stage-1 2/4] RUN ...".
STEP_NAME = re.compile(r"^\[(?:[^\]\s]+ ){0,2}\d+/\d+\] (?P<instruction>[A-Z]+)")
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
    "LAYERCACHE_IMAGES",  # with a Bake file: one JSON result per image (bake_build.py)
    # The platforms built: a platform's build its own, the join all it joined (else empty).
    "LAYERCACHE_PLATFORMS",
)


class BuildFailed(Exception):
    """The image could not be built or pushed."""


# ---------------------------------------------------------------- names and tags


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
class BuildSecret:
    """A build secret: its id in the Dockerfile and the variable that holds its value.

    The value never leaves that variable: BuildKit is given the variable's name
    (`--secret id=<id>,env=<variable>`), never the value, so it is in no argument, log
    line, exported variable or layer (a `RUN --mount=type=secret` sees it as a file)."""

    id: str
    variable: str

    def argument(self) -> str:
        return f"id={self.id},env={self.variable}"


#: The variables CodeBuild fills from Secrets Manager, one per BuildSecrets entry.
SECRET_VARIABLE = "LAYERCACHE_SECRET_{}"  # noqa: S105 - a variable name
SECRET_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


def build_secrets(spec: str, env: Mapping[str, str]) -> tuple[BuildSecret, ...]:
    """BuildSecrets (`id=<secret ARN>[:<json key>],...`) as the build's secrets: entry n's
    value is in LAYERCACHE_SECRET_<n>, which CodeBuild resolved from Secrets Manager."""
    ids = [entry.split("=", 1)[0].strip() for entry in spec.split(",") if entry.strip()]
    secrets = tuple(
        BuildSecret(secret_id, SECRET_VARIABLE.format(number))
        for number, secret_id in enumerate(ids, start=1)
    )
    bad = [secret.id for secret in secrets if not SECRET_ID.fullmatch(secret.id)]
    if bad:
        raise SystemExit(f"layercache: build secret ids must be [A-Za-z0-9_.-]: {bad}")
    unset = [f"{s.id} ({s.variable})" for s in secrets if not env.get(s.variable)]
    if unset:
        raise SystemExit(
            f"layercache: build secrets without a value: {', '.join(unset)}; CodeBuild sets "
            "them from Secrets Manager when the build starts (can the build role read them?)"
        )
    return secrets


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
    buildkit_mirror: str = ""  # registry/name to copy buildkit_image into and pull it from
    build_args: tuple[str, ...] = ()
    immutable_tag_pattern: str = ""  # ECR's exclusion filter (wildcard `*`): never moved
    # The build tags to push, once `tags_to_write` looked (None: all of `tags()`).
    write_tags: tuple[str, ...] | None = None
    # BuildKit secrets (`RUN --mount=type=secret,id=<id>`), each read from a variable.
    secrets: tuple[BuildSecret, ...] = ()
    # One platform of several (a batch's platform build, see join_platforms.py): built for
    # it alone, pushed under `<commit>-<arch>[-<part>]`, cached in `cache-<branch>-<arch>`,
    # and no moving tag (the join's index takes them). Empty: the builder's own platform.
    platform: str = ""
    part: str = ""  # the attempt's key (LAYERCACHE_REQUEST_ID's first 8): a fresh tag each

    @property
    def arch(self) -> str:
        """`linux/arm64` -> `arm64` (`linux/arm/v7` -> `arm-v7`); empty without a platform."""
        return self.platform.partition("/")[2].replace("/", "-")

    def platform_tag(self, platform: str) -> str:
        """The tag this commit's `platform` image is pushed under for the join."""
        arch = platform.partition("/")[2].replace("/", "-")
        return f"{self.commit}-{arch}" + (f"-{self.part}" if self.part else "")

    @property
    def cache_repo(self) -> str:
        return self.cache_repository or self.repository

    def cache_ref(self, branch: str) -> str:
        suffix = f"-{self.arch}" if self.platform else ""
        return f"{self.cache_repo}:{cache_tag(branch)}{suffix}"

    def cache_from_refs(self) -> list[str]:
        """The branch's cache first, then the default branch's (a new branch starts warm)."""
        refs = [self.cache_ref(self.branch)]
        fallback = self.cache_ref(self.default_branch)
        if fallback not in refs:
            refs.append(fallback)
        return refs

    def tags(self) -> list[str]:
        """The build tags of this commit on this branch (written once, never moved)."""
        if self.platform:
            return [self.platform_tag(self.platform)]
        return image_tags(self.branch, self.commit)

    def pushed_tags(self) -> list[str]:
        """The build tags this build pushes: those no earlier build of the commit wrote."""
        return self.tags() if self.write_tags is None else list(self.write_tags)

    def moving_tags(self) -> list[str]:
        """The tags the recorder moves to this build's image once it succeeded."""
        if self.platform:
            return []
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
    args += ["--file", request.dockerfile]
    if request.platform:
        args += ["--platform", request.platform]
    pushed = request.pushed_tags()
    if pushed:
        args.append("--push")
        for tag in pushed:
            args += ["--tag", f"{request.repository}:{tag}"]
    else:  # every build tag names an earlier image: push this one by its digest alone
        args += ["--output", f"type=image,name={request.repository},push-by-digest=true,push=true"]
    if request.network:
        args += ["--network", request.network]
    for ref in cache_from:
        args += ["--cache-from", f"type=registry,ref={ref}"]
    if cache_to:
        args += [
            "--cache-to",
            f"type=registry,ref={cache_to},{CACHE_EXPORT_OPTIONS}",
        ]
    if no_cache:
        args.append("--no-cache")
    if request.mode == "refresh":
        args += ["--pull", "--build-arg", f"{REFRESH_ARG}={request.refresh_value()}"]
    for build_arg in request.build_args:
        args += ["--build-arg", build_arg]
    for secret in request.secrets:
        args += ["--secret", secret.argument()]
    args.append(request.context)
    return args


# ---------------------------------------------------------------- BuildKit's progress


#: Of each running step's output, the end is kept (to tell a container that failed to
#: start from a command that failed); a step that completes without error drops it.
LOG_TAIL_CHARS = 2048
#: buildx's own ERROR lines kept for the failure summary (the last ones).
ERROR_LINES_KEPT = 5
#: A status object that never ends (a stray `{` line) is given up on at this size.
MAX_STATUS_CHARS = 8 * 1024 * 1024
# BuildKit's error of a RUN step whose process failed, with the command quoted in it.
PROCESS_FAILED = re.compile(r'process ".*" did not complete successfully: ', re.DOTALL)
# A container that never started: BuildKit's or the runtime's words for it.
START_FAILURE_ERROR = re.compile(
    r"runc (?:run|create|start) failed|unable to start container process"
    r"|failed to create shim task|OCI runtime (?:create|start) failed"
    r"|read init-p: connection reset by peer|failed to start\b",
    re.IGNORECASE,
)
# The same, as the runtime prints it in the step's output (the error then says only
# "exit code: 1"): the last line the step wrote, never the command's own words.
START_FAILURE_OUTPUT = re.compile(
    r"^(?:runc (?:run|create|start) failed: "
    r"|.*(?:unable to start container process: |failed to create shim task: ))"
)
# Fetching what the cache holds failed: a cache layer the registry no longer has, or a
# cached result BuildKit could not load.
CACHE_FETCH_ERROR = re.compile(
    r"could not fetch content descriptor|httpReadSeeker|blob unknown|failed to load cache"
    r"|unexpected commit digest|failed to get state for index",
    re.IGNORECASE,
)
# The registry refused: no rebuild can fix that.
REFUSED_ERROR = re.compile(
    r"\b(?:401|403)\b|unauthori[sz]ed|\bdenied\b|forbidden|authentication required"
    r"|no basic auth credentials|not authorized",
    re.IGNORECASE,
)
CANCELED = re.compile(r"^(?:context )?canceled$|: context canceled$", re.IGNORECASE)


@dataclass
class Vertex:
    """One node of the build graph as BuildKit reported it (merged over its updates)."""

    digest: str
    name: str = ""
    cached: bool = False
    started: dt.datetime | None = None
    completed: dt.datetime | None = None
    error: str = ""
    output_tail: str = ""  # the end of its output, kept while it runs and if it failed
    inputs: tuple[str, ...] = ()  # the digests of the vertices it was built from

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

    @property
    def is_benign(self) -> bool:
        """An error that is no failure: a cache ref not there yet, or a step canceled
        because another one failed."""
        if CACHE_IMPORT_NAME.match(self.name) and is_missing_ref(self.error):
            return True
        return bool(CANCELED.search(self.error.strip()))

    def start_failure(self) -> str:
        """The runtime's words if this step's container failed to start, else ``""``."""
        cause = PROCESS_FAILED.sub("", self.error)
        if START_FAILURE_ERROR.search(cause):
            return cause
        if cause != self.error:  # the process "did not complete": look at what it printed
            lines = [line.strip() for line in self.output_tail.splitlines() if line.strip()]
            if lines and START_FAILURE_OUTPUT.match(lines[-1]):
                return lines[-1]
        return ""

    def describe(self) -> str:
        text = f"{self.name}: {self.error}"
        cause = self.start_failure()
        return f"{text} ({cause})" if cause and cause not in self.error else text


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


def iter_json_objects(text: str) -> Iterator[dict[str, Any] | str]:
    """The JSON objects in `text`, and the lines between them that are not JSON."""
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
            end = len(text) if newline < 0 else newline + 1
            yield text[index:end]
            index = end
            continue
        if isinstance(obj, dict):
            yield obj


class ProgressReader:
    """Reads buildx's ``--progress=rawjson`` stream line by line, as it arrives.

    It echoes a readable build log to `out` (step lines, the steps' own output, buildx's
    other lines) and keeps a running summary: each vertex merged over its updates, the
    end of the output of running and failed steps, and buildx's last ERROR lines. The
    stream itself is never kept: memory does not grow with the log.

    buildx prints each status as pretty-printed JSON ending with a `}` line of its own;
    anything else (buildx's own ERROR and WARNING lines) is passed through.
    """

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out
        self._buffer: list[str] = []
        self._buffered = 0
        self._vertices: dict[str, Vertex] = {}
        self._shown: set[str] = set()
        self.error_lines: deque[str] = deque(maxlen=ERROR_LINES_KEPT)

    def feed(self, line: str) -> None:
        if not self._buffer and not line.startswith("{"):
            self._other(line)
            return
        self._buffer.append(line)
        self._buffered += len(line)
        closing = line.rstrip("\r\n")
        single = len(self._buffer) == 1 and closing.endswith("}")
        if closing == "}" or single or self._buffered > MAX_STATUS_CHARS:
            self._flush()

    def finish(self) -> None:
        """The stream ended: read what is left of it."""
        self._flush()
        if self._out is not None:
            self._out.flush()

    def vertices(self) -> list[Vertex]:
        """Every vertex, in the order it first appeared."""
        return list(self._vertices.values())

    def summary(self) -> ProgressSummary:
        return summarize(self.vertices(), self.error_lines)

    def _flush(self) -> None:
        text, self._buffer, self._buffered = "".join(self._buffer), [], 0
        for item in iter_json_objects(text):
            if isinstance(item, str):
                self._other(item)
            else:
                self._status(item)
        if self._out is not None:
            self._out.flush()

    def _other(self, line: str) -> None:
        if line.startswith("ERROR"):
            self.error_lines.append(line.rstrip("\n"))
        if self._out is not None:
            self._out.write(line if line.endswith("\n") else line + "\n")

    def _status(self, status: dict[str, Any]) -> None:
        for entry in status.get("logs") or []:
            data = entry.get("data")
            if not isinstance(data, str):
                continue
            text = base64.b64decode(data).decode("utf-8", "replace")
            self._write(text)
            digest = str(entry.get("vertex", ""))
            vertex = self._vertices.setdefault(digest, Vertex(digest=digest))
            if not vertex.completed or vertex.error:
                vertex.output_tail = (vertex.output_tail + text)[-LOG_TAIL_CHARS:]
        for update in status.get("vertexes") or []:
            digest = str(update.get("digest", ""))
            vertex = self._vertices.setdefault(digest, Vertex(digest=digest))
            vertex.name = str(update.get("name") or vertex.name)
            vertex.cached = vertex.cached or bool(update.get("cached"))
            vertex.started = _timestamp(update.get("started")) or vertex.started
            vertex.completed = _timestamp(update.get("completed")) or vertex.completed
            vertex.error = str(update.get("error") or vertex.error)
            vertex.inputs = tuple(str(digest) for digest in update.get("inputs") or ()) or (
                vertex.inputs
            )
            if vertex.completed and not vertex.error:
                vertex.output_tail = ""  # done, and fine: its output is of no more use
            if vertex.completed and vertex.name and digest not in self._shown:
                self._shown.add(digest)
                self._write(self._line(vertex))

    def _write(self, text: str) -> None:
        if self._out is not None:
            self._out.write(text)

    @staticmethod
    def _line(vertex: Vertex) -> str:
        name, error = vertex.name, vertex.error
        if error and CACHE_IMPORT_NAME.match(name) and is_missing_ref(error):
            return f"  none   {name} (no cache there yet: normal on a branch's first build)\n"
        state = "CACHED" if vertex.cached else "done"
        return f"  {state:6} {name}" + (f" ERROR: {error}" if error else "") + "\n"


def read_progress(lines: Iterable[str], out: TextIO | None = None) -> ProgressReader:
    """Feed a whole stream (an iterable of lines) through a ProgressReader."""
    reader = ProgressReader(out)
    for line in lines:
        reader.feed(line)
    reader.finish()
    return reader


def parse_progress(text: str) -> list[Vertex]:
    """The vertices of a `--progress=rawjson` stream, in the order they first appeared."""
    return read_progress(text.splitlines(keepends=True)).vertices()


@dataclass
class ProgressSummary:
    """What one attempt's progress stream says about the cache, the timings and failures."""

    steps: list[Vertex]
    imported_refs: list[str]  # cache refs whose manifest was read
    import_errors: dict[str, str]  # cache ref -> BuildKit's error
    image_exported: bool  # the image export (and push) completed without error
    image_export_error: str
    cache_export_error: str
    build_seconds: float
    push_seconds: float
    cache_export_seconds: float
    failed: list[Vertex] = field(default_factory=list)  # errors that are failures
    error_lines: list[str] = field(default_factory=list)  # buildx's last ERROR lines

    @property
    def cached_steps(self) -> int:
        return sum(1 for step in self.steps if step.cached)

    @property
    def hit_ratio(self) -> float:
        return self.cached_steps / len(self.steps) if self.steps else 0.0

    @property
    def cache_ref_hit(self) -> str:
        """The first imported cache ref, if any step came from the cache; else `none`."""
        if self.cached_steps and self.imported_refs:
            return self.imported_refs[0]
        return "none"

    def in_asked_order(self, refs: Sequence[str]) -> ProgressSummary:
        """This summary with its imported refs in the order the build asked for them.

        BuildKit reads the cache refs side by side and reports them in whatever order
        they finish; the branch's own ref comes first in `refs`.
        """
        asked = {ref: rank for rank, ref in enumerate(refs)}
        ordered = sorted(self.imported_refs, key=lambda ref: asked.get(ref, len(asked)))
        return replace(self, imported_refs=ordered)

    def failed_steps(self) -> list[Vertex]:
        return [step for step in self.steps if step.error and not step.is_benign]

    def error_texts(self) -> list[str]:
        """Every failure's error, without the commands quoted in them (a command's own
        words, `RUN curl ... || echo denied`, must not decide what kind of failure it was)."""
        texts = [PROCESS_FAILED.sub("", vertex.error) for vertex in self.failed]
        texts += [PROCESS_FAILED.sub("", line) for line in self.error_lines]
        return texts


def summarize(vertices: Sequence[Vertex], error_lines: Iterable[str] = ()) -> ProgressSummary:
    steps = [vertex for vertex in vertices if vertex.is_step]
    imported: list[str] = []
    import_errors: dict[str, str] = {}
    image_exports: list[Vertex] = []
    cache_exports: list[Vertex] = []
    failed: list[Vertex] = []
    for vertex in vertices:
        match = CACHE_IMPORT_NAME.match(vertex.name)
        if match:
            if vertex.error:
                import_errors[match.group("ref")] = vertex.error
            elif vertex.completed:
                imported.append(match.group("ref"))
            continue  # BuildKit goes on without a cache it cannot read: not a failure
        if vertex.name.startswith(IMAGE_EXPORT_NAMES) or vertex.name.startswith("pushing "):
            image_exports.append(vertex)
        elif vertex.name.startswith(CACHE_EXPORT_PREFIX):
            cache_exports.append(vertex)
            continue  # a failed cache export is a warning, not a failure
        if vertex.error and not vertex.is_benign:
            failed.append(vertex)
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
        failed=failed,
        error_lines=list(error_lines),
    )


def is_missing_ref(error: str) -> bool:
    """BuildKit's error for a cache ref that does not exist (yet): normal, not a warning."""
    return "not found" in error.lower()


# ---------------------------------------------------------------- what failed

#: The kinds of failure `classify_failure` tells apart.
CACHE_EXPORT_FAILED = "cache-export"  # the image is pushed; only the cache export failed
REFUSED = "refused"  # the registry refused (401/403, denied): fail at once
CACHE_FETCH_FAILED = "cache-fetch"  # what the cache holds could not be fetched: rebuild
CONTAINER_START_FAILED = "container-start"  # a step's container did not start: retry once
FAILED = "failed"  # anything else: the build's own failure, reported as it is


def classify_failure(summary: ProgressSummary, *, cache_used: bool) -> str:
    """What kind of failure a failed attempt had, which decides what the driver does next.

    `cache_used`: the attempt read a cache (`--cache-from`); a fetch failure can only be
    the cache's fault then.
    """
    if summary.image_exported and summary.cache_export_error:
        return CACHE_EXPORT_FAILED
    texts = summary.error_texts()
    # A fetch from the cache that failed, even refused, is the cache's: build without it.
    if cache_used and summary.imported_refs and any(CACHE_FETCH_ERROR.search(t) for t in texts):
        return CACHE_FETCH_FAILED
    if any(REFUSED_ERROR.search(text) for text in texts):
        return REFUSED
    if any(step.start_failure() for step in summary.failed_steps()):
        return CONTAINER_START_FAILED
    return FAILED


def failure_reason(summary: ProgressSummary, returncode: int = 1) -> str:
    """What failed, for the build log's last line: the step that failed, else the push,
    else any other failed vertex, else buildx's last ERROR line. Never the benign "no
    cache there yet" of a first build, nor a step canceled because another one failed."""
    steps = summary.failed_steps()
    if steps:
        return steps[0].describe()
    if summary.image_export_error:
        exports = [v for v in summary.failed if v.error == summary.image_export_error]
        name = exports[0].name if exports else "exporting to image"
        return f"{name}: {summary.image_export_error}"
    if summary.failed:
        return summary.failed[0].describe()
    if summary.error_lines:
        return summary.error_lines[-1]
    return f"docker buildx build failed (exit status {returncode})"


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
    platform: str = ""  # one platform of several, or empty

    @property
    def cache_ref_hit(self) -> str:
        return self.summary.cache_ref_hit

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
            "LAYERCACHE_IMAGES": "",
            "LAYERCACHE_PLATFORMS": self.platform,
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
    summary: ProgressSummary
    metadata: dict[str, Any]
    vertices: tuple[Vertex, ...] = ()  # as BuildKit reported them, in order

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def digest(self) -> str:
        return str(self.metadata.get("containerimage.digest", ""))


def warn(message: str) -> None:
    sys.stderr.write(f"layercache: warning: {message}\n")


def info(message: str) -> None:
    sys.stderr.write(f"layercache: {message}\n")


def run_attempt(docker: str, args: Sequence[str], metadata_file: Path) -> Attempt:
    """Run one `docker buildx build`, echoing and summarising its progress as it streams."""
    metadata_file.unlink(missing_ok=True)
    info("$ " + shlex.join([docker, *args]))
    reader = ProgressReader(sys.stderr)
    with subprocess.Popen(
        [docker, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            reader.feed(line)
    reader.finish()
    if proc.returncode != 0 and not reader.vertices():
        check_buildx(docker)  # buildx never reached BuildKit: say why, if it is buildx
    metadata: dict[str, Any] = {}
    if proc.returncode == 0 and metadata_file.exists():
        metadata = json.loads(metadata_file.read_text() or "{}")
    return Attempt(proc.returncode, reader.summary(), metadata, tuple(reader.vertices()))


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
    """Fail clearly when buildx is missing or too old for the progress stream we read.

    Asked only once a `buildx build` or `bake` failed before BuildKit reported anything
    (`run_attempt`): a working buildx needs no check, and each costs a process."""
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


def mirror_refs(image: str, mirror: str) -> tuple[str, str]:
    """(the ref builds pull, the ref the first build pushes) for `image` in `mirror`.

    An image pinned by digest is pulled from the mirror by that same digest (a one-source
    `imagetools create` is a carbon copy of an index), and pushed under a tag that names
    it: `moby/buildkit:v0.32.2@sha256:28a8...` -> `<mirror>@sha256:28a8...`, pushed as
    `<mirror>:v0.32.2-28a898719c18`. An image named by tag only is mirrored under its tag.
    """
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    if digest:
        label = digest.partition(":")[2][:12]
        return f"{mirror}@{digest}", f"{mirror}:{tag}-{label}" if tag else f"{mirror}:{label}"
    return f"{mirror}:{tag or 'latest'}", f"{mirror}:{tag or 'latest'}"


#: The manifests a tag may name, an index first (buildx pushes one): a registry asked
#: without one it can serve may answer 404 for a tag that exists.
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
LOOKUP_TIMEOUT_SECONDS = 10
LOOPBACK_HOSTS = re.compile(r"^(?:localhost|127(?:\.\d{1,3}){3})(?::\d+)?$")


def stored_login(host: str, env: Mapping[str, str]) -> str:
    """The credentials `docker login` stored for `host` in the Docker config (base64
    `user:password`, as ECR's login leaves them); "" if none, or a helper keeps them."""
    directory = Path(env.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    entry = (config.get("auths") or {}).get(host) if isinstance(config, dict) else None
    return str(entry.get("auth") or "") if isinstance(entry, dict) else ""


def manifest_status(ref: str, env: Mapping[str, str]) -> int | None:
    """The registry's HTTP status for a HEAD of `ref`'s manifest, asked directly: a
    process less than `imagetools inspect`. Only where the answer is the registry's own:
    a loopback registry (plain HTTP, as Docker treats it), or one `docker login` stored
    Basic credentials for (ECR); None anywhere else, and when the registry was not
    reached."""
    host, _, path = ref.partition("/")
    name, at, digest = path.partition("@")
    reference = digest if at else ""
    if not at:
        name, _, reference = path.rpartition(":")
    loopback = LOOPBACK_HOSTS.match(host) is not None
    login = "" if loopback else stored_login(host, env)
    if not (loopback or login) or not name or not reference:
        return None
    import http.client  # only when asked: the driver's start stays light

    connection = (http.client.HTTPConnection if loopback else http.client.HTTPSConnection)(
        host, timeout=LOOKUP_TIMEOUT_SECONDS
    )
    headers = {"Accept": MANIFEST_TYPES, "User-Agent": "layercache-driver"}
    if login:
        headers["Authorization"] = f"Basic {login}"
    try:
        connection.request("HEAD", f"/v2/{name}/manifests/{reference}", headers=headers)
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def image_exists(docker: str, ref: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the registry has `ref`: asked directly where it can be (`manifest_status`:
    200 or 404), else with `docker buildx imagetools inspect`."""
    status = manifest_status(ref, os.environ if env is None else env)
    if status in (200, 404):
        return status == 200
    found = subprocess.run(
        [docker, "buildx", "imagetools", "inspect", ref],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.returncode == 0


def buildkit_image(docker: str, image: str, mirror: str) -> str:
    """The BuildKit image the standalone builder runs: `image`, or its copy in `mirror`.

    With a mirror, the first build copies the image there (`docker buildx imagetools
    create`, registry to registry) and every build pulls it from there. If the copy
    cannot be made, the build warns and pulls `image` from its source this once.
    """
    if not mirror:
        return image
    pull_ref, push_ref = mirror_refs(image, mirror)
    if image_exists(docker, pull_ref):
        info(f"BuildKit image {image} from the mirror {pull_ref}")
        return pull_ref
    info(f"mirroring the BuildKit image {image} to {push_ref} (its first use here)")
    copied = subprocess.run(
        [docker, "buildx", "imagetools", "create", "--tag", push_ref, image],
        capture_output=True,
        text=True,
        check=False,
    )
    if image_exists(docker, pull_ref):  # a concurrent first build may have copied it
        return pull_ref
    detail = (copied.stderr or copied.stdout).strip()[-500:] or f"{pull_ref} is not there"
    warn(f"could not mirror {image} to {mirror} ({detail}); pulling it from its source")
    return image


#: Where the build runs (the template's BuildHost, LAYERCACHE_BUILD_HOST): a new host per
#: build (`on-demand`), a reserved-capacity fleet's host, reused by later builds (`fleet`),
#: or the project's Docker server, which DOCKER_HOST points at (`docker-server`).
BUILD_HOSTS = ("on-demand", "fleet", "docker-server")
#: What `buildx create` says when another build created the same builder a moment before.
EXISTING_BUILDER = re.compile(r"existing instance for \S+ but no append mode")


@dataclass(frozen=True)
class Builder:
    """The buildx builder a build runs on, and what it had before the build.

    `state`: `kept` (a standalone BuildKit's container and state volume that an earlier
    build left on this engine: its local cache is warm), `new` (created empty here: the
    build starts from the registry cache alone), or `named` (a builder the setting names,
    which the driver neither creates nor inspects)."""

    name: str
    state: str


def build_host_of(env: Mapping[str, str]) -> str:
    """LAYERCACHE_BUILD_HOST, one of BUILD_HOSTS (`on-demand` when unset)."""
    host = (env.get("LAYERCACHE_BUILD_HOST") or "on-demand").strip().lower()
    if host not in BUILD_HOSTS:
        raise SystemExit(
            f"layercache: unknown build host {host!r} (LAYERCACHE_BUILD_HOST: one of "
            f"{', '.join(BUILD_HOSTS)})"
        )
    return host


def standalone_name(setting: str) -> str:
    """`docker-container` -> STANDALONE_BUILDER; `docker-container:<name>` -> <name>."""
    return setting.partition(":")[2] or STANDALONE_BUILDER


def builder_container(name: str) -> str:
    """The container buildx's docker-container driver runs a builder's only node in; its
    state lives in the volume `<container>_state`, which outlives the buildx config."""
    return f"buildx_buildkit_{name}0"


def kept_container_image(docker: str, name: str) -> str:
    """The image of the builder's container on this engine, "" when there is none."""
    found = subprocess.run(
        [docker, "container", "inspect", "--format", "{{.Config.Image}}", builder_container(name)],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip() if found.returncode == 0 else ""


def create_builder(docker: str, name: str, image: str, driver_opts: Sequence[str]) -> None:
    """`buildx create --bootstrap`, idempotent: a build that started at the same moment
    and created the builder first is success, and the builder is then started."""
    options = [arg for opt in (f"image={image}", *driver_opts) for arg in ("--driver-opt", opt)]
    created = subprocess.run(
        [docker, "buildx", "create", "--name", name, "--driver", "docker-container",
         *options, "--bootstrap"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if created.returncode == 0:
        return
    said = (created.stderr or created.stdout).strip()
    if not EXISTING_BUILDER.search(said):
        raise BuildFailed(f"could not create the builder {name}: {said[-500:]}")
    info(f"builder {name} was created by another build at the same moment; using it")
    started = subprocess.run(
        [docker, "buildx", "inspect", "--bootstrap", name], capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    if started.returncode != 0:
        raise BuildFailed(f"could not start the builder {name}: {started.stderr.strip()[-500:]}")


def prepare_builder(
    docker: str,
    setting: str,
    image: str,
    mirror: str = "",
    *,
    env: Mapping[str, str] | None = None,
) -> Builder:
    """The builder to build on: a named one as it is, or the standalone BuildKit, reused.

    buildx keeps a builder's name in ~/.docker/buildx, which a new build container does
    not have; the engine keeps its container `buildx_buildkit_<name>0` and state volume,
    on a reused fleet host (with the local Docker layer cache) or on the project's Docker
    server. `buildx create` under the same name finds and starts that container (buildx
    0.13 on the rig: its local cache is intact), so the builder is re-created by name
    rather than created empty. A kept container running another image than the pinned
    one (the pin moved) is removed first, its state volume kept; the new one mounts it.
    Every build still reads and writes the registry cache: a recycled host starts warm
    from there.
    """
    env = os.environ if env is None else env
    if setting != "docker-container" and not setting.startswith("docker-container:"):
        return Builder(setting, "named")
    host = build_host_of(env)
    name = standalone_name(setting)
    if host == "docker-server" and not env.get("DOCKER_HOST"):
        warn(
            "build host docker-server, but DOCKER_HOST is not set: the builder runs on "
            "this build's own engine, which starts empty"
        )
    kept = kept_container_image(docker, name)
    wanted = {image, mirror_refs(image, mirror)[0]} if mirror else {image}
    if kept and kept not in wanted:
        warn(f"builder {name} runs {kept}, not {image}: replacing its container, keeping its state")
        subprocess.run(
            [docker, "container", "rm", "--force", builder_container(name)],
            capture_output=True, check=False,
        )  # fmt: skip
        kept = ""
    known = subprocess.run(
        [docker, "buildx", "inspect", name], capture_output=True, text=True, check=False
    )
    if known.returncode != 0:
        if not kept:
            image = buildkit_image(docker, image, mirror)
        opts = [opt for opt in env.get("LAYERCACHE_BUILDKIT_DRIVER_OPTS", "").split(",") if opt]
        verb = "re-creating" if kept else "creating"
        info(f"{verb} the standalone BuildKit builder {name} ({kept or image})")
        create_builder(docker, name, kept or image, opts)
    builder = Builder(name, "kept" if kept else "new")
    info(
        f"build host {host}: builder {name} "
        + (
            "kept from an earlier build on this engine (its local cache is warm)"
            if kept
            else "new on this engine (it starts from the registry cache)"
        )
    )
    info(f"LAYERCACHE_BUILDER_STATE={builder.state}")
    return builder


def ensure_builder(docker: str, setting: str, image: str, mirror: str = "") -> str:
    """The buildx builder to use, created (or found again) when the setting asks for a
    standalone one (`prepare_builder`)."""
    return prepare_builder(docker, setting, image, mirror).name


# ---------------------------------------------------------------- tags written once


def matches_tag_pattern(tag: str, pattern: str) -> bool:
    """ECR's wildcard filter: `*` stands for any run of characters, all else is literal."""
    return (
        bool(pattern)
        and re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), tag, re.DOTALL)
        is not None
    )


def check_moving_tags(request: BuildRequest) -> None:
    """Refuse a build whose moving tags the repository keeps immutable, before it runs.

    ECR would accept the first publication of such a tag and refuse every later one, so
    the branch would stay on its first image; better a clear failure now.
    """
    covered = [
        tag for tag in request.moving_tags()
        if matches_tag_pattern(tag, request.immutable_tag_pattern)
    ]  # fmt: skip
    if covered:
        raise BuildFailed(
            f"the moving tag(s) {', '.join(covered)} of branch {request.branch} match the "
            f"repository's immutable tag pattern {request.immutable_tag_pattern!r}: ECR would "
            "never move them. Narrow ImmutableTagPattern or rename the branch."
        )


def tags_to_write(docker: str, request: BuildRequest) -> BuildRequest:
    """The request with the build tags an earlier build of the commit has not written.

    A rebuild of a commit (a nightly refresh, a Redeliver or re-run after a success, a
    clean build) makes a new image; moving `<commit>` to it would change what a
    deployment pinned to that tag runs. The first image keeps its tags; this one gets
    the missing ones, or none (it is pushed by digest and reached by its moving tags,
    the build record and the report).
    """
    tags = request.tags()
    present = concurrently(
        [partial(image_exists, docker, f"{request.repository}:{tag}") for tag in tags]
    )
    missing = tuple(tag for tag, there in zip(tags, present, strict=True) if not there)
    kept = [tag for tag in tags if tag not in missing]
    if kept:
        info(
            f"{', '.join(kept)} already name(s) an earlier image of commit {request.commit[:12]}: "
            "build tags are written once, "
            + (
                f"this build pushes {', '.join(missing)}"
                if missing
                else "this image is pushed by digest"
            )
        )
    return replace(request, write_tags=missing)


Result = TypeVar("Result")


def concurrently(calls: Sequence[Callable[[], Result]]) -> list[Result]:
    """Each call's result, in order, the calls run side by side, one thread each (each
    waits on the network or a process: a registry lookup, a builder check). The first
    call that raised, in order, raises. (Threads, not concurrent.futures: its import
    costs the driver's every start more than the threads do.)"""
    if len(calls) <= 1:
        return [call() for call in calls]
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as error:  # noqa: BLE001 - raised again below, in the caller
            errors[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
    return results


def prepare(docker: str, request: BuildRequest) -> tuple[BuildRequest, str]:
    """(the request with the build tags to write, the builder), looked up side by side:
    neither needs the other, and each mostly waits on a registry or a process."""
    lookups: list[Callable[[], object]] = [
        partial(tags_to_write, docker, request),
        partial(
            ensure_builder, docker, request.builder, request.buildkit_image, request.buildkit_mirror
        ),
    ]
    written, builder = concurrently(lookups)
    assert isinstance(written, BuildRequest)
    assert isinstance(builder, str)
    return written, builder


# ---------------------------------------------------------------- the build


def build(request: BuildRequest, *, docker: str = "docker", workdir: Path) -> BuildReport:
    """Build and push one image with the registry cache; raise BuildFailed if no image."""
    check_moving_tags(request)
    request, builder = prepare(docker, request)
    metadata_file = workdir / "metadata.json"
    cache_used = request.mode != "clean"
    warnings: list[str] = []

    def run(use_cache: bool, export_cache: bool, no_cache: bool) -> Attempt:
        args = buildx_command(
            request,
            builder=builder,
            cache_from=request.cache_from_refs() if use_cache else [],
            cache_to=request.cache_ref(request.branch) if export_cache else None,
            no_cache=no_cache,
            metadata_file=metadata_file,
        )
        return run_attempt(docker, args, metadata_file)

    result = build_with_policy(
        with_start_retry(run, warnings),
        cache_used=cache_used,
        no_cache=request.mode == "clean",
        cache_names=request.cache_ref(request.branch),
        warnings=warnings,
    )
    status = result.cache_status or cold_or_warm(request, result.summary)
    return report_of(request, result.attempt.digest, result.summary, status, warnings)


PolicyRunner = Callable[[bool, bool, bool], "Attempt"]
"""Runs one build attempt: (use the cache refs, export the cache, --no-cache)."""


def with_start_retry(run: PolicyRunner, warnings: list[str]) -> PolicyRunner:
    """`run`, repeated once on the same builder when a build container failed to start."""
    retries_left = [1]  # one retry per build

    def attempt(use_cache: bool, export_cache: bool, no_cache: bool) -> Attempt:
        result = run(use_cache, export_cache, no_cache)
        kind = "" if result.ok else classify_failure(result.summary, cache_used=use_cache)
        if kind == CONTAINER_START_FAILED and retries_left[0] > 0:
            retries_left[0] -= 1
            warnings.append(
                f"a build container failed to start ({failure_reason(result.summary)}); "
                "retrying once on the same builder"
            )
            warn(warnings[-1])
            result = run(use_cache, export_cache, no_cache)
        return result

    return attempt


@dataclass(frozen=True)
class PolicyResult:
    """The attempt whose metadata names the image(s), the attempt whose steps built them
    (the same one unless a repeat only learnt the digest), and the cache status the
    failure policy decided ("" when none did)."""

    attempt: Attempt
    built: Attempt
    cache_status: str = ""

    @property
    def summary(self) -> ProgressSummary:
        return self.built.summary


def build_with_policy(
    attempt: PolicyRunner,
    *,
    cache_used: bool,
    no_cache: bool,
    cache_names: str,
    warnings: list[str],
) -> PolicyResult:
    """Run a build under the driver's failure policy (see the module docstring).

    `cache_used`: the first attempt reads the cache refs; `cache_names` names the refs
    the build exports, for the warning when that export fails.
    """
    first = attempt(cache_used, True, no_cache)
    summary = first.summary
    for ref, error in summary.import_errors.items():
        if not is_missing_ref(error):
            warnings.append(f"cache {ref} could not be read, building without it: {error}")
            warn(warnings[-1])
    if first.ok:
        return PolicyResult(first, first)

    kind = classify_failure(summary, cache_used=cache_used)
    if kind == CACHE_EXPORT_FAILED:
        return keep_image_without_cache(first, attempt, cache_used, cache_names, warnings)
    if kind == CACHE_FETCH_FAILED:
        # What the cache holds could not be fetched (a layer missing, a corrupt cache):
        # build everything once more, without it.
        warnings.append(
            f"the build could not use the cache ({failure_reason(summary)}); rebuilding without it"
        )
        warn(warnings[-1])
        retry = attempt(False, True, True)
        if retry.ok:
            return PolicyResult(retry, retry, "fallback")
        if classify_failure(retry.summary, cache_used=False) == CACHE_EXPORT_FAILED:
            return keep_image_without_cache(retry, attempt, False, cache_names, warnings)
        first, kind = retry, classify_failure(retry.summary, cache_used=False)
    raise BuildFailed(failure_message(kind, first))


def failure_message(kind: str, attempt: Attempt) -> str:
    reason = failure_reason(attempt.summary, attempt.returncode)
    if kind == REFUSED:
        return f"the registry refused (no rebuild can fix that): {reason}"
    return reason


def keep_image_without_cache(
    built: Attempt,
    attempt: PolicyRunner,
    cache_used: bool,
    cache_names: str,
    warnings: list[str],
) -> PolicyResult:
    """The image is pushed but the cache export failed: keep the image, warn, learn the digest.

    The repeat runs on the same builder without exporting the cache: every step is in
    its local cache, so it only pushes the (already present) image again and writes the
    metadata.
    """
    warnings.append(
        f"the image was pushed but the cache export failed: {built.summary.cache_export_error}; "
        f"the cache ref {cache_names} was not updated"
    )
    warn(warnings[-1])
    repeat = attempt(cache_used, False, False)
    if not repeat.ok:
        kind = classify_failure(repeat.summary, cache_used=cache_used)
        raise BuildFailed(failure_message(kind, repeat))
    return PolicyResult(repeat, built, "export-failed")


def report_of(
    request: BuildRequest,
    digest: str,
    summary: ProgressSummary,
    cache_status: str,
    warnings: list[str],
) -> BuildReport:
    summary = summary.in_asked_order(request.cache_from_refs())
    return BuildReport(
        digest,
        request.pushed_tags(),
        summary,
        cache_status,
        warnings,
        request.moving_tags(),
        request.platform,
    )


def cold_or_warm(request: BuildRequest, summary: ProgressSummary) -> str:
    if request.mode == "clean":
        return "clean"
    return "warm" if summary.cached_steps else "cold"


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
        buildkit_mirror=env.get("LAYERCACHE_BUILDKIT_MIRROR", "").strip().rstrip("/"),
        build_args=tuple(args.build_arg or ()),
        immutable_tag_pattern=env.get("LAYERCACHE_IMMUTABLE_TAG_PATTERN", "").strip(),
        secrets=build_secrets(env.get("LAYERCACHE_BUILD_SECRETS", ""), env),
        platform=env.get("LAYERCACHE_PLATFORM", "").strip(),
        part=env.get("LAYERCACHE_REQUEST_ID", "").strip()[:8],
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
    build_host_of(env)  # an unknown LAYERCACHE_BUILD_HOST stops the build before it starts
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
    parser.add_argument(
        "--bake-file",
        help="build the targets of this Bake file (comma-separated files are merged), each "
        "into <repository>/<target> (env LAYERCACHE_BAKE_FILE)",
    )
    parser.add_argument(
        "--bake-targets",
        help="the targets or groups to build, comma-separated; default: the file's default "
        "group (env LAYERCACHE_BAKE_TARGETS)",
    )
    parser.add_argument(
        "--fanout-images",
        help="a build of a fan-out batch: the Bake targets it builds, comma-separated "
        "(env LAYERCACHE_FANOUT_IMAGES; unset: every image)",
    )
    parser.add_argument(
        "--fanout-planned",
        help="every image the batch was planned with, comma-separated "
        "(env LAYERCACHE_FANOUT_PLANNED)",
    )
    parser.add_argument(
        "--fanout-newcomers",
        action="store_const",
        const="true",
        help="this build of the batch also builds the images the Bake file declares beyond "
        "the plan (env LAYERCACHE_FANOUT_NEWCOMERS=true)",
    )
    parser.add_argument("--export-file", help="write `export NAME=value` lines here")
    parser.add_argument("--report-file", help="write the detailed JSON report here")
    parser.add_argument("--no-login", action="store_true", help="skip the ECR login")
    return parser.parse_args(argv)


def registry_hosts(request: BuildRequest) -> list[str]:
    """The registries the build reads or writes: image, cache, and the BuildKit mirror."""
    refs = [request.repository, request.cache_repo]
    if request.builder == "docker-container" and request.buildkit_mirror:
        refs.append(request.buildkit_mirror)
    return sorted({ref.split("/")[0] for ref in refs})


def bake_module() -> Any:
    """bake_build.py, which lives beside this file (several images from one Bake file)."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    sys.modules.setdefault("build_driver", sys.modules[__name__])
    import bake_build

    return bake_build


def join_module() -> Any:
    """join_platforms.py, beside this file (the join of a multi-platform batch)."""
    bake_module()  # puts this directory on sys.path and names this module build_driver
    import join_platforms

    return join_platforms


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
    bake_files = args.bake_file or env.get("LAYERCACHE_BAKE_FILE", "")
    bake_targets = args.bake_targets or env.get("LAYERCACHE_BAKE_TARGETS", "")
    fanout_values = (
        args.fanout_images or env.get("LAYERCACHE_FANOUT_IMAGES", ""),
        args.fanout_planned or env.get("LAYERCACHE_FANOUT_PLANNED", ""),
        args.fanout_newcomers or env.get("LAYERCACHE_FANOUT_NEWCOMERS", ""),
    )
    report: BuildReport | Any
    try:
        if not args.no_login:
            for host in registry_hosts(request):
                ecr_login(docker, host)
        with tempfile.TemporaryDirectory(prefix="layercache-") as tmp:
            joined = env.get("LAYERCACHE_JOIN_PLATFORMS", "").strip()
            if joined:
                joining = join_module()
                report = joining.join(
                    request,
                    joining.platforms_of(joined),
                    docker=docker,
                    bake=(
                        (
                            bake_module().bake_files(bake_files),
                            bake_module().csv_names(bake_targets),
                        )
                        if bake_files.strip()
                        else None
                    ),
                )
            elif bake_files.strip():
                bake = bake_module()
                report = bake.build(
                    request,
                    bake.bake_files(bake_files),
                    bake.csv_names(bake_targets),
                    docker=docker,
                    workdir=Path(tmp),
                    fanout=bake.FanOut.from_values(*fanout_values),
                )
            else:
                if any(value.strip() for value in fanout_values):
                    warn("LAYERCACHE_FANOUT_* is set without a Bake file: ignored, one image")
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
