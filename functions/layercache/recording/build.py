"""What the recorder knows about one build: the event's facts, completed by BatchGetBuilds."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from layercache.build_records import BuildStatus

# Variables the buildspec exports (`exported-variables`); each one is optional.
EXPORTED_IMAGE_DIGEST = "LAYERCACHE_IMAGE_DIGEST"
EXPORTED_IMAGE_TAGS = "LAYERCACHE_IMAGE_TAGS"
# The moving tags (`<branch>`, `latest`) the build did not push: the recorder publishes them.
EXPORTED_MOVING_TAGS = "LAYERCACHE_MOVING_TAGS"
EXPORTED_CACHE_HIT_RATIO = "LAYERCACHE_CACHE_HIT_RATIO"
EXPORTED_CACHE_REF_HIT = "LAYERCACHE_CACHE_REF_HIT"
EXPORTED_BUILD_SECONDS = "LAYERCACHE_BUILD_SECONDS"
EXPORTED_PUSH_SECONDS = "LAYERCACHE_PUSH_SECONDS"

# Phase statuses that end a build early; the first such phase is "the phase that failed".
FAILED_PHASE_STATUSES = frozenset({"FAILED", "FAULT", "TIMED_OUT", "STOPPED", "CLIENT_ERROR"})


@dataclass(frozen=True)
class Phase:
    name: str
    status: str | None = None
    seconds: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    messages: tuple[str, ...] = ()


@dataclass(frozen=True)
class BuildOutputs:
    """The build driver's exported variables, parsed; None where absent or unreadable."""

    image_digest: str | None = None
    image_tags: tuple[str, ...] = ()
    moving_tags: tuple[str, ...] = ()
    cache_hit_ratio: Decimal | None = None
    cache_ref_hit: str | None = None
    build_seconds: Decimal | None = None
    push_seconds: Decimal | None = None


@dataclass(frozen=True)
class BuildFacts:
    build_id: str  # "<project>:<uuid>", as StartBuild returns it
    build_arn: str
    project: str
    account: str
    region: str
    status: BuildStatus
    event_time: datetime
    build_number: int | None = None
    current_phase: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    source_version: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    exported: Mapping[str, str] = field(default_factory=dict)
    phases: tuple[Phase, ...] = ()

    @property
    def console_url(self) -> str:
        return console_url(self.region, self.account, self.project, self.build_id)

    @property
    def duration_seconds(self) -> int | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0, round((self.ended_at - self.started_at).total_seconds()))

    @property
    def queued_seconds(self) -> int | None:
        for phase in self.phases:
            if phase.name == "QUEUED":
                return phase.seconds
        return None

    @property
    def failed_phase(self) -> Phase | None:
        return failed_phase(self.phases, self.status, self.current_phase)

    @property
    def outputs(self) -> BuildOutputs:
        return parse_outputs(self.exported)


def build_id_of(build_arn_or_id: str) -> str:
    """CodeBuild's build id ("project:uuid") from a build ARN (events carry the ARN)."""
    _, marker, rest = build_arn_or_id.partition(":build/")
    return rest if marker else build_arn_or_id


def console_url(region: str, account: str, project: str, build_id: str) -> str:
    return (
        f"https://{region}.console.aws.amazon.com/codesuite/codebuild/{account}"
        f"/projects/{quote(project, safe='')}/build/{quote(build_id, safe='')}/"
    )


def failed_phase(
    phases: Sequence[Phase], status: BuildStatus, current_phase: str | None = None
) -> Phase | None:
    """The first phase that did not succeed, for a build that did not succeed."""
    if status in (BuildStatus.SUCCEEDED, BuildStatus.IN_PROGRESS, BuildStatus.REQUESTED):
        return None
    for phase in phases:
        if phase.status in FAILED_PHASE_STATUSES:
            return phase
    if current_phase:
        return Phase(name=current_phase)
    return None


def _decimal(text: str | None) -> Decimal | None:
    if text is None or not text.strip():
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def parse_outputs(exported: Mapping[str, str]) -> BuildOutputs:
    ratio = _decimal(exported.get(EXPORTED_CACHE_HIT_RATIO))
    if ratio is not None and not Decimal(0) <= ratio <= Decimal(1):
        ratio = None
    build_seconds = _decimal(exported.get(EXPORTED_BUILD_SECONDS))
    push_seconds = _decimal(exported.get(EXPORTED_PUSH_SECONDS))
    return BuildOutputs(
        image_digest=exported.get(EXPORTED_IMAGE_DIGEST, "").strip() or None,
        image_tags=_tags(exported.get(EXPORTED_IMAGE_TAGS, "")),
        moving_tags=_tags(exported.get(EXPORTED_MOVING_TAGS, "")),
        cache_hit_ratio=ratio,
        cache_ref_hit=exported.get(EXPORTED_CACHE_REF_HIT, "").strip() or None,
        build_seconds=build_seconds if build_seconds is None or build_seconds >= 0 else None,
        push_seconds=push_seconds if push_seconds is None or push_seconds >= 0 else None,
    )


def _tags(text: str) -> tuple[str, ...]:
    return tuple(tag.strip() for tag in text.split(",") if tag.strip())


def _utc(moment: Any) -> datetime | None:
    if not isinstance(moment, datetime):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _name_values(pairs: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    return {str(pair["name"]): str(pair.get("value", "")) for pair in pairs if "name" in pair}


def phases_from_batch_get(phases: Iterable[Mapping[str, Any]]) -> tuple[Phase, ...]:
    result = []
    for phase in phases:
        seconds = phase.get("durationInSeconds")
        result.append(
            Phase(
                name=str(phase.get("phaseType", "")),
                status=phase.get("phaseStatus"),
                seconds=int(seconds) if seconds is not None else None,
                started_at=_utc(phase.get("startTime")),
                ended_at=_utc(phase.get("endTime")),
                messages=tuple(
                    str(context["message"])
                    for context in phase.get("contexts") or ()
                    if context.get("message")
                ),
            )
        )
    return tuple(result)


def merge_batch_get(facts: BuildFacts, build: Mapping[str, Any]) -> BuildFacts:
    """Complete the event's facts with BatchGetBuilds' `build` (times, phases, exports).

    The event's status stays: it is the state this event reports, and the build may have
    moved on since.
    """
    environment = {
        **facts.environment,
        **_name_values(build.get("environment", {}).get("environmentVariables") or ()),
    }
    exported = {**facts.exported, **_name_values(build.get("exportedEnvironmentVariables") or ())}
    phases = phases_from_batch_get(build.get("phases") or ()) or facts.phases
    number = build.get("buildNumber")
    ended_at = _utc(build.get("endTime")) if facts.status.is_final else None
    return replace(
        facts,
        build_number=int(number) if number is not None else facts.build_number,
        started_at=_utc(build.get("startTime")) or facts.started_at,
        ended_at=ended_at or facts.ended_at,
        source_version=build.get("resolvedSourceVersion") or facts.source_version,
        environment=environment,
        exported=exported,
        phases=phases,
    )


def seconds_text(seconds: float | Decimal | None) -> str:
    """A short human duration: 45s, 3m05s, 1h02m."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "?"
    total = round(float(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
