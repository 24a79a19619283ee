"""What the driver does after each kind of failure, on a real engine, registry and BuildKit.

A refused push fails at once; a cache layer that cannot be fetched makes the driver build
again without the cache; a step whose container failed to start is retried once on the
same builder; the failure summary names the step that failed. The same decisions on a
scripted `docker`: tests/unit/test_build_driver_runs.py.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest

from layercache_dev.kit.buildkit import START_FAILURE_MESSAGE
from layercache_dev.kit.buildspec import BuildOutcome
from layercache_dev.kit.rig import SAMPLE_DOCKERFILE, Rig

pytestmark = pytest.mark.docker

BUILD_RUN = "buildx build --progress=rawjson"  # what the driver logs before each attempt
SMALL_DOCKERFILE = """\
FROM {base}
RUN echo one > /one
COPY src/ /src/
RUN cat /src/* > /all
"""
_commits = itertools.count(1)


def new_commit() -> str:
    return hashlib.sha1(f"failure commit {next(_commits)}".encode()).hexdigest()  # noqa: S324


@pytest.fixture
def repo(rig: Rig, request: pytest.FixtureRequest) -> str:
    name = request.node.name.lower().replace("_", "-")[:50].strip("-")
    return rig.repository(f"failures/{name}")


def name_of(repo: str) -> str:
    return repo.split("/", 1)[1]


def attempts(outcome: BuildOutcome) -> int:
    return outcome.log.count(BUILD_RUN)


def last_line(outcome: BuildOutcome) -> str:
    return outcome.log.strip().splitlines()[-1]


def test_a_refused_push_fails_at_once_without_a_rebuild(
    rig: Rig, tmp_path: Path, repo: str, refusing_registry: str
) -> None:
    """The cache is warm and readable; only the image's registry says 403 DENIED."""
    context = rig.write_context(tmp_path / "ctx", SAMPLE_DOCKERFILE, {"src/app.txt": "v1\n"})
    cold = rig.build(context, repository=repo, branch="main", commit=new_commit())
    assert cold.ok, cold.log[-3000:]

    refused = rig.build(
        context,
        repository=f"{refusing_registry}/team/app",
        branch="main",
        commit=new_commit(),
        extra_env={"LAYERCACHE_CACHE_REPOSITORY_URI": repo},
    )

    assert not refused.ok
    assert attempts(refused) == 1, refused.log[-3000:]  # no --no-cache rebuild
    assert "rebuilding without it" not in refused.log
    assert last_line(refused).startswith("layercache: build failed: the registry refused")
    assert "403 Forbidden" in last_line(refused)
    assert "LAYERCACHE_IMAGE_DIGEST" not in refused.variables


def test_a_missing_cache_layer_under_a_step_that_must_run_falls_back(
    rig: Rig, tmp_path: Path, repo: str
) -> None:
    """The cache's layers are gone and the source changed: the first step that must run
    needs a cached layer as its file system and cannot fetch it."""
    context = rig.write_context(tmp_path / "ctx", SAMPLE_DOCKERFILE, {"src/app.txt": "v1\n"})
    cold = rig.build(context, repository=repo, branch="main", commit=new_commit())
    assert cold.ok, cold.log[-3000:]
    cache = rig.registry.manifest(name_of(repo), "cache-main")
    assert cache is not None
    for layer in cache["layers"]:
        rig.registry.delete_blob(name_of(repo), layer["digest"])
    (context / "src/app.txt").write_text("v2\n")

    outcome = rig.build(context, repository=repo, branch="main", commit=new_commit())

    assert outcome.ok, outcome.log[-3000:]
    assert attempts(outcome) == 2
    assert "could not fetch content descriptor" in outcome.log
    assert outcome.variables["LAYERCACHE_CACHE_STATUS"] == "fallback"
    again = rig.build(context, repository=repo, branch="main", commit=new_commit())
    assert again.ok
    assert again.variables["LAYERCACHE_CACHE_HIT_RATIO"] == "1.000"  # a whole cache again


def test_a_container_that_failed_to_start_is_retried_once_and_the_build_counts(
    rig: Rig, tmp_path: Path, repo: str
) -> None:
    context = rig.write_context(tmp_path / "ctx", SMALL_DOCKERFILE, {"src/a.txt": "a\n"})
    rig.fail_next_container_start()  # as a loaded host sometimes does

    outcome = rig.build(context, repository=repo, branch="main", commit=new_commit())

    assert outcome.ok, outcome.log[-3000:]
    assert START_FAILURE_MESSAGE in outcome.log  # it did fail once
    assert "a build container failed to start" in outcome.log
    assert "retrying once on the same builder" in outcome.log
    assert attempts(outcome) == 2
    commit = outcome.variables["LAYERCACHE_IMAGE_TAGS"].split(",")[0]
    digest = outcome.variables["LAYERCACHE_IMAGE_DIGEST"]
    assert rig.registry.digest(name_of(repo), commit) == digest


def test_a_container_that_never_starts_fails_after_one_retry_naming_its_step(
    rig: Rig, tmp_path: Path, repo: str
) -> None:
    """runc cannot start a program that is not there: BuildKit's start failure, every time.
    The branch's cache ref is not there yet, which is normal and not what failed."""
    context = rig.write_context(
        tmp_path / "ctx", 'FROM {base}\nRUN echo one > /one\nRUN ["/nonexistent"]\n'
    )

    outcome = rig.build(context, repository=repo, branch="main", commit=new_commit())

    assert not outcome.ok
    assert attempts(outcome) == 2
    last = last_line(outcome)
    assert last.startswith('layercache: build failed: [3/3] RUN ["/nonexistent"]: process')
    assert "runc run failed: unable to start container process" in last
    assert "importing cache manifest" not in last


def test_a_failing_command_is_not_retried(rig: Rig, tmp_path: Path, repo: str) -> None:
    context = rig.write_context(
        tmp_path / "ctx", 'FROM {base}\nRUN echo "failed to start" >&2 && exit 3\n'
    )

    outcome = rig.build(context, repository=repo, branch="main", commit=new_commit())

    assert not outcome.ok
    assert attempts(outcome) == 1
    assert last_line(outcome).startswith("layercache: build failed: [2/2] RUN echo")
    assert last_line(outcome).endswith("exit code: 3")
