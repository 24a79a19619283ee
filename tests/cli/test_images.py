"""Several images from one repository (a Bake file): what `report`, `builds`, `show` and
`status` tell of each image, run as users run them against the moto server. The records
hold the `images` list as the recorder's own code writes it."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from layercache.recording.build import ImageOutput
from tests.integration.recording.conftest import sample
from tests.integration.recording.test_report_browser import CHROMIUM, chromium

from .conftest import (
    IMAGE,
    PROJECT,
    SEEDED,
    MotoServer,
    ServedStack,
    assert_one_line_error,
    build_item,
    seed,
)
from .test_builds import SUCCEEDED_ID, record

REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
TARGETS = ("base", "api", "worker")
# Per build: each target's (cached steps, total steps, build seconds, push seconds).
STEPS = {"base": 3, "api": 4, "worker": 2}


def digest(number: int, target: str) -> str:
    return "sha256:" + f"{number:02d}{TARGETS.index(target)}".ljust(64, "a")


def image_entry(number: int, target: str, cached: int, build: str, push: str) -> dict[str, Any]:
    """One image's entry of a build item's `images`, as the recorder makes it."""
    total = STEPS[target]
    return ImageOutput(
        image=target,
        repository=f"{IMAGE}/{target}",
        digest=digest(number, target),
        tags=(f"{number:02d}c0ffee", f"main-{number:02d}c0ffe"),
        built_on=() if target == "base" else ("base",),
        cache_hit_ratio=Decimal(cached) / Decimal(total),
        cached_steps=cached,
        total_steps=total,
        cache_ref_hit="cache-main" if cached else "none",
        build_seconds=Decimal(build),
        push_seconds=Decimal(push),
        cache_status="warm" if cached else "cold",
    ).as_item()


def bake_item(
    number: int, branch: str, hours_ago: float, cached: dict[str, int], seconds: int
) -> dict[str, Any]:
    """A Bake file's succeeded build: totals at the build level, one entry per image."""
    steps = sum(cached.values()), sum(STEPS.values())
    item = build_item(number, branch, "SUCCEEDED", hours_ago, seconds, f"{steps[0] / steps[1]:.3f}")
    item["images"] = [
        image_entry(number, target, cached[target], f"{10 * (1 + index)}.5", "2")
        if cached[target] < STEPS[target]
        else image_entry(number, target, cached[target], "0.5", "0.5")
        for index, target in enumerate(TARGETS)
    ]
    return item


BAKED = [
    # main: a cold build, then api changed, then nothing changed; a failure without images
    bake_item(1, "main", 30, {"base": 0, "api": 0, "worker": 0}, 300),
    bake_item(2, "main", 20, {"base": 3, "api": 2, "worker": 2}, 60),
    bake_item(3, "main", 10, {"base": 3, "api": 4, "worker": 2}, 20),
    build_item(4, "main", "FAILED", 2, 40),
    # a feature branch, warm from main's caches, that changed the worker
    bake_item(5, "feature/x", 5, {"base": 3, "api": 4, "worker": 1}, 45),
]


@pytest.fixture
def baked_stack(moto_server: MotoServer, stack: ServedStack) -> ServedStack:
    seed(moto_server, stack.table_name, BAKED)
    return stack


def section(out: str, title: str) -> str:
    return ("\n" + out).split(f"\n{title}\n", 1)[1].split("\n\n", 1)[0]


# ------------------------------------------------------------------ report
def test_report_has_a_row_per_image(baked_stack: ServedStack, layercache: Any) -> None:
    result = layercache("report", "--stack", baked_stack.name)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    recent = section(out, "Recent builds (5 of 5 in the last 14 days)")
    assert recent.splitlines()[0].split()[-3:] == ["HITS", "IMAGES", "BUILD"]
    assert re.search(r"feature/x\s+05c0ffee .* SUCCEEDED\s+45s\s+89%\s+3 images, 2 cached", recent)
    assert re.search(r"main\s+04c0ffee .* FAILED \(BUILD\)\s+40s\s+-\s+-\s+#4$", recent, re.M)
    assert re.search(r"main\s+01c0ffee .* 0%\s+3 images, 0 cached\s+#1$", recent, re.M)
    images = section(out, "Per image").splitlines()
    assert images[0].split() == [
        "IMAGE", "REPOSITORY", "BUILDS", "ALL", "CACHED", "CACHE", "HITS", "MEDIAN",
        "BUILD", "MEDIAN", "LAST", "DIGEST", "LAST", "CACHE",
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in images[2:]}
    assert list(rows) == ["api", "base", "worker"]  # by repository
    # api: 0/4, 2/4, 4/4 on main and 4/4 on feature/x; built 20.5 s twice, then cached.
    assert rows["api"] == [
        "api", f"{IMAGE}/api", "4", "2/4", "75%", "10s", "sha256:051aaaaaaaaa", "warm",
    ]  # fmt: skip
    assert rows["base"][2:6] == ["4", "3/4", "100%", "0s"]
    assert rows["worker"][2:6] == ["4", "2/4", "75%", "16s"]
    assert "ALL CACHED: builds in which every step of the image came from the cache" in out


def test_report_over_single_image_builds_has_no_image_parts(
    seeded_stack: ServedStack, layercache: Any, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"

    result = layercache("report", "--stack", seeded_stack.name, "--html", str(page))
    document = json.loads(layercache("report", "--stack", seeded_stack.name, "--json").stdout)

    assert result.returncode == 0, result.stderr
    assert "IMAGES" not in result.stdout
    assert "Per image" not in result.stdout
    assert "images" not in document
    assert all("images" not in build for build in document["builds"])
    text = page.read_text()
    assert text.count("<svg ") == 1
    assert "Per image" not in text
    assert "<th>IMAGES</th>" not in text


def test_report_of_one_image(baked_stack: ServedStack, layercache: Any) -> None:
    by_target = layercache("report", "--stack", baked_stack.name, "--image", "api")
    by_repository = layercache("report", "--stack", baked_stack.name, "--image", f"{IMAGE}/api")

    assert by_target.returncode == by_repository.returncode == 0, by_target.stderr
    out = by_target.stdout
    assert by_repository.stdout.replace(f"mage {IMAGE}/api", "mage api") == out
    # The failed build recorded no image: left out. Each build's own time for api (build
    # and push), its cache hits.
    recent = section(out, "Recent builds of image api (4 of 4 in the last 14 days)")
    assert len(recent.splitlines()) == 2 + 4
    assert recent.splitlines()[0].split()[-3:] == ["CACHE", "HITS", "BUILD"]  # no IMAGES
    assert re.search(rf"{IMAGE}/api\s+main\s+01c0ffee .* SUCCEEDED\s+22s\s+0%\s+", recent)
    assert re.search(rf"{IMAGE}/api\s+main\s+02c0ffee .* SUCCEEDED\s+22s\s+50%\s+", recent)
    assert re.search(rf"{IMAGE}/api\s+main\s+03c0ffee .* SUCCEEDED\s+1s\s+100%\s+", recent)
    branches = section(out, "Per branch")
    assert re.search(rf"^{IMAGE}/api\s+main\s+3\s+100% \(3/3\)\s+22s \(n=1\)", branches, re.M)
    assert [line.split()[0] for line in section(out, "Per image").splitlines()[2:]] == ["api"]
    assert "Image api only: each build's duration is the image's own build and push time" in out


def test_report_of_an_image_no_build_has(baked_stack: ServedStack, layercache: Any) -> None:
    result = layercache("report", "--stack", baked_stack.name, "--image", "docs")

    assert_one_line_error(
        result,
        "layercache report: no build of image 'docs' in the last 14 days "
        "(images: api, base, worker)",
    )


def test_report_json_has_each_builds_images_and_the_per_image_figures(
    baked_stack: ServedStack, layercache: Any
) -> None:
    everything = json.loads(layercache("report", "--stack", baked_stack.name, "--json").stdout)
    result = layercache("report", "--stack", baked_stack.name, "--json", "--image", "worker")

    assert result.returncode == 0, result.stderr
    builds = {build["build_number"]: build for build in everything["builds"]}
    assert "images" not in builds[4]  # the failed build recorded none
    assert [image["image"] for image in builds[5]["images"]] == list(TARGETS)
    assert builds[5]["images"][2] == {
        "image": "worker",
        "repository": f"{IMAGE}/worker",
        "digest": digest(5, "worker"),
        "tags": ["05c0ffee", "main-05c0ffe"],
        "built_on": ["base"],
        "cache_hit_ratio": 0.5,
        "cached_steps": 1,
        "total_steps": 2,
        "cache_ref_hit": "cache-main",
        "build_seconds": 30.5,
        "push_seconds": 2.0,
        "cache_status": "warm",
    }
    assert [image["repository"] for image in everything["images"]] == [
        f"{IMAGE}/api",
        f"{IMAGE}/base",
        f"{IMAGE}/worker",
    ]
    assert everything["images"][0] == {
        "image": "api",
        "repository": f"{IMAGE}/api",
        "builds": 4,
        "fully_cached_builds": 2,
        "median_cache_hit_ratio": 0.75,
        "median_build_seconds": 10.5,
        "last_requested_at": builds[5]["requested_at"],
        "last_digest": digest(5, "api"),
        "last_cache_status": "warm",
    }
    assert "image" not in everything
    worker = json.loads(result.stdout)
    assert worker["image"] == "worker"
    assert [build["build_number"] for build in worker["builds"]] == [5, 3, 2, 1]
    assert [build["duration_seconds"] for build in worker["builds"]] == [32.5, 1.0, 1.0, 32.5]
    assert [image["image"] for image in worker["images"]] == ["worker"]


def test_html_page_has_a_chart_per_image(
    baked_stack: ServedStack, layercache: Any, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    one = tmp_path / "api.html"

    result = layercache("report", "--stack", baked_stack.name, "--html", str(page))
    of_api = layercache("report", "--stack", baked_stack.name, "--image", "api", "--html", str(one))

    assert result.returncode == of_api.returncode == 0, result.stderr + of_api.stderr
    text = page.read_text()
    ids = re.findall(r'<svg [^>]*id="([^"]+)"', text)
    assert ids == ["build-history", *(f"image-team-service-{t}" for t in ("api", "base", "worker"))]
    # Every element id once in the page; each image's chart has a point per build of it.
    element_ids = re.findall(r'\bid="([^"]+)"', text)
    assert len(element_ids) == len(set(element_ids))
    for target in TARGETS:
        points = re.findall(rf'<g id="image-team-service-{target}-duration-build-\d+">', text)
        assert len(points) == 4
    assert len(re.findall(r'<g id="duration-build-\d+">', text)) == 5  # every build
    assert "<title>feature/x 05c0ffee SUCCEEDED " in text
    assert "<h2>Per image</h2>" in text
    assert "<th>IMAGES</th>" in text
    assert "<script" not in text
    assert not re.search(r"""(src|href)=["']?https?:""", text)
    api = one.read_text()
    assert re.findall(r'<svg [^>]*id="([^"]+)"', api) == ["build-history", "image-team-service-api"]
    assert "builds of image api in the last 14 days" in api


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (see .ci/setup-browser)")
def test_chromium_builds_every_images_chart(
    baked_stack: ServedStack, layercache: Any, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    assert layercache("report", "--stack", baked_stack.name, "--html", str(page)).returncode == 0

    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile").stdout.decode()

    assert len(re.findall(r"<svg [^>]*class=\"chart\"", dom)) == 1 + len(TARGETS)
    for target in TARGETS:
        points = re.findall(
            rf'<g id="image-team-service-{target}-(?:duration|ratio)-build-\d+">\s*<title>', dom
        )
        assert len(points) == 2 * 4, target  # a duration and a ratio for each of 4 builds
        # Its glyphs are its own: every reference inside resolves within the same chart.
        chart = dom.split(f'id="image-team-service-{target}"', 1)[1].split("</svg>", 1)[0]
        for reference in re.findall(r'href="#([^"]+)"', chart):
            assert reference.startswith(f"image-team-service-{target}-"), reference
            assert f'id="{reference}"' in chart


# ------------------------------------------------------------------ builds, status
def test_builds_counts_the_images(baked_stack: ServedStack, layercache: Any) -> None:
    result = layercache("builds", "--stack", baked_stack.name)
    single = layercache("builds", "--stack", baked_stack.name, "--branch", "main", "--limit", "1")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[-4:] == ["HITS", "IMAGES", "BUILD", "ID"]
    assert re.search(rf"FAILED \(BUILD\)\s+40s\s+-\s+-\s+{PROJECT}:00000004-", lines[2])
    assert re.search(rf"89%\s+3 images, 2 cached\s+{PROJECT}:00000005-", lines[3])
    assert re.search(rf"100%\s+3 images, 3 cached\s+{PROJECT}:00000003-", lines[4])
    # A list without a Bake file's build has no IMAGES column.
    assert "IMAGES" not in single.stdout
    assert "FAILED" in single.stdout


def test_builds_of_one_image_build_have_no_images_column(
    seeded_stack: ServedStack, layercache: Any
) -> None:
    result = layercache("builds", "--stack", seeded_stack.name)

    assert result.returncode == 0, result.stderr
    assert "IMAGES" not in result.stdout
    assert "cached" not in result.stdout


def test_status_counts_the_images_of_each_branchs_last_build(
    baked_stack: ServedStack, layercache: Any
) -> None:
    result = layercache("status", "--stack", baked_stack.name)

    latest = section(result.stdout, "Last build per branch (branches built in the last 14 days)")
    assert latest.splitlines()[0].split()[-4:] == ["HITS", "IMAGES", "BUILD", "ID"]
    assert re.search(r"feature/x\s+05c0ffee .* 3 images, 2 cached\s+\S+:00000005-", latest)
    assert re.search(r"main\s+04c0ffee .* FAILED \(BUILD\)\s+40s\s+-\s+-\s+\S+:00000004-", latest)


# ------------------------------------------------------------------ show
def driver_entry(target: str, cached: int) -> dict[str, Any]:
    """One image's result as the build driver exports it in LAYERCACHE_IMAGES."""
    total = STEPS[target]
    return {
        "image": target,
        "repository": f"{REGISTRY}/{IMAGE}/{target}",
        "digest": digest(42, target),
        "tags": ["9fceb02d0ae598e95dc970b74767f19372d61af8", "main-9fceb02"],
        "moving_tags": ["main", "latest"],
        "built_on": [] if target == "base" else ["base"],
        "cache_hit_ratio": round(cached / total, 3),
        "cached_steps": cached,
        "total_steps": total,
        "cache_ref_hit": f"{REGISTRY}/{IMAGE}/{target}:cache-main" if cached else "none",
        "build_seconds": 0.4 if cached == total else 41.5,
        "push_seconds": 0.3 if cached == total else 3.2,
        "cache_export_seconds": 0.1,
        "cache_status": "warm" if cached else "cold",
    }


BAKE_EXPORTS = {
    "LAYERCACHE_IMAGE_DIGEST": "",
    "LAYERCACHE_IMAGE_TAGS": "",
    "LAYERCACHE_MOVING_TAGS": "main,latest",
    "LAYERCACHE_CACHE_HIT_RATIO": "0.667",
    "LAYERCACHE_CACHE_REF_HIT": f"{REGISTRY}/{IMAGE}/base:cache-main",
    "LAYERCACHE_BUILD_SECONDS": "42.3",
    "LAYERCACHE_PUSH_SECONDS": "3.8",
    "LAYERCACHE_IMAGES": json.dumps(
        [driver_entry("base", 3), driver_entry("api", 1), driver_entry("worker", 0)]
    ),
}


@pytest.fixture
def baked_record(
    moto_server: MotoServer, stack: ServedStack, monkeypatch: pytest.MonkeyPatch
) -> ServedStack:
    """A Bake file's build as the starter and the recorder record it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    record(stack.table_name, sample("succeeded"), BAKE_EXPORTS)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    return stack


def test_show_has_a_table_of_the_images(baked_record: ServedStack, layercache: Any) -> None:
    result = layercache("show", SUCCEEDED_ID, "--stack", baked_record.name)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^Images\s+3 images, 1 cached$", out, re.M)
    assert re.search(r"^Cache hits\s+67% \(from \S+/base:cache-main\)$", out, re.M)
    table = section(out, "Images").splitlines()
    assert table[0].split() == [
        "IMAGE", "DIGEST", "TAGS", "CACHED", "STEPS", "CACHE", "HITS", "BUILD", "PUSH",
        "CACHE", "BUILT", "ON",
    ]  # fmt: skip
    rows = [re.split(r"\s{2,}", line.strip()) for line in table[2:]]
    tags = "9fceb02d0ae598e95dc970b74767f19372d61af8, main-9fceb02"
    assert rows == [
        ["base", "sha256:420aaaaaaaaa", tags, "3/3", "100%", "0s", "0s", "warm", "-"],
        ["api", "sha256:421aaaaaaaaa", tags, "1/4", "25%", "42s", "3s", "warm", "base"],
        ["worker", "sha256:422aaaaaaaaa", tags, "0/2", "0%", "42s", "3s", "cold", "base"],
    ]
    assert "Phases" in out.split("\nImages\n", 1)[1]


def test_show_json_carries_the_images(baked_record: ServedStack, layercache: Any) -> None:
    result = layercache("show", SUCCEEDED_ID, "--stack", baked_record.name, "--json")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["build_id"], document["build_number"]) == (SUCCEEDED_ID, 42)
    assert document["cache_hit_ratio"] == 0.667
    assert "report_token" not in document
    assert [image["image"] for image in document["images"]] == list(TARGETS)
    assert document["images"][1] == {
        "image": "api",
        "repository": f"{IMAGE}/api",
        "digest": digest(42, "api"),
        "tags": ["9fceb02d0ae598e95dc970b74767f19372d61af8", "main-9fceb02"],
        "built_on": ["base"],
        "cache_hit_ratio": 0.25,
        "cached_steps": 1,
        "total_steps": 4,
        "cache_ref_hit": f"{REGISTRY}/{IMAGE}/api:cache-main",
        "build_seconds": 41.5,
        "push_seconds": 3.2,
        "cache_status": "warm",
    }


def test_show_of_a_single_image_build_is_as_before(
    seeded_stack: ServedStack, layercache: Any
) -> None:
    build_id = SEEDED[5]["build_id"]

    shown = layercache("show", build_id, "--stack", seeded_stack.name)
    as_json = layercache("show", build_id, "--stack", seeded_stack.name, "--json")

    assert shown.returncode == as_json.returncode == 0, shown.stderr + as_json.stderr
    document = json.loads(as_json.stdout)
    assert "Images" not in shown.stdout
    assert "images" not in document
    assert document["cache_hit_ratio"] == 0.8
    assert document["duration_seconds"] == 75
