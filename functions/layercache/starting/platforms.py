"""Several platforms: one native build per platform, then the join, in one batch build.

Building `linux/arm64` under emulation on an x86 host is 5 to 20 times slower, and
CodeBuild has native ARM hosts. So with `Platforms` naming more than one platform, a
request starts a batch whose build graph has one build per platform, each on a host of
its architecture (`env: type/image`), and a `join` build that depends on them all:

- a platform's build builds the image (with a Bake file: every image) for its platform
  only, pushes it under the write-once tag `<commit>-<arch>` and exports its cache to
  `cache-<branch>-<arch>` (the default branch's as fallback), and moves no tag;
- the join joins each image's platform manifests into one index
  (`docker buildx imagetools create`) under the build tags, and exports what a
  single-platform build exports: the recorder then moves the moving tags to the index.

`fast-fail`: a platform that fails stops the batch before the join, so nothing is
published. One platform (the default) is built as before, in one build on the project's
own host (an ARM host when that platform is `linux/arm64`: the template's choice).
"""

from __future__ import annotations

from collections.abc import Sequence

from layercache.build_records import ENV_JOIN_PLATFORMS, ENV_PLATFORM
from layercache.starting.fan_out import GraphNode

# The hosts CodeBuild has for each platform (the x86 one is the project's own).
ARM_HOST_TYPE = "ARM_CONTAINER"
SUPPORTED = ("linux/amd64", "linux/arm64")
JOIN = "join"


def node_identifier(platform: str) -> str:
    """`linux/arm64` -> `linux_arm64`: a build graph identifier."""
    return platform.replace("/", "_").replace("-", "_")


def platform_graph(platforms: Sequence[str], arm_image: str) -> list[GraphNode]:
    """One node per platform, on a host of its architecture, then the join."""
    unknown = [platform for platform in platforms if platform not in SUPPORTED]
    if unknown:
        raise ValueError(f"no native CodeBuild host for {', '.join(unknown)}")
    nodes = [
        GraphNode(
            identifier=node_identifier(platform),
            variables={ENV_PLATFORM: platform},
            environment=(
                {"type": ARM_HOST_TYPE, "image": arm_image} if platform == "linux/arm64" else {}
            ),
        )
        for platform in dict.fromkeys(platforms)
    ]
    join = GraphNode(
        identifier=JOIN,
        variables={ENV_JOIN_PLATFORMS: ",".join(dict.fromkeys(platforms))},
        depend_on=tuple(node.identifier for node in nodes),
    )
    return [*nodes, join]
