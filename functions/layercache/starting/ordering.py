"""Is a request newer than its branch head? A pure decision over what the events say.

Evidence, strongest first:
1. the chain: the head's own commit (same), a commit the head knows to be older (stale,
   unless a force push from the head moved the branch back to it), a push whose `before`
   is the head (newer);
2. the branch's current tip, asked of the source (CodeCommit GetBranch, GitHub's API with
   a token): the tip is newest; any other commit is not, and the head stays where it
   is (the tip's own request moves it there, whenever it comes);
3. the source's push times (GitHub `repository.pushed_at`, CodeCommit event time);
4. nothing better known: arrival order (newer).
Requests without a commit (nightly, manual) build the branch head: always `SAME`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from layercache.build_records import BranchHead, parse_timestamp
from layercache.build_requests import BuildRequestMessage


class Place(StrEnum):
    NEWER = "newer"  # moves the branch head forward
    SAME = "same"  # the head's own commit (a retry, a redelivery, a nightly run)
    STALE = "stale"  # an older commit: never built over a newer one


@dataclass(frozen=True)
class Placement:
    place: Place
    reason: str
    # True when only the branch's tip can tell (the caller asks and decides again).
    needs_tip: bool = False


def place_request(
    head: BranchHead | None,
    request: BuildRequestMessage,
    *,
    tip: str | None = None,
    tip_known: bool = False,
) -> Placement:
    """Where `request` stands against `head`; `tip` is the source's branch head if asked."""
    commit = request.commit
    if commit is None:
        return Placement(Place.SAME, "builds the branch head")
    if head is None or head.commit is None:
        return Placement(Place.NEWER, "first request of the branch")
    if commit == head.commit:
        return Placement(Place.SAME, "the branch head's own commit")
    on_top_of_head = request.before is not None and request.before == head.commit
    if head.knows_older(commit):
        if request.forced and on_top_of_head:
            return Placement(Place.NEWER, f"force-pushed back from {head.commit}")
        return Placement(Place.STALE, f"older than {head.commit}, already seen")
    if on_top_of_head:
        return Placement(Place.NEWER, f"pushed on top of {head.commit}")
    if not tip_known:
        return Placement(Place.NEWER, "unknown order: ask the branch tip", needs_tip=True)
    if tip is not None:
        if tip == commit:
            return Placement(Place.NEWER, "the branch's current tip")
        return Placement(Place.STALE, f"not the branch's tip ({tip})")
    return _by_push_time(head, request.pushed_at)


def _by_push_time(head: BranchHead, pushed_at: datetime | None) -> Placement:
    if pushed_at is not None and head.pushed_at:
        head_time = parse_timestamp(head.pushed_at)
        if pushed_at < head_time:
            return Placement(Place.STALE, f"pushed before {head.commit}")
        return Placement(Place.NEWER, f"pushed after {head.commit}")
    return Placement(Place.NEWER, "no evidence of order: the later arrival wins")
