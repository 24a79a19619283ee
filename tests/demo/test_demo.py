"""`layercache demo` end to end: its story, its serve mode, Ctrl-C, and no Docker engine.

The story test runs the whole demo once (real builds on the docker tier, the monorepo
scene's included; about a minute and a half) and asserts what it claims from its JSON
summary, from the embedded AWS it keeps serving, and from `layercache report` run
against that.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from layercache.pruning.model import branch_slug
from layercache_dev.kit.github_events import LOCAL_WEBHOOK_SECRET
from layercache_dev.kit.monorepo import BAKE_FILE_NAME, IMAGES, STEPS_PER_IMAGE
from layercache_dev.kit.paths import ROOT
from layercache_dev.kit.prerequisites import docker_binary

from .conftest import Demos, free_port

STORY_TIMEOUT = 480  # seconds; the demo takes about a minute and a half on 2 cores
KEEP_REASONS = {"protected-tag", "current-cache", "newest-of-branch", "child-of-kept-index"}
DELETE_REASONS = {
    "superseded-cache",
    "older-build-of-branch",
    "untagged",
    "child-of-deleted-index",
}


def reason(entry: dict[str, Any]) -> str:
    return str(entry["why"][0]).split(":", 1)[0]


def aws_client(service: str, port: int) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service, endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1"
    )


@pytest.mark.docker
@pytest.mark.usefixtures("docker_tier")
def test_the_demo_plays_its_story_then_serves(demos: Demos, tmp_path: Path) -> None:
    port = free_port()
    summary_path = tmp_path / "summary.json"
    demo = demos.start(
        ["--json", str(summary_path), "--serve", "--host", "127.0.0.1", "--port", str(port)]
    )
    demo.wait_for("(serving)", STORY_TIMEOUT)
    summary = json.loads(summary_path.read_text())

    # The webhook answers every signed push 202 at once and hands it on; the starter,
    # fed by BuildRequestQueue, started exactly one build for each push that should
    # build: none for the redelivery, the older of the two reordered pushes or the
    # forged delivery (which never reached the queue).
    deliveries = {d["name"]: (d["status"], d["builds_started"]) for d in summary["deliveries"]}
    assert deliveries == {
        "push-main": (202, 1),
        "redelivery": (202, 0),
        "push-unchanged": (202, 1),
        "push-halfway": (202, 1),
        "push-new-branch": (202, 1),
        "reordered-newer": (202, 1),
        "reordered-older": (202, 0),
        "bad-signature": (401, 0),
    }
    actions = {d["name"]: d["action"] for d in summary["deliveries"]}
    assert actions["redelivery"] == "duplicate"
    assert actions["reordered-older"] == "stale"
    assert actions["bad-signature"] is None
    assert summary["nightly"]["builds"] == 2
    assert [r["action"] for r in summary["nightly"]["requests"]] == ["started", "started"]

    builds = {b["story"]: b for b in summary["builds"]}
    assert list(builds) == [
        "cold",
        "unchanged",
        "halfway",
        "new-branch",
        "reordered-newer",
        "nightly-feature/login",
        "nightly-main",
    ]
    assert all(b["status"] == "SUCCEEDED" for b in builds.values())
    assert [b["number"] for b in summary["builds"]] == [1, 2, 3, 4, 5, 6, 7]
    assert builds["cold"]["cache_hit_ratio"] == 0.0
    assert builds["cold"]["cache_status"] == "cold"
    assert builds["unchanged"]["cache_hit_ratio"] == 1.0
    assert 0.0 < builds["halfway"]["cache_hit_ratio"] < 1.0
    assert builds["new-branch"]["cache_hit_ratio"] > 0.0
    assert builds["new-branch"]["cache_ref_hit"].endswith(":cache-main")  # main's cache
    for night in ("nightly-feature/login", "nightly-main"):
        assert (builds[night]["trigger"], builds[night]["mode"]) == ("nightly", "refresh")
        assert 0.0 < builds[night]["cache_hit_ratio"] < 1.0  # earlier layers stay cached
    # How much faster the unchanged rebuild is: reported, and measured by the timing tier.
    assert summary["warm_over_cold"] == pytest.approx(
        builds["unchanged"]["seconds"] / builds["cold"]["seconds"], abs=0.001
    )

    # The builds push only their build tags, once; BuildRecorderFunction published the
    # moving ones (through ECR's BatchGetImage + PutImage, onto the local registry).
    for build in builds.values():
        sha7 = build["commit"][:7]
        slug = branch_slug(build["branch"])
        if build["mode"] == "refresh":  # a commit built before keeps its tags on that image
            assert not build["image_tags"]
        else:
            assert build["image_tags"] == [build["commit"], f"{slug}-{sha7}"]
        moving = [slug, "latest"] if build["branch"] == "main" else [slug]
        assert build["moving_tags"] == moving
        assert build["tags_published"] == moving

    # Two pushes delivered in reverse order: the newer commit's delivery first. Its
    # build is the one published; the older request was stale and built nothing.
    scene = summary["reordered"]
    newer, older = scene["newer"], scene["older"]
    assert scene["pushed"] == [older["commit"], newer["commit"]]
    assert scene["delivered"] == [newer["commit"], older["commit"]]
    assert (newer["action"], newer["built"]) == ("started", True)
    assert newer["build_number"] == builds["reordered-newer"]["number"]
    assert newer["image_digest"] == builds["reordered-newer"]["image_digest"]
    assert newer["tags_published"] == ["main", "latest"]
    assert scene["registry"] == {"main": newer["image_digest"], "latest": newer["image_digest"]}
    assert scene["newer_published"] is True
    assert older["action"] == "stale"
    assert "older than" in older["reason"]
    assert older["built"] is False
    assert older["tags_published"] == []
    assert not any(b["commit"] == older["commit"] for b in summary["builds"])
    assert scene["older_published"] is False
    head = scene["branch_head"]
    assert head["commit"] == head["published_commit"] == newer["commit"]
    assert head["published_digest"] == newer["image_digest"]
    assert older["commit"] in head["older"]
    # The closing lines say so too, as printed and in the summary.
    assert summary["closing"] in demo.output
    assert (
        f"Out of order: {newer['commit'][:7]} delivered before its parent "
        f"{older['commit'][:7]}; {older['commit'][:7]} stale, not built; main and latest on "
        f"{newer['commit'][:7]}'s image."
    ) in summary["closing"].splitlines()

    # The recorder wrote one record per build, with what the build really reported.
    records = {r["build_id"]: r for r in summary["records"]}
    assert set(records) == {b["build_id"] for b in builds.values()}
    for build in builds.values():
        record = records[build["build_id"]]
        assert record["status"] == "SUCCEEDED"
        assert record["cache_hit_ratio"] == pytest.approx(build["cache_hit_ratio"], abs=0.001)
        assert (record["trigger"], record["mode"]) == (build["trigger"], build["mode"])
        assert record["duration_seconds"] is not None

    # The pruner kept each branch's newest build (with its children) and current cache,
    # and deleted the rest; ECR and the registry hold exactly what it kept.
    pruning = summary["pruning"]
    kept, deleted = pruning["kept"], pruning["deleted"]
    assert {reason(entry) for entry in kept} <= KEEP_REASONS  # no age rule kept anything
    assert {reason(entry) for entry in deleted} <= DELETE_REASONS
    kept_tags = {tag for entry in kept for tag in entry["tags"]}
    login = branch_slug("feature/login")
    assert {"latest", "main", "cache-main", login, f"cache-{login}"} <= kept_tags
    branch_heads = [e for e in kept if {"main", login} & set(e["tags"])]
    assert len(branch_heads) == 2
    # The moving tags the pruner saw are the recorder's last publications: the refreshes.
    heads = {tag: e["digest"] for e in branch_heads for tag in e["tags"]}
    assert heads["main"] == heads["latest"] == builds["nightly-main"]["image_digest"]
    assert heads[login] == builds["nightly-feature/login"]["image_digest"]
    assert sum(1 for e in kept if reason(e) == "child-of-kept-index") == 4
    older_builds = [builds[story]["commit"][:7] for story in ("cold", "unchanged", "halfway")]
    deleted_tags = {tag for entry in deleted for tag in entry["tags"]}
    assert {f"main-{sha7}" for sha7 in older_builds} <= deleted_tags
    assert any(reason(e) == "superseded-cache" for e in deleted)
    kept_digests = {entry["digest"] for entry in kept}
    assert pruning["dry_run"]["dry_run"] is True
    assert pruning["dry_run"]["planned_deletions"] == len(deleted)
    assert pruning["run"]["deleted"] == len(deleted)
    assert set(pruning["ecr_remaining"]) == kept_digests
    assert pruning["registry_deleted"] == len(deleted)
    assert set(pruning["registry_remaining"]) == kept_digests

    # The report table, printed by the demo and in the summary.
    assert "Recent builds (7 of 7" in summary["report"]
    assert "layercache report" in demo.output
    assert re.search(r"main\s+5\s+100% \(5/5\)", summary["report"])
    assert re.search(r"feature/login\s+2\s+100% \(2/2\)", summary["report"])

    assert_the_monorepo_scene(summary, demo.output)

    # --serve: the resources and records are there for sam local invoke and the report.
    assert aws_client("dynamodb", port).describe_table(TableName="layercache-builds")
    secret = aws_client("secretsmanager", port).get_secret_value(
        SecretId="layercache/webhook-secret"
    )
    assert secret["SecretString"] == LOCAL_WEBHOOK_SECRET
    assert aws_client("codebuild", port).batch_get_projects(names=["layercache-image-build"])[
        "projects"
    ]
    assert aws_client("ecr", port).describe_repositories(repositoryNames=["layercache/demo"])
    assert aws_client("sns", port).list_topics()["Topics"]
    queue = aws_client("sqs", port).get_queue_url(QueueName="layercache-build-requests.fifo")
    assert queue["QueueUrl"]
    table = subprocess.run(
        [sys.executable, "-m", "layercache_cli", "report", "--table", "layercache-builds"],
        env={**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"},
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert "Recent builds (7 of 7" in table
    assert re.search(r"github\s+normal\s+SUCCEEDED\s+\d+s\s+100%", table)  # unchanged
    assert re.search(r"github\s+normal\s+SUCCEEDED\s+\d+s\s+0%", table)  # cold

    # Ctrl-C ends serving cleanly.
    demo.ctrl_c()
    assert demo.wait(timeout=60) == 0, demo.all_output()
    assert "Stopped serving." in demo.output
    assert demo.leftover_processes() == []
    assert demo.leftover_files() == []


def assert_the_monorepo_scene(summary: dict[str, Any], output: str) -> None:
    """The second stack (BakeFile=docker-bake.hcl): three pushes, each building every image
    of the sample monorepo into its own repository; only what changed rebuilt."""
    scene = summary["monorepo"]
    prefix = scene["stack"]["repository"]
    assert scene["stack"]["bake_file"] == BAKE_FILE_NAME
    deliveries = {d["name"]: (d["status"], d["builds_started"]) for d in scene["deliveries"]}
    assert deliveries == {"mono-cold": (202, 1), "mono-tool": (202, 1), "mono-base": (202, 1)}
    builds = {b["story"]: b for b in scene["builds"]}
    assert list(builds) == ["cold", "tool-changed", "base-changed"]
    assert [b["number"] for b in builds.values()] == [1, 2, 3]  # the second project's own
    # ECR's CREATE_ON_PUSH: each image's repository appeared with its first push.
    assert sorted(scene["repositories_created_on_push"]) == sorted(
        f"{prefix}/{image}" for image in IMAGES
    )

    def cached(story: str) -> dict[str, tuple[int, int, bool]]:
        return {
            i["image"]: (i["cached_steps"], i["total_steps"], i["cache_hit"])
            for i in builds[story]["images"]
        }

    steps = STEPS_PER_IMAGE
    assert cached("cold") == dict.fromkeys(IMAGES, (0, steps, False))
    # Only tool's source changed: tool's copy step reran; the others are 100% cached.
    assert cached("tool-changed") == {
        "base": (steps, steps, True),
        "api": (steps, steps, True),
        "worker": (steps, steps, True),
        "tool": (steps - 1, steps, False),
    }
    # Base's source changed: base's copy step reran, and every step of the images built on it.
    assert cached("base-changed") == {
        "base": (steps - 1, steps, False),
        "api": (0, steps, False),
        "worker": (0, steps, False),
        "tool": (steps, steps, True),
    }
    for build in builds.values():
        assert build["status"] == "SUCCEEDED"
        assert build["tags_published"] == ["main", "latest"]
        images = {i["image"]: i for i in build["images"]}
        assert build["images"][0]["image"] == "base"  # before what is built on it
        assert images["api"]["built_on"] == images["worker"]["built_on"] == ["base"]
        for image, result in images.items():
            assert result["repository"] == f"{prefix}/{image}"
            # BuildRecorderFunction moved main and latest in each image's repository to
            # this build's image (read from the registry right after the build).
            assert build["moving_tags_in_registry"][image] == {
                "main": result["digest"],
                "latest": result["digest"],
            }
    # The commit status the recorder posts for a Bake file's build names the images.
    assert builds["cold"]["commit_status"].endswith("4 images, 0 cached")
    assert builds["tool-changed"]["commit_status"].endswith("4 images, 3 cached")
    assert builds["base-changed"]["commit_status"].endswith("4 images, 1 cached")
    # The pruner covered every image repository the recorder remembered.
    pruning = scene["pruning"]
    assert sorted(pruning["remembered"]) == sorted(f"{prefix}/{image}" for image in IMAGES)
    pruned = {r["repository"]: r for r in pruning["dry_run"]}
    assert set(pruning["remembered"]) <= set(pruned)
    for name in pruning["remembered"]:
        assert pruned[name]["dry_run"] is True
        assert "error" not in pruned[name]
        assert pruned[name]["kept"] > 0
        assert pruned[name]["planned_deletions"] > 0  # the two older builds, superseded caches
    # Its own report, printed after the first stack's.
    assert "Recent builds (3 of 3" in scene["report"]
    assert f"layercache report --table {scene['stack']['table']}" in output
    assert "Monorepo tool-changed:" in summary["closing"]
    assert "rebuilt tool; cache hits base, api, worker." in summary["closing"]


@pytest.mark.docker
@pytest.mark.timing
@pytest.mark.usefixtures("docker_tier")
def test_the_unchanged_rebuild_is_faster_than_the_cold_build(demos: Demos, tmp_path: Path) -> None:
    """Within one run: the unchanged rebuild has no step to run, the cold one sleeps ~5 s.
    A generous bound, since other builds may share the machine."""
    summary_path = tmp_path / "summary.json"
    demo = demos.start(["--json", str(summary_path)])
    assert demo.wait(timeout=STORY_TIMEOUT) == 0, demo.all_output()
    summary = json.loads(summary_path.read_text())

    builds = {b["story"]: b for b in summary["builds"]}
    assert builds["unchanged"]["cache_hit_ratio"] == 1.0
    assert builds["unchanged"]["seconds"] < 0.75 * builds["cold"]["seconds"]
    assert summary["warm_over_cold"] < 0.75


@pytest.mark.docker
@pytest.mark.usefixtures("docker_tier")
def test_ctrl_c_mid_build_stops_everything(demos: Demos) -> None:
    demo = demos.start([])
    builder = demo.wait_for("builder lc-rig-", 120).rsplit("builder ", 1)[1].split()[0]
    demo.wait_for("(the first build): 202", 60)
    # Interrupt the first (cold) build while the buildspec runs: the bash that runs it, in
    # this demo's rig, is up.
    demo.wait_for_command(120, b"bash\0", str(demo.tmpdir).encode(), b"/buildspec.sh")
    demo.ctrl_c()
    assert demo.wait(timeout=90) == 130, demo.all_output()
    assert "interrupted" in demo.output
    assert "Interrupted: everything the demo started is stopped." in demo.output
    assert demo.leftover_processes() == []
    assert demo.leftover_files() == []
    builders = subprocess.run(
        [docker_binary(), "buildx", "ls"], capture_output=True, text=True, check=False
    ).stdout
    assert builder not in builders


def test_without_a_docker_engine_it_says_so_and_builds_nothing(
    demos: Demos, tmp_path: Path
) -> None:
    demo = demos.start([], env={"LAYERCACHE_DOCKER": str(tmp_path / "no-docker")})
    assert demo.wait(timeout=120) == 3
    stderr = demo.stderr().strip().splitlines()
    assert len(stderr) == 1, stderr
    assert "no Docker engine here" in stderr[0]
    assert "sudo .ci/setup-docker" in stderr[0]
    assert "buildx 0.12+" in stderr[0]
    assert demo.output == ""
    assert demo.leftover_files() == []
