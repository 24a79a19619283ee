"""The demo's monorepo scene: a second stack whose Bake file declares several images.

`layercache-dev demo` plays it after the first stack's story (demo.command imports this
module when it does, so this module builds on it).

A stack deployed with `BakeFile=docker-bake.hcl` beside the first one, in the same
embedded AWS, with names of its own and a source repository of its own holding the
sample monorepo (layercache_dev.kit.monorepo: `base`, `api` and `worker` built on it,
`tool` on its own). Its pushes take the same real path as the first stack's: a signed
GitHub push -> its GitHubWebhookFunction -> its BuildRequestQueue -> its
BuildStarterFunction -> the local CodeBuild, which runs the buildspec with the project's
environment (carrying `LAYERCACHE_BAKE_FILE`): the driver builds every image into its own
repository `layercache/monorepo/<target>` -> its BuildRecorderFunction, which records one
result per image and moves `main` and `latest` in each image's repository.

ECR creates those repositories on their first push (template.yaml's
`ImageRepositoriesTemplate`, CREATE_ON_PUSH); moto does not, so `ecr.CreateOnPush` does,
after each build and before the recorder hears of it.

Three pushes: the first (cold: every image built), one that changes only `tool`'s source
(only `tool` rebuilds; the others are fully cached), one that changes `base`'s (`base`,
`api` and `worker` rebuild; `tool` is cached). Then ImagePrunerFunction, dry run, over
the image repositories the recorder remembered.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from layercache.build_records import BuildsTable, BuildStatus, build_pk
from layercache.recording.github import commit_status_for
from layercache_cli.history import WARM_THRESHOLD, fetch_builds
from layercache_cli.report import report_text
from layercache_dev.demo.codebuild import SourceRepository
from layercache_dev.demo.command import (
    BACKDATE,
    PRUNE_POLICY,
    Demo,
    DemoError,
    LocalFunctions,
)
from layercache_dev.demo.ecr import (
    CreateOnPush,
    mirror_registry,
    registry_backed_images,
    registry_manifests,
)
from layercache_dev.kit.embedded_aws import REGION, StackNames
from layercache_dev.kit.monorepo import (
    BAKE_FILE_NAME,
    BUILT_ON_BASE,
    IMAGES,
    monorepo_files,
    source_path,
)
from layercache_dev.kit.paths import EVENTS
from layercache_dev.kit.sqs_source import FifoEventSource

NAMES = StackNames(
    table="layercache-monorepo-builds",
    project="layercache-monorepo-image-build",
    repository="layercache/monorepo",
    secret="layercache/monorepo-webhook-secret",  # noqa: S106 - a name, not a secret
    topic="layercache-monorepo-build-notifications",
    queue="layercache-monorepo-build-requests.fifo",
)
SOURCE_REPOSITORY = "octo-org/platform"
BRANCH = "main"
MOVING_TAGS = ("main", "latest")


class MonorepoScene:
    """The scene's stack and what happened in it (`summary`, the JSON summary's `monorepo`)."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self.summary: dict[str, Any] = {}

    def play(self, workdir: Path, cleanup: contextlib.ExitStack) -> None:
        main = self.demo
        progress, aws, rig = main.progress, main.aws, main.rig
        progress.line()
        progress.line(
            f"A monorepo: a second stack, BakeFile={BAKE_FILE_NAME}, source {SOURCE_REPOSITORY}"
            f" ({', '.join(IMAGES)}; {' and '.join(BUILT_ON_BASE)} built on base)"
        )
        with progress.step("deploy the second stack's resources") as step:
            stack = aws.deploy(
                {
                    "SourceRepository": SOURCE_REPOSITORY,
                    "WatchedBranches": [BRANCH],
                    "BakeFile": BAKE_FILE_NAME,
                    **PRUNE_POLICY,
                },
                build_repository_uri=rig.repository(NAMES.repository),
                names=NAMES,
            )
            release = registry_backed_images(
                rig.registry, stack.repository_name, prefix=stack.repository_name
            )
            cleanup.callback(release)
            self.create_on_push = CreateOnPush(rig.registry, aws.client("ecr"), NAMES.repository)
            main.codebuild.pushed = self.create_on_push
            cleanup.callback(setattr, main.codebuild, "pushed", None)
            step.result = (
                f"table {stack.table_name}, queue {stack.names.queue}, project "
                f"{stack.project_name}; images into {stack.repository_name}/<target>, each "
                "created in the embedded ECR on its first push (CREATE_ON_PUSH)"
            )
        functions = LocalFunctions(
            stack, workdir / "logs" / "monorepo-functions.log", last_env=main.functions.last_env
        )
        cleanup.callback(functions.close)
        source = SourceRepository()
        main.codebuild.use_source(stack.project_name, source)
        recorded: list[dict[str, Any]] = []
        main.recorders[stack.project_name] = lambda event: recorded.append(
            functions.invoke("BuildRecorderFunction", event)
        )
        starter = FifoEventSource(
            aws.client("sqs"),
            stack.queue_url,
            functions.handler("BuildStarterFunction"),
            region=REGION,
        )
        self.scene = Demo(
            progress,
            aws,
            stack,
            rig,
            functions,
            main.codebuild,
            source,
            starter,
            release,
            recorded=recorded,
            recorders=main.recorders,
        )
        self.scene.summary.update({"deliveries": [], "builds": []})
        self.push(
            "mono-cold", "push {short} to main (the first build: every image)", "cold",
            "Add the platform's images", monorepo_files(),
        )  # fmt: skip
        self.push(
            "mono-tool", "push {short} to main (only tool's source changes)", "tool-changed",
            "Tool v2", {source_path("tool"): "tool v2\n"},
        )  # fmt: skip
        self.push(
            "mono-base", "push {short} to main (base's source changes)", "base-changed",
            "Base v2", {source_path("base"): "base v2\n"},
        )  # fmt: skip
        self.summary.update(
            {
                "stack": {
                    "table": stack.table_name,
                    "project": stack.project_name,
                    "repository": stack.repository_name,
                    "bake_file": BAKE_FILE_NAME,
                    "source_repository": SOURCE_REPOSITORY,
                },
                "deliveries": self.scene.summary["deliveries"],
                "builds": self.scene.summary["builds"],
                "repositories_created_on_push": list(self.create_on_push.created),
            }
        )

    def push(
        self, name: str, label: str, story: str, message: str, changes: Mapping[str, str]
    ) -> None:
        """Commit and push to main; then what the recorder published and would post."""
        scene = self.scene
        commit, _ = scene.commit_and_push(name, label, story, BRANCH, message, changes)
        build = scene.summary["builds"][-1]
        if build["commit"] != commit.sha or "images" not in build:
            raise scene_error(f"{commit.short}: no build of its images ran")
        table = BuildsTable(scene.stack.table_name, scene.aws.client("dynamodb"))
        label = "  main and latest in each image's repository (moved by BuildRecorderFunction)"
        with scene.progress.step(label) as step:
            tags: dict[str, dict[str, str | None]] = {}
            for image in build["images"]:
                repository = image["repository"]
                tags[image["image"]] = {
                    tag: scene.rig.registry.digest(repository, tag) for tag in MOVING_TAGS
                }
            build["moving_tags_in_registry"] = tags
            on_build = [
                image["image"]
                for image in build["images"]
                if all(tags[image["image"]][t] == image["digest"] for t in MOVING_TAGS)
            ]
            record = table.get(build_pk(build["build_id"])) or {}
            status = commit_status_for(record, BuildStatus.SUCCEEDED)
            build["commit_status"] = status.description if status else None
            step.result = (
                f"{len(on_build)} of {len(build['images'])} repositories on build "
                f"#{build['number']}'s images; commit status (as the recorder posts it): "
                f"{build['commit_status']!r}"
            )
            step.details = [
                f"{scene.stack.repository_name}/{image['image']:<7} "
                + ", ".join(f"{t} -> {str(tags[image['image']][t])[7:19]}" for t in MOVING_TAGS)
                for image in build["images"]
            ]
            if len(on_build) != len(build["images"]):
                raise scene_error(f"moving tags not on build #{build['number']}'s images: {tags}")

    def prune(self) -> None:
        """ImagePrunerFunction over the image repositories, dry run (the first stack's
        scene shows real deletions)."""
        scene = self.scene
        ecr = scene.aws.client("ecr")
        scene.release_registry()
        table = BuildsTable(scene.stack.table_name, scene.aws.client("dynamodb"))
        repositories = table.image_repositories(scene.stack.repository_name)
        with scene.progress.step("mirror the image repositories into the embedded ECR") as step:
            mirrored = {
                name: mirror_registry(
                    registry_manifests(scene.rig.registry, name), ecr, name, BACKDATE
                )
                for name in repositories
            }
            step.result = ", ".join(f"{name} {count}" for name, count in mirrored.items())
        schedule = json.loads((EVENTS / "image-pruner/daily-schedule.json").read_text())
        with scene.progress.step(
            "ImagePrunerFunction, dry run, over the repositories the recorder remembered"
        ) as step:
            reports = scene.functions.invoke("ImagePrunerFunction", schedule, PRUNE_DRY_RUN="true")[
                "repositories"
            ]
            step.result = f"{len(reports)} repositories"
            step.details = [
                f"{r['repository']:<28} would keep {r['kept']}, delete {r['planned_deletions']}"
                + (f" ({r['error']})" if r.get("error") else "")
                for r in reports
            ]
            failed = [r for r in reports if r.get("error")]
            if failed:
                raise scene_error(f"the pruner failed on {[r['repository'] for r in failed]}")
        self.summary["pruning"] = {
            "remembered": repositories,
            "mirrored": mirrored,
            "dry_run": reports,
        }

    def report(self) -> str:
        """`layercache report` of the second stack's table."""
        table = BuildsTable(self.scene.stack.table_name, self.scene.aws.client("dynamodb"))
        text = report_text(fetch_builds(table, 2, datetime.now(UTC)), 2, 20, WARM_THRESHOLD)
        self.summary["report"] = text
        return text

    def closing(self) -> str:
        """One line per push: which images rebuilt and which were cache hits."""
        lines = []
        for build in self.summary["builds"]:
            images = build["images"]
            hits = [i["image"] for i in images if i["cache_hit"]]
            rebuilt = [i["image"] for i in images if not i["cache_hit"]]
            lines.append(
                f"Monorepo {build['story']}: {build['seconds']:.1f}s; rebuilt "
                f"{', '.join(rebuilt) or 'nothing'}; cache hits {', '.join(hits) or 'none'}."
            )
        return "\n".join(lines)


def scene_error(message: str) -> DemoError:
    return DemoError(f"monorepo scene: {message}")
