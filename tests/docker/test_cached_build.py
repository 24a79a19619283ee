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

from layercache_dev.kit.buildspec import BuildOutcome
from layercache_dev.kit.driver import build_driver
from layercache_dev.kit.rig import SAMPLE_DOCKERFILE, Rig

pytestmark = pytest.mark.docker

DOCKERFILE = SAMPLE_DOCKERFILE  # see the rig
STEPS = 9  # Dockerfile instructions other than FROM
BUILDER_STEPS = ("/deps-a", "/deps-b", "COPY src/", "/app.bin &&")
_commits = itertools.count(1)
branch_slug = build_driver.branch_slug


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
    # Only the immutable tags: the moving ones (`main`, `latest`) are the recorder's.
    assert set(rig.registry.tags(name)) == {commit, f"main-{commit[:7]}", "cache-main"}
    variables = outcome.variables
    assert variables["LAYERCACHE_IMAGE_TAGS"].split(",") == [commit, f"main-{commit[:7]}"]
    assert variables["LAYERCACHE_MOVING_TAGS"].split(",") == ["main", "latest"]
    assert variables["LAYERCACHE_IMAGE_DIGEST"] == rig.registry.digest(name, commit)
    assert rig.registry.digest(name, f"main-{commit[:7]}") == rig.registry.digest(name, commit)
    assert variables["LAYERCACHE_CACHE_HIT_RATIO"] == "0.000"
    assert variables["LAYERCACHE_CACHE_REF_HIT"] == "none"
    assert variables["LAYERCACHE_CACHE_STATUS"] == "cold"
    assert variables["LAYERCACHE_TOTAL_STEPS"] == str(STEPS)
    assert variables["LAYERCACHE_CACHED_STEPS"] == "0"
    # The driver's own times lie within the buildspec's run, and the build's covers the
    # steps: at least the 5 s the builder stage sleeps. Bounds a loaded machine cannot
    # break (it only makes every part slower); speed itself is the `timing` tier's.
    build_seconds = float(variables["LAYERCACHE_BUILD_SECONDS"])
    push_seconds = float(variables["LAYERCACHE_PUSH_SECONDS"])
    assert 5.0 < build_seconds < outcome.seconds
    assert 0.0 <= push_seconds < outcome.seconds

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
    cold_build(rig, context, repo)

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


@pytest.mark.timing
def test_unchanged_rebuild_takes_under_half_the_cold_time(
    rig: Rig, context: Path, repo: str
) -> None:
    """Every step cached (the test above) makes the rebuild fast: the cold build sleeps
    about 9 s in its steps, the cached one runs none of them."""
    cold = cold_build(rig, context, repo)

    warm = rig.build(context, repository=repo, branch="main", commit=new_commit())
    assert_ok(warm)

    assert warm.variables["LAYERCACHE_CACHE_HIT_RATIO"] == "1.000"
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


def publish_moving_tags(rig: Rig, repo: str, outcome: BuildOutcome) -> None:
    """What the build recorder does after a successful build: move the build's moving
    tags to its digest (the manifest copied by digest, so the tag names that digest)."""
    digest = outcome.variables["LAYERCACHE_IMAGE_DIGEST"]
    for tag in outcome.variables["LAYERCACHE_MOVING_TAGS"].split(","):
        assert rig.registry.move_tag(name_of(repo), tag, digest) == digest


def test_new_branch_starts_warm_from_the_default_branch(rig: Rig, context: Path, repo: str) -> None:
    main = cold_build(rig, context, repo)
    publish_moving_tags(rig, repo, main)
    name = name_of(repo)
    main_digest = main.variables["LAYERCACHE_IMAGE_DIGEST"]
    assert rig.registry.digest(name, "latest") == rig.registry.digest(name, "main") == main_digest
    branch = "feature/Login form"

    commit = new_commit()
    first = rig.build(context, repository=repo, branch=branch, commit=commit)
    assert_ok(first)

    assert first.variables["LAYERCACHE_CACHE_HIT_RATIO"] == "1.000"
    assert first.variables["LAYERCACHE_CACHE_REF_HIT"] == f"{repo}:cache-main"
    tags = set(rig.registry.tags(name))
    slug = branch_slug(branch)  # `feature-Login-form-<hash>`: the name had to change
    assert slug.startswith("feature-Login-form-")
    assert {commit, f"{slug}-{commit[:7]}", f"cache-{slug}"} <= tags
    assert first.variables["LAYERCACHE_MOVING_TAGS"] == slug
    assert slug not in tags  # moved by the recorder, not pushed by the build
    # The branch's build leaves the default branch's moving tags alone.
    assert rig.registry.digest(name, "latest") == rig.registry.digest(name, "main") == main_digest

    # Its second build reads its own cache first.
    second = rig.build(context, repository=repo, branch=branch, commit=new_commit())
    assert_ok(second)
    assert second.variables["LAYERCACHE_CACHE_REF_HIT"] == f"{repo}:cache-{slug}"


def test_manual_build_takes_its_branch_from_the_source_version(
    rig: Rig, context: Path, repo: str
) -> None:
    """The README's `aws codebuild start-build --source-version main`: no LAYERCACHE_BRANCH
    or LAYERCACHE_COMMIT, only what CodeBuild sets (the rig sets the resolved commit)."""
    cold_build(rig, context, repo)
    commit = new_commit()

    manual = rig.build(
        context,
        repository=repo,
        branch="",
        commit=commit,
        extra_env={"LAYERCACHE_COMMIT": "", "CODEBUILD_SOURCE_VERSION": "main"},
    )

    assert_ok(manual)
    assert "branch 'main' from CODEBUILD_SOURCE_VERSION=main" in manual.log
    assert manual.variables["LAYERCACHE_IMAGE_TAGS"] == f"{commit},main-{commit[:7]}"
    assert manual.variables["LAYERCACHE_MOVING_TAGS"] == "main,latest"
    assert manual.variables["LAYERCACHE_CACHE_REF_HIT"] == f"{repo}:cache-main"
    assert manual.variables["LAYERCACHE_CACHE_HIT_RATIO"] == "1.000"
    digest = rig.registry.digest(name_of(repo), f"main-{commit[:7]}")
    assert digest == manual.variables["LAYERCACHE_IMAGE_DIGEST"]

    # A source version that names no branch stops the build before anything is pushed.
    tags_before = rig.registry.tags(name_of(repo))
    tagged = rig.build(
        context,
        repository=repo,
        branch="",
        commit=new_commit(),
        extra_env={"CODEBUILD_SOURCE_VERSION": "refs/tags/v1.0"},
        reset=False,
    )
    assert not tagged.ok
    assert "--source-version refs/heads/<branch>" in tagged.log
    assert rig.registry.tags(name_of(repo)) == tags_before


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
    digest = outcome.variables["LAYERCACHE_IMAGE_DIGEST"]
    assert rig.registry.digest(name_of(repo), commit) == digest


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
