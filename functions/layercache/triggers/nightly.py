"""The nightly refresh: one build per watched branch, once per scheduled run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aws_lambda_powertools import Logger

from layercache import build_records as records
from layercache.build_records import Trigger, utc_now
from layercache.triggers.builds import BuildRequest, BuildStarter, StartOutcome
from layercache.triggers.models import NightlyRebuildRequest
from layercache.triggers.settings import NightlyRebuildSettings

logger = Logger(child=True)


@dataclass(frozen=True)
class BranchRebuild:
    branch: str
    outcome: StartOutcome


def start_rebuilds(
    request: NightlyRebuildRequest,
    settings: NightlyRebuildSettings,
    starter: BuildStarter,
    clock: Callable[[], datetime] = utc_now,
) -> list[BranchRebuild]:
    """Start a rebuild of each requested (default: every watched) branch's head.

    A scheduled run is keyed by its scheduled time, so the scheduler's retries of one
    night start nothing twice; a hand-made request without one always builds.
    """
    now = clock()
    if request.scheduled_time is not None:
        trigger, occasion = Trigger.NIGHTLY, f"nightly@{records.timestamp(request.scheduled_time)}"
    else:
        trigger, occasion = Trigger.MANUAL, f"manual@{records.timestamp(now)}"
    branches = request.branches or sorted(settings.watched_branches)
    results = []
    for branch in branches:
        if branch not in settings.watched_branches:
            logger.warning("Not a watched branch; skipped", extra={"branch": branch})
            continue
        build = BuildRequest(
            image=settings.image_repository_name,
            branch=branch,
            commit=None,
            trigger=trigger,
            mode=request.mode,
            requested_at=now,
            occasion=occasion,
        )
        results.append(BranchRebuild(branch, starter.start(build)))
    return results
