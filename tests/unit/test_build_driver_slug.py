"""The branch slug: distinct branches never share a tag or a cache ref, and the pipeline's
own tag names (`latest`, `cache-*`, commits, build tags) stay the pipeline's.

One function in one place: the pruner's copy is the driver's block, kept identical by
scripts/sync_slug.py (checked here and by `make lint`).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from layercache.pruning import model
from layercache_dev.kit.driver import DRIVER_PATH, build_driver

ROOT = Path(__file__).resolve().parents[2]
SYNC = ROOT / "scripts" / "sync_slug.py"
SHA = "0123456789abcdef0123456789abcdef01234567"
DOCKER_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
slug = build_driver.branch_slug


def slug_tags(branch: str, sha7: str) -> set[str]:
    """Every tag a branch's build or its recorder writes that carries the branch's slug."""
    branch_slug = slug(branch)
    return {branch_slug, f"{branch_slug}-{sha7}", f"cache-{branch_slug}"}


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("feature/a", "feature-a"),
        ("release/1.0", "release-1.0"),
        ("@main", "main"),
        ("+main", "main"),
        ("@main", "+main"),
        ("日本", "中国"),  # all non-ASCII: both used to be `unnamed`
        ("ümlaut", "ämlaut"),
        ("b" * 120 + "1", "b" * 120 + "2"),  # the same once cut at 120 characters
        ("latest", "main"),  # `latest` is the default branch's moving tag
        ("cache-main", "main"),  # would take main's cache ref as its moving tag
        ("main-0123456", "main"),  # would take main's build tag of commit 0123456
    ],
)
def test_branches_the_issue_names_never_share_a_tag_or_a_cache_ref(one: str, other: str) -> None:
    assert slug(one) != slug(other)
    for sha7 in (SHA[:7], "fedcba9"):
        assert not slug_tags(one, sha7) & slug_tags(other, SHA[:7])
    assert build_driver.cache_tag(one) != build_driver.cache_tag(other)
    request = build_driver.BuildRequest(
        repository="r/app", branch=one, commit=SHA, default_branch="main"
    )
    assert request.cache_ref(one) != request.cache_ref(other)


@pytest.mark.parametrize(
    "branch",
    [
        "latest",
        "cache-main",
        "cache-",
        SHA,  # a commit's tag
        SHA.upper(),
        "ab" * 32,  # a SHA-256 repository's commit
        "main-0123456",  # main's build tag of commit 0123456
        "feature-a-0123456789ab",  # what a hash-suffixed slug looks like
    ],
)
def test_names_the_pipeline_uses_get_a_suffix_too(branch: str) -> None:
    branch_slug = slug(branch)
    assert branch_slug != branch
    assert branch_slug.startswith(branch)
    assert re.fullmatch(r".+-[0-9a-f]{12}", branch_slug)
    assert build_driver.moving_tags(branch, "main") == [branch_slug]  # never `latest`
    assert build_driver.cache_tag(branch) != "cache-main"


@pytest.mark.parametrize(
    "branch",
    ["main", "master", "release-1.0", "feature-a", "v1.2_x", "release-20240101", "Dev.2"],
)
def test_names_that_are_already_safe_tags_are_their_own_slug(branch: str) -> None:
    assert slug(branch) == branch
    assert slug(f"refs/heads/{branch}") == branch


def test_changed_names_keep_a_readable_stem() -> None:
    assert re.fullmatch(r"feature-a-[0-9a-f]{12}", slug("feature/a"))
    assert re.fullmatch(r"release-1\.0-[0-9a-f]{12}", slug("release/1.0"))
    assert re.fullmatch(r"hidden-branch-[0-9a-f]{12}", slug(".hidden/branch"))
    assert re.fullmatch(r"unnamed-[0-9a-f]{12}", slug("日本"))
    assert re.fullmatch(r"b{107}-[0-9a-f]{12}", slug("b" * 300))


branch_names = st.one_of(
    st.text(alphabet="ab-./_@+ é日", min_size=0, max_size=12),
    st.builds(
        lambda prefix, rest: prefix + rest,
        st.sampled_from(["", "cache-", "latest", "refs/heads/", "main-", "b" * 118]),
        st.text(alphabet="0123456789abcdef-/.x", max_size=14),
    ),
)


@given(branch_names, branch_names, st.from_regex(r"[0-9a-f]{7}", fullmatch=True))
def test_slug_tags_of_two_branches_never_meet(one: str, other: str, sha7: str) -> None:
    if one.removeprefix("refs/heads/") == other.removeprefix("refs/heads/"):
        return  # the same branch
    assert slug(one) != slug(other)
    assert not slug_tags(one, sha7) & slug_tags(other, SHA[:7])


@given(branch_names, st.from_regex(r"[0-9a-f]{7}", fullmatch=True))
def test_every_slug_tag_is_a_docker_tag_that_is_not_the_pipelines_own(
    branch: str, sha7: str
) -> None:
    for tag in slug_tags(branch, sha7):
        assert DOCKER_TAG.fullmatch(tag), tag
        assert tag != "latest"
        assert not re.fullmatch(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}", tag)
    assert not slug(branch).startswith("cache-") or slug(branch) != branch


# ---------------------------------------------------------------- one function, one place


def test_the_pruner_has_the_drivers_own_block() -> None:
    def block(text: str) -> str:
        return text[text.index("# >>> branch slug") : text.index("# <<< branch slug")]

    assert block(Path(model.__file__).read_text()) == block(DRIVER_PATH.read_text())
    for branch in ("main", "feature/a", "latest", "日本", "x" * 300):
        assert model.branch_slug(branch) == build_driver.branch_slug(branch)


def test_sync_script_checks_and_repairs_the_copy() -> None:
    check = subprocess.run(
        [sys.executable, str(SYNC), "--check"], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr

    spec = importlib.util.spec_from_file_location("sync_slug", SYNC)
    assert spec is not None
    assert spec.loader is not None
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    render = sync.render
    copy = Path(model.__file__).read_text()
    drifted = copy.replace("SLUG_HASH_LENGTH = 12", "SLUG_HASH_LENGTH = 8")
    assert drifted != copy
    assert render(drifted, DRIVER_PATH.read_text()) == copy
