"""How a build's facts map onto its BuildsTable item, as one conditional UpdateItem.

The trigger writes the item's identity (image, branch, commit, trigger, mode,
requested_at...) when it starts the build; events may arrive before that write. So the
recorder sets identity attributes with `if_not_exists` (the trigger's values win) and its
own attributes (status, times, phases, outputs) plainly, under a condition on
`recorded_status`, the attribute only the recorder writes:

- IN_PROGRESS is recorded only while the recorder has recorded nothing: a duplicate or a
  late IN_PROGRESS changes nothing.
- A final status is recorded over nothing or IN_PROGRESS; a second final event is a
  duplicate and changes nothing. One exception: the same final status again while
  `reported_at` is missing, i.e. its report has not gone out yet (the invocation that
  recorded it failed, or is still reporting); it records the same values again and then
  competes for the report below.

Reporting a final status (SNS notification, commit status, outcome metrics) is done once
per build by one invocation, which first claims it on the item (`report_token`,
`report_lease_until`; see `BuildRecordStore.claim_report`):

1. The claim is a conditional UpdateItem: the final status is recorded, `reported_at` is
   absent and no live lease is held (none, or `report_lease_until` has passed). Two
   copies of one event handled at once may both write the record; exactly one claims.
2. The claimant sends, then sets `reported_at` while its token still holds the claim.
3. Its lease ends at its own invocation's deadline (Lambda stops it there), so two live
   invocations never hold the claim at once. If it fails with an error before
   `reported_at` is set, it releases the claim and raises, and Lambda's retry claims at
   once; if it dies without a word (timeout, out of memory), the claim lapses at the
   lease's end and a retry claims then.
4. An invocation that finds the claim held waits for it: `reported_at` set means there is
   nothing left to do; a released or lapsed claim is taken over. If its own deadline
   comes first, it raises `ReportPending`, so Lambda retries the event later.

So each outcome is reported at least once, and never twice because copies of its event
arrived together. Only a crash after a send and before `reported_at` is written repeats
that send on the retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from layercache.build_records import (
    ENV_BRANCH,
    ENV_COMMIT,
    ENV_MODE,
    ENV_REQUESTED_AT,
    ENV_TRIGGER,
    BuildMode,
    BuildStatus,
    Trigger,
    branch_key,
    build_pk,
    day_of,
    timestamp,
)
from layercache.recording.build import BuildFacts

RECORDED_STATUS = "recorded_status"
REPORTED_AT = "reported_at"
REPORT_TOKEN = "report_token"  # noqa: S105 - an attribute name
REPORT_LEASE_UNTIL = "report_lease_until"


@dataclass(frozen=True)
class ItemUpdate:
    """An UpdateItem call in plain Python values (the store serializes them)."""

    key: dict[str, str]
    update_expression: str
    condition_expression: str
    names: dict[str, str]
    values: dict[str, Any]


def _requested_at(facts: BuildFacts) -> datetime:
    text = facts.environment.get(ENV_REQUESTED_AT, "").strip()
    if text:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment
    return facts.started_at or facts.event_time


def identity_fields(facts: BuildFacts, image: str) -> dict[str, Any]:
    """Who asked for this build and what it builds: the trigger's values win."""
    environment = facts.environment
    requested_at = _requested_at(facts)
    trigger = environment.get(ENV_TRIGGER, "").strip()
    mode = environment.get(ENV_MODE, "").strip()
    fields: dict[str, Any] = {
        "build_id": facts.build_id,
        "build_arn": facts.build_arn,
        "build_number": facts.build_number,
        "image": image,
        # A build started without the trigger's overrides was started by hand.
        "trigger": trigger if trigger in set(Trigger) else Trigger.MANUAL.value,
        "mode": mode if mode in set(BuildMode) else BuildMode.NORMAL.value,
        "requested_at": timestamp(requested_at),
        "day": day_of(requested_at),
    }
    branch = environment.get(ENV_BRANCH, "").strip()
    if branch:
        fields["branch"] = branch
        fields["branch_key"] = branch_key(image, branch)
    commit = environment.get(ENV_COMMIT, "").strip()
    if commit:  # absent, not empty: `commit` is the ByCommit index key
        fields["commit"] = commit
    return {name: value for name, value in fields.items() if value is not None}


def progress_fields(facts: BuildFacts, now: datetime) -> dict[str, Any]:
    """What this event and BatchGetBuilds say about the build: the recorder's own values."""
    fields: dict[str, Any] = {
        "status": facts.status.value,
        RECORDED_STATUS: facts.status.value,
        "updated_at": timestamp(now),
        "console_url": facts.console_url,
        "started_at": timestamp(facts.started_at) if facts.started_at else None,
        "source_version": facts.source_version,
    }
    if not facts.status.is_final:
        return {name: value for name, value in fields.items() if value is not None}
    outputs = facts.outputs
    failed = facts.failed_phase
    phases = {
        phase.name: {
            key: value
            for key, value in (("status", phase.status), ("seconds", phase.seconds))
            if value is not None
        }
        for phase in facts.phases
        if phase.name and phase.name != "COMPLETED"
    }
    fields.update(
        {
            "ended_at": timestamp(facts.ended_at) if facts.ended_at else None,
            "duration_seconds": facts.duration_seconds,
            "queued_seconds": facts.queued_seconds,
            "phases": phases or None,
            "failed_phase": failed.name if failed else None,
            "failure_message": "; ".join(failed.messages) if failed and failed.messages else None,
            "image_digest": outputs.image_digest,
            "image_tags": list(outputs.image_tags) or None,
            "cache_hit_ratio": outputs.cache_hit_ratio,
            "cache_ref_hit": outputs.cache_ref_hit,
            "build_seconds": outputs.build_seconds,
            "push_seconds": outputs.push_seconds,
            # With a Bake file, one entry per image (the attributes above are the totals).
            "images": [image.as_item() for image in outputs.images] or None,
            "platforms": list(outputs.platforms) or None,
        }
    )
    return {name: value for name, value in fields.items() if value is not None}


def record_update(facts: BuildFacts, image: str, now: datetime) -> ItemUpdate:
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    clauses: list[str] = []
    for index, (name, value) in enumerate(identity_fields(facts, image).items()):
        names[f"#i{index}"] = name
        values[f":i{index}"] = value
        clauses.append(f"#i{index} = if_not_exists(#i{index}, :i{index})")
    for index, (name, value) in enumerate(progress_fields(facts, now).items()):
        names[f"#p{index}"] = name
        values[f":p{index}"] = value
        clauses.append(f"#p{index} = :p{index}")
    names["#recorded"] = RECORDED_STATUS
    if facts.status.is_final:
        names["#reported"] = REPORTED_AT
        values[":in_progress"] = BuildStatus.IN_PROGRESS.value
        values[":status"] = facts.status.value
        condition = (
            "attribute_not_exists(#recorded) OR #recorded = :in_progress"
            " OR (#recorded = :status AND attribute_not_exists(#reported))"
        )
    else:
        condition = "attribute_not_exists(#recorded)"
    return ItemUpdate(
        key={"pk": build_pk(facts.build_id)},
        update_expression="SET " + ", ".join(clauses),
        condition_expression=condition,
        names=names,
        values=values,
    )
