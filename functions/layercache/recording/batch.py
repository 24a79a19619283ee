"""FanOut: the builds of one batch build recorded as the one build they are.

EventBridge reports each build of a batch (one per image, see starting/fan_out.py) and
nothing for the batch itself. The batch's item (``BUILD#<batch id>``, which the starter
writes) is the build users see; each member build's event is turned into an event of
the batch:

- a member's IN_PROGRESS is the batch's IN_PROGRESS (the first one recorded posts
  `pending`; the others are duplicates);
- a member's final status is first kept on the batch's item as its part
  (``part#<graph identifier>``: status, build id, exported variables), one UpdateItem
  that answers the whole item. DynamoDB applies the writes to one item one after the
  other, so the write that adds the last part sees every part: that invocation records
  the batch SUCCEEDED, with every member's images and summed counts. A member that did
  not succeed records the batch with its own status at once (the batch fails fast:
  CodeBuild stops the others, and the graph never starts what depended on it).

From there the recorder goes on as for one build: the final status is recorded once
(a duplicate event, or a member's STOPPED after the batch failed, changes nothing),
the moving tags are published for all images in one write, one commit status and one
notification go out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from layercache.build_records import BuildsTable, BuildStatus, build_pk
from layercache.recording.build import (
    EXPORTED_BUILD_SECONDS,
    EXPORTED_CACHE_HIT_RATIO,
    EXPORTED_CACHE_REF_HIT,
    EXPORTED_IMAGE_DIGEST,
    EXPORTED_IMAGE_TAGS,
    EXPORTED_IMAGES,
    EXPORTED_MOVING_TAGS,
    EXPORTED_PLATFORMS,
    EXPORTED_PUSH_SECONDS,
    BuildFacts,
    phases_from_batch_get,
)

if TYPE_CHECKING:
    from mypy_boto3_codebuild import CodeBuildClient

PART_PREFIX = "part#"
EXPORTED_CACHED_STEPS = "LAYERCACHE_CACHED_STEPS"
EXPORTED_TOTAL_STEPS = "LAYERCACHE_TOTAL_STEPS"
EXPORTED_CACHE_EXPORT_SECONDS = "LAYERCACHE_CACHE_EXPORT_SECONDS"
EXPORTED_CACHE_STATUS = "LAYERCACHE_CACHE_STATUS"
# The build graph's node that joins the platforms' images (starting/platforms.py).
JOIN_NODE = "join"
# The build's cache status when its images differ: the first of these any image has.
_STATUS_PRECEDENCE = ("fallback", "export-failed", "clean")


class BatchUnknown(RuntimeError):
    """BatchGetBuildBatches does not know a member's batch yet: the event is retried."""


@dataclass(frozen=True)
class BatchMembership:
    """A member build's batch, as BatchGetBuildBatches describes it."""

    batch_id: str
    batch_arn: str
    identifier: str  # the member's node in the build graph (its build id if not found)
    identifiers: tuple[str, ...]  # every node of the graph, in the graph's order
    number: int | None
    started_at: datetime | None

    def facts_of(self, member: BuildFacts, status: BuildStatus) -> BuildFacts:
        """The batch's facts, from a member's: the batch's identity, the member's event."""
        return replace(
            member,
            build_id=self.batch_id,
            build_arn=self.batch_arn,
            status=status,
            build_number=self.number,
            started_at=self.started_at or member.started_at,
            batch=True,
        )


def part_attribute(identifier: str) -> str:
    return f"{PART_PREFIX}{identifier}"


def membership(
    codebuild: CodeBuildClient, member_id: str, member_arn: str, batch_arn: str
) -> BatchMembership:
    """The batch `batch_arn` names, and the member's place in its graph."""
    batch_id = batch_arn.partition(":build-batch/")[2] or batch_arn
    batches = codebuild.batch_get_build_batches(ids=[batch_id]).get("buildBatches", [])
    if not batches:
        raise BatchUnknown(f"the batch {batch_id} of {member_id} is not known yet")
    batch: Mapping[str, Any] = batches[0]
    identifiers: list[str] = []
    identifier = ""
    for group in batch.get("buildGroups") or ():
        name = str(group.get("identifier") or "")
        if not name:
            continue
        identifiers.append(name)
        summaries = [
            group.get("currentBuildSummary") or {},
            *(group.get("priorBuildSummaryList") or ()),
        ]
        if any(summary.get("arn") in (member_arn, member_id) for summary in summaries):
            identifier = name
    number = batch.get("buildBatchNumber")
    phases = phases_from_batch_get(batch.get("phases") or ())
    started = batch.get("startTime")
    return BatchMembership(
        batch_id=str(batch.get("id") or batch_id),
        batch_arn=str(batch.get("arn") or batch_arn),
        identifier=identifier or member_id,
        identifiers=tuple(identifiers),
        number=int(number) if number is not None else None,
        started_at=started
        if isinstance(started, datetime)
        else (phases[0].started_at if phases else None),
    )


def record_part(table: BuildsTable, batch: BatchMembership, member: BuildFacts) -> dict[str, Any]:
    """Keep a member's final status and exports on the batch's item; the item after it."""
    part = {
        "build_id": member.build_id,
        "status": member.status.value,
        "exported": dict(member.exported),
    }
    return table.update(
        build_pk(batch.batch_id),
        "SET #part = :part",
        names={"#part": part_attribute(batch.identifier)},
        values={":part": part},
    ).item


def batch_outcome(
    batch: BatchMembership, member: BuildFacts, item: Mapping[str, Any]
) -> BuildFacts | None:
    """The batch's final facts once `member`'s part decides it; None while it can't.

    A member that did not succeed decides it alone; success needs every node's part to
    be SUCCEEDED. The exports are every succeeded member's, merged in graph order (with
    several platforms, the join's image and tags over the platforms' counts).
    """
    if member.status is not BuildStatus.SUCCEEDED:
        return batch.facts_of(member, member.status)
    parts = {
        name.removeprefix(PART_PREFIX): value
        for name, value in item.items()
        if name.startswith(PART_PREFIX) and isinstance(value, Mapping)
    }
    nodes = batch.identifiers or (batch.identifier,)
    if any(parts.get(node, {}).get("status") != BuildStatus.SUCCEEDED.value for node in nodes):
        return None
    exports = {node: parts[node].get("exported") or {} for node in nodes}
    join = exports.pop(JOIN_NODE, None)
    exported = merged_exports(list(exports.values()), join)
    return replace(batch.facts_of(member, BuildStatus.SUCCEEDED), exported=exported, phases=())


def merged_exports(
    members: Sequence[Mapping[str, Any]], join: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """One build's exported variables from its members': images in order, sums, totals.

    With a `join` (several platforms), the image, its tags and the moving tags are the
    join's (the index), and each image's counts are summed over its platforms."""
    images = _entries(members)
    if join is not None:
        images = _joined_entries(_entries([join]), images)
    cached = _total(members, EXPORTED_CACHED_STEPS)
    total = _total(members, EXPORTED_TOTAL_STEPS)
    hits = [str(m.get(EXPORTED_CACHE_REF_HIT) or "none") for m in members]
    statuses = {str(m.get(EXPORTED_CACHE_STATUS) or "") for m in members}
    named = [join] if join is not None else list(members)
    moving = next((str(m[EXPORTED_MOVING_TAGS]) for m in named if m.get(EXPORTED_MOVING_TAGS)), "")
    return {
        EXPORTED_IMAGE_DIGEST: str((join or {}).get(EXPORTED_IMAGE_DIGEST) or ""),
        EXPORTED_IMAGE_TAGS: str((join or {}).get(EXPORTED_IMAGE_TAGS) or ""),
        EXPORTED_MOVING_TAGS: moving,
        EXPORTED_CACHE_HIT_RATIO: f"{cached / total:.3f}" if total else "0.000",
        EXPORTED_CACHE_REF_HIT: next((hit for hit in hits if hit != "none"), "none"),
        # Summed over the members: host-seconds, not the batch's wall time (its duration).
        EXPORTED_BUILD_SECONDS: f"{_total(members, EXPORTED_BUILD_SECONDS):.1f}",
        EXPORTED_PUSH_SECONDS: f"{_total(members, EXPORTED_PUSH_SECONDS):.1f}",
        EXPORTED_CACHE_EXPORT_SECONDS: f"{_total(members, EXPORTED_CACHE_EXPORT_SECONDS):.1f}",
        EXPORTED_CACHED_STEPS: str(int(cached)),
        EXPORTED_TOTAL_STEPS: str(int(total)),
        EXPORTED_CACHE_STATUS: next(
            (name for name in _STATUS_PRECEDENCE if name in statuses), "warm" if cached else "cold"
        ),
        EXPORTED_PLATFORMS: ",".join(
            dict.fromkeys(
                platform
                for m in [*(m for m in [join] if m is not None), *members]
                for platform in str(m.get(EXPORTED_PLATFORMS) or "").split(",")
                if platform
            )
        ),
        EXPORTED_IMAGES: json.dumps(images, separators=(",", ":"), default=str) if images else "",
    }


def _entries(members: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for exported in members:
        try:
            loaded = json.loads(str(exported.get(EXPORTED_IMAGES) or "[]"))
        except ValueError:
            loaded = []
        entries.extend(
            e for e in (loaded if isinstance(loaded, list) else []) if isinstance(e, dict)
        )
    return entries


_SUMMED = ("cached_steps", "total_steps", "build_seconds", "push_seconds", "cache_export_seconds")


def _joined_entries(
    joined: Sequence[dict[str, Any]], per_platform: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each image as the join published it (the index), with its platforms' counts summed."""
    result = []
    for entry in joined:
        parts = [p for p in per_platform if p.get("image") == entry.get("image")]
        merged = dict(entry)
        for name in _SUMMED:
            values = [p[name] for p in parts if isinstance(p.get(name), int | float)]
            if values:
                merged[name] = sum(values)
        cached, total = merged.get("cached_steps"), merged.get("total_steps")
        if isinstance(cached, int | float) and isinstance(total, int | float) and total:
            merged["cache_hit_ratio"] = round(cached / total, 3)
        hits = [
            p.get("cache_ref_hit") for p in parts if p.get("cache_ref_hit") not in (None, "none")
        ]
        if hits:
            merged["cache_ref_hit"] = hits[0]
        statuses = {str(p.get("cache_status") or "") for p in parts}
        merged["cache_status"] = next(
            (name for name in _STATUS_PRECEDENCE if name in statuses),
            "warm" if merged.get("cached_steps") else "cold",
        )
        result.append(merged)
    return result


def _total(members: Sequence[Mapping[str, Any]], name: str) -> Decimal:
    total = Decimal(0)
    for exported in members:
        try:
            value = Decimal(str(exported.get(name) or "0").strip())
        except InvalidOperation:
            continue
        if value.is_finite() and value >= 0:
            total += value
    return total
