"""FanOut: a Bake file's images built in one CodeBuild batch build, one build per image.

The starter cannot read the Bake file: it is in the source, which only a build checks
out. So a batch is planned from the images the branch's last published build built and
what each is built on (`BranchHead.bake_plan`; the default branch's for a branch with
none). Each planned image is a node of the batch's build graph, which `depend-on`s the
nodes of the images it is built on: CodeBuild starts it only after they succeeded, so
it reads their fresh cache from the registry. Every build reads the Bake file itself and
builds its share (`ENV_FANOUT_IMAGES`). The file may have changed since the plan: the
first node (`ENV_FANOUT_NEWCOMERS`) also builds the images it declares beyond the plan,
and a node whose image it no longer declares builds nothing. With no plan (the stack's
first build), the batch is one build of every image, and its result is the next plan.

The graph goes in `buildspecOverride`: the project's own buildspec (read once with
BatchGetProjects, so it is never copied here) with a `batch` section added.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from layercache.build_records import (
    ENV_FANOUT_IMAGES,
    ENV_FANOUT_NEWCOMERS,
    ENV_FANOUT_PLANNED,
    BranchHead,
    BuildStatus,
    PlannedImage,
)

if TYPE_CHECKING:
    from mypy_boto3_codebuild import CodeBuildClient

# A build graph identifier: letters, digits and underscores (CodeBuild's own examples).
_NOT_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")
IDENTIFIER_MAX = 64
# What a batch's builds may be at most (the project's BuildBatchConfig restricts it too).
DEFAULT_MAX_BUILDS = 20


class FanOutConfigurationError(RuntimeError):
    """The project cannot run a batch as the stack set it up (no inline buildspec)."""


@dataclass(frozen=True)
class GraphNode:
    """One build of a batch: what it builds (its variables), the nodes it waits for, and
    the host it runs on when not the project's (`environment`: type, image, compute-type)."""

    identifier: str
    variables: Mapping[str, str]
    depend_on: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)

    def as_buildspec(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "identifier": self.identifier,
            "env": {**self.environment, "variables": dict(self.variables)},
            "ignore-failure": False,
        }
        if self.depend_on:
            entry["depend-on"] = list(self.depend_on)
        return entry


def image_node(
    identifier: str,
    images: Sequence[str],
    planned: Sequence[str],
    *,
    depend_on: Sequence[str] = (),
    newcomers: bool = False,
) -> GraphNode:
    """A fan-out node: the images it builds, the plan's images, whether it takes newcomers."""
    return GraphNode(
        identifier=identifier,
        variables={
            ENV_FANOUT_IMAGES: ",".join(images),
            ENV_FANOUT_PLANNED: ",".join(planned),
            ENV_FANOUT_NEWCOMERS: "true" if newcomers else "false",
        },
        depend_on=tuple(depend_on),
    )


def images_of(node: GraphNode) -> tuple[str, ...]:
    return tuple(name for name in node.variables.get(ENV_FANOUT_IMAGES, "").split(",") if name)


def plan_of(head: BranchHead | None, fallback: BranchHead | None) -> tuple[PlannedImage, ...]:
    """The plan a batch of this branch starts from: its own, else the default branch's."""
    for candidate in (head, fallback):
        if candidate is not None and candidate.bake_plan:
            return candidate.bake_plan
    return ()


def depths(plan: Sequence[PlannedImage]) -> dict[str, int]:
    """Each planned image's depth: 0 on no planned image, else 1 + its deepest base's.

    Bases outside the plan are ignored; a cycle (a corrupt plan) counts as depth 0 where
    it closes, so this always ends."""
    bases = {planned.image: [b for b in planned.built_on if b != planned.image] for planned in plan}
    found: dict[str, int] = {}

    def depth(image: str, path: frozenset[str]) -> int:
        if image in found:
            return found[image]
        below = [
            depth(b, path | {image}) for b in bases.get(image, ()) if b in bases and b not in path
        ]
        found[image] = 1 + max(below, default=-1)
        return found[image]

    for image in bases:
        depth(image, frozenset())
    return found


def build_graph(
    plan: Sequence[PlannedImage], max_builds: int = DEFAULT_MAX_BUILDS
) -> list[GraphNode]:
    """The batch's nodes, the first one also building newcomers.

    One node per image while they fit in `max_builds`; beyond that, the images of each
    depth share nodes (a node depends on every node of the depths below that holds a
    base of its images), so a node never waits for one of its own depth: no cycles.
    """
    names = list(dict.fromkeys(planned.image for planned in plan))
    if not names:
        return [image_node("all_images", (), (), newcomers=True)]
    level = depths(plan)
    by_depth: dict[int, list[str]] = {}
    for name in sorted(names, key=lambda n: (level[n], names.index(n))):
        by_depth.setdefault(level[name], []).append(name)
    budget = max(1, max_builds)
    if len(by_depth) > budget:  # deeper than the builds allowed: one build of everything
        return [image_node("all_images", names, names, newcomers=True)]
    groups = _share_builds(by_depth, budget)
    planned_names = [image for group in groups for image in group]
    node_of: dict[str, str] = {}
    used: set[str] = set()
    nodes: list[GraphNode] = []
    bases = {planned.image: planned.built_on for planned in plan}
    for images in groups:
        identifier = _identifier(images, used)
        waits = tuple(
            dict.fromkeys(
                node_of[b] for image in images for b in bases.get(image, ()) if b in node_of
            )
        )
        for image in images:
            node_of[image] = identifier
        nodes.append(
            image_node(identifier, images, planned_names, depend_on=waits, newcomers=not nodes)
        )
    return nodes


def _share_builds(by_depth: dict[int, list[str]], budget: int) -> list[list[str]]:
    """Split each depth's images over builds, at most `budget` builds in all: each depth
    one, and every spare build to the depth with the most images per build."""
    total = sum(len(images) for images in by_depth.values())
    if total <= budget:
        return [[image] for depth in sorted(by_depth) for image in by_depth[depth]]
    shares = dict.fromkeys(by_depth, 1)
    for _ in range(budget - len(by_depth)):
        open_depths = [d for d in by_depth if shares[d] < len(by_depth[d])]
        if not open_depths:
            break
        busiest = max(open_depths, key=lambda d: (len(by_depth[d]) / shares[d], -d))
        shares[busiest] += 1
    return [
        by_depth[depth][index :: shares[depth]]
        for depth in sorted(by_depth)
        for index in range(shares[depth])
    ]


def _identifier(images: Sequence[str], used: set[str]) -> str:
    base = _NOT_IDENTIFIER.sub("_", "_".join(images))[: IDENTIFIER_MAX - 4] or "images"
    if not base[0].isalpha():
        base = f"i_{base}"[: IDENTIFIER_MAX - 4]
    identifier, number = base, 1
    while identifier in used:
        number += 1
        identifier = f"{base}_{number}"
    used.add(identifier)
    return identifier


def batch_buildspec(project_buildspec: str, nodes: Sequence[GraphNode]) -> str:
    """The project's buildspec with the batch's build graph (flow-style YAML is JSON)."""
    graph = [node.as_buildspec() for node in nodes]
    section = {"fast-fail": True, "build-graph": graph}
    return f"{project_buildspec.rstrip()}\n\nbatch: {json.dumps(section, separators=(',', ':'))}\n"


def as_build(batch: dict[str, Any]) -> dict[str, Any]:
    """A BuildBatch as the starter reads a Build: id, arn, number, status."""
    return {
        "id": batch["id"],
        "arn": batch.get("arn", ""),
        "buildNumber": batch.get("buildBatchNumber", 0),
        "buildStatus": batch.get("buildBatchStatus", BuildStatus.IN_PROGRESS.value),
        "environment": batch.get("environment", {}),
    }


class BatchLauncher:
    """StartBuildBatch and the calls that find, read and stop what it started."""

    def __init__(
        self, codebuild: CodeBuildClient, project_name: str, max_builds: int = DEFAULT_MAX_BUILDS
    ) -> None:
        self.codebuild = codebuild
        self.project_name = project_name
        self.max_builds = max_builds
        self._buildspec: str | None = None

    def project_buildspec(self) -> str:
        if self._buildspec is None:
            projects = self.codebuild.batch_get_projects(names=[self.project_name]).get(
                "projects", []
            )
            text = projects[0].get("source", {}).get("buildspec", "") if projects else ""
            if "phases" not in text or "\nbatch:" in text:
                raise FanOutConfigurationError(
                    f"{self.project_name} has no inline buildspec to add a build graph to"
                )
            self._buildspec = text
        return self._buildspec

    def start(
        self,
        nodes: Sequence[GraphNode],
        *,
        source_version: str,
        environment: dict[str, str],
        token: str,
    ) -> dict[str, Any]:
        response = self.codebuild.start_build_batch(
            projectName=self.project_name,
            sourceVersion=source_version,
            environmentVariablesOverride=[
                {"name": name, "value": value, "type": "PLAINTEXT"}
                for name, value in environment.items()
            ],
            buildspecOverride=batch_buildspec(self.project_buildspec(), nodes),
            idempotencyToken=token,
        )
        return as_build(dict(response["buildBatch"]))

    def recent(self, lookback: int) -> list[dict[str, Any]]:
        ids = self.codebuild.list_build_batches_for_project(
            projectName=self.project_name, sortOrder="DESCENDING"
        ).get("ids", [])[:lookback]
        return self.read(ids)

    def read(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        batches = self.codebuild.batch_get_build_batches(ids=list(ids)).get("buildBatches", [])
        return [as_build(dict(batch)) for batch in batches]

    def stop(self, batch_id: str) -> None:
        self.codebuild.stop_build_batch(id=batch_id)
