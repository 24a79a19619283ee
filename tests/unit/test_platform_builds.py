"""A platform's build and the join, as the driver plans them (no engine needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from layercache_dev.kit.driver import build_driver

bake = build_driver.bake_module()
joining = build_driver.join_module()

REPO = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app"
COMMIT = "c" * 40


def request(**changes: Any) -> Any:
    values: dict[str, Any] = {
        "repository": REPO,
        "branch": "main",
        "commit": COMMIT,
        "default_branch": "main",
        "cache_repository": f"{REPO}-cache",
        "platform": "linux/arm64",
        "part": "1a2b3c4d",
    }
    values.update(changes)
    return build_driver.BuildRequest(**values)


def test_a_platforms_build_has_its_own_tag_and_cache_and_moves_no_tag(tmp_path: Path) -> None:
    arm = request(branch="feature/x")

    assert arm.tags() == [f"{COMMIT}-arm64-1a2b3c4d"]
    assert arm.moving_tags() == []
    assert arm.cache_from_refs() == [
        f"{REPO}-cache:{build_driver.cache_tag('feature/x')}-arm64",
        f"{REPO}-cache:cache-main-arm64",
    ]
    args = build_driver.buildx_command(
        arm, builder="b", cache_from=[], cache_to=None, no_cache=False, metadata_file=tmp_path / "m"
    )
    assert args[args.index("--platform") + 1] == "linux/arm64"


def test_one_platform_or_none_builds_as_before() -> None:
    plain = request(platform="", part="")
    assert plain.tags() == [COMMIT, f"main-{COMMIT[:7]}"]
    assert plain.moving_tags() == ["main", "latest"]
    assert plain.cache_ref("main") == f"{REPO}-cache:cache-main"


def test_a_bake_target_is_built_for_the_platform_bake_knows_as_platforms() -> None:
    """Bake's attribute is `platforms`; buildx ignores a key it does not know, and the
    target would silently build for the host's platform (seen on the rig)."""
    definition = {"group": {"default": {"targets": ["api"]}}, "target": {"api": {}}}
    (image,) = bake.plan_images(definition, request())

    override = bake.target_override(image, use_cache=True, export_cache=True, no_cache=False)

    assert override["platforms"] == ["linux/arm64"]
    assert "platform" not in override
    assert override["tags"] == [f"{REPO}/api:{COMMIT}-arm64-1a2b3c4d"]


def test_the_join_reads_its_sources_by_each_platforms_tag() -> None:
    joined = request(platform="")
    assert joined.platform_tag("linux/amd64") == f"{COMMIT}-amd64-1a2b3c4d"
    assert joined.platform_tag("linux/arm64") == f"{COMMIT}-arm64-1a2b3c4d"
    assert joining.index_tags(joined) == [COMMIT, f"main-{COMMIT[:7]}"]
    rebuilt = build_driver.BuildRequest(**{**joined.__dict__, "write_tags": ()})
    assert joining.index_tags(rebuilt) == [f"{COMMIT}-index-1a2b3c4d"]


def test_the_join_tells_which_platforms_an_index_lists() -> None:
    def entry(architecture: str, os: str = "linux") -> dict[str, Any]:
        return {
            "digest": "sha256:" + "0" * 64,
            "platform": {"os": os, "architecture": architecture},
        }

    index = {"manifests": [entry("amd64"), entry("arm64"), entry("unknown", "unknown")]}
    assert joining.index_platforms(json.dumps(index).encode()) == ["linux/amd64", "linux/arm64"]
    assert joining.index_platforms(b"not json") == []
