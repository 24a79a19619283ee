"""Start each build request's build exactly once, in branch order, newest winning.

For one request (messages of a branch arrive one at a time, see build_requests):
1. place it against the branch head (`ordering`); a stale request starts nothing, a
   newer one moves the head forward (a conditional write on its version);
2. claim it: a claim with a lease, so an invocation killed after claiming blocks a retry
   only until the lease ends; a retry then first looks for the build the dead
   invocation may have started (`LAYERCACHE_REQUEST_ID`) before starting one;
3. start the build with parameters that are a pure function of the request and claim,
   and an idempotency token per attempt, so a retried StartBuild is the same call;
4. stop the branch's running builds of older requests (lower sequence).
A failed build's request may be built again (a new attempt); a superseded one never.

With FanOut or several platforms (`batches`), step 3 starts a batch build instead
(starting/fan_out.py, starting/platforms.py), with the same token and environment;
finding, reading and stopping it use the batch calls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from layercache import build_records as records
from layercache.build_records import (
    BranchHead,
    BuildsTable,
    BuildStart,
    BuildStatus,
    Claim,
    timestamp,
    utc_now,
)
from layercache.build_requests import BuildRequestMessage
from layercache.starting.fan_out import BatchLauncher, GraphNode, build_graph, plan_of
from layercache.starting.ordering import Place, Placement, place_request
from layercache.starting.platforms import platform_graph
from layercache.starting.tips import BranchTips, NoBranchTips

if TYPE_CHECKING:
    from mypy_boto3_codebuild import CodeBuildClient

logger = Logger(child=True)

# How far back a new build looks for its branch's older builds to supersede.
SUPERSEDE_LOOKBACK = 25
# How many of the project's newest builds a retry searches for the build it lost.
ADOPT_LOOKBACK = 100
# Conditional writes lost to a concurrent writer before giving up (then retried by SQS).
MAX_RACES = 5


class ClaimHeld(Exception):
    """Another live invocation is starting this request: retry after its lease."""


@dataclass(frozen=True)
class StartOutcome:
    action: str  # started | adopted | duplicate | stale | no-build
    reason: str
    build_id: str | None = None
    sequence: int | None = None
    superseded: tuple[str, ...] = ()

    @property
    def started(self) -> bool:
        return self.action in ("started", "adopted")


def request_id(claim_pk: str, attempt: int) -> str:
    """One attempt's identity: the StartBuild idempotency token and LAYERCACHE_REQUEST_ID."""
    return hashlib.sha256(f"{claim_pk}|{attempt}".encode()).hexdigest()[:40]


def build_environment(request: BuildRequestMessage, claim: Claim) -> dict[str, str]:
    """The environment overrides of the request's StartBuild: the request and claim only."""
    return {
        records.ENV_BRANCH: request.branch,
        records.ENV_COMMIT: request.commit or "",
        records.ENV_TRIGGER: request.trigger.value,
        records.ENV_MODE: request.mode.value,
        records.ENV_REQUESTED_AT: timestamp(request.requested_at),
        records.ENV_SEQUENCE: str(claim.sequence),
        records.ENV_REQUEST_ID: claim.request_id,
    }


class BuildStarter:
    def __init__(
        self,
        project_name: str,
        table: BuildsTable,
        codebuild: CodeBuildClient,
        *,
        supersede: bool,
        lease: timedelta,
        tips: BranchTips | None = None,
        clock: Callable[[], datetime] = utc_now,
        batches: BatchLauncher | None = None,
        default_branch: str = "",
        platforms: tuple[str, ...] = (),
        arm_image: str = "",
    ) -> None:
        self.project_name = project_name
        self.table = table
        self.codebuild = codebuild
        self.supersede = supersede
        self.lease = lease
        self.tips = tips or NoBranchTips()
        self.clock = clock
        self.batches = batches  # set: FanOut is on, requests start batch builds
        # Batches started while FanOut was on are read and stopped as batches regardless.
        self.batch_calls = batches or BatchLauncher(codebuild, project_name)
        self.default_branch = default_branch
        self.platforms = platforms
        self.arm_image = arm_image

    def handle(self, request: BuildRequestMessage) -> StartOutcome:
        placement, head = self.place(request)
        logger.info(
            "Request placed",
            extra={**request.log_keys(), "place": placement.place, "reason": placement.reason},
        )
        if placement.place is Place.STALE:
            return StartOutcome("stale", f"superseded: {placement.reason}")
        if not request.build:
            return StartOutcome("no-build", request.reason or "no build needed")
        return self.start_once(request, head.sequence if head else 0, head)

    # ------------------------------------------------------------ ordering
    def place(self, request: BuildRequestMessage) -> tuple[Placement, BranchHead | None]:
        """Place `request` and, when it is newer, move the branch head to it."""
        for _ in range(MAX_RACES):
            head = self.table.branch_head(request.image, request.branch)
            placement = place_request(head, request)
            if placement.needs_tip:
                tip = self.tips.tip(request.branch)
                placement = place_request(head, request, tip=tip, tip_known=True)
            if placement.place is not Place.NEWER:
                return placement, head
            assert request.commit is not None
            current = head or BranchHead(image=request.image, branch=request.branch)
            moved = current.advanced_to(
                request.commit,
                request.before,
                timestamp(request.pushed_at) if request.pushed_at else None,
            )
            if self.table.save_branch_head(moved):
                return placement, replace(moved, version=current.version + 1)
        raise ClaimHeld(f"branch head of {request.branch} kept changing")

    # ------------------------------------------------------------ exactly once
    def start_once(
        self, request: BuildRequestMessage, sequence: int, head: BranchHead | None = None
    ) -> StartOutcome:
        pk = request.claim_pk
        for _ in range(MAX_RACES):
            now = self.clock()
            claim = self.table.claim(pk)
            if claim is None:
                fresh = Claim(
                    pk=pk,
                    request_id=request_id(pk, 1),
                    attempt=1,
                    sequence=sequence,
                    lease_until=now + self.lease,
                    delivery_ids=(request.delivery_id,) if request.delivery_id else (),
                )
                if self.table.create_claim(fresh, now):
                    return self._start(request, fresh, head, may_exist=False)
                continue
            if claim.superseded_by:
                return StartOutcome(
                    "duplicate", f"superseded by build {claim.superseded_by}", claim.build_id
                )
            if claim.build_id is not None:
                status = self._status_of(claim.build_id)
                if status is not None and status.blocks_rebuild:
                    return StartOutcome(
                        "duplicate", f"build {claim.build_id} is {status.value}", claim.build_id
                    )
                # Its build failed, faulted, timed out or was stopped: build it again.
                again = Claim(
                    pk=pk,
                    request_id=request_id(pk, claim.attempt + 1),
                    attempt=claim.attempt + 1,
                    sequence=sequence,
                    lease_until=now + self.lease,
                    version=claim.version + 1,
                    delivery_ids=claim.delivery_ids,
                )
                if self.table.replace_claim(claim, again, now):
                    return self._start(request, again, head, may_exist=False)
                continue
            if claim.leased(now):
                raise ClaimHeld(f"{pk} is being started until {timestamp(claim.lease_until)}")
            # The holder died after claiming, perhaps after StartBuild: same attempt, new lease.
            taken = replace(claim, lease_until=now + self.lease, version=claim.version + 1)
            if self.table.replace_claim(claim, taken, now):
                return self._start(request, taken, head, may_exist=True)
        raise ClaimHeld(f"{pk} kept changing")

    def _start(
        self,
        request: BuildRequestMessage,
        claim: Claim,
        head: BranchHead | None,
        *,
        may_exist: bool,
    ) -> StartOutcome:
        found = self._find_started(claim.request_id) if may_exist else None
        if found is not None:
            build, action = found, "adopted"
        else:
            try:
                build, action = self._start_build(request, claim, head), "started"
            except Exception:
                # End the lease so the retry comes at once; it looks for this build first.
                self._end_lease(claim)
                raise
        self.table.record_build_start(
            BuildStart(
                build_id=build["id"],
                build_arn=build["arn"],
                build_number=int(build.get("buildNumber", 0)),
                image=request.image,
                branch=request.branch,
                commit=request.commit,
                trigger=request.trigger,
                mode=request.mode,
                requested_at=request.requested_at,
                source_version=request.source_version,
                claim_pk=claim.pk,
                sequence=claim.sequence,
                status=build.get("buildStatus", BuildStatus.IN_PROGRESS.value),
                batch=self.batches is not None,
            )
        )
        started = replace(claim, build_id=build["id"], version=claim.version + 1)
        self.table.replace_claim(claim, started, self.clock())
        logger.info(
            "Build started" if action == "started" else "Build found, started before",
            extra={"build_id": build["id"], "attempt": claim.attempt, **request.log_keys()},
        )
        superseded: tuple[str, ...] = ()
        if self.supersede and request.commit:
            superseded = self._stop_older(request, claim.sequence, build["id"])
        reason = (
            f"attempt {claim.attempt} started"
            if action == "started"
            else f"attempt {claim.attempt} had started it before dying"
        )
        return StartOutcome(
            action, reason, build_id=build["id"], sequence=claim.sequence, superseded=superseded
        )

    def _end_lease(self, claim: Claim) -> None:
        now = self.clock()
        ended = replace(claim, lease_until=now, version=claim.version + 1)
        try:
            self.table.replace_claim(claim, ended, now)
        except (ClientError, BotoCoreError):  # the lease then simply runs out
            logger.exception("Could not end the claim's lease", extra={"claim": claim.pk})

    def _start_build(
        self, request: BuildRequestMessage, claim: Claim, head: BranchHead | None
    ) -> dict[str, Any]:
        if self.batches is not None:
            nodes = self._graph(request, head)
            return self.batches.start(
                nodes,
                source_version=request.source_version,
                environment=build_environment(request, claim),
                token=claim.request_id,
            )
        response = self.codebuild.start_build(
            projectName=self.project_name,
            sourceVersion=request.source_version,
            environmentVariablesOverride=[
                {"name": name, "value": value, "type": "PLAINTEXT"}
                for name, value in build_environment(request, claim).items()
            ],
            idempotencyToken=claim.request_id,
        )
        return dict(response["build"])

    def _graph(self, request: BuildRequestMessage, head: BranchHead | None) -> list[GraphNode]:
        """The batch's build graph: one build per platform and the join (several
        platforms), else one build per image as the branch's plan has them (FanOut)."""
        assert self.batches is not None
        if len(self.platforms) > 1:
            logger.info("Starting a batch build", extra={"platforms": list(self.platforms)})
            return platform_graph(self.platforms, self.arm_image)
        fallback = None
        own_plan = head is not None and bool(head.bake_plan)
        if not own_plan and self.default_branch not in ("", request.branch):
            fallback = self.table.branch_head(request.image, self.default_branch)
        plan = plan_of(head, fallback)
        logger.info(
            "Starting a batch build",
            extra={"planned_images": [planned.image for planned in plan], **request.log_keys()},
        )
        return build_graph(plan, self.batches.max_builds)

    def _find_started(self, wanted: str) -> dict[str, Any] | None:
        """The project's build (or batch) started for attempt `wanted`, if one exists."""
        candidates: list[dict[str, Any]] = []
        if self.batches is not None:
            candidates = self.batches.recent(ADOPT_LOOKBACK)
        else:
            ids = self.codebuild.list_builds_for_project(
                projectName=self.project_name, sortOrder="DESCENDING"
            ).get("ids", [])[:ADOPT_LOOKBACK]
            if ids:
                candidates = [
                    dict(b) for b in self.codebuild.batch_get_builds(ids=ids).get("builds", [])
                ]
        for build in candidates:
            variables = build.get("environment", {}).get("environmentVariables", [])
            if any(
                v.get("name") == records.ENV_REQUEST_ID and v.get("value") == wanted
                for v in variables
            ):
                return dict(build)
        return None

    def _status_of(self, build_id: str) -> BuildStatus | None:
        """A build's status, or a batch's (FanOut, or FanOut since switched off)."""
        builds = [
            dict(b) for b in self.codebuild.batch_get_builds(ids=[build_id]).get("builds", [])
        ]
        if not builds:
            builds = self.batch_calls.read([build_id])
        if not builds:
            return None
        return BuildStatus(str(builds[0]["buildStatus"]))

    # ------------------------------------------------------------ superseding
    def _stop_older(
        self, request: BuildRequestMessage, sequence: int, new_build_id: str
    ) -> tuple[str, ...]:
        """Stop the branch's queued or running builds of older requests (lower sequence)."""
        candidates = {
            build.build_id: build
            for build in self.table.recent_builds_of_branch(
                request.image, request.branch, SUPERSEDE_LOOKBACK
            )
            if build.build_id != new_build_id
            and build.commit != request.commit
            and build.sequence is not None
            and build.sequence < sequence
            and not build.status.is_final
        }
        if not candidates:
            return ()
        batch_ids = [build_id for build_id, summary in candidates.items() if summary.batch]
        build_ids = [build_id for build_id, summary in candidates.items() if not summary.batch]
        running: list[dict[str, Any]] = []
        if build_ids:
            running = [
                dict(b) for b in self.codebuild.batch_get_builds(ids=build_ids).get("builds", [])
            ]
        if batch_ids:
            running += self.batch_calls.read(batch_ids)
        stopped = []
        for build in running:
            if build["buildStatus"] != BuildStatus.IN_PROGRESS.value:
                continue
            summary = candidates[build["id"]]
            if summary.claim_pk:
                # First, so a retry of that request never takes it over again.
                self.table.mark_claim_superseded(summary.claim_pk, new_build_id)
            if summary.batch:
                self.batch_calls.stop(build["id"])
            else:
                self.codebuild.stop_build(id=build["id"])
            stopped.append(build["id"])
            logger.info("Superseded build stopped", extra={"build_id": build["id"]})
        return tuple(stopped)
