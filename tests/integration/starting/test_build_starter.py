"""BuildStarterFunction under reordering, retries, kills and throttling (issue 10).

Every case goes through the FIFO queue and the handler as template.yaml wires them, on
moto, with a CodeBuild that honours StartBuild's idempotency token (moto_codebuild).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from layercache.build_records import ENV_REQUEST_ID, BuildsTable, Claim, Trigger
from layercache.build_requests import BuildRequestMessage
from layercache.starting.service import ClaimHeld

from .conftest import IMAGE, T0, Pipeline, sha

A, B, C = sha("a"), sha("b"), sha("c")
ROOT = sha("0")


def test_one_push_starts_one_build_of_its_commit(pipeline: Pipeline) -> None:
    pipeline.push(A, ROOT)
    pipeline.drain()
    (build,) = pipeline.builds()
    assert build["sourceVersion"] == A
    env = pipeline.codebuild.environment_of(build["id"])
    assert env["LAYERCACHE_BRANCH"] == "main"
    assert env["LAYERCACHE_SEQUENCE"] == "1"
    assert pipeline.head().commit == A


def test_b_delivered_before_a_leaves_b_running_and_a_unbuilt(pipeline: Pipeline) -> None:
    pipeline.push(B, A)  # the successor first (GitHub does not promise order)
    pipeline.push(A, ROOT)
    pipeline.push(A, ROOT)  # a Lambda retry of A, or A replayed under a new delivery id
    pipeline.drain()
    (build,) = pipeline.builds()
    assert build["sourceVersion"] == B
    assert build["buildStatus"] == "IN_PROGRESS", "A's request must not stop B's build"
    head = pipeline.head()
    assert head.commit == B
    assert head.knows_older(A)


def test_a_newer_commit_supersedes_the_running_build_of_the_older(pipeline: Pipeline) -> None:
    pipeline.push(A, ROOT)
    pipeline.drain()
    pipeline.push(B, A)
    pipeline.drain()
    (build_a,) = pipeline.builds_of(A)
    (build_b,) = pipeline.builds_of(B)
    assert build_a["buildStatus"] == "STOPPED"
    assert build_b["buildStatus"] == "IN_PROGRESS"
    # The superseded request is never taken over again, even though its build "failed".
    pipeline.push(A, ROOT)
    pipeline.drain()
    assert len(pipeline.builds()) == 2


def test_duplicate_deliveries_of_one_commit_start_one_build(pipeline: Pipeline) -> None:
    for _ in range(8):
        pipeline.push(A, ROOT)
    pipeline.drain()
    assert len(pipeline.builds()) == 1


def test_redeliver_after_a_failed_build_builds_again(pipeline: Pipeline) -> None:
    pipeline.push(A, ROOT)
    pipeline.drain()
    (first,) = pipeline.builds()
    pipeline.codebuild.finish(first["id"], "FAILED")
    pipeline.push(A, ROOT)  # GitHub's Redeliver
    pipeline.drain()
    assert len(pipeline.builds()) == 2
    second = next(b for b in pipeline.builds() if b["id"] != first["id"])
    assert (
        pipeline.codebuild.environment_of(second["id"])[ENV_REQUEST_ID]
        != (pipeline.codebuild.environment_of(first["id"])[ENV_REQUEST_ID])
    ), "a new attempt has its own idempotency token"


@pytest.mark.parametrize("status", ["SUCCEEDED", "IN_PROGRESS"])
def test_redeliver_after_a_good_or_running_build_builds_nothing(
    pipeline: Pipeline, status: str
) -> None:
    pipeline.push(A, ROOT)
    pipeline.drain()
    (first,) = pipeline.builds()
    pipeline.codebuild.finish(first["id"], status)
    pipeline.push(A, ROOT)
    pipeline.drain()
    assert len(pipeline.builds()) == 1


def test_a_throttled_start_builds_once_throttling_ends(pipeline: Pipeline) -> None:
    pipeline.codebuild.throttle(3)
    pipeline.push(A, ROOT)
    pipeline.push(B, A)  # the branch's later request waits behind A
    first = pipeline.source.poll_once()
    assert first.failed, "a throttled StartBuild goes back to the queue, nothing is lost"
    assert not pipeline.builds()
    pipeline.drain()
    assert [b["sourceVersion"] for b in pipeline.builds()] == [A, B]


def test_a_lost_start_build_answer_is_found_not_started_again(pipeline: Pipeline) -> None:
    pipeline.codebuild.lose_response(1)
    pipeline.push(A, ROOT)
    first = pipeline.source.poll_once()
    assert first.failed
    assert len(pipeline.builds()) == 1, "CodeBuild started it; the answer was lost"
    pipeline.clock.advance(600)  # past CodeBuild's 5-minute idempotency window
    pipeline.drain()
    assert len(pipeline.builds()) == 1
    claim = pipeline.table.claim(_request(A).claim_pk)
    assert claim is not None
    assert claim.build_id == pipeline.builds()[0]["id"]


def _request(commit: str) -> BuildRequestMessage:
    return BuildRequestMessage.for_push(
        image=IMAGE,
        branch="main",
        commit=commit,
        before=ROOT,
        trigger=Trigger.GITHUB,
        requested_at=T0,
        pushed_at=None,
        build=True,
        reason="push",
    )


class Killed(BaseException):
    """The invocation died here (timeout, out of memory): no exception handler runs."""


KILL_POINTS = [
    ("save_branch_head", "after the head moved"),
    ("create_claim", "after the claim"),
    ("record_build_start", "after StartBuild"),
    ("replace_claim", "after the build was recorded"),
]


@pytest.mark.parametrize(("method", "moment"), KILL_POINTS)
def test_an_invocation_killed_at_any_step_ends_in_exactly_one_build(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, method: str, moment: str
) -> None:
    original = getattr(BuildsTable, method)
    calls = {"n": 0}

    def dies_after(self: BuildsTable, *args: object, **kwargs: object) -> object:
        result = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise Killed(moment)
        return result

    monkeypatch.setattr(BuildsTable, method, dies_after)
    pipeline.push(A, ROOT)
    with pytest.raises(Killed):
        pipeline.source.poll_once()
    # Lambda retries once the message's visibility times out (360 s, past the lease).
    pipeline.clock.advance(400)
    pipeline.drain()
    assert len(pipeline.builds()) == 1, moment
    assert pipeline.head().commit == A
    assert not pipeline.failed_requests()


def test_a_retry_within_the_lease_waits_instead_of_returning(pipeline: Pipeline) -> None:
    request = _request(A)
    held = Claim(
        pk=request.claim_pk,
        request_id="held",
        attempt=1,
        sequence=1,
        lease_until=pipeline.clock() + timedelta(seconds=90),
    )
    pipeline.table.create_claim(held, pipeline.clock())
    with pytest.raises(ClaimHeld):
        pipeline.starter.start_once(request, 1)


def test_a_request_that_never_starts_lands_whole_in_the_failure_queue(pipeline: Pipeline) -> None:
    pipeline.codebuild.throttle(1000)
    sent = pipeline.push(A, ROOT)
    for _ in range(50):
        if not pipeline.source.poll_once().received:
            break
    (parked,) = pipeline.failed_requests()
    assert parked == sent


def test_a_no_build_push_moves_the_head_without_a_build(pipeline: Pipeline) -> None:
    pipeline.push(A, ROOT)
    pipeline.push(B, A, build=False)  # e.g. nothing under the path filters changed
    pipeline.push(A, ROOT)  # a late replay of A is now stale
    pipeline.drain()
    assert len(pipeline.builds()) == 1
    assert pipeline.head().commit == B


def test_a_message_that_is_no_build_request_is_dropped(pipeline: Pipeline) -> None:
    pipeline.queue.client.send_message(
        QueueUrl=pipeline.stack.queue_url,
        MessageBody='{"hello": "world"}',
        MessageGroupId="g",
        MessageDeduplicationId="d",
    )
    (result,) = pipeline.source.drain()
    assert not result.failed
    assert not pipeline.builds()


def test_retries_send_codebuild_the_same_start_build(pipeline: Pipeline) -> None:
    """Every parameter is a function of the request: a retry within CodeBuild's window
    is answered with the same build instead of a parameter mismatch."""
    request = _request(A)
    pipeline.starter.place(request)
    claim_outcome = pipeline.starter.start_once(request, 1)
    claim = pipeline.table.claim(request.claim_pk)
    assert claim is not None
    again = pipeline.starter._start_build(request, claim, None)
    assert again["id"] == claim_outcome.build_id
