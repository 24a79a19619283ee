"""The pruner where time and failure meet it, on moto made ECR-like: a delete ECR refuses,
a repository that cannot be read among several, a tag moved while the run deletes, and the
signatures and SBOMs (OCI 1.1 referrers) of the images it keeps or deletes."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from layercache.pruning.ecr import EcrRegistry
from layercache.pruning.in_use import EcsServices
from layercache.pruning.plan import Policy, Reason, make_plan
from layercache.pruning.service import Pruner
from layercache.pruning.settings import PrunerSettings
from layercache_dev.kit.moto_ecr import EcrCalls

from .conftest import (
    NOW,
    PRUNER_FUNCTION,
    REGION,
    SPDX_SBOM,
    PrunerHandler,
    Registry,
    emf_metrics,
    refuse_deleting,
    sample,
)

POLICY = Policy(keep_per_branch=1, keep_days=7)


def ecr_registry() -> EcrRegistry:
    return EcrRegistry(boto3.client("ecr", region_name=REGION), sleep=lambda _: None)


def test_a_refused_delete_is_a_reported_outcome_not_a_crash(
    registry: Registry,
    ecr_like: EcrCalls,
    function_env: Any,
    lambda_context: Any,
    pruner_handler: PrunerHandler,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: the summary called vars() on a slotted dataclass and the run failed."""
    old = [registry.push_build("main", f"old-{n}", days_ago=60 - n) for n in range(2)]
    for n in range(5):
        registry.push_build("main", f"new-{n}", days_ago=20 - n)
    function_env(PRUNER_FUNCTION)
    delete = EcrRegistry.delete

    def delete_while_a_rebuild_lands(self: EcrRegistry, repository: str, plan: Any) -> Any:
        if repository == registry.repository:
            registry.push_identical_rebuild(old[0].index)  # between planning and deleting
        return delete(self, repository, plan)

    monkeypatch.setattr(EcrRegistry, "delete", delete_while_a_rebuild_lands)

    result = pruner_handler(sample("daily-schedule.json"), lambda_context)

    summary = result["repositories"][0]
    assert summary["repository"] == registry.repository
    refused = {(f["digest"], f["code"]) for f in summary["failed"]}
    assert refused == {
        (old[0].platforms[0], "ImageReferencedByManifestList"),
        (old[0].attestation, "ImageReferencedByManifestList"),
    }
    assert all(f["reason"] for f in summary["failed"])
    assert old[1].digests.isdisjoint(registry.digests())  # the rest was deleted
    assert emf_metrics(capsys.readouterr().out)["DeleteFailures"] == 2


def test_a_repository_that_cannot_be_pruned_does_not_stop_the_others(
    registry: Registry,
    ecr_like: EcrCalls,
    function_env: Any,
    lambda_context: Any,
    pruner_handler: PrunerHandler,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = registry.push_build("main", "old", days_ago=60)
    for n in range(5):
        registry.push_build("main", f"new-{n}", days_ago=20 - n)
    account_arn = f"arn:aws:ecr:{REGION}:123456789012:repository"
    function_env(
        PRUNER_FUNCTION,
        PRUNE_REPOSITORIES=f"{account_arn}/team/gone,{account_arn}/{registry.repository}",
    )

    with pytest.raises(Exception, match="could not prune 1 repository") as raised:
        pruner_handler(sample("daily-schedule.json"), lambda_context)

    assert "team/gone" in str(raised.value)
    assert "RepositoryNotFoundException" in str(raised.value)
    assert old.digests.isdisjoint(registry.digests())  # the second one was pruned
    metrics = emf_metrics(capsys.readouterr().out)
    assert metrics["RepositoriesFailed"] == 1
    assert metrics["ImagesDeleted"] == len(old.digests)


def test_a_tag_moved_onto_an_image_after_planning_saves_it(
    registry: Registry, ecr_like: EcrCalls
) -> None:
    """A rollback moves `latest` onto an old build while the pruner runs."""
    old = registry.push_build("main", "old", days_ago=30)
    registry.push_build("main", "new", days_ago=10, latest=True)
    ecr = ecr_registry()
    plan = make_plan(ecr.snapshot(registry.repository), POLICY, NOW)
    assert old.digests <= plan.deleted_digests

    registry.move_tag("latest", old.index)
    outcome = ecr.delete(registry.repository, plan)

    assert old.digests <= registry.digests()  # the index and every child
    skipped = {f.digest: f for f in outcome.skipped}
    assert skipped[old.index].code == "TagsChanged"
    assert "latest" in skipped[old.index].reason
    assert {skipped[d].code for d in old.digests - {old.index}} == {"IndexNotDeleted"}
    assert ecr.calls["describe_images"] >= 2  # the snapshot's, then the re-read


def test_signatures_and_sboms_live_and_die_with_their_image(
    registry: Registry, ecr_like: EcrCalls
) -> None:
    old = registry.push_build("main", "old", days_ago=30)
    current = registry.push_build("main", "current", days_ago=10)
    old_signature = registry.push_referrer(old.index, "old/sig")
    old_sbom = registry.push_referrer(old.index, "old/sbom", artifact_type=SPDX_SBOM)
    signature = registry.push_referrer(current.index, "current/sig")
    sbom_signature = registry.push_referrer(old_sbom, "old/sbom/sig")
    gone_subject = registry.push_referrer("sha256:" + "0" * 64, "orphan/sig")
    ecr = ecr_registry()

    plan = make_plan(ecr.snapshot(registry.repository), POLICY, NOW)
    assert Reason.REFERRER_OF_KEPT in plan.decision(signature).reasons
    for referrer in (old_signature, old_sbom, sbom_signature):
        assert plan.decision(referrer).reasons == {Reason.REFERRER_OF_DELETED}
    assert plan.decision(gone_subject).reasons == {Reason.DANGLING_REFERRER}
    outcome = ecr.delete(registry.repository, plan)

    assert outcome.failed == []
    assert outcome.skipped == []
    remaining = registry.digests()
    assert current.digests | {signature} <= remaining
    assert remaining.isdisjoint(
        old.digests | {old_signature, old_sbom, sbom_signature, gone_subject}
    )


def test_a_referrer_is_not_deleted_when_its_image_could_not_be(
    registry: Registry, ecr_like: EcrCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = registry.push_build("main", "old", days_ago=30)
    registry.push_build("main", "current", days_ago=10)
    signature = registry.push_referrer(old.index, "old/sig")
    ecr = ecr_registry()
    plan = make_plan(ecr.snapshot(registry.repository), POLICY, NOW)
    refuse_deleting(monkeypatch, ecr, old.index)
    outcome = ecr.delete(registry.repository, plan)

    skipped = {f.digest: f.code for f in outcome.skipped}
    assert skipped[signature] == "SubjectNotDeleted"
    assert {old.index, signature} <= registry.digests()


def test_ecrs_subject_field_in_describe_images_needs_no_manifest_read() -> None:
    """ECR reports a referrer's subject as subjectManifestDigest (moto does not)."""
    client = boto3.client("ecr", region_name=REGION)
    subject, sig = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    details = [
        {"imageDigest": subject, "imageTags": ["main"], "imagePushedAt": NOW,
         "imageManifestMediaType": "application/vnd.oci.image.manifest.v1+json",
         "artifactMediaType": "application/vnd.oci.image.config.v1+json"},
        {"imageDigest": sig, "imagePushedAt": NOW, "subjectManifestDigest": subject,
         "imageManifestMediaType": "application/vnd.oci.image.manifest.v1+json",
         "artifactMediaType": "application/vnd.cncf.notary.signature"},
    ]  # fmt: skip
    with Stubber(client) as stubber:
        stubber.add_response(
            "describe_images",
            {"imageDetails": details},
            {"repositoryName": "team/service", "maxResults": 1000},
        )
        images = {i.digest: i for i in EcrRegistry(client).snapshot("team/service")}
    assert images[sig].subject == subject
    assert images[subject].subject is None


def test_an_ecs_service_scaled_to_zero_keeps_the_images_it_would_start(
    registry: Registry, ecr_like: EcrCalls
) -> None:
    """One task definition names an old build by tag, another one by digest; neither runs."""
    by_tag = registry.push_build("main", "by-tag", days_ago=40)
    by_digest = registry.push_build("main", "by-digest", days_ago=39)
    unused = registry.push_build("main", "unused", days_ago=38)
    registry.push_build("main", "current", days_ago=10)
    uri = boto3.client("ecr", region_name=REGION).describe_repositories(
        repositoryNames=[registry.repository]
    )["repositories"][0]["repositoryUri"]
    ecs = boto3.client("ecs", region_name=REGION)
    ecs.create_cluster(clusterName="prod")
    for name, image in (("api", f"{uri}:{by_tag.tags[0]}"), ("worker", f"{uri}@{by_digest.index}")):
        definition = ecs.register_task_definition(
            family=name, containerDefinitions=[{"name": name, "image": image, "memory": 256}]
        )["taskDefinition"]["taskDefinitionArn"]
        ecs.create_service(
            cluster="prod", serviceName=name, taskDefinition=definition, desiredCount=0
        )
    settings = PrunerSettings(
        image_repository_name=registry.repository, prune_keep_per_branch=1, prune_keep_days=7
    )
    pruner = Pruner(settings, ecr_registry(), clock=lambda: NOW, ecs_services=EcsServices(ecs))

    (report,) = pruner.run()

    assert Reason.IN_USE in report.plan.decision(by_tag.index).reasons
    assert "is named by ECS service" in str(report.plan.decision(by_tag.index).why)
    assert Reason.IN_USE in report.plan.decision(by_digest.index).reasons
    remaining = registry.digests()
    assert by_tag.digests | by_digest.digests <= remaining  # with their children
    assert remaining.isdisjoint(unused.digests)
