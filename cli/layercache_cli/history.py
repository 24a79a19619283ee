"""Build records as rows for people: read through `BuildsTable`'s indexes, summed per branch."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from layercache.build_records import (
    INDEX_BY_BRANCH,
    INDEX_BY_COMMIT,
    INDEX_BY_DAY,
    BuildsTable,
    BuildStatus,
    branch_key,
    day_of,
    parse_timestamp,
)
from layercache.recording.build import seconds_text

# A successful build is warm from this cache hit ratio on, cold below it.
WARM_THRESHOLD = 0.5
FINAL_STATUSES = frozenset(status.value for status in BuildStatus if status.is_final)
BUILD_PREFIX = "BUILD#"


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


def number(value: Any) -> float | None:
    """A number as DynamoDB returns it (Decimal), or None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    return float(value)


def text(item: Mapping[str, Any], name: str) -> str:
    value = item.get(name)
    return value if isinstance(value, str) else ""


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
