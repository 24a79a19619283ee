"""Property test: random repositories of builds (indexes, children, shared children), cache
manifests, referrers (signatures, SBOMs, their signatures, dangling ones), protected and
unknown tags and in-use digests, pushed into moto made ECR-like, read back through the ECR
adapter, planned, and pruned. The invariants:

- the snapshot reads back every index's children and every referrer's subject;
- every image is kept or deleted, never both, and every decision has a reason;
- nothing a kept image needs is deleted: no kept index loses a child, no kept image a
  referrer; what is in use, protected, a current cache, young, or (by default) carries a
  tag no convention explains is kept;
- every deletion comes after the index or subject it hangs on (earlier wave);
- after pruning the repository holds exactly the kept images: every deletable image was
  freed, and nothing is left that hangs on a deleted image without a reason of its own.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import boto3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layercache.pruning.ecr import EcrRegistry
from layercache.pruning.model import BUILDKIT_CACHE_CONFIG, OCI_INDEX, OCI_MANIFEST, branch_slug
from layercache.pruning.plan import Policy, Reason, make_plan
from layercache_dev.kit.moto_ecr import EcrCalls

from .conftest import NOW, OCI_CONFIG, OCI_EMPTY, REGION, Registry

BRANCHES = ["main", "feature/a", "v2"]
_repositories = itertools.count()
OWN_REASONS = {
    Reason.PROTECTED_TAG,
    Reason.CURRENT_CACHE,
    Reason.NEWEST_OF_BRANCH,
    Reason.YOUNG,
    Reason.IN_FLIGHT,
    Reason.IN_USE,
    Reason.PARENT_OF_IN_USE,
    Reason.UNKNOWN,
}


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Manifest:
    text: str
    days_ago: float
    tags: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    subject: str | None = None

    @property
    def digest(self) -> str:
        return _digest(self.text)


def leaf(name: str, config: str = OCI_CONFIG, subject: str | None = None) -> str:
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config, "digest": _digest(f"{name}/config"), "size": 10},
        "layers": [{"mediaType": "application/octet-stream", "digest": _digest(name), "size": 1}],
    }
    if subject is not None:
        document["artifactType"] = "application/vnd.cncf.notary.signature"
        document["config"] = {"mediaType": OCI_EMPTY, "digest": _digest("{}"), "size": 2}
        document["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1}
    return json.dumps(document)


def index(children: list[str]) -> str:
    entries = [{"mediaType": OCI_MANIFEST, "digest": c, "size": 1} for c in children]
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})


@st.composite
def repositories(draw: st.DrawFn) -> tuple[list[Manifest], Policy]:
    manifests: list[Manifest] = []
    builds: list[Manifest] = []
    children_pool: list[str] = []
    for n in range(draw(st.integers(1, 7))):
        branch = draw(st.sampled_from(BRANCHES))
        days = draw(st.floats(0, 40))
        sha = hashlib.sha1(f"{n}".encode()).hexdigest()  # noqa: S324 - a fake commit id
        children = [Manifest(leaf(f"b{n}/p"), days), Manifest(leaf(f"b{n}/att"), days)]
        manifests += children
        refs = [c.digest for c in children]
        if draw(st.booleans()) and children_pool:  # an identical layer set: a shared child
            refs.append(draw(st.sampled_from(children_pool)))
        children_pool += [c.digest for c in children]
        tags: list[str] = []
        if draw(st.booleans()):  # a refresh of a built commit carries no build tag
            tags += [sha, f"{branch_slug(branch)}-{sha[:7]}"]
        extra = draw(st.sampled_from(["", "", "v1.2.3", "prod-blue", "latest"]))
        if extra and all(extra not in m.tags for m in manifests):
            tags.append(extra)
        build = Manifest(index(sorted(set(refs))), days, tags, children=sorted(set(refs)))
        manifests.append(build)
        builds.append(build)
        if draw(st.booleans()):
            manifests.append(Manifest(leaf(f"cache/{n}", BUILDKIT_CACHE_CONFIG), days))
    # Each branch's moving tag and cache ref on one image (a tag names one image).
    for branch in BRANCHES:
        slug = branch_slug(branch)
        if draw(st.booleans()):
            draw(st.sampled_from(builds)).tags.append(slug)
        caches = [m for m in manifests if BUILDKIT_CACHE_CONFIG in m.text and not m.tags]
        if draw(st.booleans()) and caches:
            draw(st.sampled_from(caches)).tags.append(f"cache-{slug}")
    # Referrers: of builds and of their children, of referrers, and of what is not there.
    for n in range(draw(st.integers(0, 5))):
        target = draw(st.sampled_from(manifests))
        subject = target.digest if draw(st.integers(0, 5)) else _digest(f"gone/{n}")
        days = draw(st.floats(0, 40))
        manifests.append(Manifest(leaf(f"ref/{n}", subject=subject), days, subject=subject))
    in_use = {
        m.digest: "ECS task t"
        for m in draw(st.lists(st.sampled_from(manifests), max_size=2, unique_by=id))
    }
    policy = Policy(
        keep_per_branch=draw(st.integers(1, 3)),
        keep_days=draw(st.sampled_from([0, 7])),
        unknown_after_days=draw(st.sampled_from([None, 5])),
        in_use=in_use,
    )
    unique = {m.digest: m for m in manifests}
    return list(unique.values()), policy


def push(registry: Registry, manifests: list[Manifest]) -> None:
    for manifest in manifests:
        arguments = {
            "repositoryName": registry.repository,
            "imageManifest": manifest.text,
            "imageManifestMediaType": json.loads(manifest.text)["mediaType"],
            "imageDigest": manifest.digest,
        }
        registry.client.put_image(**arguments)
        for tag in manifest.tags:
            registry.client.put_image(**arguments, imageTag=tag)
        registry.set_pushed_at(manifest.digest, NOW - timedelta(days=manifest.days_ago))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=repositories())
def test_pruning_keeps_what_is_needed_and_frees_the_rest(
    case: tuple[list[Manifest], Policy], stack: Any, ecr_like: EcrCalls
) -> None:
    manifests, policy = case
    name = f"prop/repo-{next(_repositories)}"
    boto3.client("ecr", region_name=REGION).create_repository(repositoryName=name)
    registry = Registry(name)
    push(registry, manifests)
    ecr = EcrRegistry(boto3.client("ecr", region_name=REGION), sleep=lambda _: None)

    images = {image.digest: image for image in ecr.snapshot(name)}
    model = {m.digest: m for m in manifests}
    assert set(images) == set(model)
    for digest, image in images.items():
        assert sorted(c.digest for c in image.children) == model[digest].children
        assert image.subject == model[digest].subject

    plan = make_plan(images.values(), policy, NOW)
    kept, deleted = plan.kept_digests, plan.deleted_digests
    assert kept | deleted == set(images)
    assert not kept & deleted
    assert all(decision.why for decision in plan.decisions)
    for digest in kept:
        image = images[digest]
        assert not {c.digest for c in image.children} & deleted, "a kept index lost a child"
        hanging = {d for d, i in images.items() if i.refers_to == digest}
        assert not hanging & deleted, "a kept image lost a referrer"
    wave = {d.image.digest: d.wave for d in plan.deleted}
    for decision in plan.deleted:
        for parent in decision.parents:
            assert parent in deleted
            assert wave[parent] < decision.wave
    assert set(policy.in_use) <= kept
    for digest, image in images.items():
        young = NOW - image.pushed_at < max(timedelta(days=policy.keep_days), timedelta(hours=1))
        protected = any(t == "latest" or t.startswith(("v", "cache-")) for t in image.tags)
        unknown = "prod-blue" in image.tags and policy.unknown_after_days is None
        if young or protected or unknown:
            assert digest in kept

    outcome = ecr.delete(name, plan)
    assert outcome.failed == []
    assert outcome.skipped == []
    remaining = registry.digests()
    assert remaining == kept, "every deletable image is freed, nothing kept is lost"
    for digest in remaining:
        holders = set(plan.decision(digest).parents)
        if holders and not holders & remaining:
            assert plan.decision(digest).reasons & OWN_REASONS, "an orphan was left"
