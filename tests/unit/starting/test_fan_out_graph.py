"""The batch's build graph is a pure function of the branch's plan (starting/fan_out.py).

Invariants, for any plan (what each image is built on, even a corrupt one with cycles or
unknown bases) and any limit of builds:
- every planned image is built by exactly one node, and exactly one node (the first)
  also builds the images the Bake file declares beyond the plan;
- there are at most `max_builds` nodes, with unique identifiers CodeBuild accepts;
- a node depends only on nodes before it (the graph has no cycle), and on the node of
  every planned base of its images that another node builds: it starts after them.
"""

from __future__ import annotations

import re

import yaml
from hypothesis import given
from hypothesis import strategies as st

from layercache.build_records import (
    ENV_FANOUT_IMAGES,
    ENV_FANOUT_NEWCOMERS,
    ENV_FANOUT_PLANNED,
    BranchHead,
    PlannedImage,
)
from layercache.starting.fan_out import (
    IDENTIFIER_MAX,
    batch_buildspec,
    build_graph,
    images_of,
    plan_of,
)

NAMES = st.sampled_from(["base", "api", "worker", "tool", "cli", "web", "db", "docs", "jobs"])


@st.composite
def plans(draw: st.DrawFn) -> list[PlannedImage]:
    images = draw(st.lists(NAMES, unique=True, max_size=9))
    pool = [*images, "gone"]  # a base outside the plan
    return [
        PlannedImage(image, tuple(draw(st.lists(st.sampled_from(pool), unique=True, max_size=3))))
        for image in images
    ]


@given(plans(), st.integers(min_value=1, max_value=12))
def test_every_image_is_built_once_after_its_bases(
    plan: list[PlannedImage], max_builds: int
) -> None:
    nodes = build_graph(plan, max_builds)

    assert 1 <= len(nodes) <= max_builds
    built = [image for node in nodes for image in images_of(node)]
    assert sorted(built) == sorted(planned.image for planned in plan)
    assert [node.variables[ENV_FANOUT_NEWCOMERS] == "true" for node in nodes] == [True] + [
        False
    ] * (len(nodes) - 1)
    identifiers = [node.identifier for node in nodes]
    assert len(set(identifiers)) == len(identifiers)
    for identifier in identifiers:
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", identifier)
        assert len(identifier) <= IDENTIFIER_MAX
    position = {node.identifier: index for index, node in enumerate(nodes)}
    node_of = {image: node.identifier for node in nodes for image in images_of(node)}
    for index, node in enumerate(nodes):
        assert all(position[other] < index for other in node.depend_on)
        for image in images_of(node):
            bases = next(p.built_on for p in plan if p.image == image)
            for base in bases:
                other = node_of.get(base, node.identifier)
                # A base built elsewhere, before (a corrupt plan's cycle drops its back edge).
                if other != node.identifier and position[other] < index:
                    assert other in node.depend_on


def test_one_build_per_image_waits_for_the_images_it_is_built_on() -> None:
    plan = [
        PlannedImage("base"),
        PlannedImage("api", ("base",)),
        PlannedImage("worker", ("base",)),
        PlannedImage("tool"),
    ]

    nodes = build_graph(plan)

    assert [(n.identifier, images_of(n), n.depend_on) for n in nodes] == [
        ("base", ("base",), ()),
        ("tool", ("tool",), ()),
        ("api", ("api",), ("base",)),
        ("worker", ("worker",), ("base",)),
    ]


def test_without_a_plan_one_build_builds_every_image() -> None:
    [node] = build_graph([])
    assert images_of(node) == ()
    assert node.variables[ENV_FANOUT_NEWCOMERS] == "true"


def test_beyond_the_limit_images_of_one_depth_share_builds() -> None:
    plan = [PlannedImage("base")] + [PlannedImage(f"app{i}", ("base",)) for i in range(8)]

    nodes = build_graph(plan, max_builds=3)

    assert len(nodes) == 3
    assert images_of(nodes[0]) == ("base",)
    assert sorted(i for n in nodes[1:] for i in images_of(n)) == sorted(f"app{i}" for i in range(8))
    assert all(n.depend_on == ("base",) for n in nodes[1:])


def test_a_branch_without_a_plan_starts_from_the_default_branchs() -> None:
    own = BranchHead("team/app", "feature", bake_plan=(PlannedImage("api"),))
    default = BranchHead("team/app", "main", bake_plan=(PlannedImage("base"),))
    assert plan_of(own, default) == (PlannedImage("api"),)
    assert plan_of(BranchHead("team/app", "feature"), default) == (PlannedImage("base"),)
    assert plan_of(None, None) == ()


def test_the_batch_buildspec_is_the_projects_with_the_graph_added() -> None:
    project = "version: 0.2\nenv:\n  shell: bash\nphases:\n  build:\n    commands:\n      - make\n"
    nodes = build_graph([PlannedImage("base"), PlannedImage("api", ("base",))])

    spec = yaml.safe_load(batch_buildspec(project, nodes))

    assert spec["phases"] == {"build": {"commands": ["make"]}}
    assert spec["batch"]["fast-fail"] is True
    graph = spec["batch"]["build-graph"]
    assert [node["identifier"] for node in graph] == ["base", "api"]
    assert graph[1]["depend-on"] == ["base"]
    assert graph[1]["env"]["variables"] == {
        ENV_FANOUT_IMAGES: "api",
        ENV_FANOUT_PLANNED: "base,api",
        ENV_FANOUT_NEWCOMERS: "false",
    }
    assert graph[0]["env"]["variables"][ENV_FANOUT_NEWCOMERS] == "true"


def test_a_corrupt_plan_item_is_left_out() -> None:
    head = BranchHead.from_item(
        {
            "image": "team/app",
            "branch": "main",
            "bake_plan": [
                {"image": "api", "built_on": ["base"]},
                {"image": 3},
                {"image": "x", "built_on": "base"},
                "junk",
            ],
        }
    )
    assert head.bake_plan == (PlannedImage("api", ("base",)),)
