"""The cached image build on a real engine, registry and standalone BuildKit.

Every build runs the buildspec (and so buildspecs/build_driver.py) on a builder whose
local cache was emptied first, as on a fresh CodeBuild host: whatever is reused comes
from the registry cache.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest

from layercache_dev.rig import SAMPLE_DOCKERFILE, BuildOutcome, Rig

pytestmark = pytest.mark.docker

DOCKERFILE = SAMPLE_DOCKERFILE  # see the rig
STEPS = 9  # Dockerfile instructions other than FROM
BUILDER_STEPS = ("/deps-a", "/deps-b", "COPY src/", "/app.bin &&")
_commits = itertools.count(1)


def new_commit() -> str:
    return hashlib.sha1(f"commit {next(_commits)}".encode()).hexdigest()  # noqa: S324


@pytest.fixture
def context(rig: Rig, tmp_path: Path) -> Path:
    return rig.write_context(tmp_path / "ctx", DOCKERFILE, {"src/app.txt": "version 1\n"})


@pytest.fixture
def repo(rig: Rig, request: pytest.FixtureRequest) -> str:
    """A repository of its own for each test: `layercache/<test name>`."""
    return rig.repository(f"layercache/{request.node.name.lower().replace('_', '-')[:60]}")


def name_of(repo: str) -> str:
    return repo.split("/", 1)[1]


def assert_ok(outcome: BuildOutcome) -> None:
    assert outcome.ok, outcome.log[-4000:]


def cold_build(rig: Rig, context: Path, repo: str, branch: str = "main") -> BuildOutcome:
    outcome = rig.build(context, repository=repo, branch=branch, commit=new_commit())
    assert_ok(outcome)
    return outcome


def cached(outcome: BuildOutcome, *fragments: str) -> list[bool]:
    return [outcome.step(fragment)["cached"] for fragment in fragments]


def test_cold_build_pushes_image_and_cache(rig: Rig, context: Path, repo: str) -> None:
    commit = new_commit()
    mark = rig.registry.mark()
    outcome = rig.build(context, repository=repo, branch="main", commit=commit)
    assert_ok(outcome)

    name = name_of(repo)
    assert set(rig.registry.tags(name)) == {
        commit,
        "main",
        f"main-{commit[:7]}",
        "latest",
        "cache-main",
    }
    variables = outcome.variables
    assert variables["LAYERCACHE_IMAGE_TAGS"].split(",") == [
        commit,
        "main",
        f"main-{commit[:7]}",
        "latest",
    ]
    _, _, headers = rig.registry.request(
        "HEAD", f"/v2/{name}/manifests/{commit}", "application/vnd.oci.image.index.v1+json"
    )
    assert variables["LAYERCACHE_IMAGE_DIGEST"] == headers["docker-content-digest"]
    assert variables["LAYERCACHE_CACHE_HIT_RATIO"] == "0.000"
    assert variables["LAYERCACHE_CACHE_REF_HIT"] == "none"
    assert variables["LAYERCACHE_CACHE_STATUS"] == "cold"
    assert variables["LAYERCACHE_TOTAL_STEPS"] == str(STEPS)
    assert variables["LAYERCACHE_CACHED_STEPS"] == "0"
    assert 5.0 < float(variables["LAYERCACHE_BUILD_SECONDS"]) < outcome.seconds
    assert 0.0 <= float(variables["LAYERCACHE_PUSH_SECONDS"]) < outcome.seconds

    # mode=max: the cache holds the builder stage's layers too, not only the image's.
    cache = rig.registry.manifest(name, "cache-main")
    image = rig.registry.manifest(name, f"main-{commit[:7]}")
    assert cache is not None
    assert image is not None
    cache_layers = {layer["digest"] for layer in cache["layers"]}
    image_manifest = rig.registry.manifest(name, image["manifests"][0]["digest"])
    assert image_manifest is not None
    image_layers = {layer["digest"] for layer in image_manifest["layers"]}
    assert image_layers - cache_layers <= {image_manifest["layers"][0]["digest"]}  # the base
    assert len(cache_layers - image_layers) >= 3  # deps-a, deps-b, app.bin (builder stage)
    assert (
        rig.registry.traffic(since=mark).uploaded_bytes > 15 * 1024 * 1024
    )  # 17 MB of random data


def test_unchanged_rebuild_is_all_cache_and_downloads_no_layer(
    rig: Rig, context: Path, repo: str
) -> None:
    cold = cold_build(rig, context, repo)

    mark = rig.registry.mark()
    warm = rig.build(context, repository=repo, branch="main", commit=new_commit())
    assert_ok(warm)
    traffic = rig.registry.traffic(since=mark)

    assert warm.variables["LAYERCACHE_CACHE_HIT_RATIO"] == "1.000"
    assert all(step["cached"] for step in warm.steps)
    assert warm.variables["LAYERCACHE_CACHE_REF_HIT"] == f"{repo}:cache-main"
    assert warm.variables["LAYERCACHE_CACHE_STATUS"] == "warm"
    assert traffic.layer_downloads == [], traffic.layer_downloads
    assert traffic.downloaded_bytes < 64 * 1024  # manifests' configs only
    assert warm.seconds < 0.5 * cold.seconds, (warm.seconds, cold.seconds)


def test_change_halfway_reuses_every_step_before_it(rig: Rig, context: Path, repo: str) -> None:
    cold_build(rig, context, repo)
    (context / "src/app.txt").write_text("version 2\n")

    changed = rig.build(context, repository=repo, branch="main", commit=new_commit())
    assert_ok(changed)

    # Builder stage: the dependency steps before the change come from the cache.
    assert cached(changed, "/deps-a", "/deps-b") == [True, True]
    assert cached(changed, "COPY src/", "/app.bin &&") == [False, False]
    # Final stage: everything before the copy of the changed artefact is reused.
    assert cached(changed, "/runtime", "/os-packages", "/app-deps") == [True, True, True]
    assert cached(changed, "COPY --from=builder", "/manifest.txt") == [False, False]
    assert changed.variables["LAYERCACHE_CACHED_STEPS"] == "5"


def test_new_branch_starts_warm_from_the_default_branch(rig: Rig, context: Path, repo: str) -> None:
    main = cold_build(rig, context, repo)
    branch = "feature/Login form"

    first = rig.build(context, repository=repo, branch=branch, commit=new_commit())
    assert_ok(first)

    assert first.variables["LAYERCACHE_CACHE_HIT_RATIO"] == "1.000"
    assert first.variables["LAYERCACHE_CACHE_REF_HIT"] == f"{repo}:cache-main"
    tags = rig.registry.tags(name_of(repo))
    assert {"feature-Login-form", "cache-feature-Login-form"} <= set(tags)
    assert "latest" not in first.variables["LAYERCACHE_IMAGE_TAGS"].split(",")
    _, _, latest = rig.registry.request(
        "HEAD", f"/v2/{name_of(repo)}/manifests/latest", "application/vnd.oci.image.index.v1+json"
    )
    assert latest["docker-content-digest"] == main.variables["LAYERCACHE_IMAGE_DIGEST"]

    # Its second build reads its own cache first.
    second = rig.build(context, repository=repo, branch=branch, commit=new_commit())
    assert_ok(second)
    assert second.variables["LAYERCACHE_CACHE_REF_HIT"] == f"{repo}:cache-feature-Login-form"


def test_refresh_rebuilds_from_the_dated_step_on(rig: Rig, context: Path, repo: str) -> None:
    cold_build(rig, context, repo)

    refresh = rig.build(
        context,
        repository=repo,
        branch="main",
        commit=new_commit(),
        mode="refresh",
        extra_env={"LAYERCACHE_REFRESH_DATE": "2026-11-29"},
    )
    assert_ok(refresh)

    assert cached(refresh, *BUILDER_STEPS) == [True] * 4
    assert cached(refresh, "/runtime") == [True]
    assert (
        cached(refresh, "/os-packages", "/app-deps", "COPY --from=builder", "/manifest.txt")
        == [False] * 4
    )
    assert "--pull" in refresh.log
    assert "LAYERCACHE_REFRESH_DATE=2026-11-29" in refresh.log

    # The same day's next build finds the refreshed layers in the cache.
    again = rig.build(context, repository=repo, branch="main", commit=new_commit(), mode="refresh",
                      extra_env={"LAYERCACHE_REFRESH_DATE": "2026-11-29"})  # fmt: skip
    assert_ok(again)
    assert again.variables["LAYERCACHE_CACHE_HIT_RATIO"] == "1.000"


def test_clean_rebuilds_everything_and_exports_a_fresh_cache(
    rig: Rig, context: Path, repo: str
) -> None:
    cold_build(rig, context, repo)
    before = rig.registry.manifest(name_of(repo), "cache-main")

    clean = rig.build(context, repository=repo, branch="main", commit=new_commit(), mode="clean")
    assert_ok(clean)

    assert clean.variables["LAYERCACHE_CACHED_STEPS"] == "0"
    assert clean.variables["LAYERCACHE_CACHE_STATUS"] == "clean"
    assert "--cache-from" not in clean.log
    assert "--no-cache" in clean.log
    after = rig.registry.manifest(name_of(repo), "cache-main")
    assert after is not None
    assert before != after  # new layers (fresh random data), new cache manifest

    next_build = rig.build(context, repository=repo, branch="main", commit=new_commit())
    assert_ok(next_build)
    assert next_build.variables["LAYERCACHE_CACHE_HIT_RATIO"] == "1.000"


def test_cache_with_missing_layers_falls_back_to_a_full_build(
    rig: Rig, context: Path, repo: str
) -> None:
    cold_build(rig, context, repo)
    cache = rig.registry.manifest(name_of(repo), "cache-main")
    assert cache is not None
    for layer in cache["layers"]:
        rig.registry.delete_blob(name_of(repo), layer["digest"])

    outcome = rig.build(context, repository=repo, branch="main", commit=new_commit())

    assert_ok(outcome)
    assert outcome.variables["LAYERCACHE_CACHE_STATUS"] == "fallback"
    assert "rebuilding without it" in outcome.log
    assert outcome.variables["LAYERCACHE_CACHED_STEPS"] == "0"
    # The rebuilt cache is whole again.
    again = rig.build(context, repository=repo, branch="main", commit=new_commit())
    assert_ok(again)
    assert again.variables["LAYERCACHE_CACHE_HIT_RATIO"] == "1.000"


def test_cache_ref_that_is_not_a_cache_does_not_fail_the_build(
    rig: Rig, context: Path, repo: str
) -> None:
    # The branch's cache tag points at an ordinary image, not a cache manifest.
    rig.copy_image(rig.base_image, f"{repo}:cache-main")

    outcome = rig.build(context, repository=repo, branch="main", commit=new_commit())

    assert_ok(outcome)
    assert outcome.variables["LAYERCACHE_CACHED_STEPS"] == "0"
    assert outcome.variables["LAYERCACHE_IMAGE_DIGEST"].startswith("sha256:")
    cache = rig.registry.manifest(name_of(repo), "cache-main")
    assert cache is not None
    assert cache["config"]["mediaType"] == "application/vnd.buildkit.cacheconfig.v0"


def test_unreachable_cache_is_a_warning_and_the_image_still_counts(
    rig: Rig, context: Path, repo: str
) -> None:
    nowhere = "127.0.0.1:9/layercache/nowhere"  # the discard port: nothing listens

    outcome = rig.build(
        context,
        repository=repo,
        branch="main",
        commit=new_commit(),
        extra_env={"LAYERCACHE_CACHE_REPOSITORY_URI": nowhere},
    )

    assert_ok(outcome)
    assert outcome.variables["LAYERCACHE_CACHE_STATUS"] == "export-failed"
    assert "cache export failed" in outcome.log
    assert outcome.variables["LAYERCACHE_CACHE_REF_HIT"] == "none"
    commit = outcome.variables["LAYERCACHE_IMAGE_TAGS"].split(",")[0]
    _, _, headers = rig.registry.request(
        "HEAD", f"/v2/{name_of(repo)}/manifests/{commit}", "application/vnd.oci.image.index.v1+json"
    )
    assert headers["docker-content-digest"] == outcome.variables["LAYERCACHE_IMAGE_DIGEST"]


def test_failed_image_push_fails_the_build(rig: Rig, context: Path, repo: str) -> None:
    outcome = rig.build(
        context,
        repository="127.0.0.1:9/layercache/nowhere",
        branch="main",
        commit=new_commit(),
        extra_env={"LAYERCACHE_CACHE_REPOSITORY_URI": repo},
    )

    assert not outcome.ok
    assert "build failed" in outcome.log
    assert "LAYERCACHE_IMAGE_DIGEST" not in outcome.variables
