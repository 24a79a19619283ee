"""Several platforms: one native build per platform, then the join (starting/platforms.py)."""

from __future__ import annotations

import pytest
import yaml

from layercache.build_records import ENV_JOIN_PLATFORMS, ENV_PLATFORM
from layercache.starting.fan_out import batch_buildspec
from layercache.starting.platforms import platform_graph

ARM_IMAGE = "aws/codebuild/amazonlinux-aarch64-standard:3.0"


def test_each_platform_builds_on_a_host_of_its_architecture_then_the_join() -> None:
    nodes = platform_graph(["linux/amd64", "linux/arm64"], ARM_IMAGE)

    spec = yaml.safe_load(batch_buildspec("version: 0.2\nphases: {}\n", nodes))
    graph = {node["identifier"]: node for node in spec["batch"]["build-graph"]}
    assert list(graph) == ["linux_amd64", "linux_arm64", "join"]
    assert graph["linux_amd64"]["env"] == {"variables": {ENV_PLATFORM: "linux/amd64"}}
    assert graph["linux_arm64"]["env"] == {
        "type": "ARM_CONTAINER",
        "image": ARM_IMAGE,
        "variables": {ENV_PLATFORM: "linux/arm64"},
    }
    assert graph["join"]["depend-on"] == ["linux_amd64", "linux_arm64"]
    assert graph["join"]["env"]["variables"] == {ENV_JOIN_PLATFORMS: "linux/amd64,linux/arm64"}
    assert spec["batch"]["fast-fail"] is True  # a failed platform: no join, nothing published


def test_a_platform_listed_twice_is_built_once() -> None:
    nodes = platform_graph(["linux/arm64", "linux/amd64", "linux/arm64"], ARM_IMAGE)
    assert [node.identifier for node in nodes] == ["linux_arm64", "linux_amd64", "join"]
    assert nodes[-1].variables[ENV_JOIN_PLATFORMS] == "linux/arm64,linux/amd64"


def test_a_platform_without_a_native_host_is_refused() -> None:
    with pytest.raises(ValueError, match="linux/arm/v7"):
        platform_graph(["linux/amd64", "linux/arm/v7"], ARM_IMAGE)
