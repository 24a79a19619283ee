from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from layercache.triggers.decisions import (
    SKIP_MARKERS,
    PushDecision,
    PushFacts,
    PushPolicy,
    branch_of,
    decide_push,
    path_matches,
)

WATCHED = PushPolicy(watched_branches=frozenset({"main", "release/2.x"}))
FILTERED = PushPolicy(
    watched_branches=frozenset({"main"}), path_filters=("app/", "Dockerfile", "deps/*.lock")
)


def facts(
    ref: str = "refs/heads/main",
    *,
    deleted: bool = False,
    message: str | None = "Change things",
    paths: list[str] | None = None,
) -> PushFacts:
    return PushFacts(ref=ref, deleted=deleted, head_commit_message=message, changed_paths=paths)


CASES: list[tuple[str, PushFacts, PushPolicy, bool, str]] = [
    ("watched branch", facts(), WATCHED, True, "push to main"),
    ("watched branch with a slash", facts("refs/heads/release/2.x"), WATCHED, True, "release/2.x"),
    ("other branch", facts("refs/heads/feature/x"), WATCHED, False, "not watched"),
    ("tag", facts("refs/tags/v1.0.0"), WATCHED, False, "tag push v1.0.0"),
    ("branch deleted", facts(deleted=True, message=None), WATCHED, False, "was deleted"),
    ("not a branch", facts("refs/pull/12/head"), WATCHED, False, "not a branch"),
    ("[skip ci]", facts(message="Docs only [skip ci]"), WATCHED, False, "skip CI"),
    ("[ci skip]", facts(message="Docs\n\n[ci skip]"), WATCHED, False, "skip CI"),
    ("[SKIP CI] any case", facts(message="[SKIP CI] wip"), WATCHED, False, "skip CI"),
    ("skip ci without brackets", facts(message="skip ci later"), WATCHED, True, "push to main"),
    ("no message", facts(message=None), WATCHED, True, "push to main"),
    ("filter: dir changed", facts(paths=["app/main.py"]), FILTERED, True, "app/main.py changed"),
    ("filter: file changed", facts(paths=["Dockerfile"]), FILTERED, True, "Dockerfile changed"),
    ("filter: glob changed", facts(paths=["deps/py.lock"]), FILTERED, True, "deps/py.lock"),
    (
        "filter: nothing under",
        facts(paths=["README.md", "docs/a.md"]),
        FILTERED,
        False,
        "no changed",
    ),
    ("filter: no files at all", facts(paths=[]), FILTERED, False, "no changed file"),
    ("filter: files unknown", facts(paths=None), FILTERED, True, "unknown"),
    ("filter: prefix is not a dir", facts(paths=["application/x.py"]), FILTERED, False, "no"),
    (
        "filter ignored on other branch",
        facts("refs/heads/dev", paths=["app/a"]),
        FILTERED,
        False,
        "",
    ),
    ("skip ci beats filters", facts(message="[skip ci]", paths=["app/a"]), FILTERED, False, "skip"),
]


@pytest.mark.parametrize(
    ("facts_", "policy", "builds", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide_push(facts_: PushFacts, policy: PushPolicy, builds: bool, reason: str) -> None:
    decision = decide_push(facts_, policy)
    assert decision.build is builds
    assert reason in decision.reason


def test_decision_is_a_plain_value() -> None:
    assert decide_push(facts(), WATCHED) == PushDecision(True, "push to main")


@pytest.mark.parametrize(
    ("path", "path_filter", "matches"),
    [
        ("app/main.py", "app", True),
        ("app/main.py", "app/", True),
        ("app/main.py", "/app/", True),
        ("app", "app", True),
        ("apple/main.py", "app", False),
        ("src/pkg/mod.py", "src/**/*.py", True),
        ("src/mod.py", "src/**/*.py", True),
        ("src/mod.txt", "src/**/*.py", False),
        ("Dockerfile", "Dockerfile", True),
        ("docker/Dockerfile", "Dockerfile", False),
        ("anything", "  ", False),
    ],
)
def test_path_matches(path: str, path_filter: str, matches: bool) -> None:
    assert path_matches(path, path_filter) is matches


@pytest.mark.parametrize(
    ("ref", "branch"),
    [
        ("refs/heads/main", "main"),
        ("refs/heads/a/b", "a/b"),
        ("refs/tags/v1", None),
        ("main", None),
    ],
)
def test_branch_of(ref: str, branch: str | None) -> None:
    assert branch_of(ref) == branch


# ------------------------------------------------------------------ properties

BRANCH_NAMES = st.text(min_size=1, max_size=20)
PATHS = st.lists(st.text(max_size=20), max_size=8)
MESSAGES = st.none() | st.text(max_size=40)


@given(
    ref=st.one_of(
        BRANCH_NAMES.filter(lambda name: name not in WATCHED.watched_branches).map(
            lambda name: "refs/heads/" + name
        ),
        BRANCH_NAMES.map(lambda name: "refs/tags/" + name),
        st.text(max_size=30).filter(lambda ref: not ref.startswith("refs/heads/")),
    ),
    deleted=st.booleans(),
    message=MESSAGES,
    paths=st.none() | PATHS,
)
def test_a_push_that_moves_no_watched_branch_never_builds(
    ref: str, deleted: bool, message: str | None, paths: list[str] | None
) -> None:
    decision = decide_push(facts(ref, deleted=deleted, message=message, paths=paths), WATCHED)
    assert decision.build is False
    assert decision.reason


@given(branch=st.sampled_from(sorted(WATCHED.watched_branches)), message=MESSAGES)
def test_a_deleted_watched_branch_never_builds(branch: str, message: str | None) -> None:
    decision = decide_push(facts("refs/heads/" + branch, deleted=True, message=message), WATCHED)
    assert decision == PushDecision(False, f"branch {branch} was deleted")


@given(
    branch=st.sampled_from(sorted(WATCHED.watched_branches)),
    message=MESSAGES.filter(lambda text: text is None or not SKIP_MARKERS.search(text)),
    paths=st.none() | PATHS,
)
def test_without_filters_every_watched_push_builds(
    branch: str, message: str | None, paths: list[str] | None
) -> None:
    decision = decide_push(facts("refs/heads/" + branch, message=message, paths=paths), WATCHED)
    assert decision == PushDecision(True, f"push to {branch}")


@given(before=MESSAGES, after=MESSAGES, paths=st.none() | PATHS)
def test_a_skip_marker_anywhere_in_the_head_message_skips(
    before: str | None, after: str | None, paths: list[str] | None
) -> None:
    message = f"{before or ''}[skip ci]{after or ''}"
    decision = decide_push(facts(message=message, paths=paths), FILTERED)
    assert decision == PushDecision(False, "head commit asks to skip CI")


@given(prefix=st.text(max_size=10), name=st.text(min_size=1, max_size=10))
def test_a_directory_filter_matches_exactly_its_subtree(prefix: str, name: str) -> None:
    assert path_matches(f"app/{prefix}{name}", "app/") is True
    assert path_matches(f"app{name}", "app/") is (name.startswith("/"))
