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
    be SUCCEEDED. The exports are every succeeded member's, merged in graph order.
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
    exported = merged_exports([parts[node].get("exported") or {} for node in nodes])
    return replace(batch.facts_of(member, BuildStatus.SUCCEEDED), exported=exported, phases=())


def merged_exports(members: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """One build's exported variables from its members': images in order, sums, totals."""
    images: list[Any] = []
    for exported in members:
        try:
            entries = json.loads(str(exported.get(EXPORTED_IMAGES) or "[]"))
        except ValueError:
            entries = []
        images.extend(entries if isinstance(entries, list) else [])
    cached = _total(members, EXPORTED_CACHED_STEPS)
    total = _total(members, EXPORTED_TOTAL_STEPS)
    hits = [str(m.get(EXPORTED_CACHE_REF_HIT) or "none") for m in members]
    statuses = {str(m.get(EXPORTED_CACHE_STATUS) or "") for m in members}
    moving = next(
        (str(m[EXPORTED_MOVING_TAGS]) for m in members if m.get(EXPORTED_MOVING_TAGS)), ""
    )
    return {
        EXPORTED_IMAGE_DIGEST: "",
        EXPORTED_IMAGE_TAGS: "",
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
        EXPORTED_IMAGES: json.dumps(images, separators=(",", ":"), default=str),
    }


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
