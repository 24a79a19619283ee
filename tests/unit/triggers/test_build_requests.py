"""The hand-over message, as the triggers make it (the starter's side is tested in starting/)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from layercache.build_records import BuildMode, Trigger
from layercache.build_requests import BuildRequestMessage, BuildRequestQueue

NOW = datetime(2026, 11, 28, 8, 14, 5, 123456, tzinfo=UTC)
COMMIT = "5f8e2b9c1d3a4e6f7a8b9c0d1e2f3a4b5c6d7e8f"
BEFORE = "3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"


def push(**overrides: object) -> BuildRequestMessage:
    values: dict[str, object] = {
        "image": "team/service",
        "branch": "main",
        "commit": COMMIT,
        "before": BEFORE,
        "trigger": Trigger.GITHUB,
        "requested_at": NOW,
        "pushed_at": NOW - timedelta(seconds=2),
        "build": True,
        "reason": "push to main",
        "delivery_id": "d-1",
    }
    return BuildRequestMessage.for_push(**{**values, **overrides})  # type: ignore[arg-type]


def nightly(branch: str = "main", mode: BuildMode = BuildMode.REFRESH) -> BuildRequestMessage:
    return BuildRequestMessage(
        image="team/service",
        branch=branch,
        trigger=Trigger.NIGHTLY,
        mode=mode,
        occasion="nightly@2026-11-29T03:00:00.000Z",
        requested_at=datetime(2026, 11, 29, 3, tzinfo=UTC),
    )


def test_a_push_builds_its_exact_commit() -> None:
    request = push()
    assert request.source_version == COMMIT
    assert request.occasion == COMMIT
    assert request.mode is BuildMode.NORMAL


def test_a_branch_head_build_checks_out_the_full_ref_never_a_bare_name() -> None:
    """git resolves `main` to a tag named main before the branch."""
    assert nightly().source_version == "refs/heads/main"
    assert nightly("release/2.x").source_version == "refs/heads/release/2.x"


@pytest.mark.parametrize("before", [None, "", "0" * 40])
def test_a_new_branch_has_no_before(before: str | None) -> None:
    assert push(before=before).before is None


def test_forced_is_carried() -> None:
    assert push(forced=True).forced is True
    assert push().forced is False


def test_the_message_round_trips_and_leaves_out_what_is_unset() -> None:
    request = nightly()
    body = json.loads(request.to_message())
    assert "commit" not in body
    assert "pushed_at" not in body
    assert BuildRequestMessage.from_message(request.to_message()) == request
    assert BuildRequestMessage.from_message(push().to_message()) == push()


def test_a_message_with_unknown_fields_is_refused() -> None:
    body = json.loads(push().to_message())
    body["priority"] = "high"
    with pytest.raises(ValidationError):
        BuildRequestMessage.from_message(json.dumps(body))


def test_one_message_group_per_image_and_branch() -> None:
    assert push().group_id == push(commit="a" * 40, before=COMMIT).group_id == nightly().group_id
    assert push().group_id != push(branch="release/2.x").group_id
    assert push().group_id != push(image="team/other").group_id
    assert len(push().group_id) <= 128, "SQS's limit for a MessageGroupId"


def test_identical_requests_deduplicate_and_replays_do_not() -> None:
    assert nightly().deduplication_id == nightly().deduplication_id
    assert push().deduplication_id != push(requested_at=NOW + timedelta(seconds=1)).deduplication_id
    assert len(push().deduplication_id) <= 128, "SQS's limit for a MessageDeduplicationId"


def test_a_push_and_its_replay_are_one_claim() -> None:
    replay = push(requested_at=NOW + timedelta(minutes=3), delivery_id="d-2")
    assert replay.claim_pk == push().claim_pk


def test_a_refresh_of_a_night_is_another_claim_than_its_clean_build() -> None:
    assert nightly(mode=BuildMode.REFRESH).claim_pk != nightly(mode=BuildMode.CLEAN).claim_pk


class RecordingSqs:
    """An SQS client that keeps what it was sent (the integration tests use moto)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []

    def send_message(self, **params: str) -> dict[str, str]:
        self.sent.append(params)
        return {"MessageId": f"m-{len(self.sent)}"}


def test_the_queue_sends_the_message_in_its_group_with_its_deduplication_id() -> None:
    sqs = RecordingSqs()
    queue = BuildRequestQueue("https://sqs/queue.fifo", sqs)  # type: ignore[arg-type]
    request = push()

    assert queue.send(request) == "m-1"

    (params,) = sqs.sent
    assert params == {
        "QueueUrl": "https://sqs/queue.fifo",
        "MessageBody": request.to_message(),
        "MessageGroupId": request.group_id,
        "MessageDeduplicationId": request.deduplication_id,
    }


SHAS = st.text(alphabet="0123456789abcdef", min_size=40, max_size=40)
MOMENTS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(
    branch=st.text(min_size=1, max_size=40),
    commit=SHAS,
    before=st.none() | SHAS,
    trigger=st.sampled_from([Trigger.GITHUB, Trigger.CODECOMMIT]),
    requested_at=MOMENTS,
    pushed_at=st.none() | MOMENTS,
    build=st.booleans(),
    reason=st.text(max_size=40),
    forced=st.booleans(),
)
def test_any_push_request_survives_the_queue_unchanged(
    branch: str,
    commit: str,
    before: str | None,
    trigger: Trigger,
    requested_at: datetime,
    pushed_at: datetime | None,
    build: bool,
    reason: str,
    forced: bool,
) -> None:
    request = BuildRequestMessage.for_push(
        image="team/service",
        branch=branch,
        commit=commit,
        before=before,
        trigger=trigger,
        requested_at=requested_at,
        pushed_at=pushed_at,
        build=build,
        reason=reason,
        forced=forced,
    )
    received = BuildRequestMessage.from_message(request.to_message())
    assert received == request
    assert received.deduplication_id == request.deduplication_id
    assert received.source_version == commit
