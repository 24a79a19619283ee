"""The items of BuildsTable and the keys that make its queries cheap.

One table holds three kinds of item, told apart by the prefix of `pk`:

- ``BUILD#<codebuild build id>``: one item per build. The trigger writes it when it
  starts the build; the build recorder extends it as CodeBuild reports progress.
  Queried through the indexes:
    ByBranch  (branch_key = "<image>#<branch>", requested_at) - latest builds of a branch
    ByCommit  (commit, requested_at)                          - the builds of a commit
    ByDay     (day = "YYYY-MM-DD", requested_at)              - builds of the last N days
- ``CLAIM#<image>#<branch>#<what>``: the exactly-once claim of a build request, where
  <what> is the commit (pushes) or ``nightly@<scheduled time>`` (scheduled rebuilds).
- ``DELIVERY#<id>``: a webhook delivery already handled; expires after a week.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum


class BuildMode(StrEnum):
    """How the build step treats the cache (honoured by the build driver)."""

    NORMAL = "normal"
    REFRESH = "refresh"  # pull base images and rebuild from the OS-package step on
    CLEAN = "clean"  # no cache at all, still exports a fresh cache


class Trigger(StrEnum):
    GITHUB = "github"
    CODECOMMIT = "codecommit"
    NIGHTLY = "nightly"
    MANUAL = "manual"


class BuildStatus(StrEnum):
    """CodeBuild's build statuses, plus the trigger's own first state."""

    REQUESTED = "REQUESTED"  # claimed, StartBuild not yet answered
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    FAULT = "FAULT"
    STOPPED = "STOPPED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_final(self) -> bool:
        return self not in (BuildStatus.REQUESTED, BuildStatus.IN_PROGRESS)

    @property
    def blocks_rebuild(self) -> bool:
        """A commit with a build in this state needs no second build."""
        return self in (BuildStatus.REQUESTED, BuildStatus.IN_PROGRESS, BuildStatus.SUCCEEDED)


# Environment overrides every StartBuild passes; the buildspec and the recorder read them.
ENV_BRANCH = "LAYERCACHE_BRANCH"
ENV_COMMIT = "LAYERCACHE_COMMIT"
ENV_TRIGGER = "LAYERCACHE_TRIGGER"
ENV_MODE = "LAYERCACHE_MODE"
ENV_REQUESTED_AT = "LAYERCACHE_REQUESTED_AT"

INDEX_BY_BRANCH = "ByBranch"
INDEX_BY_COMMIT = "ByCommit"
INDEX_BY_DAY = "ByDay"


def build_pk(build_id: str) -> str:
    return f"BUILD#{build_id}"


def claim_pk(image: str, branch: str, what: str) -> str:
    return f"CLAIM#{image}#{branch}#{what}"


def delivery_pk(delivery_id: str) -> str:
    return f"DELIVERY#{delivery_id}"


def branch_key(image: str, branch: str) -> str:
    return f"{image}#{branch}"


def utc_now() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds: sorts as text in the same order as in time."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def day_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")
