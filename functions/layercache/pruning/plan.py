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

from layercache.pruning.model import (
    BUILD_TAG,
    CACHE_TAG_PREFIX,
    FULL_SHA,
    PART_TAG,
    Image,
    cosign_subject,
    short_digest,
)


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
    REFERRER_OF_KEPT = "referrer-of-kept-image"
    UNKNOWN = "unknown-tags"
    # why an image is deleted
    SUPERSEDED_CACHE = "superseded-cache"
    CHILD_OF_DELETED = "child-of-deleted-index"
    REFERRER_OF_DELETED = "referrer-of-deleted-image"
    DANGLING_REFERRER = "referrer-without-subject"
    OLDER_BUILD = "older-build-of-branch"
    UNTAGGED = "untagged"
    PLATFORM_PART = "platform-part"
    UNKNOWN_EXPIRED = "unknown-tags-expired"


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
    # Images with tags no rule understands are kept; with a number, only this many days.
    unknown_after_days: float | None = None
    # Tags something may still pull (an ECS service's task definition): tag -> where.
    in_use_tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.keep_per_branch < 1:
            raise ValueError("keep_per_branch must be at least 1 (the branch's current image)")
        if self.keep_days < 0:
            raise ValueError("keep_days must not be negative")
        if self.unknown_after_days is not None and self.unknown_after_days < 0:
            raise ValueError("unknown_after_days must not be negative")


@dataclass(frozen=True, slots=True)
class Decision:
    image: Image
    keep: bool
    why: tuple[Why, ...]
    # What must go before it: the indexes that reference this manifest and, for a
    # referrer (a signature, an SBOM), the image it describes.
    parents: tuple[str, ...] = ()
    # Deletion wave: every index (and subject) goes in an earlier wave than what hangs on it.
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

    referrers = _referrers(by_digest)
    branch_ranks = _rank_branches(by_digest.values())
    known = _known_branches(by_digest.values())
    for image in by_digest.values():
        keep[image.digest].extend(_own_keep_reasons(image, policy, now))
        unknown = _unknown_tags(image, known)
        if unknown and not _expired(image, policy, now):
            detail = f"tags {', '.join(unknown)} follow no convention the pruner knows"
            if policy.unknown_after_days is not None:
                detail += f"; kept {policy.unknown_after_days:g} days"
            keep[image.digest].append(Why(Reason.UNKNOWN, detail))
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

    # Every manifest a kept index references is kept (downwards through nested indexes),
    # and so is every referrer of a kept image (its signatures, SBOMs, and theirs).
    kept = {digest for digest, whys in keep.items() if whys}
    queue = sorted(kept)
    while queue:
        holder = queue.pop()
        needed: list[tuple[str, Why]] = []
        for ref in by_digest[holder].children:
            if ref.digest in by_digest and ref.digest != holder:
                detail = f"{ref.describe()} of kept index {short_digest(holder)}"
                needed.append((ref.digest, Why(Reason.CHILD_OF_KEPT, detail)))
        for referrer in referrers.get(holder, ()):
            detail = f"refers to kept image {short_digest(holder)}"
            needed.append((referrer, Why(Reason.REFERRER_OF_KEPT, detail)))
        for digest, why in needed:
            keep[digest].append(why)
            if digest not in kept:
                kept.add(digest)
                queue.append(digest)

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
        subject = image.refers_to
        if subject is not None and subject in by_digest and subject != image.digest:
            parents[image.digest].add(subject)
    return parents


def _referrers(by_digest: Mapping[str, Image]) -> dict[str, list[str]]:
    """Subject digest -> the digests of the referrers (signatures, SBOMs) that describe it."""
    referrers: dict[str, list[str]] = defaultdict(list)
    for image in by_digest.values():
        subject = image.refers_to
        if subject is not None and subject in by_digest and subject != image.digest:
            referrers[subject].append(image.digest)
    return referrers


def _known_branches(images: Iterable[Image]) -> set[str]:
    """Branch slugs the repository shows: from build tags and from `cache-<slug>` refs."""
    images = list(images)
    known = {slug for image in images for slug in image.build_branches()}
    known.update(
        tag.removeprefix(CACHE_TAG_PREFIX)
        for image in images
        if image.is_cache
        for tag in image.tags
        if tag.startswith(CACHE_TAG_PREFIX)
    )
    return known


def _unknown_tags(image: Image, known: set[str]) -> list[str]:
    """The tags of `image` that no convention of the pipeline explains.

    Known: a build's `<sha>` with its `<slug>-<sha7>`, a known branch's moving `<slug>`,
    `latest`, `cache-<slug>`, and cosign's `sha256-<hex>.sig/.att/.sbom` (a referrer).
    """
    builds = image.build_branches()
    shas = {tag for tag in image.tags if FULL_SHA.fullmatch(tag)}
    unknown = []
    for tag in image.tags:
        if tag in known or tag == "latest" or tag.startswith(CACHE_TAG_PREFIX):
            continue
        if tag in shas and builds:
            continue
        build = BUILD_TAG.fullmatch(tag)
        if build and build["slug"] in builds:
            continue
        if cosign_subject(tag) is not None or PART_TAG.fullmatch(tag):
            continue
        unknown.append(tag)
    return unknown


def _expired(image: Image, policy: Policy, now: datetime) -> bool:
    limit = policy.unknown_after_days
    return limit is not None and now - image.pushed_at >= timedelta(days=limit)


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
    for tag in image.tags:
        if (user := policy.in_use_tags.get(tag)) is not None:
            whys.append(Why(Reason.IN_USE, f"tag {tag} is named by {user}"))
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
    known = _known_branches(images)
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
    subject = image.refers_to
    if subject is not None:
        if subject in by_digest:
            return Why(
                Reason.REFERRER_OF_DELETED,
                f"refers to deleted image {short_digest(subject)}; goes after it",
            )
        return Why(
            Reason.DANGLING_REFERRER,
            f"refers to {short_digest(subject)}, which is not in the repository, {older}",
        )
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
    if all(PART_TAG.fullmatch(tag) for tag in image.tags):
        return Why(
            Reason.PLATFORM_PART,
            f"only a multi-platform build's part tags ({', '.join(image.tags)}), "
            f"no kept index references it, {older}",
        )
    return Why(
        Reason.UNKNOWN_EXPIRED,
        f"tags {', '.join(image.tags)} follow no known convention, older than "
        f"{policy.unknown_after_days:g} days (PruneUnknownAfterDays)",
    )


def _age(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"
