"""The pruner against moto's ECR made ECR-like: real OCI manifests, safe order, many images."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from layercache.pruning.ecr import EcrRegistry
from layercache.pruning.model import BUILDKIT_CACHE_CONFIG, ChildRole
from layercache.pruning.plan import Policy, Reason, make_plan
from layercache.pruning.service import Pruner, dry_run_plan
from layercache.pruning.settings import PrunerSettings
from layercache_dev.kit.moto_ecr import EcrCalls

from .conftest import NOW, REGION, Registry, refuse_deleting

POLICY = Policy(keep_per_branch=2, keep_days=7)


def no_sleep(_: float) -> None:
    return None


def ecr_registry() -> EcrRegistry:
    return EcrRegistry(boto3.client("ecr", region_name=REGION), sleep=no_sleep)


def pruner(repository: str, **settings: Any) -> Pruner:
    config = PrunerSettings(
        image_repository_name=repository,
        prune_keep_per_branch=2,
        prune_keep_days=7,
        **settings,
    )
    return Pruner(config, ecr_registry(), clock=lambda: NOW)


def seed_history(registry: Registry) -> dict[str, Any]:
    """Two branches' builds (multi-arch, with attestations) and their cache exports."""
    main = [
        registry.push_build(
            "main", f"main-{n}", days_ago=40 - n, platforms=("linux/amd64", "linux/arm64")
        )
        for n in range(4)
    ]
    main.append(registry.push_build("main", "main-4", days_ago=2, latest=True))
    feature = [registry.push_build("feature/login", f"f-{n}", days_ago=20 - n) for n in range(3)]
    release = registry.push_build("release/1.x", "rel", days_ago=90, extra_tags=("v1.0.0",))
    caches = {
        "main": [registry.push_cache("main", f"main-{n}", days_ago=40 - n) for n in range(5)],
        "feature": [
            registry.push_cache("feature/login", f"f-{n}", days_ago=20 - n) for n in range(3)
        ],
    }
    return {"main": main, "feature": feature, "release": release, "caches": caches}


def test_the_snapshot_reads_indexes_children_and_cache_manifests(
    registry: Registry, ecr_like: EcrCalls
) -> None:
    history = seed_history(registry)
    images = {image.digest: image for image in ecr_registry().snapshot(registry.repository)}

    newest = history["main"][-1]
    index = images[newest.index]
    assert index.is_index
    assert {c.digest for c in index.children} == newest.digests - {newest.index}
    roles = {c.digest: c.role for c in index.children}
    assert roles[newest.attestation] is ChildRole.ATTESTATION
    multi_arch = images[history["main"][0].index]
    assert sorted(c.platform for c in multi_arch.children if c.platform) == [
        "linux/amd64",
        "linux/arm64",
    ]
    superseded_cache = images[history["caches"]["main"][0]]
    assert superseded_cache.tags == ()
    assert superseded_cache.config_media_type == BUILDKIT_CACHE_CONFIG
    assert set(images) == registry.digests()


def test_prune_keeps_exactly_what_the_policy_says_and_deletes_in_safe_order(
    registry: Registry, ecr_like: EcrCalls
) -> None:
    history = seed_history(registry)
    main, feature, release = history["main"], history["feature"], history["release"]
    caches = history["caches"]

    (report,) = pruner(registry.repository).run()

    expected_kept = (
        main[-1].digests  # latest, holds the branch tag, 2 days old
        | main[-2].digests  # second newest of main
        | feature[-1].digests
        | feature[-2].digests
        | release.digests  # v1.0.0 is protected, and it is the newest of its branch
        | {caches["main"][-1], caches["feature"][-1]}  # the current cache refs
    )
    assert registry.digests() == expected_kept
    assert report.plan.kept_digests == expected_kept
    # Old builds went with all their children; superseded caches went first.
    # main-0..2 (index, 2 platforms, attestation), f-0, 4 + 2 superseded caches.
    assert report.images_deleted == len(report.plan.deleted) == 3 * 4 + 3 + 4 + 2
    first = report.plan.deleted[: len(caches["main"]) - 1 + len(caches["feature"]) - 1]
    assert all(Reason.SUPERSEDED_CACHE in d.reasons for d in first)
    assert ecr_like.refused == []
    assert report.outcome is not None
    assert report.outcome.failed == report.outcome.skipped == []
    assert report.bytes_freed == sum(d.image.size_bytes for d in report.plan.deleted) > 0
    reasons = {d.image.digest: d.reasons for d in report.plan.kept}
    assert Reason.PROTECTED_TAG in reasons[release.index]
    assert Reason.CHILD_OF_KEPT in reasons[release.attestation]
    assert Reason.CURRENT_CACHE in reasons[caches["main"][-1]]

    # A second run finds nothing more to delete: the kept set is a fixed point.
    (again,) = pruner(registry.repository).run()
    assert again.plan.deleted == ()
    assert registry.digests() == expected_kept


def test_the_refusal_model_is_active(registry: Registry, ecr_like: EcrCalls) -> None:
    build = registry.push_build("main", "m")
    client = boto3.client("ecr", region_name=REGION)
    response = client.batch_delete_image(
        repositoryName=registry.repository, imageIds=[{"imageDigest": build.attestation}]
    )
    assert response["failures"][0]["failureCode"] == "ImageReferencedByManifestList"
    assert build.attestation in registry.digests()


def test_an_index_pushed_after_planning_keeps_the_manifest_it_shares(
    registry: Registry, ecr_like: EcrCalls
) -> None:
    old = registry.push_build("main", "old", days_ago=30)
    registry.push_build("main", "new", days_ago=20)
    registry.push_build("main", "newer", days_ago=10)
    ecr = ecr_registry()
    plan = make_plan(ecr.snapshot(registry.repository), POLICY, NOW)
    assert old.digests <= plan.deleted_digests

    # Meanwhile an identical rebuild pushes a new index that references old's platform manifest.
    registry.push_identical_rebuild(old.index)

    outcome = ecr.delete(registry.repository, plan)
    refused = {f.digest for f in outcome.failed}
    assert refused == {old.platforms[0], old.attestation}
    assert {f.code for f in outcome.failed} == {"ImageReferencedByManifestList"}
    # Refused twice: the first try and the one retry.
    assert ecr_like.refused.count(old.attestation) == 2
    assert {old.platforms[0], old.attestation} <= registry.digests()
    assert old.index not in registry.digests()


def test_a_manifest_whose_index_could_not_be_deleted_is_left_alone(
    registry: Registry, ecr_like: EcrCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = registry.push_build("main", "stuck", days_ago=30)
    registry.push_build("main", "b", days_ago=20)
    registry.push_build("main", "c", days_ago=10)
    ecr = ecr_registry()
    plan = make_plan(ecr.snapshot(registry.repository), POLICY, NOW)
    refuse_deleting(monkeypatch, ecr, stuck.index)
    outcome = ecr.delete(registry.repository, plan)

    assert [(f.digest, f.code) for f in outcome.failed] == [(stuck.index, "KmsError")]
    assert {f.digest for f in outcome.skipped} == stuck.digests - {stuck.index}
    assert stuck.digests <= registry.digests()
    assert ecr_like.refused == []


def test_two_pruners_at_once_find_the_others_deletions_gone(
    registry: Registry, ecr_like: EcrCalls
) -> None:
    for n in range(4):
        registry.push_build("main", f"m{n}", days_ago=30 - n)
        registry.push_cache("main", f"m{n}", days_ago=30 - n)
    first, second = ecr_registry(), ecr_registry()
    plan_first = make_plan(first.snapshot(registry.repository), POLICY, NOW)
    plan_second = make_plan(second.snapshot(registry.repository), POLICY, NOW)

    done = first.delete(registry.repository, plan_first)
    late = second.delete(registry.repository, plan_second)

    assert len(done.deleted) == len(plan_first.deleted) == 3 * 2 + 3
    assert late.deleted == []
    assert late.failed == late.skipped == []
    assert {i.digest for i in late.already_gone} == plan_second.deleted_digests
    assert registry.digests() == plan_first.kept_digests


def test_pagination_over_1000_images_and_deletion_in_chunks_of_100(
    registry: Registry, ecr_like: EcrCalls
) -> None:
    for n in range(1150):
        registry.push_untagged(f"superseded-cache-{n}", days_ago=20 + n / 100, cache=True)
    old_builds = [registry.push_build("main", f"old-{n}", days_ago=30 + n) for n in range(120)]
    kept = [registry.push_build("main", f"new-{n}", days_ago=5 - n) for n in range(3)]
    current_cache = registry.push_cache("main", "current", days_ago=1)
    total = 1150 + 3 * 123 + 1
    assert len(registry.digests()) == total

    ecr = ecr_registry()
    plan, calls = dry_run_plan(ecr._client, registry.repository, POLICY, NOW)
    assert len(plan.decisions) == total
    assert ecr_like.describe_page_sizes == [1000, 1000]
    # 2 DescribeImages pages, 2 BatchGetImage calls for 123 indexes, 12 for 1150 untagged
    # manifests whose config media type moto leaves out of DescribeImages.
    assert calls == 2 + 2 + 12

    report = Pruner(
        PrunerSettings(image_repository_name=registry.repository, prune_keep_per_branch=2),
        ecr,
        clock=lambda: NOW,
    ).run()[0]

    expected = {current_cache} | {d for b in kept for d in b.digests}
    assert registry.digests() == expected == report.plan.kept_digests
    assert report.images_deleted == 1150 + 3 * 120
    assert max(ecr_like.delete_batch_sizes) == 100
    # Wave 1 (caches, then indexes): 1150 + 120 ids; wave 2 (their children): 2 * 120.
    assert len(ecr_like.delete_batch_sizes) == 13 + 3
    assert ecr_like.refused == []
    assert all(d not in registry.digests() for b in old_builds for d in b.digests)


def test_storage_stops_growing_with_the_number_of_builds(
    registry: Registry, ecr_like: EcrCalls
) -> None:
    """Forty days of builds on two branches, pruning after each: the repository levels off."""
    sizes: list[int] = []
    start = NOW - timedelta(days=40)
    for day in range(40):
        for branch in ("main", "feature/x"):
            ago = 40 - day
            registry.push_build(branch, f"{branch}-{day}", days_ago=ago, latest=branch == "main")
            registry.push_cache(branch, f"{branch}-{day}", days_ago=ago)
            config = PrunerSettings(
                image_repository_name=registry.repository,
                prune_keep_per_branch=3,
                prune_keep_days=5,
            )
            moment = start + timedelta(days=day, minutes=5)
            Pruner(config, ecr_registry(), clock=lambda m=moment: m).run()  # type: ignore[misc]
        sizes.append(len(registry.digests()))

    # Per branch, once five days have passed: the builds younger than 5 days (5 of them,
    # each an index, a platform manifest and an attestation) and their 5 cache manifests
    # (the current one and 4 superseded ones still inside the 5 days).
    assert sizes[:5] == [8, 16, 24, 32, 40]
    assert sizes[5:] == [2 * 5 * (3 + 1)] * 35
    final = make_plan(
        ecr_registry().snapshot(registry.repository),
        Policy(keep_per_branch=3, keep_days=5),
        _day(start, 39),
    )
    assert final.deleted == ()
    assert ecr_like.refused == []


def _day(start: datetime, day: int) -> datetime:
    return start + timedelta(days=day, minutes=5)


def test_describe_errors_surface(stack: Any) -> None:
    with pytest.raises(ClientError, match="RepositoryNotFound"):
        ecr_registry().snapshot("no/such-repository")
