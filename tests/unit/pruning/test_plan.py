"""The plan on hand-built image lists: every keep rule, its reason, and the order of deletion."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from layercache.pruning.model import (
    BUILDKIT_CACHE_CONFIG,
    OCI_INDEX,
    ChildRef,
    ChildRole,
    Image,
    branch_slug,
)
from layercache.pruning.plan import Plan, Policy, Reason, make_plan

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
OLD = 30.0  # days: older than every keep_days used below


def digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def commit(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()  # noqa: S324 - a fake git commit id


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


@dataclass
class Build:
    """A build as the driver pushes it: an index with a platform manifest and an attestation."""

    index: Image
    platform: Image
    attestation: Image

    @property
    def images(self) -> list[Image]:
        return [self.index, self.platform, self.attestation]

    @property
    def digests(self) -> set[str]:
        return {image.digest for image in self.images}


def build(
    branch: str,
    name: str,
    days: float = OLD,
    *,
    moving: bool = False,
    extra_tags: Iterable[str] = (),
    build_tags: bool = True,
) -> Build:
    """A build's index and children; `build_tags=False`: a rebuild of a commit that
    already had its image (a refresh), which the driver pushes with no build tag."""
    sha = commit(name)
    slug = branch_slug(branch)
    own = [sha, f"{slug}-{sha[:7]}"] if build_tags else []
    tags = [*own, *([slug] if moving else []), *extra_tags]
    platform = Image(digest(f"{name}/amd64"), ago(days), size_bytes=50_000_000)
    attestation = Image(digest(f"{name}/att"), ago(days), size_bytes=1_000)
    index = Image(
        digest(name),
        ago(days),
        tags=tuple(tags),
        media_type=OCI_INDEX,
        children=(
            ChildRef(platform.digest, ChildRole.PLATFORM, "linux/amd64"),
            ChildRef(attestation.digest, ChildRole.ATTESTATION),
        ),
    )
    return Build(index, platform, attestation)


def cache(name: str, days: float = OLD, tag: str | None = None) -> Image:
    return Image(
        digest(f"cache/{name}"),
        ago(days),
        tags=(tag,) if tag else (),
        size_bytes=80_000_000,
        config_media_type=BUILDKIT_CACHE_CONFIG,
    )


def plan_of(images: Iterable[Image], **policy: object) -> Plan:
    return make_plan(list(images), Policy(**policy), NOW)  # type: ignore[arg-type]


def reasons(plan: Plan, image: Image) -> set[Reason]:
    return set(plan.decision(image.digest).reasons)


def details(plan: Plan, image: Image) -> list[str]:
    return [str(why) for why in plan.decision(image.digest).why]


# ---------------------------------------------------------------------- keep rules


def test_protected_tags_keep_latest_and_release_tags_whatever_their_age() -> None:
    main = build("main", "m1", moving=True, extra_tags=["latest"])
    release = build("release", "r1", extra_tags=["v1.4.2"])
    plan = plan_of(
        [*main.images, *release.images, *build("release", "r2", days=OLD - 1).images],
        keep_per_branch=1,
    )
    assert Reason.PROTECTED_TAG in reasons(plan, main.index)
    assert "protected-tag: tag latest matches latest" in details(plan, main.index)
    assert "protected-tag: tag v1.4.2 matches v*" in details(plan, release.index)
    assert release.digests <= plan.kept_digests


def test_protected_patterns_are_case_sensitive_globs() -> None:
    prod = build("main", "p", extra_tags=["prod-2025"])
    other = build("main", "o", extra_tags=["Prod-2025"])
    newest = build("main", "n", days=1.5, moving=True)
    plan = plan_of(
        [*prod.images, *other.images, *newest.images],
        protected_tags=("prod-*",),
        keep_per_branch=1,
        keep_days=1,
        unknown_after_days=1,  # so that an unknown tag alone keeps nothing here
    )
    assert Reason.PROTECTED_TAG in reasons(plan, prod.index)
    assert other.index.digest in plan.deleted_digests


def test_images_with_tags_no_convention_explains_are_kept_unless_opted_in() -> None:
    """Pushed by hand or by another tool: `Prod-2025` on an old build, and a lone `nightly`."""
    hand_tagged = build("main", "h", extra_tags=["Prod-2025"])
    other_tool = Image(digest("other-tool"), ago(OLD), tags=("nightly",))
    newest = build("main", "n", days=1.5, moving=True)
    images = [*hand_tagged.images, other_tool, *newest.images]

    plan = plan_of(images, keep_per_branch=1, keep_days=1)
    assert reasons(plan, hand_tagged.index) == {Reason.UNKNOWN}
    assert "tags Prod-2025 follow no convention" in details(plan, hand_tagged.index)[0]
    assert hand_tagged.digests <= plan.kept_digests  # with its children
    assert reasons(plan, other_tool) == {Reason.UNKNOWN}

    plan = plan_of(images, keep_per_branch=1, keep_days=1, unknown_after_days=OLD + 1)
    assert {hand_tagged.index.digest, other_tool.digest} <= plan.kept_digests  # not yet

    plan = plan_of(images, keep_per_branch=1, keep_days=1, unknown_after_days=OLD - 1)
    assert reasons(plan, hand_tagged.index) == {Reason.OLDER_BUILD}
    assert reasons(plan, other_tool) == {Reason.UNKNOWN_EXPIRED}
    # The pipeline's own tags are never unknown: sha, build tag, moving tag, latest, caches.
    assert Reason.UNKNOWN not in reasons(plan, newest.index)


def test_current_cache_ref_of_every_branch_is_kept_and_superseded_ones_go_first() -> None:
    current_main = cache("main-2", tag="cache-main")
    current_feature = cache("feature-1", tag="cache-feature-x")
    superseded = [cache(f"main-old-{n}", days=OLD + n) for n in range(3)]
    old_build = build("main", "m0")
    newest = build("main", "m1", moving=True)
    plan = plan_of(
        [current_main, current_feature, *superseded, *old_build.images, *newest.images],
        keep_per_branch=1,
    )

    assert details(plan, current_main) == [
        "current-cache: cache-main is the cache ref of branch main"
    ]
    assert Reason.CURRENT_CACHE in reasons(plan, current_feature)
    for image in superseded:
        assert reasons(plan, image) == {Reason.SUPERSEDED_CACHE}
    # Superseded caches lead the first wave, oldest first; the build's index follows.
    order = [decision.image.digest for decision in plan.deleted]
    assert order[:3] == [image.digest for image in sorted(superseded, key=lambda i: i.pushed_at)]
    assert order[3] == old_build.index.digest


def test_newest_n_builds_per_branch_are_kept_and_older_ones_deleted() -> None:
    builds = [build("main", f"m{n}", days=OLD + 10 - n, moving=n == 9) for n in range(10)]
    feature = [build("feature/login", f"f{n}", days=OLD + 5 - n) for n in range(2)]
    images = [image for b in builds + feature for image in b.images]
    plan = plan_of(images, keep_per_branch=3)

    kept_main = [b for b in builds if b.index.digest in plan.kept_digests]
    assert kept_main == builds[-3:]
    assert details(plan, builds[-1].index) == [
        "newest-of-branch: branch main: newest 1 of 3, holds the branch tag"
    ]
    assert details(plan, builds[-3].index) == ["newest-of-branch: branch main: newest 3 of 3"]
    deleted = plan.decision(builds[0].index.digest)
    assert deleted.reasons == {Reason.OLDER_BUILD}
    assert "branch main: build 10 by age, beyond the newest 3" in str(deleted.why[0])
    # Branches are ranked on their own: both feature/login builds are within its newest 3.
    assert all(b.index.digest in plan.kept_digests for b in feature)
    feature_slug = branch_slug("feature/login")
    assert f"branch {feature_slug}: newest 1 of 3" in details(plan, feature[1].index)[0]


def test_the_image_holding_the_branch_tag_counts_first_even_if_pushed_earlier() -> None:
    # An older commit's build finished last and the driver moved the branch tag back to it.
    current = build("main", "current", days=OLD + 2, moving=True)
    newer = build("main", "newer", days=OLD + 1)
    plan = plan_of([*current.images, *newer.images], keep_per_branch=1)
    assert current.index.digest in plan.kept_digests
    assert newer.index.digest in plan.deleted_digests


def test_a_refresh_holding_only_the_branch_tag_is_the_branchs_current_image() -> None:
    """Build tags are written once: a nightly refresh of the branch's commit carries only
    the moving tag, and stays kept as the branch's newest image."""
    first = build("feature/login", "first", days=OLD + 2)
    refresh = build("feature/login", "refresh", days=OLD + 1, moving=True, build_tags=False)
    stray = build("feature/other", "stray", days=OLD, moving=False, build_tags=False)
    images = [*first.images, *refresh.images, *stray.images]
    plan = plan_of(images, keep_per_branch=1)
    assert refresh.index.digest in plan.kept_digests
    assert "holds the branch tag" in str(plan.decision(refresh.index.digest).why[0])
    assert first.index.digest in plan.deleted_digests  # beyond the newest 1
    # Known from the cache ref alone (its build-tagged images already pruned):
    plan = plan_of([*refresh.images, cache("login", tag=f"cache-{branch_slug('feature/login')}")])
    assert refresh.index.digest in plan.kept_digests


def test_images_younger_than_keep_days_are_kept() -> None:
    young = build("main", "young", days=2.5)
    old = build("main", "old", days=3.5)
    newest = build("main", "newest", days=0.5, moving=True)
    plan = plan_of([*young.images, *old.images, *newest.images], keep_per_branch=1, keep_days=3)
    assert details(plan, young.index) == ["younger-than-keep-days: pushed 2.5 d ago, keep 3 days"]
    assert young.digests <= plan.kept_digests
    assert old.digests <= plan.deleted_digests


def test_with_keep_days_zero_the_in_flight_hour_is_still_kept() -> None:
    pushing = Image(digest("half-pushed child"), NOW - timedelta(minutes=5))
    settled = Image(digest("orphan"), NOW - timedelta(hours=2))
    plan = plan_of([pushing, settled], keep_days=0)
    assert reasons(plan, pushing) == {Reason.IN_FLIGHT}
    assert reasons(plan, settled) == {Reason.UNTAGGED}


def test_children_of_a_kept_index_are_kept_with_their_role() -> None:
    kept = build("main", "k", moving=True)
    plan = plan_of(kept.images, keep_per_branch=1)
    short = kept.index.digest[:19]
    assert details(plan, kept.platform) == [
        f"child-of-kept-index: platform manifest linux/amd64 of kept index {short}"
    ]
    assert details(plan, kept.attestation) == [
        f"child-of-kept-index: attestation manifest of kept index {short}"
    ]


def test_a_child_shared_with_a_deleted_index_survives_through_the_kept_one() -> None:
    # A rebuild of the same commit produced an identical platform manifest: two indexes share it.
    old = build("main", "same", days=OLD + 1)
    new = build("main", "same-rebuilt", moving=True)
    shared = old.platform
    new_index = Image(
        new.index.digest,
        new.index.pushed_at,
        tags=new.index.tags,
        media_type=OCI_INDEX,
        children=(
            ChildRef(shared.digest, ChildRole.PLATFORM, "linux/amd64"),
            *new.index.children[1:],
        ),
    )
    plan = plan_of([*old.images, new_index, new.attestation], keep_per_branch=1)
    assert old.index.digest in plan.deleted_digests
    assert shared.digest in plan.kept_digests
    assert plan.decision(shared.digest).parents == tuple(
        sorted([old.index.digest, new_index.digest])
    )


def test_in_use_images_are_kept_and_an_in_use_child_keeps_its_whole_index() -> None:
    running = build("main", "running")
    pinned_child = build("main", "pinned-child")
    newest = build("main", "newest", moving=True)
    plan = plan_of(
        [*running.images, *pinned_child.images, *newest.images],
        keep_per_branch=1,
        in_use={
            running.index.digest: "ECS task arn:aws:ecs:us-east-1:1:task/prod/abc",
            pinned_child.platform.digest: "Lambda function arn:aws:lambda:us-east-1:1:function:f:3",
        },
    )
    assert details(plan, running.index) == [
        "in-use: runs in ECS task arn:aws:ecs:us-east-1:1:task/prod/abc"
    ]
    assert running.digests <= plan.kept_digests
    assert pinned_child.digests <= plan.kept_digests
    assert Reason.PARENT_OF_IN_USE in reasons(plan, pinned_child.index)
    assert Reason.CHILD_OF_KEPT in reasons(plan, pinned_child.attestation)


def test_every_applicable_reason_is_recorded() -> None:
    image = build("main", "all", days=1, moving=True, extra_tags=["latest"])
    plan = plan_of(image.images, in_use={image.index.digest: "ECS task t"})
    assert reasons(plan, image.index) == {
        Reason.PROTECTED_TAG,
        Reason.NEWEST_OF_BRANCH,
        Reason.YOUNG,
        Reason.IN_USE,
    }


# ---------------------------------------------------------------------- what is deleted, in order


def test_children_of_a_deleted_index_are_deleted_after_it() -> None:
    gone = build("main", "gone")
    newest = build("main", "newest", moving=True)
    plan = plan_of([*gone.images, *newest.images], keep_per_branch=1)
    waves = plan.waves()
    assert [d.image.digest for d in waves[0]] == [gone.index.digest]
    assert {d.image.digest for d in waves[1]} == {gone.platform.digest, gone.attestation.digest}
    assert reasons(plan, gone.attestation) == {Reason.CHILD_OF_DELETED}
    assert (
        f"attestation manifest of deleted index {gone.index.digest[:19]}"
        in details(plan, gone.attestation)[0]
    )


def test_nested_indexes_are_deleted_top_down() -> None:
    leaf = Image(digest("leaf"), ago(OLD))
    inner = Image(
        digest("inner"),
        ago(OLD),
        media_type=OCI_INDEX,
        children=(ChildRef(leaf.digest),),
    )
    outer = Image(
        digest("outer"),
        ago(OLD),
        tags=("nightly-old",),
        media_type=OCI_INDEX,
        children=(ChildRef(inner.digest, ChildRole.INDEX),),
    )
    plan = plan_of([leaf, inner, outer], unknown_after_days=1)  # "nightly-old": another tool's
    assert [[d.image.digest for d in wave] for wave in plan.waves()] == [
        [outer.digest],
        [inner.digest],
        [leaf.digest],
    ]
    assert reasons(plan, outer) == {Reason.UNKNOWN_EXPIRED}


def test_untagged_leftovers_are_deleted() -> None:
    # A rebuild of the same commit moved every tag to the new index: the old one is untagged.
    superseded = build("main", "rebuilt")
    untagged_index = Image(
        superseded.index.digest,
        superseded.index.pushed_at,
        media_type=OCI_INDEX,
        children=superseded.index.children,
    )
    plan = plan_of([untagged_index, superseded.platform, superseded.attestation])
    assert reasons(plan, untagged_index) == {Reason.UNTAGGED}
    assert plan.bytes_to_free == 50_001_000


def test_a_branch_named_like_a_build_tag_is_not_misread() -> None:
    sha = commit("x")
    image = Image(digest("x"), ago(OLD), tags=(sha, f"fix-1234567-{sha[:7]}", "fix-1234567"))
    assert image.build_branches() == {"fix-1234567"}
    plan = plan_of([image])
    assert details(plan, image) == [
        "newest-of-branch: branch fix-1234567: newest 1 of 5, holds the branch tag"
    ]


def test_policy_rejects_settings_that_would_delete_current_images() -> None:
    with pytest.raises(ValueError, match="keep_per_branch"):
        Policy(keep_per_branch=0)
    with pytest.raises(ValueError, match="keep_days"):
        Policy(keep_days=-1)


# ---------------------------------------------------------------------- invariants


def random_repository(rng: random.Random) -> list[Image]:
    images: list[Image] = []
    for n in range(rng.randint(5, 60)):
        branch = rng.choice(["main", "feature/a", "fix-1", "v2"])
        b = build(
            branch,
            f"b{n}-{rng.random()}",
            days=rng.uniform(0, 40),
            moving=rng.random() < 0.2,
            extra_tags=["latest"] if rng.random() < 0.05 else [],
        )
        if rng.random() < 0.15:  # a refresh of the branch's commit: the moving tag only
            images.extend(
                build(branch, f"r{n}-{rng.random()}", days=rng.uniform(0, 40),
                      moving=True, build_tags=False).images
            )  # fmt: skip
        if rng.random() < 0.2:  # a rebuild took the tags away
            b.index = Image(
                b.index.digest,
                b.index.pushed_at,
                media_type=OCI_INDEX,
                children=b.index.children,
            )
        images.extend(b.images)
        if rng.random() < 0.5:
            images.append(cache(f"{n}-{rng.random()}", days=rng.uniform(0, 40)))
    # A tag names one image: each branch's moving tag stays on one of its holders.
    for slug in {branch_slug(b) for b in ("main", "feature/a", "fix-1", "v2")}:
        holders = [i for i, image in enumerate(images) if slug in image.tags]
        keep = rng.choice(holders) if holders else None
        for i in holders:
            if i != keep:
                images[i] = replace(images[i], tags=tuple(t for t in images[i].tags if t != slug))
    # Some manifests shared between indexes, as identical rebuilds produce.
    indexes = [image for image in images if image.is_index]
    for index in rng.sample(indexes, k=min(3, len(indexes))):
        donor = rng.choice(indexes)
        shared = ChildRef(donor.children[0].digest)
        images[images.index(index)] = Image(
            index.digest,
            index.pushed_at,
            tags=index.tags,
            media_type=OCI_INDEX,
            children=(*index.children, shared),
        )
    return images


@pytest.mark.parametrize("seed", range(40))
def test_plan_invariants_hold_on_random_repositories(seed: int) -> None:
    rng = random.Random(seed)
    images = random_repository(rng)
    in_use = {rng.choice(images).digest: "ECS task t"}
    policy = Policy(
        keep_per_branch=rng.randint(1, 4), keep_days=rng.choice([0, 1, 7]), in_use=in_use
    )
    plan = make_plan(images, policy, NOW)
    by_digest = {image.digest: image for image in images}
    wave_of = {d.image.digest: d.wave for d in plan.deleted}

    assert plan.kept_digests | plan.deleted_digests == set(by_digest)
    assert not plan.kept_digests & plan.deleted_digests
    assert all(decision.why for decision in plan.decisions)
    for decision in plan.kept:
        # Nothing a kept index needs is deleted.
        for child in decision.image.children:
            assert child.digest not in plan.deleted_digests
    for decision in plan.deleted:
        for parent in decision.parents:
            # Every index referencing a deleted manifest is deleted, in an earlier wave.
            assert wave_of[parent] < decision.wave
    assert set(in_use) <= plan.kept_digests
    for image in images:
        protected = "latest" in image.tags or any(t.startswith("cache-") for t in image.tags)
        young = NOW - image.pushed_at < max(timedelta(days=policy.keep_days), timedelta(hours=1))
        if protected or young:
            assert image.digest in plan.kept_digests
    waves = [d.wave for d in plan.deleted]
    assert waves == sorted(waves)
    # The image holding a known branch's moving tag is that branch's current image.
    known = {slug for image in images for slug in image.build_branches()}
    known |= {t.removeprefix("cache-") for i in images if i.is_cache for t in i.tags}
    for image in images:
        if known & set(image.tags):
            assert image.digest in plan.kept_digests


# ---------------------------------------------------------------------- referrers


def referrer(name: str, subject: Image, days: float = OLD, **fields: Any) -> Image:
    """A signature or SBOM pushed as an OCI 1.1 referrer: untagged, `subject` = the image."""
    return Image(digest(name), ago(days), subject=subject.digest, size_bytes=2_000, **fields)


def test_signatures_and_sboms_of_a_kept_image_are_kept() -> None:
    current = build("main", "current", moving=True)
    signature = referrer("current/sig", current.index)
    sbom = referrer("current/sbom", current.index)
    sbom_signature = referrer("current/sbom/sig", sbom)  # a signature of the SBOM
    plan = plan_of([*current.images, signature, sbom, sbom_signature], keep_per_branch=1)
    for kept in (signature, sbom, sbom_signature):
        assert reasons(plan, kept) == {Reason.REFERRER_OF_KEPT}
    assert f"refers to kept image {current.index.digest[:19]}" in details(plan, signature)[0]


def test_referrers_of_a_deleted_image_go_with_it_after_it() -> None:
    newest = build("main", "newest", days=OLD - 1, moving=True)
    old = build("main", "old")
    signature = referrer("old/sig", old.index)
    platform_signature = referrer("old/platform-sig", old.platform)
    plan = plan_of([*newest.images, *old.images, signature, platform_signature], keep_per_branch=1)

    assert reasons(plan, signature) == {Reason.REFERRER_OF_DELETED}
    assert reasons(plan, platform_signature) == {Reason.REFERRER_OF_DELETED}
    wave = {d.image.digest: d.wave for d in plan.deleted}
    assert wave[signature.digest] > wave[old.index.digest]  # the subject first
    assert wave[platform_signature.digest] > wave[old.platform.digest]
    assert old.index.digest in plan.decision(signature.digest).parents


def test_a_referrer_whose_subject_is_gone_is_pruned_by_age() -> None:
    gone = Image(digest("gone"), ago(OLD))
    dangling = referrer("dangling", gone)
    young = referrer("young", gone, days=0.5)
    plan = plan_of([dangling, young], keep_days=1)
    assert reasons(plan, dangling) == {Reason.DANGLING_REFERRER}
    assert young.digest in plan.kept_digests


def test_cosign_tag_scheme_signatures_follow_their_image() -> None:
    kept = build("main", "kept", moving=True)
    deleted = build("main", "deleted")

    def sig_tag(b: Build) -> str:
        return f"sha256-{b.index.digest.removeprefix('sha256:')}.sig"

    kept_sig = Image(digest("kept.sig"), ago(OLD), tags=(sig_tag(kept),))
    deleted_sig = Image(digest("deleted.sig"), ago(OLD), tags=(sig_tag(deleted),))
    plan = plan_of([*kept.images, *deleted.images, kept_sig, deleted_sig], keep_per_branch=1)
    assert reasons(plan, kept_sig) == {Reason.REFERRER_OF_KEPT}
    assert reasons(plan, deleted_sig) == {Reason.REFERRER_OF_DELETED}


# ---------------------------------------------------------------------- several platforms
def platform_build(name: str, days: float = OLD, *, moving: bool = False) -> tuple[Image, ...]:
    """A two-platform build: each platform's image under its part tag, then the join's
    index under the build tags (and the moving tag when it is the branch's current one)."""
    sha = commit(name)
    parts = tuple(
        Image(digest(f"{name}/{arch}"), ago(days), tags=(f"{sha}-{arch}-1a2b3c4d",))
        for arch in ("amd64", "arm64")
    )
    tags = (sha, f"main-{sha[:7]}", *(("main",) if moving else ()))
    index = Image(
        digest(name),
        ago(days),
        tags=tags,
        media_type=OCI_INDEX,
        children=tuple(
            ChildRef(part.digest, ChildRole.PLATFORM, f"linux/{arch}")
            for part, arch in zip(parts, ("amd64", "arm64"), strict=True)
        ),
    )
    return (index, *parts)


def test_platform_parts_live_and_go_with_the_index_that_joins_them() -> None:
    builds = [platform_build(f"p{n}", days=OLD + 10 - n, moving=n == 9) for n in range(10)]

    plan = plan_of([image for b in builds for image in b], keep_per_branch=3)

    for kept in builds[-3:]:
        assert reasons(plan, kept[1]) == {Reason.CHILD_OF_KEPT}  # not "unknown tags"
        assert reasons(plan, kept[2]) == {Reason.CHILD_OF_KEPT}
    for old in builds[:-3]:
        assert reasons(plan, old[0]) == {Reason.OLDER_BUILD}
        assert reasons(plan, old[1]) == {Reason.CHILD_OF_DELETED}


def test_a_platform_image_never_joined_goes_after_keep_days() -> None:
    """Its batch failed before the join (another platform failed): nothing references it."""
    index, amd, arm = platform_build("failed")
    young = Image(digest("young/arm64"), ago(1), tags=(f"{commit('young')}-arm64-00aa11bb",))

    plan = plan_of([amd, arm, young], keep_days=7)

    assert reasons(plan, amd) == {Reason.PLATFORM_PART}
    assert reasons(plan, young) == {Reason.YOUNG}
    assert not plan.decision(amd.digest).keep
    assert index.digest not in {d.image.digest for d in plan.kept}
