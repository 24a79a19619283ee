"""Which images to keep, which to delete, why, and in what order: a pure function of plain data.

Kept (any one reason suffices; every reason that applies is recorded):
- a tag matches a protected pattern (fnmatch, case-sensitive: `latest`, `v*`);
- a `cache-<slug>` tag: the current cache ref of a branch;
- one of the newest N images of a branch: images with its `<slug>-<sha7>` build tag or its
  moving `<slug>` tag (a refresh carries only that one); the image holding the moving tag
  counts first, then by push time;
- pushed less than D days ago, or within the in-flight grace (an hour) even when D is 0;
- its digest runs in an ECS task or a Lambda function (the in-use map);
- an index that references an in-use manifest (kept whole, not just the running child);
- a manifest referenced by a kept index (platform manifests, attestations, nested indexes).
Everything else is deleted. A deleted index takes its children with it, unless a child is
kept for a reason of its own. Deletion runs in waves: an index before the manifests it
references (ECR refuses to delete a manifest an index still references), and superseded
cache manifests first within the first wave.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from layercache.pruning.model import CACHE_TAG_PREFIX, Image, short_digest


class Reason(StrEnum):
    # why an image is kept
    PROTECTED_TAG = "protected-tag"
    CURRENT_CACHE = "current-cache"
    NEWEST_OF_BRANCH = "newest-of-branch"
    YOUNG = "younger-than-keep-days"
    IN_FLIGHT = "in-flight-grace"
    IN_USE = "in-use"
    PARENT_OF_IN_USE = "index-of-in-use"
    CHILD_OF_KEPT = "child-of-kept-index"
    # why an image is deleted
    SUPERSEDED_CACHE = "superseded-cache"
    CHILD_OF_DELETED = "child-of-deleted-index"
    OLDER_BUILD = "older-build-of-branch"
    UNTAGGED = "untagged"
    NO_KEEP_RULE = "no-keep-rule"


@dataclass(frozen=True, slots=True)
class Why:
    reason: Reason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


@dataclass(frozen=True)
class Policy:
    """What must be kept. `in_use` maps a digest to where it runs (for the reason text)."""

    protected_tags: tuple[str, ...] = ("latest", "v*")
    keep_per_branch: int = 5
    keep_days: float = 7.0
    in_use: Mapping[str, str] = field(default_factory=dict)
    # A push or a build may still be in flight: never delete what is younger than this.
    in_flight_grace: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.keep_per_branch < 1:
            raise ValueError("keep_per_branch must be at least 1 (the branch's current image)")
        if self.keep_days < 0:
            raise ValueError("keep_days must not be negative")


@dataclass(frozen=True, slots=True)
class Decision:
    image: Image
    keep: bool
    why: tuple[Why, ...]
    # Digests of the indexes in the repository that reference this manifest.
    parents: tuple[str, ...] = ()
    # Deletion wave: every index is deleted in an earlier wave than the manifests it references.
    wave: int = 0

    @property
    def reasons(self) -> frozenset[Reason]:
        return frozenset(why.reason for why in self.why)

    def log_record(self) -> dict[str, Any]:
        return {
            "digest": self.image.digest,
            "tags": list(self.image.tags),
            "keep": self.keep,
            "why": [str(why) for why in self.why],
            "pushed_at": self.image.pushed_at.isoformat(),
            "size_bytes": self.image.size_bytes,
        }


@dataclass(frozen=True)
class Plan:
    """Kept images (newest first), then deletions in the order they must run."""

    kept: tuple[Decision, ...]
    deleted: tuple[Decision, ...]

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return self.kept + self.deleted

    def decision(self, digest: str) -> Decision:
        for decision in self.decisions:
            if decision.image.digest == digest:
                return decision
        raise KeyError(digest)

    @property
    def kept_digests(self) -> frozenset[str]:
        return frozenset(decision.image.digest for decision in self.kept)

    @property
    def deleted_digests(self) -> frozenset[str]:
        return frozenset(decision.image.digest for decision in self.deleted)

    def waves(self) -> list[tuple[Decision, ...]]:
        """Deletions grouped by wave, in order: a wave runs once the one before it is done."""
        grouped: dict[int, list[Decision]] = defaultdict(list)
        for decision in self.deleted:
            grouped[decision.wave].append(decision)
        return [tuple(grouped[wave]) for wave in sorted(grouped)]

    @property
    def bytes_to_free(self) -> int:
        return sum(decision.image.size_bytes for decision in self.deleted)

    def reason_counts(self) -> dict[str, int]:
        """How many kept images each keep reason covers, and how many deletions each reason has."""
        counts: dict[str, int] = defaultdict(int)
        for decision in self.decisions:
            for reason in decision.reasons:
                counts[reason.value] += 1
        return dict(sorted(counts.items()))


def make_plan(images: Iterable[Image], policy: Policy, now: datetime) -> Plan:
    """Decide, for every image of one repository, whether to keep it and why."""
    by_digest: dict[str, Image] = {}
    for image in images:
        by_digest.setdefault(image.digest, image)
    parents = _parents(by_digest)
    keep: dict[str, list[Why]] = defaultdict(list)

    for image in by_digest.values():
        keep[image.digest].extend(_own_keep_reasons(image, policy, now))
    branch_ranks = _rank_branches(by_digest.values())
    for digest, ranks in branch_ranks.items():
        for rank in ranks:
            if rank.rank < policy.keep_per_branch:
                note = ", holds the branch tag" if rank.current else ""
                keep[digest].append(
                    Why(
                        Reason.NEWEST_OF_BRANCH,
                        f"branch {rank.slug}: newest {rank.rank + 1} "
                        f"of {policy.keep_per_branch}{note}",
                    )
                )

    # An index whose child runs somewhere is kept whole (upwards through nested indexes).
    stack = [digest for digest, whys in keep.items() if _has(whys, Reason.IN_USE)]
    while stack:
        running = stack.pop()
        for parent in sorted(parents.get(running, ())):
            if not _has(keep[parent], Reason.PARENT_OF_IN_USE):
                keep[parent].append(
                    Why(
                        Reason.PARENT_OF_IN_USE,
                        f"references in-use manifest {short_digest(running)}",
                    )
                )
                stack.append(parent)

    # Every manifest a kept index references is kept (downwards through nested indexes).
    kept = {digest for digest, whys in keep.items() if whys}
    queue = sorted(kept)
    while queue:
        index = queue.pop()
        for ref in by_digest[index].children:
            if ref.digest not in by_digest or ref.digest == index:
                continue
            keep[ref.digest].append(
                Why(
                    Reason.CHILD_OF_KEPT,
                    f"{ref.describe()} of kept index {short_digest(index)}",
                )
            )
            if ref.digest not in kept:
                kept.add(ref.digest)
                queue.append(ref.digest)

    deleted = [digest for digest in by_digest if digest not in kept]
    waves = _waves(deleted, parents)
    kept_decisions = [
        Decision(
            image=by_digest[digest],
            keep=True,
            why=tuple(keep[digest]),
            parents=tuple(sorted(parents.get(digest, ()))),
        )
        for digest in kept
    ]
    deleted_decisions = [
        Decision(
            image=by_digest[digest],
            keep=False,
            why=(_delete_reason(by_digest[digest], parents, branch_ranks, policy, by_digest),),
            parents=tuple(sorted(parents.get(digest, ()))),
            wave=waves[digest],
        )
        for digest in deleted
    ]
    kept_decisions.sort(key=lambda d: (-d.image.pushed_at.timestamp(), d.image.digest))
    deleted_decisions.sort(
        key=lambda d: (
            d.wave,
            0 if Reason.SUPERSEDED_CACHE in d.reasons else 1,
            d.image.pushed_at,
            d.image.digest,
        )
    )
    return Plan(kept=tuple(kept_decisions), deleted=tuple(deleted_decisions))


def _has(whys: Iterable[Why], reason: Reason) -> bool:
    return any(why.reason is reason for why in whys)


def _parents(by_digest: Mapping[str, Image]) -> dict[str, set[str]]:
    parents: dict[str, set[str]] = defaultdict(set)
    for image in by_digest.values():
        for child in image.children:
            if child.digest in by_digest and child.digest != image.digest:
                parents[child.digest].add(image.digest)
    return parents


def _own_keep_reasons(image: Image, policy: Policy, now: datetime) -> list[Why]:
    whys: list[Why] = []
    for tag in image.tags:
        pattern = next((p for p in policy.protected_tags if fnmatchcase(tag, p)), None)
        if pattern is not None:
            whys.append(Why(Reason.PROTECTED_TAG, f"tag {tag} matches {pattern}"))
        if tag.startswith(CACHE_TAG_PREFIX) and len(tag) > len(CACHE_TAG_PREFIX):
            branch = tag[len(CACHE_TAG_PREFIX) :]
            whys.append(Why(Reason.CURRENT_CACHE, f"{tag} is the cache ref of branch {branch}"))
    age = now - image.pushed_at
    if age < timedelta(days=policy.keep_days):
        whys.append(Why(Reason.YOUNG, f"pushed {_age(age)} ago, keep {policy.keep_days:g} days"))
    elif age < policy.in_flight_grace:
        whys.append(Why(Reason.IN_FLIGHT, f"pushed {_age(age)} ago, may be in flight"))
    where = policy.in_use.get(image.digest)
    if where is not None:
        whys.append(Why(Reason.IN_USE, f"runs in {where}"))
    return whys


@dataclass(frozen=True, slots=True)
class _Rank:
    slug: str
    rank: int  # 0 = the branch's newest build
    current: bool  # holds the moving `<slug>` tag


def _rank_branches(images: Iterable[Image]) -> dict[str, list[_Rank]]:
    """Each build image's rank among its branch's builds (per branch it was built for).

    A branch's image is one with a `<slug>-<sha7>` build tag, or one holding the
    branch's moving `<slug>` tag, where `<slug>` is a branch the repository knows (from a
    build tag or its `cache-<slug>` ref): a rebuild of a built commit (a nightly
    refresh) carries only the moving tag, since build tags are written once.
    """
    images = list(images)
    known = {slug for image in images for slug in image.build_branches()}
    known.update(
        tag.removeprefix(CACHE_TAG_PREFIX)
        for image in images
        if image.is_cache
        for tag in image.tags
        if tag.startswith(CACHE_TAG_PREFIX)
    )
    members: dict[str, list[Image]] = defaultdict(list)
    for image in images:
        for slug in image.build_branches() | (known & set(image.tags)):
            members[slug].append(image)
    ranks: dict[str, list[_Rank]] = defaultdict(list)
    for slug in sorted(members):

        def newest_first(image: Image, slug: str = slug) -> tuple[bool, float, str]:
            return (slug not in image.tags, -image.pushed_at.timestamp(), image.digest)

        ordered = sorted(members[slug], key=newest_first)
        for rank, image in enumerate(ordered):
            ranks[image.digest].append(_Rank(slug=slug, rank=rank, current=slug in image.tags))
    return ranks


def _waves(deleted: Iterable[str], parents: Mapping[str, set[str]]) -> dict[str, int]:
    """Wave of each deleted manifest: one more than the deepest index referencing it."""
    waves: dict[str, int] = {}

    def wave(digest: str, seen: frozenset[str]) -> int:
        if digest not in waves:
            above = [p for p in parents.get(digest, ()) if p not in seen]
            waves[digest] = 1 + max(wave(p, seen | {digest}) for p in above) if above else 0
        return waves[digest]

    for digest in deleted:
        wave(digest, frozenset())
    return waves


def _delete_reason(
    image: Image,
    parents: Mapping[str, set[str]],
    branch_ranks: Mapping[str, list[_Rank]],
    policy: Policy,
    by_digest: Mapping[str, Image],
) -> Why:
    older = f"older than {policy.keep_days:g} days"
    if parents.get(image.digest):
        parent = sorted(parents[image.digest])[0]
        role = next(
            (c.describe() for c in by_digest[parent].children if c.digest == image.digest),
            "manifest",
        )
        return Why(Reason.CHILD_OF_DELETED, f"{role} of deleted index {short_digest(parent)}")
    if image.is_cache:
        return Why(Reason.SUPERSEDED_CACHE, f"untagged cache manifest, {older}")
    ranks = branch_ranks.get(image.digest)
    if ranks:
        best = min(ranks, key=lambda r: (r.rank, r.slug))
        return Why(
            Reason.OLDER_BUILD,
            f"branch {best.slug}: build {best.rank + 1} by age, beyond the newest "
            f"{policy.keep_per_branch}, {older}",
        )
    if not image.tags:
        return Why(Reason.UNTAGGED, f"untagged, no kept index references it, {older}")
    return Why(Reason.NO_KEEP_RULE, f"tags {', '.join(image.tags)} match no keep rule, {older}")


def _age(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"
