"""The nightly refresh: one build request per watched branch, once per scheduled run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aws_lambda_powertools import Logger

from layercache import build_records as records
from layercache.build_records import Trigger, utc_now
from layercache.build_requests import BuildRequestMessage, BuildRequestQueue
from layercache.triggers.models import NightlyRebuildRequest
from layercache.triggers.settings import NightlyRebuildSettings

logger = Logger(child=True)


@dataclass(frozen=True)
class BranchRebuild:
    branch: str
    request_id: str | None  # the hand-over's message id; None when the branch was skipped
    reason: str


def request_rebuilds(
    run: NightlyRebuildRequest,
    settings: NightlyRebuildSettings,
    queue: BuildRequestQueue,
    invocation_id: str,
    clock: Callable[[], datetime] = utc_now,
) -> list[BranchRebuild]:
    """Hand on a rebuild of each requested (default: every watched) branch's head.

    A scheduled run is keyed by its scheduled time, so the scheduler's retries of one
    night start nothing twice; a run by hand by its invocation (`invocation_id`, the
    Lambda request id, which Lambda's retries of an asynchronous invocation keep), so a
    retry after a half-sent run requests no branch twice. Each build checks out
    `refs/heads/<branch>`: never a tag that happens to share the name.
    """
    now = clock()
    if run.scheduled_time is not None:
        trigger, occasion = Trigger.NIGHTLY, f"nightly@{records.timestamp(run.scheduled_time)}"
        requested_at = run.scheduled_time
    else:
        trigger, occasion = Trigger.MANUAL, f"manual@{invocation_id}"
        requested_at = now
    results = []
    for branch in run.branches or sorted(settings.watched_branches):
        if branch not in settings.watched_branches:
            logger.warning("Not a watched branch; skipped", extra={"branch": branch})
            results.append(BranchRebuild(branch, None, "not a watched branch"))
            continue
        request = BuildRequestMessage(
            image=settings.image_repository_name,
            branch=branch,
            commit=None,
            trigger=trigger,
            mode=run.mode,
            occasion=occasion,
            requested_at=requested_at,
            reason=f"{trigger.value} {run.mode.value} rebuild",
        )
        results.append(BranchRebuild(branch, queue.send(request), "requested"))
    return results
