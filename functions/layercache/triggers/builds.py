"""Start a build exactly once per request, and stop the branch builds it supersedes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from layercache import build_records as records
from layercache.build_records import BuildMode, BuildStatus, Trigger, utc_now
from layercache.triggers.store import BuildsStore, Claim

if TYPE_CHECKING:
    from mypy_boto3_codebuild import CodeBuildClient

logger = Logger(child=True)

# A claim with no build after this long belongs to an invocation that died mid-way.
STALE_CLAIM_AFTER = timedelta(minutes=15)
# How far back a new commit looks for its branch's builds to supersede.
SUPERSEDE_LOOKBACK = 25
PUSH_TRIGGERS = frozenset({Trigger.GITHUB, Trigger.CODECOMMIT})


@dataclass(frozen=True)
class BuildRequest:
    """One build to start: which image, which source, why, and how to use the cache."""

    image: str
    branch: str
    commit: str | None
    trigger: Trigger
    mode: BuildMode
    requested_at: datetime
    # What makes two requests the same: the commit for pushes, the night for schedules.
    occasion: str

    @classmethod
    def for_push(
        cls, image: str, branch: str, commit: str, trigger: Trigger, now: datetime
    ) -> BuildRequest:
        """A normal build of a pushed commit; the commit makes repeats of it the same."""
        return cls(image, branch, commit, trigger, BuildMode.NORMAL, now, occasion=commit)

    @property
    def source_version(self) -> str:
        """What CodeBuild checks out: the exact commit when known, else the branch head."""
        return self.commit or self.branch

    @property
    def claim_pk(self) -> str:
        occasion = (
            self.occasion if self.mode is BuildMode.NORMAL else f"{self.occasion}@{self.mode}"
        )
        return records.claim_pk(self.image, self.branch, occasion)

    def environment(self) -> dict[str, str]:
        return {
            records.ENV_BRANCH: self.branch,
            records.ENV_COMMIT: self.commit or "",
            records.ENV_TRIGGER: self.trigger.value,
            records.ENV_MODE: self.mode.value,
            records.ENV_REQUESTED_AT: records.timestamp(self.requested_at),
        }


@dataclass(frozen=True)
class StartedBuild:
    build_id: str
    arn: str
    number: int
    status: str


@dataclass(frozen=True)
class StartOutcome:
    started: bool
    reason: str
    build_id: str | None = None
    superseded: list[str] = field(default_factory=list)


class BuildStarter:
    def __init__(
        self,
        project_name: str,
        store: BuildsStore,
        codebuild: CodeBuildClient,
        *,
        supersede: bool,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.project_name = project_name
        self.store = store
        self.codebuild = codebuild
        self.supersede = supersede
        self.clock = clock

    def start(self, request: BuildRequest) -> StartOutcome:
        """Start `request`'s build unless one is queued, running or has succeeded."""
        claim = self.store.try_claim(request.claim_pk, self.clock())
        if claim is None:
            claim, reason = self._take_over_or_explain(request)
            if claim is None:
                logger.info("Build request is a duplicate", extra={"reason": reason})
                return StartOutcome(started=False, reason=reason)
        try:
            build = self._start_build(request, claim)
        except Exception:
            # Free the claim so a retry of this event can start the build.
            self.store.release_claim(claim)
            raise
        self.store.mark_claim_started(claim, build.build_id)
        self.store.record_build(request, build, claim)
        logger.info("Build started", extra={"build_id": build.build_id, "branch": request.branch})
        superseded = []
        if self.supersede and request.trigger in PUSH_TRIGGERS and request.commit:
            superseded = self._stop_superseded(request, build.build_id)
        return StartOutcome(
            started=True, reason="started", build_id=build.build_id, superseded=superseded
        )

    def _take_over_or_explain(self, request: BuildRequest) -> tuple[Claim | None, str]:
        existing = self.store.get_claim(request.claim_pk)
        if existing is None:  # released between our two reads: claim it afresh
            claim = self.store.try_claim(request.claim_pk, self.clock())
            return claim, "claimed concurrently by another delivery"
        if existing.build_id is None:
            claimed_at = datetime.fromisoformat(existing.token.replace("Z", "+00:00"))
            if self.clock() - claimed_at < STALE_CLAIM_AFTER:
                return None, "another delivery is starting this build"
        else:
            status = self._status_of(existing.build_id)
            if status is not None and status.blocks_rebuild:
                return None, f"build {existing.build_id} is {status.value}"
        return self.store.take_over_claim(existing, self.clock()), "claimed concurrently"

    def _status_of(self, build_id: str) -> BuildStatus | None:
        builds = self.codebuild.batch_get_builds(ids=[build_id]).get("builds", [])
        if not builds:
            return None
        return BuildStatus(builds[0]["buildStatus"])

    def _start_build(self, request: BuildRequest, claim: Claim) -> StartedBuild:
        # A retry after a lost response sends the same token, and CodeBuild (for 5 minutes)
        # answers with the build it already started instead of starting a second one.
        token = hashlib.sha256(f"{claim.pk}|{claim.replaces}".encode()).hexdigest()[:40]
        response = self.codebuild.start_build(
            projectName=self.project_name,
            sourceVersion=request.source_version,
            environmentVariablesOverride=[
                {"name": name, "value": value, "type": "PLAINTEXT"}
                for name, value in request.environment().items()
            ],
            idempotencyToken=token,
        )
        build = response["build"]
        return StartedBuild(
            build_id=build["id"],
            arn=build["arn"],
            number=int(build.get("buildNumber", 0)),
            status=build.get("buildStatus", BuildStatus.IN_PROGRESS.value),
        )

    def _stop_superseded(self, request: BuildRequest, new_build_id: str) -> list[str]:
        """Stop the branch's older builds of other commits that are still queued or running."""
        requested_at = records.timestamp(request.requested_at)
        candidates = [
            item["build_id"]["S"]
            for item in self.store.recent_builds_of_branch(
                request.image, request.branch, SUPERSEDE_LOOKBACK
            )
            if "build_id" in item
            and item["build_id"]["S"] != new_build_id
            and item.get("commit", {}).get("S") != request.commit
            and item.get("requested_at", {}).get("S", "") < requested_at
            and not BuildStatus(item.get("status", {}).get("S", "IN_PROGRESS")).is_final
        ]
        if not candidates:
            return []
        running = [
            build["id"]
            for build in self.codebuild.batch_get_builds(ids=candidates).get("builds", [])
            if build["buildStatus"] == BuildStatus.IN_PROGRESS.value
        ]
        for build_id in running:
            self.codebuild.stop_build(id=build_id)
            logger.info("Superseded build stopped", extra={"build_id": build_id})
        return running
