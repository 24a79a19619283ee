"""What the recorder knows about one build: the event's facts, completed by BatchGetBuilds."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Any
from urllib.parse import quote

from layercache.build_records import ECR_REPOSITORY_NAME, BuildStatus, all_steps_cached

# The standard library's logger, not Powertools': the user's `layercache` command imports
# this module without Powertools. In Lambda its records reach the Powertools logger of the
# service ("layercache"), its parent, and are written as JSON like the others.
logger = logging.getLogger(__name__)

# Variables the buildspec exports (`exported-variables`); each one is optional.
EXPORTED_IMAGE_DIGEST = "LAYERCACHE_IMAGE_DIGEST"
EXPORTED_IMAGE_TAGS = "LAYERCACHE_IMAGE_TAGS"
# The moving tags (`<branch>`, `latest`) the build did not push: the recorder publishes them.
EXPORTED_MOVING_TAGS = "LAYERCACHE_MOVING_TAGS"
EXPORTED_CACHE_HIT_RATIO = "LAYERCACHE_CACHE_HIT_RATIO"
EXPORTED_CACHE_REF_HIT = "LAYERCACHE_CACHE_REF_HIT"
EXPORTED_BUILD_SECONDS = "LAYERCACHE_BUILD_SECONDS"
EXPORTED_PUSH_SECONDS = "LAYERCACHE_PUSH_SECONDS"
# With a Bake file: one JSON object per image (buildspecs/bake_build.py, ImageResult); the
# variables above then hold the build's totals and no digest or build tags.
EXPORTED_IMAGES = "LAYERCACHE_IMAGES"
# With several platforms: the platforms the build joined into one index (or built).
EXPORTED_PLATFORMS = "LAYERCACHE_PLATFORMS"

# An OCI content digest (`algorithm:hex`).
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")

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
class ImageOutput:
    """One image of a Bake file's build (an entry of LAYERCACHE_IMAGES), checked.

    `repository` is the ECR repository's name (the URI's path after the registry host);
    numbers are None where absent or out of range.
    """

    image: str
    repository: str
    digest: str
    tags: tuple[str, ...] = ()
    moving_tags: tuple[str, ...] = ()
    built_on: tuple[str, ...] = ()
    cache_hit_ratio: Decimal | None = None
    cached_steps: int | None = None
    total_steps: int | None = None
    cache_ref_hit: str | None = None
    build_seconds: Decimal | None = None
    push_seconds: Decimal | None = None
    cache_export_seconds: Decimal | None = None
    cache_status: str | None = None

    @property
    def fully_cached(self) -> bool:
        """Every step came from the cache: the image's inputs did not change."""
        return all_steps_cached(self.cached_steps, self.total_steps)

    def as_item(self) -> dict[str, Any]:
        """The image's entry in the build item's `images` list (DynamoDB values, no floats)."""
        fields: dict[str, Any] = {
            "image": self.image,
            "repository": self.repository,
            "digest": self.digest,
            "tags": list(self.tags),
            "built_on": list(self.built_on),
            "cache_hit_ratio": self.cache_hit_ratio,
            "cached_steps": self.cached_steps,
            "total_steps": self.total_steps,
            "cache_ref_hit": self.cache_ref_hit,
            "build_seconds": self.build_seconds,
            "push_seconds": self.push_seconds,
            "cache_status": self.cache_status,
        }
        return {name: value for name, value in fields.items() if value is not None}


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
    # With a Bake file: one result per image, in the order they were built; else empty.
    images: tuple[ImageOutput, ...] = ()
    platforms: tuple[str, ...] = ()


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
    batch: bool = False  # a batch build's facts (FanOut), from one of its builds' (batch.py)

    @property
    def console_url(self) -> str:
        return console_url(self.region, self.account, self.project, self.build_id, self.batch)

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

    @cached_property
    def outputs(self) -> BuildOutputs:
        # Parsed once per facts: a dropped image entry is logged once, not on every read.
        return parse_outputs(self.exported)


def build_id_of(build_arn_or_id: str) -> str:
    """CodeBuild's build id ("project:uuid") from a build ARN (events carry the ARN)."""
    _, marker, rest = build_arn_or_id.partition(":build/")
    return rest if marker else build_arn_or_id


def console_url(region: str, account: str, project: str, build_id: str, batch: bool = False) -> str:
    return (
        f"https://{region}.console.aws.amazon.com/codesuite/codebuild/{account}"
        f"/projects/{quote(project, safe='')}/{'batch' if batch else 'build'}"
        f"/{quote(build_id, safe='')}/"
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


# Numbers are kept to this many decimal places and below this magnitude, so that every one
# fits a DynamoDB number (38 significant digits): a 40-digit ratio would fail the write on
# every retry.
_PLACES = Decimal("0.000001")
_LARGEST = Decimal(10) ** 15


def _decimal(text: str | None) -> Decimal | None:
    if text is None or not text.strip():
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return _storable(value)


def _storable(value: Decimal) -> Decimal | None:
    if not value.is_finite() or abs(value) >= _LARGEST:
        return None
    return value.quantize(_PLACES) if value != value.quantize(_PLACES) else value


def _ratio(value: Decimal | None) -> Decimal | None:
    return value if value is not None and Decimal(0) <= value <= Decimal(1) else None


def _seconds(value: Decimal | None) -> Decimal | None:
    return value if value is not None and value >= 0 else None


def parse_outputs(exported: Mapping[str, str]) -> BuildOutputs:
    return BuildOutputs(
        image_digest=exported.get(EXPORTED_IMAGE_DIGEST, "").strip() or None,
        image_tags=_tags(exported.get(EXPORTED_IMAGE_TAGS, "")),
        moving_tags=_tags(exported.get(EXPORTED_MOVING_TAGS, "")),
        cache_hit_ratio=_ratio(_decimal(exported.get(EXPORTED_CACHE_HIT_RATIO))),
        cache_ref_hit=exported.get(EXPORTED_CACHE_REF_HIT, "").strip() or None,
        build_seconds=_seconds(_decimal(exported.get(EXPORTED_BUILD_SECONDS))),
        push_seconds=_seconds(_decimal(exported.get(EXPORTED_PUSH_SECONDS))),
        images=parse_images(exported.get(EXPORTED_IMAGES, "")),
        platforms=_tags(exported.get(EXPORTED_PLATFORMS, "")),
    )


def _tags(text: str) -> tuple[str, ...]:
    return tuple(tag.strip() for tag in text.split(",") if tag.strip())


def repository_name(uri: str) -> str | None:
    """An ECR repository's name from its URI: the path after the registry host.

    `123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app/api` -> `team/app/api`. A
    first component that names no host (no `.` or `:`, not `localhost`) is part of the
    name. None when what is left is not a repository name.
    """
    host, slash, path = uri.strip().partition("/")
    if not slash:
        host, path = "", host
    elif not ("." in host or ":" in host or host == "localhost"):
        path = f"{host}/{path}"
    path = path.partition("@")[0]
    return path if ECR_REPOSITORY_NAME.fullmatch(path) else None


def parse_images(text: str) -> tuple[ImageOutput, ...]:
    """LAYERCACHE_IMAGES, checked entry by entry.

    Unreadable JSON yields no images; an entry without a readable image name, repository
    or digest, or repeating an image or repository of an earlier entry, is dropped; a
    number out of range (ratio outside 0..1, negative seconds or steps, more cached steps
    than steps) is left out. Each drop is logged as a warning.
    """
    if not text.strip():
        return ()
    try:
        entries = json.loads(text, parse_float=Decimal, parse_constant=lambda _: None)
    except ValueError as error:
        logger.warning(
            f"{EXPORTED_IMAGES} is not JSON: no per-image results", extra={"reason": str(error)}
        )
        return ()
    if not isinstance(entries, list):
        logger.warning(f"{EXPORTED_IMAGES} is not a JSON list: no per-image results")
        return ()
    images: list[ImageOutput] = []
    for index, entry in enumerate(entries):
        image, reason = _image_output(entry)
        if image is not None:
            earlier = next(
                (
                    other
                    for other in images
                    if image.image == other.image or image.repository == other.repository
                ),
                None,
            )
            if earlier is not None:
                image, reason = None, f"repeats the image {earlier.image} ({earlier.repository})"
        if image is None:
            logger.warning(
                f"{EXPORTED_IMAGES}: entry {index} dropped: {reason}", extra={"entry": index}
            )
            continue
        images.append(image)
    return tuple(images)


def _image_output(entry: Any) -> tuple[ImageOutput | None, str]:
    if not isinstance(entry, dict):
        return None, "not a JSON object"
    image = _text_of(entry.get("image"))
    uri = _text_of(entry.get("repository"))
    digest = _text_of(entry.get("digest"))
    if image is None:
        return None, "no image name"
    if uri is None:
        return None, f"{image}: no repository"
    repository = repository_name(uri)
    if repository is None:
        return None, f"{image}: {uri!r} names no ECR repository"
    if digest is None or not _DIGEST.fullmatch(digest):
        return None, f"{image}: no image digest"
    cached, total = _count(entry.get("cached_steps")), _count(entry.get("total_steps"))
    if cached is not None and total is not None and cached > total:
        cached = total = None
    return (
        ImageOutput(
            image=image,
            repository=repository,
            digest=digest,
            tags=_texts(entry.get("tags")),
            moving_tags=_texts(entry.get("moving_tags")),
            built_on=_texts(entry.get("built_on")),
            cache_hit_ratio=_ratio(_number(entry.get("cache_hit_ratio"))),
            cached_steps=cached,
            total_steps=total,
            cache_ref_hit=_text_of(entry.get("cache_ref_hit")),
            build_seconds=_seconds(_number(entry.get("build_seconds"))),
            push_seconds=_seconds(_number(entry.get("push_seconds"))),
            cache_export_seconds=_seconds(_number(entry.get("cache_export_seconds"))),
            cache_status=_text_of(entry.get("cache_status")),
        ),
        "",
    )


def _text_of(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def _texts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    texts = (_text_of(item) for item in value)
    return tuple(dict.fromkeys(text for text in texts if text is not None))


def _number(value: Any) -> Decimal | None:
    """A JSON number (parsed as Decimal) or a numeric string; never a bool."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _storable(Decimal(value))
    if isinstance(value, Decimal):
        return _storable(value)
    if isinstance(value, str):
        return _decimal(value)
    return None


def _count(value: Any) -> int | None:
    number = _number(value)
    if number is None or number < 0 or number != number.to_integral_value():
        return None
    return int(number)


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
