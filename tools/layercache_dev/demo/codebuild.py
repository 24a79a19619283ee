"""CodeBuild for the demo: moto keeps the builds, the rig runs them, the recorder hears of them.

moto's CodeBuild runs nothing: StartBuild drops the environment overrides, and
BatchGetBuilds reports every build SUCCEEDED with made-up phases and no exported
variables (and rewrites it on every call). `LocalCodeBuild` makes the embedded CodeBuild
report what really happened:

- StartBuild (from any client of the embedded AWS) is seen on the server side, with the
  overrides the trigger sent; the build gets CodeBuild's number, environment (the
  project's variables plus the overrides) and source, and waits in `pending`.
- `run()` runs a pending build for real: PROVISIONING empties the builder's local cache
  (a fresh build host), DOWNLOAD_SOURCE checks the source version out of the project's
  `SourceRepository` (`use_source`: one per project; a commit without a root Dockerfile
  is checked out as the tree it is, e.g. a Bake file's monorepo), BUILD runs
  buildspecs/buildspec.yml through the rig with the project's build variables
  (`LAYERCACHE_BAKE_FILE`, `LAYERCACHE_BAKE_TARGETS`) and the overrides (its phases run
  in one script, so INSTALL, PRE_BUILD and POST_BUILD are reported inside BUILD, at 0 s).
  Build numbers count per project, as CodeBuild's do. The build's status, times,
  phases and `exportedEnvironmentVariables` are then what BatchGetBuilds answers,
  unchanged on every call.
- Like EventBridge, it hands the "CodeBuild Build State Change" events (IN_PROGRESS when
  the build starts, then the final one) to `deliver`, the BuildRecorderFunction. Between
  the buildspec's end and the final event, `pushed(environment)` (if given) lets the
  demo act as ECR does on a push (create a repository on its first push).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moto.backends import get_backend
from moto.codebuild.responses import CodeBuildResponse

from layercache_dev.kit.buildspec import BuildOutcome
from layercache_dev.kit.codebuild_events import state_change_event
from layercache_dev.kit.embedded_aws import ACCOUNT, REGION
from layercache_dev.kit.monorepo import write_tree
from layercache_dev.kit.rig import Rig

# The project's build variables the buildspec reads beyond those the rig sets itself.
PROJECT_VARIABLES = ("LAYERCACHE_BAKE_FILE", "LAYERCACHE_BAKE_TARGETS")
# The overrides a StartBuild may carry that the buildspec reads.
OVERRIDES = ("LAYERCACHE_TRIGGER", "LAYERCACHE_REQUESTED_AT")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- the source repository


@dataclass(frozen=True)
class Commit:
    sha: str
    branch: str
    message: str
    files: Mapping[str, str]
    parent: str | None

    @property
    def short(self) -> str:
        return self.sha[:7]


class SourceRepository:
    """The demo's Git repository, in memory: what the pushes push and the builds check out."""

    def __init__(self) -> None:
        self.commits: dict[str, Commit] = {}
        self.heads: dict[str, str] = {}

    def commit(
        self, branch: str, message: str, changes: Mapping[str, str], *, base: str | None = None
    ) -> Commit:
        """A commit on `branch` (created from branch `base` when it does not exist yet)."""
        parent = self.heads.get(branch) or (self.heads[base] if base else None)
        files = dict(self.commits[parent].files) if parent else {}
        files.update(changes)
        text = "\n".join(f"{name}\0{body}" for name, body in sorted(files.items()))
        sha = hashlib.sha1(  # a Git-like commit id
            f"{parent}\n{branch}\n{message}\n{text}".encode(), usedforsecurity=False
        ).hexdigest()
        commit = Commit(sha, branch, message, files, parent)
        self.commits[sha] = commit
        self.heads[branch] = sha
        return commit

    def resolve(self, version: str) -> Commit:
        """A source version to its commit: a commit id, or a branch as `refs/heads/<branch>`
        (what the nightly and manual builds check out) or by its bare name."""
        branch = version.removeprefix("refs/heads/")
        return self.commits[self.heads.get(branch, version)]


# ---------------------------------------------------------------- the builds


@dataclass
class RanBuild:
    """One build as the stand-in ran it."""

    build_id: str
    number: int
    environment: dict[str, str]
    commit: Commit
    status: str
    outcome: BuildOutcome | None
    log_path: Path
    seconds: float  # the buildspec's wall time
    total_seconds: float  # provisioning, source and buildspec

    @property
    def variables(self) -> dict[str, str]:
        return dict(self.outcome.variables) if self.outcome else {}

    @property
    def branch(self) -> str:
        return self.environment.get("LAYERCACHE_BRANCH", "")


@dataclass
class PendingBuild:
    """A started build waiting for `LocalCodeBuild.run`."""

    build: dict[str, Any]  # moto's own dict for the build: what BatchGetBuilds returns
    queued_at: datetime
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def number(self) -> int:
        return int(self.build["buildNumber"])

    @property
    def environment(self) -> dict[str, str]:
        """The project's variables with the StartBuild overrides applied."""
        return {v["name"]: v["value"] for v in self.build["environment"]["environmentVariables"]}


class LocalCodeBuild:
    """See the module docstring. `install()` hooks it into the embedded AWS."""

    def __init__(
        self,
        rig: Rig,
        source: SourceRepository,
        *,
        workdir: Path,
        deliver: Callable[[dict[str, Any]], Any],
        pushed: Callable[[Mapping[str, str]], Any] | None = None,
    ) -> None:
        self.rig = rig
        self.source = source
        self.workdir = workdir
        self.deliver = deliver
        self.pushed = pushed
        self._sources: dict[str, SourceRepository] = {}
        self._pending: list[PendingBuild] = []
        self._numbers: dict[str, int] = {}
        self._lock = threading.Lock()
        self._original_start: Any = None
        self._backend: Any = None

    def use_source(self, project: str, source: SourceRepository) -> None:
        """Builds of `project` check out `source` (others the constructor's `source`)."""
        self._sources[project] = source

    # -- hooking into moto

    def install(self) -> None:
        self._backend = get_backend("codebuild")[ACCOUNT][REGION]
        self._original_start = CodeBuildResponse.start_build
        stand_in = self

        def start_build(response: CodeBuildResponse) -> Any:
            result = stand_in._original_start(response)
            overrides = response._get_param("environmentVariablesOverride") or []
            stand_in._accept(result.result["build"], overrides)
            return result

        CodeBuildResponse.start_build = start_build  # type: ignore[method-assign,assignment]
        self._backend.batch_get_builds = self._batch_get_builds

    def uninstall(self) -> None:
        if self._original_start is not None:
            CodeBuildResponse.start_build = self._original_start  # type: ignore[method-assign]
            self._original_start = None
        if self._backend is not None:
            self._backend.__dict__.pop("batch_get_builds", None)
            self._backend = None

    def _builds(self) -> list[dict[str, Any]]:
        return [
            build for history in self._backend.build_metadata_history.values() for build in history
        ]

    def _batch_get_builds(self, ids: list[str]) -> list[dict[str, Any]]:
        """The builds as they are, in the order asked (moto's own rewrites them as SUCCEEDED)."""
        by_id = {build["id"]: build for build in self._builds()}
        return [by_id[build_id] for build_id in ids if build_id in by_id]

    def _accept(self, build: dict[str, Any], overrides: list[dict[str, str]]) -> None:
        """A StartBuild moto just answered: make the build look as CodeBuild starts it."""
        project = self._backend.codebuild_projects[build["projectName"]].project_metadata
        variables = {
            v["name"]: v.get("value", "")
            for v in project["environment"].get("environmentVariables", [])
        }
        given = {o["name"]: o.get("value", "") for o in overrides}
        variables.update(given)
        with self._lock:
            number = self._numbers.get(build["projectName"], 0) + 1
            self._numbers[build["projectName"]] = number
        now = datetime.now(UTC)
        build.update(
            {
                "buildNumber": number,
                "startTime": _iso(now),
                "currentPhase": "QUEUED",
                "buildStatus": "IN_PROGRESS",
                "buildComplete": False,
                "initiator": f"{build['projectName']}-trigger",
                "phases": [
                    {
                        "phaseType": "SUBMITTED",
                        "phaseStatus": "SUCCEEDED",
                        "startTime": _iso(now),
                        "endTime": _iso(now),
                        "durationInSeconds": 0,
                    },
                    {"phaseType": "QUEUED", "startTime": _iso(now)},
                ],
                "source": {
                    "type": project["source"]["type"],
                    "location": project["source"]["location"],
                    "gitCloneDepth": 1,
                    "buildspec": "buildspecs/buildspec.yml",
                },
                "environment": {
                    "type": project["environment"]["type"],
                    "image": project["environment"]["image"],
                    "computeType": project["environment"]["computeType"],
                    "privilegedMode": project["environment"].get("privilegedMode", True),
                    "imagePullCredentialsType": "CODEBUILD",
                    "environmentVariables": [
                        {"name": name, "value": value, "type": "PLAINTEXT"}
                        for name, value in variables.items()
                    ],
                },
            }
        )
        with self._lock:
            self._pending.append(PendingBuild(build, now, given))

    # -- running builds

    def pending(self) -> list[PendingBuild]:
        """The builds started and not run yet, oldest first."""
        with self._lock:
            return list(self._pending)

    def run(self, item: PendingBuild) -> RanBuild:
        """Run a pending build to its end; what BatchGetBuilds and the recorder see follows it."""
        with self._lock:
            self._pending.remove(item)
        build = item.build
        env = item.environment
        number = item.number
        phases: list[dict[str, Any]] = [build["phases"][0]]
        started = datetime.now(UTC)
        phases.append(_phase("QUEUED", item.queued_at, started))
        build.update({"phases": list(phases), "currentPhase": "PROVISIONING"})
        self.deliver(state_change_event(build, "IN_PROGRESS", phases[:1]))

        clock = started
        self.rig.reset_builder()  # a fresh build host: its local cache is empty
        clock = _timed(phases, "PROVISIONING", clock)
        source = self._sources.get(build["projectName"], self.source)
        commit = source.resolve(build.get("sourceVersion") or env["LAYERCACHE_BRANCH"])
        context = self._checkout(commit, f"{build['projectName']}-{number}")
        clock = _timed(phases, "DOWNLOAD_SOURCE", clock)
        phases.append(_phase("INSTALL", clock, clock))
        phases.append(_phase("PRE_BUILD", clock, clock))
        outcome = self.rig.build(
            context,
            repository=env["LAYERCACHE_IMAGE_REPOSITORY_URI"],
            branch=env["LAYERCACHE_BRANCH"],
            commit=commit.sha,
            mode=env.get("LAYERCACHE_MODE") or "normal",
            default_branch=env.get("LAYERCACHE_DEFAULT_BRANCH") or "main",
            extra_env={
                **{name: env[name] for name in PROJECT_VARIABLES if env.get(name)},
                **{
                    name: value
                    for name, value in item.overrides.items()
                    if name in OVERRIDES and value
                },
                # What CodeBuild sets from StartBuild's sourceVersion.
                "CODEBUILD_SOURCE_VERSION": build.get("sourceVersion") or commit.sha,
                "TMPDIR": str(self._tmp()),  # the build host's /tmp: gone with the workdir
            },
            reset=False,
        )
        status = "SUCCEEDED" if outcome.ok else "FAILED"
        clock = _timed(phases, "BUILD", clock, status)
        if self.pushed is not None:
            self.pushed(env)
        if not outcome.ok:
            tail = [line for line in outcome.log.splitlines() if line.strip()][-1:]
            phases[-1]["contexts"] = [
                {
                    "statusCode": "COMMAND_EXECUTION_ERROR",
                    "message": (
                        "Error while executing the build driver; last line: "
                        + (tail[0] if tail else "?")
                    ),
                }
            ]
        for name in ("POST_BUILD", "UPLOAD_ARTIFACTS", "FINALIZING"):
            phases.append(_phase(name, clock, clock))
        phases.append({"phaseType": "COMPLETED", "startTime": _iso(clock)})
        log_path = self.workdir / "builds" / f"{build['projectName']}-{number}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(outcome.log)
        build.update(
            {
                "phases": phases,
                "endTime": _iso(clock),
                "currentPhase": "COMPLETED",
                "buildStatus": status,
                "buildComplete": True,
                "resolvedSourceVersion": commit.sha,
                "exportedEnvironmentVariables": [
                    {"name": name, "value": value} for name, value in outcome.variables.items()
                ],
                "logs": {"deepLink": str(log_path)},
            }
        )
        self.deliver(state_change_event(build, status, phases))
        return RanBuild(
            build_id=build["id"],
            number=number,
            environment=env,
            commit=commit,
            status=status,
            outcome=outcome,
            log_path=log_path,
            seconds=outcome.seconds,
            total_seconds=(clock - started).total_seconds(),
        )

    def _tmp(self) -> Path:
        directory = self.workdir / "tmp"
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def _checkout(self, commit: Commit, name: str) -> Path:
        directory = self.workdir / "checkouts" / name
        files = dict(commit.files)
        if "Dockerfile" not in files:  # a tree of contexts, as a Bake file declares them
            directory.mkdir(parents=True, exist_ok=True)
            return write_tree(self.rig, directory, files)
        dockerfile = files.pop("Dockerfile")
        return self.rig.write_context(directory, dockerfile, files)


def _phase(name: str, start: datetime, end: datetime, status: str = "SUCCEEDED") -> dict[str, Any]:
    return {
        "phaseType": name,
        "phaseStatus": status,
        "startTime": _iso(start),
        "endTime": _iso(end),
        "durationInSeconds": round((end - start).total_seconds()),
    }


def _timed(
    phases: list[dict[str, Any]], name: str, since: datetime, status: str = "SUCCEEDED"
) -> datetime:
    """Append phase `name` from `since` to now; returns now."""
    now = datetime.now(UTC)
    phases.append(_phase(name, since, now, status))
    return now
