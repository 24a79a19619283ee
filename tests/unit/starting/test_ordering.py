"""Branch order from what the events say: invariants over any delivery order.

A branch's history is a line of commits c1..cn, each pushed on top of the one before
(`before` = its parent). Deliveries arrive in any order, any of them repeated (retries,
replays, redeliveries). Whatever the order, once every push was seen:
- the head is the newest commit (given push times, or the branch tip from the source);
- the head never moved backwards on the way;
- every delivery of an older commit after a newer one was seen is stale.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from layercache.build_records import BranchHead, BuildMode, Trigger, timestamp
from layercache.build_requests import BuildRequestMessage
from layercache.starting.ordering import Place, place_request

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def commit(index: int) -> str:
    return f"{index:040x}"


def push(index: int, *, with_time: bool = True) -> BuildRequestMessage:
    return BuildRequestMessage.for_push(
        image="team/service",
        branch="main",
        commit=commit(index),
        before=commit(index - 1) if index > 1 else "0" * 40,
        trigger=Trigger.GITHUB,
        requested_at=T0 + timedelta(minutes=index),
        pushed_at=T0 + timedelta(seconds=index) if with_time else None,
        build=True,
        reason="push",
    )


def replay(order: list[int], *, with_time: bool, tip: int | None) -> list[tuple[int, Place, int]]:
    """Place each delivery as the starter does; (commit index, place, head index after)."""
    head: BranchHead | None = None
    seen = []
    for index in order:
        request = push(index, with_time=with_time)
        placement = place_request(head, request)
        if placement.needs_tip:
            placement = place_request(
                head, request, tip=commit(tip) if tip else None, tip_known=True
            )
        if placement.place is Place.NEWER:
            current = head or BranchHead(image="team/service", branch="main")
            pushed = request.pushed_at
            head = current.advanced_to(
                commit(index), request.before, timestamp(pushed) if pushed else None
            )
        assert head is not None
        seen.append((index, placement.place, int(head.commit or "0", 16)))
    return seen


deliveries = st.integers(min_value=2, max_value=9).flatmap(
    lambda n: (
        st.lists(st.integers(1, n), min_size=n, max_size=3 * n)
        .map(lambda extra: list(range(1, n + 1)) + extra)
        .flatmap(st.permutations)
        .map(lambda order: (n, order))
    )
)


@given(deliveries)
def test_with_push_times_the_newest_wins_and_the_head_never_goes_back(
    case: tuple[int, list[int]],
) -> None:
    newest, order = case
    seen = replay(order, with_time=True, tip=None)
    heads = [head for _, _, head in seen]
    assert heads == sorted(heads), "the head never moves backwards"
    assert heads[-1] == newest
    for index, place, head_after in seen:
        if index < head_after:
            assert place is Place.STALE


@given(deliveries)
def test_with_the_branch_tip_the_newest_wins_without_push_times(
    case: tuple[int, list[int]],
) -> None:
    newest, order = case
    seen = replay(order, with_time=False, tip=newest)
    heads = [head for _, _, head in seen]
    assert heads == sorted(heads)
    assert heads[-1] == newest


def test_b_before_a_leaves_b() -> None:
    seen = replay([2, 1, 1], with_time=False, tip=None)
    assert [place for _, place, _ in seen] == [Place.NEWER, Place.STALE, Place.STALE]


def test_the_same_commit_again_is_the_same_request() -> None:
    assert [place for _, place, _ in replay([1, 1], with_time=False, tip=None)] == [
        Place.NEWER,
        Place.SAME,
    ]


def test_a_nightly_request_builds_the_head() -> None:
    nightly = BuildRequestMessage(
        image="team/service",
        branch="main",
        trigger=Trigger.NIGHTLY,
        mode=BuildMode.REFRESH,
        occasion="nightly@2026-12-02T03:00:00.000Z",
        requested_at=T0,
    )
    head = BranchHead(image="team/service", branch="main", commit=commit(3), sequence=3)
    assert place_request(head, nightly).place is Place.SAME
    assert nightly.source_version == "refs/heads/main"


def test_without_any_evidence_the_later_arrival_wins() -> None:
    head = BranchHead(image="team/service", branch="main", commit=commit(5), sequence=1)
    unrelated = push(9, with_time=False).model_copy(update={"before": commit(7)})
    first = place_request(head, unrelated)
    assert first.needs_tip
    assert place_request(head, unrelated, tip=None, tip_known=True).place is Place.NEWER


def test_the_head_remembers_a_bounded_history() -> None:
    head = BranchHead(image="team/service", branch="main")
    for index in range(1, 200):
        head = head.advanced_to(commit(index), commit(index - 1), None)
    assert head.commit == commit(199)
    assert len(head.older) <= 64
    assert head.knows_older(commit(198))
    assert head.sequence == 199


def test_a_force_push_back_to_an_older_commit_moves_the_head_back() -> None:
    head = BranchHead(image="team/service", branch="main")
    head = head.advanced_to(commit(1), None, None).advanced_to(commit(2), commit(1), None)
    rewind = push(1, with_time=False).model_copy(update={"before": commit(2), "forced": True})
    placement = place_request(head, rewind)
    assert placement.place is Place.NEWER
    head = head.advanced_to(commit(1), commit(2), None)
    assert not head.knows_older(commit(1))
    # A replay of the push that once made commit 2 the head does not undo the rewind.
    assert place_request(head, push(2, with_time=False)).place is Place.STALE


def test_a_replayed_older_push_that_is_not_forced_stays_stale() -> None:
    head = BranchHead(image="team/service", branch="main")
    head = head.advanced_to(commit(1), None, None).advanced_to(commit(2), commit(1), None)
    replayed = push(1, with_time=False).model_copy(update={"before": commit(2)})
    assert place_request(head, replayed).place is Place.STALE
