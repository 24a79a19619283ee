"""Build records as rows for people: read through `BuildsTable`'s indexes, summed per branch."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from layercache.build_records import (
    INDEX_BY_BRANCH,
    INDEX_BY_COMMIT,
    INDEX_BY_DAY,
    BuildsTable,
    BuildStatus,
    all_steps_cached,
    branch_key,
    day_of,
    images_text,
    parse_timestamp,
)
from layercache.recording.build import seconds_text

# A successful build is warm from this cache hit ratio on, cold below it.
WARM_THRESHOLD = 0.5
FINAL_STATUSES = frozenset(status.value for status in BuildStatus if status.is_final)
BUILD_PREFIX = "BUILD#"
DIGEST_SHOWN = 12  # hex digits of a digest in tables


@dataclass(frozen=True)
class ImageResult:
    """One image of a Bake file's build: an entry of the build item's `images` list."""

    name: str
    repository: str
    digest: str = ""
    tags: tuple[str, ...] = ()
    built_on: tuple[str, ...] = ()
    cache_hit_ratio: float | None = None
    cached_steps: int | None = None
    total_steps: int | None = None
    cache_ref_hit: str = ""
    build_seconds: float | None = None
    push_seconds: float | None = None
    cache_status: str = ""

    @property
    def fully_cached(self) -> bool:
        """Every step came from the cache (as the commit status counts "cached")."""
        return all_steps_cached(self.cached_steps, self.total_steps)

    @property
    def seconds(self) -> float | None:
        """The image's own time: its build and its push."""
        parts = [s for s in (self.build_seconds, self.push_seconds) if s is not None]
        return sum(parts) if parts else None

    @property
    def short_digest(self) -> str:
        algorithm, _, value = self.digest.partition(":")
        return f"{algorithm}:{value[:DIGEST_SHOWN]}" if value else self.digest or "-"

    @property
    def steps_text(self) -> str:
        if self.cached_steps is None or self.total_steps is None:
            return "-"
        return f"{self.cached_steps}/{self.total_steps}"

    def as_json(self) -> dict[str, Any]:
        return {
            "image": self.name,
            "repository": self.repository,
            "digest": self.digest or None,
            "tags": list(self.tags),
            "built_on": list(self.built_on),
            "cache_hit_ratio": self.cache_hit_ratio,
            "cached_steps": self.cached_steps,
            "total_steps": self.total_steps,
            "cache_ref_hit": self.cache_ref_hit or None,
            "build_seconds": self.build_seconds,
            "push_seconds": self.push_seconds,
            "cache_status": self.cache_status or None,
        }


@dataclass(frozen=True)
class BuildRow:
    build_id: str
    image: str
    branch: str
    requested_at: str
    status: str
    trigger: str = ""
    mode: str = ""
    commit: str = ""
    build_number: int | None = None
    duration: float | None = None
    cache_hit_ratio: float | None = None
    failed_phase: str = ""
    # With a Bake file: one result per image (the attributes above are the build's totals).
    images: tuple[ImageResult, ...] = ()
    # Made by `for_image`: the build as one of its images saw it.
    of_image: bool = False

    @property
    def moment(self) -> datetime | None:
        try:
            return parse_timestamp(self.requested_at)
        except ValueError:
            return None

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == BuildStatus.SUCCEEDED.value

    @property
    def status_text(self) -> str:
        return self.status + (f" ({self.failed_phase})" if self.failed_phase else "")

    @property
    def images_text(self) -> str:
        """`4 images, 3 cached` for a Bake file's build (cached: every step from the cache)."""
        if not self.images:
            return "-"
        return images_text(len(self.images), sum(1 for i in self.images if i.fully_cached))

    def for_image(self, image: ImageResult) -> BuildRow:
        """The build as one of its images saw it: that image's repository, cache hit ratio
        and time (its build and push seconds) in place of the build's totals."""
        return replace(
            self,
            image=image.repository,
            duration=image.seconds,
            cache_hit_ratio=image.cache_hit_ratio,
            images=(image,),
            of_image=True,
        )


def number(value: Any) -> float | None:
    """A number as DynamoDB returns it (Decimal), or None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    return float(value)


def text(item: Mapping[str, Any], name: str) -> str:
    value = item.get(name)
    return value if isinstance(value, str) else ""


def texts(item: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = item.get(name)
    if not isinstance(value, list | tuple):
        return ()
    return tuple(entry for entry in value if isinstance(entry, str))


def whole(value: Any) -> int | None:
    figure = number(value)
    return int(figure) if figure is not None else None


def images_of(item: Mapping[str, Any]) -> tuple[ImageResult, ...]:
    """The `images` list of a Bake file's build item; entries without a name are skipped."""
    entries = item.get("images")
    if not isinstance(entries, list):
        return ()
    images = []
    for entry in entries:
        if not isinstance(entry, Mapping) or not text(entry, "image"):
            continue
        images.append(
            ImageResult(
                name=text(entry, "image"),
                repository=text(entry, "repository") or text(entry, "image"),
                digest=text(entry, "digest"),
                tags=texts(entry, "tags"),
                built_on=texts(entry, "built_on"),
                cache_hit_ratio=number(entry.get("cache_hit_ratio")),
                cached_steps=whole(entry.get("cached_steps")),
                total_steps=whole(entry.get("total_steps")),
                cache_ref_hit=text(entry, "cache_ref_hit"),
                build_seconds=number(entry.get("build_seconds")),
                push_seconds=number(entry.get("push_seconds")),
                cache_status=text(entry, "cache_status"),
            )
        )
    return tuple(images)


def is_build_item(item: Mapping[str, Any]) -> bool:
    """Claims and branch heads share the table (and may carry index keys): skip them."""
    return text(item, "pk").startswith(BUILD_PREFIX)


def row_from_item(item: Mapping[str, Any]) -> BuildRow:
    build_number = number(item.get("build_number"))
    return BuildRow(
        build_id=text(item, "build_id") or text(item, "pk").removeprefix(BUILD_PREFIX),
        image=text(item, "image") or "?",
        branch=text(item, "branch") or "?",
        requested_at=text(item, "requested_at"),
        status=text(item, "status") or "?",
        trigger=text(item, "trigger"),
        mode=text(item, "mode"),
        # Nightly builds start at a branch head: the recorder stores the commit it resolved.
        commit=text(item, "commit") or resolved_commit(item),
        build_number=int(build_number) if build_number is not None else None,
        duration=number(item.get("duration_seconds")),
        cache_hit_ratio=number(item.get("cache_hit_ratio")),
        failed_phase=text(item, "failed_phase"),
        images=images_of(item),
    )


def resolved_commit(item: Mapping[str, Any]) -> str:
    source_version = text(item, "source_version")
    return source_version if is_full_sha(source_version) else ""


def is_full_sha(value: str) -> bool:
    return len(value) == 40 and all(c in "0123456789abcdef" for c in value)


def _rows(items: Iterable[Mapping[str, Any]]) -> list[BuildRow]:
    rows = [row_from_item(item) for item in items if is_build_item(item)]
    rows.sort(key=lambda row: row.requested_at, reverse=True)
    return rows


def _days_back(now: datetime, days: int) -> list[str]:
    return [day_of(now.astimezone(UTC) - timedelta(days=back)) for back in range(days)]


def fetch_builds(table: BuildsTable, days: int, now: datetime) -> list[BuildRow]:
    """Every build requested in the last `days` days (today included), newest first."""
    items: list[dict[str, Any]] = []
    for day in _days_back(now, days):
        items.extend(table.query_index(INDEX_BY_DAY, "day", day, limit=None))
    return _rows(items)


def newest_builds(table: BuildsTable, limit: int, days: int, now: datetime) -> list[BuildRow]:
    """The newest `limit` builds, reading day by day back at most `days` days."""
    rows: list[BuildRow] = []
    for day in _days_back(now, days):
        rows.extend(_rows(table.query_index(INDEX_BY_DAY, "day", day, limit=None)))
        if len(rows) >= limit:
            break
    return rows[:limit]


def builds_of_branch(table: BuildsTable, image: str, branch: str, limit: int) -> list[BuildRow]:
    key = branch_key(image, branch)
    return _rows(table.query_index(INDEX_BY_BRANCH, "branch_key", key, limit=limit))


def builds_of_commit(table: BuildsTable, commit: str, limit: int) -> list[BuildRow]:
    return _rows(table.query_index(INDEX_BY_COMMIT, "commit", commit, limit=limit))


def newest_per_branch(rows: Iterable[BuildRow]) -> list[BuildRow]:
    """The newest build of each image and branch, sorted by image and branch."""
    newest: dict[tuple[str, str], BuildRow] = {}
    for row in rows:
        key = (row.image, row.branch)
        if key not in newest or row.requested_at > newest[key].requested_at:
            newest[key] = row
    return [newest[key] for key in sorted(newest)]


@dataclass(frozen=True)
class BranchSummary:
    image: str
    branch: str
    builds: int
    finished: int
    succeeded: int
    cold_builds: int
    warm_builds: int
    median_cold: float | None
    median_warm: float | None
    median_ratio: float | None

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.finished if self.finished else None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(
    rows: Iterable[BuildRow], warm_threshold: float = WARM_THRESHOLD
) -> list[BranchSummary]:
    """Per image and branch. Cold/warm split successful builds by their cache hit ratio."""
    groups: dict[tuple[str, str], list[BuildRow]] = {}
    for row in rows:
        groups.setdefault((row.image, row.branch), []).append(row)
    summaries = []
    for (image, branch), group in sorted(groups.items()):
        succeeded = [row for row in group if row.succeeded]
        measured = [
            (row.duration, row.cache_hit_ratio)
            for row in succeeded
            if row.duration is not None and row.cache_hit_ratio is not None
        ]
        cold = [duration for duration, ratio in measured if ratio < warm_threshold]
        warm = [duration for duration, ratio in measured if ratio >= warm_threshold]
        ratios = [row.cache_hit_ratio for row in succeeded if row.cache_hit_ratio is not None]
        summaries.append(
            BranchSummary(
                image=image,
                branch=branch,
                builds=len(group),
                finished=sum(1 for row in group if row.finished),
                succeeded=len(succeeded),
                cold_builds=len(cold),
                warm_builds=len(warm),
                median_cold=_median(cold),
                median_warm=_median(warm),
                median_ratio=_median(ratios),
            )
        )
    return summaries


@dataclass(frozen=True)
class ImageSummary:
    """One image of Bake files' builds over the period (its repository names it)."""

    image: str
    repository: str
    builds: int
    fully_cached: int
    median_ratio: float | None
    median_build: float | None
    last: ImageResult
    last_requested_at: str

    def as_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "repository": self.repository,
            "builds": self.builds,
            "fully_cached_builds": self.fully_cached,
            "median_cache_hit_ratio": self.median_ratio,
            "median_build_seconds": self.median_build,
            "last_requested_at": self.last_requested_at,
            "last_digest": self.last.digest or None,
            "last_cache_status": self.last.cache_status or None,
        }


def has_images(rows: Iterable[BuildRow]) -> bool:
    return any(row.images for row in rows)


def counts_images(rows: Iterable[BuildRow]) -> bool:
    """Whether a list of builds gets an IMAGES column: a build in it built several images
    (and is not narrowed to one of them)."""
    return any(row.images and not row.of_image for row in rows)


def summarize_images(rows: Iterable[BuildRow]) -> list[ImageSummary]:
    """Per image repository, over the builds that recorded a result for it."""
    groups: dict[str, list[tuple[BuildRow, ImageResult]]] = {}
    for row in rows:
        for image in row.images:
            groups.setdefault(image.repository, []).append((row, image))
    summaries = []
    for repository, group in sorted(groups.items()):
        last_row, last = max(group, key=lambda pair: pair[0].requested_at)
        ratios = [i.cache_hit_ratio for _, i in group if i.cache_hit_ratio is not None]
        build_times = [i.build_seconds for _, i in group if i.build_seconds is not None]
        summaries.append(
            ImageSummary(
                image=last.name,
                repository=repository,
                builds=len(group),
                fully_cached=sum(1 for _, image in group if image.fully_cached),
                median_ratio=_median(ratios),
                median_build=_median(build_times),
                last=last,
                last_requested_at=last_row.requested_at,
            )
        )
    return summaries


def image_names(rows: Iterable[BuildRow]) -> list[str]:
    return sorted({image.name for row in rows for image in row.images})


def select_image(rows: Iterable[BuildRow], name: str) -> list[BuildRow]:
    """The builds of one image, each as that image saw it (`BuildRow.for_image`).

    `name` is a Bake target (`api`) or its repository (`team/app/api`); a build whose
    own image (the stack's, `team/app`) is `name` is kept as it is.
    """
    selected = []
    for row in rows:
        image = next((i for i in row.images if name in (i.name, i.repository)), None)
        if image is not None:
            selected.append(row.for_image(image))
        elif row.image == name:
            selected.append(row)
    return selected


def duration_text(seconds: float | None) -> str:
    return "-" if seconds is None else seconds_text(seconds)


def percent_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def cold_warm_note(threshold: float) -> str:
    return (
        f"Cold: a successful build whose cache hit ratio was below {threshold:.2f}; warm: "
        f"{threshold:.2f} or more. Builds without a ratio count in neither. Success rate is "
        "of finished builds."
    )
