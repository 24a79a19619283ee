from __future__ import annotations

import pytest

from layercache.triggers.decisions import (
    Decision,
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
    assert decide_push(facts(), WATCHED) == Decision(True, "push to main")


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
