"""A batch's builds' exports merged into one build's (recording/batch.py)."""

from __future__ import annotations

import json
from typing import Any

from layercache.recording.batch import merged_exports
from layercache.recording.build import parse_outputs

INDEX = "sha256:" + "1" * 64
AMD = "sha256:" + "a" * 64
ARM = "sha256:" + "b" * 64


def platform_build(platform: str, digest: str, cached: int, total: int) -> dict[str, str]:
    entry: dict[str, Any] = {
        "image": "api",
        "repository": "r.example/team/app/api",
        "digest": digest,
        "tags": [],
        "cached_steps": cached,
        "total_steps": total,
        "build_seconds": 2.0,
        "cache_ref_hit": "none" if not cached else f"r/c:cache-main-{platform[6:]}",
        "cache_status": "warm" if cached else "cold",
    }
    return {
        "LAYERCACHE_IMAGE_DIGEST": digest,
        "LAYERCACHE_IMAGE_TAGS": "",
        "LAYERCACHE_MOVING_TAGS": "",
        "LAYERCACHE_CACHED_STEPS": str(cached),
        "LAYERCACHE_TOTAL_STEPS": str(total),
        "LAYERCACHE_BUILD_SECONDS": "2.0",
        "LAYERCACHE_CACHE_STATUS": "warm" if cached else "cold",
        "LAYERCACHE_PLATFORMS": platform,
        "LAYERCACHE_IMAGES": json.dumps([entry]),
    }


JOIN = {
    "LAYERCACHE_IMAGE_DIGEST": INDEX,
    "LAYERCACHE_IMAGE_TAGS": "c0ffee,main-c0ffee0",
    "LAYERCACHE_MOVING_TAGS": "main,latest",
    "LAYERCACHE_PLATFORMS": "linux/amd64,linux/arm64",
    "LAYERCACHE_IMAGES": json.dumps(
        [
            {
                "image": "api",
                "repository": "r.example/team/app/api",
                "digest": INDEX,
                "tags": ["c0ffee"],
                "moving_tags": ["main", "latest"],
            }
        ]
    ),
}


def test_the_join_names_the_image_and_the_platforms_the_counts() -> None:
    exported = merged_exports(
        [platform_build("linux/amd64", AMD, 4, 4), platform_build("linux/arm64", ARM, 1, 4)], JOIN
    )

    outputs = parse_outputs(exported)
    assert outputs.image_digest == INDEX
    assert outputs.image_tags == ("c0ffee", "main-c0ffee0")
    assert outputs.moving_tags == ("main", "latest")
    assert exported["LAYERCACHE_CACHED_STEPS"] == "5"
    assert exported["LAYERCACHE_TOTAL_STEPS"] == "8"
    assert exported["LAYERCACHE_CACHE_HIT_RATIO"] == "0.625"
    assert exported["LAYERCACHE_PLATFORMS"] == "linux/amd64,linux/arm64"
    [api] = outputs.images
    assert api.digest == INDEX
    assert (api.cached_steps, api.total_steps) == (5, 8)
    assert api.cache_ref_hit == "r/c:cache-main-amd64"


def test_without_a_join_no_platform_image_is_ever_the_builds() -> None:
    """A platform's manifest is never published as the image: only the join names one."""
    exported = merged_exports([platform_build("linux/amd64", AMD, 4, 4)])
    assert exported["LAYERCACHE_IMAGE_DIGEST"] == ""
    assert exported["LAYERCACHE_MOVING_TAGS"] == ""


def test_image_fan_out_builds_concatenate_their_images() -> None:
    a = platform_build("", AMD, 2, 2)
    b = json.loads(platform_build("", ARM, 0, 3)["LAYERCACHE_IMAGES"])
    b[0]["image"], b[0]["repository"] = "worker", "r.example/team/app/worker"
    exported = merged_exports(
        [a, {**platform_build("", ARM, 0, 3), "LAYERCACHE_IMAGES": json.dumps(b)}]
    )
    assert [image.image for image in parse_outputs(exported).images] == ["api", "worker"]
    assert exported["LAYERCACHE_CACHE_STATUS"] == "warm"
