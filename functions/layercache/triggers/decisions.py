"""Should this push build? Plain functions of plain data, shared by GitHub and CodeCommit."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

SKIP_MARKERS = re.compile(r"\[(skip ci|ci skip)\]", re.IGNORECASE)
BRANCH_PREFIX = "refs/heads/"
TAG_PREFIX = "refs/tags/"
GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class PushPolicy:
    """What the stack was configured to build."""

    watched_branches: frozenset[str]
    path_filters: tuple[str, ...] = ()


@dataclass(frozen=True)
class PushFacts:
    """What a push did, from whichever source reported it.

    `changed_paths` is None when the source could not tell (too many commits, no file
    lists): such a push builds, because skipping it could miss a change.
    """

    ref: str
    deleted: bool
    head_commit_message: str | None
    changed_paths: Sequence[str] | None


@dataclass(frozen=True)
class PushDecision:
    """Whether a push builds, and why (the reason is logged and answered to the caller)."""

    build: bool
    reason: str


def branch_of(ref: str) -> str | None:
    """The branch name of a full ref (`refs/heads/x` -> `x`), None for tags and others."""
    if ref.startswith(BRANCH_PREFIX):
        return ref[len(BRANCH_PREFIX) :]
    return None


def path_matches(path: str, path_filter: str) -> bool:
    """A filter is a file, a directory prefix (`app/`, `app`) or a glob (`src/**/*.py`)."""
    path_filter = path_filter.strip().lstrip("/")
    if not path_filter:
        return False
    if GLOB_CHARS & set(path_filter):
        return fnmatchcase(path, path_filter) or fnmatchcase(path, path_filter.replace("**/", ""))
    directory = path_filter.rstrip("/")
    return path == directory or path.startswith(directory + "/")


def decide_push(facts: PushFacts, policy: PushPolicy) -> PushDecision:
    """Build when a watched branch moved forward and something the image uses changed."""
    if facts.ref.startswith(TAG_PREFIX):
        return PushDecision(False, f"tag push {facts.ref[len(TAG_PREFIX) :]}")
    branch = branch_of(facts.ref)
    if branch is None:
        return PushDecision(False, f"not a branch: {facts.ref}")
    if facts.deleted:
        return PushDecision(False, f"branch {branch} was deleted")
    if branch not in policy.watched_branches:
        return PushDecision(False, f"branch {branch} is not watched")
    if facts.head_commit_message and SKIP_MARKERS.search(facts.head_commit_message):
        return PushDecision(False, "head commit asks to skip CI")
    if policy.path_filters:
        if facts.changed_paths is None:
            return PushDecision(True, "changed files unknown; building to be safe")
        matched = next(
            (
                path
                for path in facts.changed_paths
                for path_filter in policy.path_filters
                if path_matches(path, path_filter)
            ),
            None,
        )
        if matched is None:
            return PushDecision(False, "no changed file under the path filters")
        return PushDecision(True, f"{matched} changed")
    return PushDecision(True, f"push to {branch}")
