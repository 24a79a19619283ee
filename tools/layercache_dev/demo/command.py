"""`layercache-dev demo`: the whole pipeline, end to end, on an embedded AWS and a local registry.

It deploys the stack's resources into an embedded AWS (moto's server, in this process),
starts a local registry and a standalone BuildKit (the rig of tests/docker), and plays a
story through the real handlers, called in this process with the environment
template.yaml gives each function:

  signed GitHub pushes -> GitHubWebhookFunction (answers 202) -> BuildRequestQueue
  (SQS FIFO) -> BuildStarterFunction, as Lambda's event source polls it -> StartBuild ->
  a real build of the buildspec and its driver (demo.codebuild.LocalCodeBuild), which
  pushes only the immutable tags -> "Build State Change" events ->
  BuildRecorderFunction -> BuildsTable, and the moving tags (`main`, `latest`) moved
  through ECR (BatchGetImage + PutImage, acting on the local registry: demo.ecr);
  two pushes delivered in reverse order, the newer one winning; NightlyRebuildFunction's
  refresh; ImagePrunerFunction, dry run then for real; then the monorepo scene
  (demo.monorepo: a second stack with a Bake file, one repository per image);
  `layercache report` of each stack.

Function logs and metrics go to <workdir>/logs/functions.log (the monorepo stack's to
logs/monorepo-functions.log), each build's log to <workdir>/builds/<project>-<number>.log
(`--keep` leaves them). Without a Docker engine it says so and stops: it never fakes a
build.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from layercache.build_records import BranchHead, BuildsTable
from layercache_cli.arguments import add_command_parser
from layercache_cli.history import WARM_THRESHOLD, fetch_builds
from layercache_cli.report import report_text
from layercache_dev.cli import COMMANDS
from layercache_dev.demo.codebuild import (
    Commit,
    LocalCodeBuild,
    PendingBuild,
    RanBuild,
    SourceRepository,
)
from layercache_dev.demo.ecr import (
    delete_from_registry,
    ecr_digests,
    ecr_like_deletes,
    mirror_registry,
    registry_backed_images,
    registry_manifests,
)
from layercache_dev.kit.embedded_aws import (
    FAKE_CREDENTIALS,
    REGION,
    EmbeddedAws,
    Stack,
    StackNames,
)
from layercache_dev.kit.functions import (
    invoke_function,
    log_handlers_writing_to,
    reset_function_service,
)
from layercache_dev.kit.github_events import ZERO_SHA, function_url_event, push_payload
from layercache_dev.kit.lambda_context import FakeLambdaContext
from layercache_dev.kit.paths import EVENTS
from layercache_dev.kit.prerequisites import missing_prerequisites
from layercache_dev.kit.processes import RigError
from layercache_dev.kit.rig import SAMPLE_DOCKERFILE, Rig
from layercache_dev.kit.sqs_source import FifoEventSource

DOCKERFILE = SAMPLE_DOCKERFILE  # see the rig
FIRST_COMMIT = {
    "Dockerfile": DOCKERFILE,
    "src/app.txt": "version 1\n",
    "README.md": "# service\n",
}
DEFAULT_BRANCH = "main"
NEW_BRANCH = "feature/login"
# The pruning policy of the story (stack parameters): each branch's newest build, no age rule.
PRUNE_POLICY = {"PruneKeepPerBranch": "1", "PruneKeepDays": "0"}
# The pruner keeps anything younger than an hour; the mirrored images are dated back so.
BACKDATE = timedelta(hours=2)
SERVING = "(serving)"
# What the starter reports for a request whose build it started (or found started).
STARTED_ACTIONS = ("started", "adopted")
FULL_SHA = re.compile(r"\b[0-9a-f]{40}\b")
NO_ENGINE_HELP = (
    "on Debian 12 run `sudo .ci/setup-docker`; elsewhere install Docker with buildx 0.12+, "
    "Debian's docker-registry and busybox-static, and a standalone buildkitd"
)


class DemoError(RuntimeError):
    """The story went other than it must (a handler answered unexpectedly, a build failed)."""


# ---------------------------------------------------------------- progress lines


class Progress:
    """One line per step; on a terminal a ticking spinner while a step runs."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out = out
        self.tty = tty
        utf8 = (getattr(out, "encoding", "") or "").lower().replace("-", "") == "utf8"
        self.ok, self.failed = ("✓", "✗") if utf8 else ("+", "x")

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[Step]:
        step = Step(label)
        started = time.monotonic()
        stop = threading.Event()
        ticker = None
        if self.tty:
            ticker = threading.Thread(target=self._tick, args=(label, started, stop), daemon=True)
            ticker.start()
        try:
            yield step
        except BaseException as error:
            self._finish(stop, ticker)
            reason = "interrupted" if isinstance(error, KeyboardInterrupt) else str(error)
            self.line(f"  {self.failed} {label}: {reason}")
            raise
        self._finish(stop, ticker)
        seconds = time.monotonic() - started
        self.line(f"  {self.ok} {label}: {step.result}  ({seconds:.1f}s)")
        for detail in step.details:
            self.line(f"      {detail}")

    def _finish(self, stop: threading.Event, ticker: threading.Thread | None) -> None:
        stop.set()
        if ticker is not None:
            ticker.join()
            self.out.write("\r\033[K")

    def _tick(self, label: str, started: float, stop: threading.Event) -> None:
        width = shutil.get_terminal_size().columns - 10  # one line, or \r cannot redraw it
        short = label if len(label) <= width else label[: width - 3] + "..."
        for frame in itertools.cycle("|/-\\"):
            self.out.write(f"\r\033[K  {frame} {short}  {time.monotonic() - started:.0f}s")
            self.out.flush()
            if stop.wait(0.2):
                return


@dataclass
class Step:
    label: str
    result: str = "done"
    details: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- the functions, in process


class LocalFunctions:
    """Invoke the stack's functions in this process, each with the template's environment.

    Function logs and metrics (stdout in Lambda) go to `log_path`. A function's cached
    service is rebuilt whenever its environment changes; `last_env` is shared by the
    `LocalFunctions` of several stacks (their functions share one process's caches).
    """

    def __init__(
        self, stack: Stack, log_path: Path, last_env: dict[str, dict[str, str]] | None = None
    ) -> None:
        self.stack = stack
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("a", encoding="utf-8")
        self.last_env: dict[str, dict[str, str]] = {} if last_env is None else last_env

    def close(self) -> None:
        self._log.close()

    def handler(self, logical_id: str) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
        """The function as an event source calls it: (event, context), in its environment."""

        def invoke(event: dict[str, Any], context: Any) -> dict[str, Any]:
            return self.invoke(logical_id, event, context=context)

        return invoke

    def invoke(
        self,
        logical_id: str,
        event: Mapping[str, Any],
        *,
        context: Any = None,
        **overrides: str,
    ) -> dict[str, Any]:
        env = self.stack.environment(logical_id, **overrides)
        with (
            _environment(env),
            contextlib.redirect_stdout(self._log),
            contextlib.redirect_stderr(self._log),
            # Powertools' log handlers write to the stdout they found at import: here.
            log_handlers_writing_to(self._log, prefix="layercache"),
        ):
            if self.last_env.get(logical_id) != env:
                reset_function_service(logical_id)
                self.last_env[logical_id] = env
            result: dict[str, Any] = invoke_function(
                logical_id,
                event,
                context or FakeLambdaContext(f"layercache-{logical_id}", region=REGION),
            )
        self._log.flush()
        return result

    def log_records(self, since: int) -> list[dict[str, Any]]:
        """The JSON log lines the functions wrote after byte offset `since`."""
        with self.log_path.open("rb") as log:
            log.seek(since)
            lines = log.read().decode("utf-8", "replace").splitlines()
        records = []
        for line in lines:
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    records.append(json.loads(line))
        return records

    def log_mark(self) -> int:
        self._log.flush()
        return self.log_path.stat().st_size


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# ---------------------------------------------------------------- the story


@dataclass
class Demo:
    """The running pieces and what happened so far (the JSON summary)."""

    progress: Progress
    aws: EmbeddedAws
    stack: Stack
    rig: Rig
    functions: LocalFunctions
    codebuild: LocalCodeBuild
    source: SourceRepository
    # Lambda's event source mapping: BuildRequestQueue -> BuildStarterFunction.
    starter: FifoEventSource
    # Undoes `registry_backed_images`: from then on the embedded ECR is moto's own.
    release_registry: Callable[[], None]
    summary: dict[str, Any] = field(default_factory=dict)
    recorded: list[dict[str, Any]] = field(default_factory=list)
    # EventBridge's rules: a build state change goes to its project's stack's recorder.
    recorders: dict[str, Callable[[dict[str, Any]], None]] = field(default_factory=dict)
    last_pushed_at: int = 0

    # -- one delivery, the requests it hands on, and the builds they start

    def push(
        self, commit: Commit, changed: list[str], *, before: str | None = None
    ) -> dict[str, Any]:
        """The signed delivery of a push of `commit` (the first of its branch without
        `before`). Its `repository.pushed_at` is when it was pushed: each push a second
        after the one before, in the order the pushes are made."""
        self.last_pushed_at = max(int(time.time()), self.last_pushed_at + 1)
        payload = push_payload(
            ref=f"refs/heads/{commit.branch}",
            after=commit.sha,
            before=before or ZERO_SHA,
            changed=changed,
            message=commit.message,
            created=before is None,
            repository=str(self.stack.refs["SourceRepository"]),
        )
        payload["repository"]["pushed_at"] = self.last_pushed_at
        return function_url_event("push", payload)

    def deliver(
        self,
        name: str,
        label: str,
        commit: Commit | None,
        event: dict[str, Any],
        expected_status: int,
        story: str | None = None,
        *,
        start: bool = True,
    ) -> dict[str, Any]:
        """Deliver `event` (the push of `commit`; None for one not from GitHub) to
        GitHubWebhookFunction; unless `start=False`, then let the starter take what it
        handed on and run the builds it started."""
        with self.progress.step(label) as step:
            response = self.functions.invoke("GitHubWebhookFunction", event)
            status = int(response["statusCode"])
            body = _json_or_text(response.get("body", ""))
            message = body.get("message") if isinstance(body, dict) else body
            step.result = f"{status} {message or ''}".strip()
            if status != expected_status:
                raise DemoError(f"expected {expected_status}, got {status}: {body}")
        entry: dict[str, Any] = {
            "name": name,
            "status": status,
            "message": message,
            "request_id": body.get("request_id") if isinstance(body, dict) else None,
            "branch": commit.branch if commit else None,
            "commit": commit.sha if commit else None,
            "action": None,
            "reason": None,
            "build_id": None,
            "builds_started": 0,
        }
        self.summary["deliveries"].append(entry)
        if start:
            self.start_requests([entry])
            self.run_builds(story or name)
        return entry

    def start_requests(self, entries: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
        """Poll BuildRequestQueue into BuildStarterFunction until it is empty, as Lambda's
        event source mapping does; what the starter did with each request is read from
        its logs ("Request placed", "Request handled"), as one would in CloudWatch.
        Each delivery in `entries` gets the outcome of its request."""
        with self.progress.step("  BuildRequestQueue -> BuildStarterFunction") as step:
            mark = self.functions.log_mark()
            polls = self.starter.drain()
            outcomes = _starter_outcomes(self.functions.log_records(mark))
            numbers = self._build_numbers()
            for outcome in outcomes:
                outcome["build_number"] = numbers.get(str(outcome.get("build_id")))
            received = sum(poll.received for poll in polls)
            failed = [message for poll in polls for message in poll.failed]
            step.result = (
                f"{received} request{'s' if received != 1 else ''}: "
                + "; ".join(_outcome_text(o, numbers) for o in outcomes)
                if received
                else "the queue is empty: nothing to start"
            )
            if failed:
                raise DemoError(f"{len(failed)} requests failed in BuildStarterFunction")
        unmatched = list(outcomes)
        for entry in entries:
            for outcome in unmatched:
                if (outcome.get("branch"), outcome.get("commit")) == (
                    entry["branch"],
                    entry["commit"],
                ):
                    unmatched.remove(outcome)
                    entry.update(
                        {
                            "place": outcome.get("place"),
                            "placement": outcome.get("placement"),
                            "action": outcome.get("action"),
                            "reason": outcome.get("reason"),
                            "build_id": outcome.get("build_id"),
                            "builds_started": int(outcome.get("action") in STARTED_ACTIONS),
                        }
                    )
                    break
        return outcomes

    def _build_numbers(self) -> dict[str, int]:
        """Build id -> CodeBuild's build number, for the builds run and those pending."""
        numbers = {str(b["build_id"]): int(b["number"]) for b in self.summary["builds"]}
        numbers.update({str(item.build["id"]): item.number for item in self.codebuild.pending()})
        return numbers

    def run_builds(self, story: str, names: Mapping[str, str] | None = None) -> list[RanBuild]:
        """Run every pending build; `story` names them in the summary ({branch} expands),
        `names` by commit where a scene must tell its builds apart."""
        return [self.run_build(item, story, names or {}) for item in self.codebuild.pending()]

    def run_build(self, item: PendingBuild, story: str, names: Mapping[str, str]) -> RanBuild:
        env = item.environment
        label = (
            f"  build #{item.number} of {env.get('LAYERCACHE_BRANCH')} "
            f"({env.get('LAYERCACHE_TRIGGER')}, {env.get('LAYERCACHE_MODE')})"
        )
        recorded_before = len(self.recorded)
        with self.progress.step(label) as step:
            ran = self.codebuild.run(item)
            variables = ran.variables
            cached = f"{variables.get('LAYERCACHE_CACHED_STEPS', '?')}/"
            cached += f"{variables.get('LAYERCACHE_TOTAL_STEPS', '?')} steps cached"
            ref = variables.get("LAYERCACHE_CACHE_REF_HIT", "none").rsplit(":", 1)[-1]
            answers = self.recorded[recorded_before:]
            records = [str(r.get("status")) for r in answers]
            published = [str(t) for r in answers for t in r.get("tags_published") or []]
            images = _image_results(variables)
            step.details = [_image_line(image) for image in images]
            step.result = (
                f"{ran.status} at {ran.commit.short}, buildspec {ran.seconds:.1f}s, "
                + (f"{len(images)} images, " if images else "")
                + f"{cached}"
                f" ({variables.get('LAYERCACHE_CACHE_STATUS', '?')}"
                + (f", from {ref}" if ref != "none" else "")
                + f"); recorded {' -> '.join(records)}"
                + (f", published {', '.join(published)}" if published else ", published nothing")
            )
            if ran.status != "SUCCEEDED":
                raise DemoError(f"build #{ran.number} {ran.status}; log: {ran.log_path}")
        self.summary["builds"].append(
            {
                "story": names.get(ran.commit.sha) or story.format(branch=ran.branch),
                "number": ran.number,
                "build_id": ran.build_id,
                "branch": ran.branch,
                "commit": ran.commit.sha,
                "trigger": ran.environment.get("LAYERCACHE_TRIGGER"),
                "mode": ran.environment.get("LAYERCACHE_MODE"),
                "sequence": ran.environment.get("LAYERCACHE_SEQUENCE"),
                "status": ran.status,
                "seconds": round(ran.seconds, 2),
                "total_seconds": round(ran.total_seconds, 2),
                "cache_hit_ratio": float(variables.get("LAYERCACHE_CACHE_HIT_RATIO", "nan")),
                "cached_steps": int(variables.get("LAYERCACHE_CACHED_STEPS", "0")),
                "total_steps": int(variables.get("LAYERCACHE_TOTAL_STEPS", "0")),
                "cache_status": variables.get("LAYERCACHE_CACHE_STATUS"),
                "cache_ref_hit": variables.get("LAYERCACHE_CACHE_REF_HIT"),
                "image_digest": variables.get("LAYERCACHE_IMAGE_DIGEST"),
                "image_tags": _tag_list(variables.get("LAYERCACHE_IMAGE_TAGS", "")),
                "moving_tags": _tag_list(variables.get("LAYERCACHE_MOVING_TAGS", "")),
                "tags_published": published,
                **({"images": images} if images else {}),
            }
        )
        return ran

    # -- the story itself

    def commit_and_push(
        self,
        name: str,
        label: str,
        story: str,
        branch: str,
        message: str,
        changes: Mapping[str, str],
        *,
        base: str | None = None,
    ) -> tuple[Commit, dict[str, Any]]:
        """Commit `changes` to `branch` (a new branch starts from `base`), deliver its push
        (`label` names the commit as {short}) and run what it starts; returns the commit
        and the delivery."""
        before = self.source.heads.get(branch)  # None: the push creates the branch
        commit = self.source.commit(branch, message, changes, base=base)
        push = self.push(commit, list(changes), before=before)
        self.deliver(name, label.format(short=commit.short), commit, push, 202, story)
        return commit, push

    def play(self) -> None:
        self.summary.update({"deliveries": [], "builds": []})
        first, push = self.commit_and_push(
            "push-main", "push {short} to main (the first build)", "cold",
            DEFAULT_BRANCH, "Add the service", FIRST_COMMIT,
        )  # fmt: skip
        self.deliver("redelivery", "GitHub redelivers that push", first, push, 202)
        self.commit_and_push(
            "push-unchanged", "push {short} to main (README only: no layer depends on it)",
            "unchanged", DEFAULT_BRANCH, "Explain the service in the README",
            {"README.md": "# service\n\nBuilt and cached by layercache.\n"},
        )  # fmt: skip
        third, _ = self.commit_and_push(
            "push-halfway", "push {short} to main (src/ changes: a step halfway down)",
            "halfway", DEFAULT_BRANCH, "Release version 2", {"src/app.txt": "version 2\n"},
        )  # fmt: skip
        fourth, _ = self.commit_and_push(
            "push-new-branch", f"push {{short}} to the new branch {NEW_BRANCH}", "new-branch",
            NEW_BRANCH, "Add a login form", {"src/login.txt": "login form\n"},
            base=DEFAULT_BRANCH,
        )  # fmt: skip
        self.out_of_order(third)
        forged = _push(fourth.sha, DEFAULT_BRANCH, ["Dockerfile"], "Not from GitHub")
        self.deliver(
            "bad-signature",
            "a push signed with the wrong secret",
            None,
            function_url_event("push", forged, secret="not-the-webhook-secret"),  # noqa: S106
            401,
        )
        self.nightly()

    def out_of_order(self, head: Commit) -> None:
        """Two pushes to main, delivered newest first: the newer commit is built and
        published, the older one is stale (GitHub does not promise delivery order)."""
        v3, v4 = {"src/app.txt": "version 3\n"}, {"src/app.txt": "version 4\n"}
        older = self.source.commit(DEFAULT_BRANCH, "Release version 3", v3)
        newer = self.source.commit(DEFAULT_BRANCH, "Release version 4", v4)
        older_push = self.push(older, list(v3), before=head.sha)
        newer_push = self.push(newer, list(v4), before=older.sha)
        entries = [
            self.deliver(
                "reordered-newer",
                f"push {older.short}, then {newer.short} to main; {newer.short}'s delivery"
                " arrives first",
                newer,
                newer_push,
                202,
                start=False,
            ),
            self.deliver(
                "reordered-older",
                f"then {older.short}'s delivery (the older commit)",
                older,
                older_push,
                202,
                start=False,
            ),
        ]
        self.start_requests(entries)
        names = {newer.sha: "reordered-newer", older.sha: "reordered-older"}
        self.run_builds("reordered", names)
        self.check_published(older, newer, entries)

    def check_published(self, older: Commit, newer: Commit, entries: list[dict[str, Any]]) -> None:
        """What `main` and `latest` name in the registry now, as BuildRecorderFunction
        published them, and the branch head it published them from."""
        name = self.stack.repository_name
        built = {b["commit"]: b for b in self.summary["builds"]}
        by_name = {entry["name"]: entry for entry in entries}
        label = "main and latest in the registry (moved by BuildRecorderFunction)"
        with self.progress.step(label) as step:
            tags = {tag: self.rig.registry.digest(name, tag) for tag in ("main", "latest")}
            head = BuildsTable(self.stack.table_name, self.aws.client("dynamodb")).branch_head(
                name, DEFAULT_BRANCH
            )
            sides: dict[str, dict[str, Any]] = {}
            for side, commit in (("newer", newer), ("older", older)):
                entry = by_name[f"reordered-{side}"]
                build = built.get(commit.sha)
                sides[side] = {
                    "commit": commit.sha,
                    "action": entry["action"],
                    "reason": entry["reason"],
                    "placement": entry.get("placement"),
                    "built": build is not None,
                    "build_number": build["number"] if build else None,
                    "image_digest": build["image_digest"] if build else None,
                    "tags_published": build["tags_published"] if build else [],
                }
            digest = sides["newer"]["image_digest"]
            newer_published = digest is not None and tags["main"] == digest == tags["latest"]
            older_published = bool(sides["older"]["tags_published"]) or (
                sides["older"]["image_digest"] is not None
                and sides["older"]["image_digest"] in tags.values()
            )
            older_fate = (
                f"{sides['older']['action']}, not built"
                if not sides["older"]["built"]
                else "built, not published"
                if not older_published
                else "PUBLISHED"
            )
            step.result = (
                f"both on {newer.short}'s image {str(digest)[7:19]} (build"
                f" #{sides['newer']['build_number']}); {older.short}: {older_fate}"
                if newer_published
                else f"main {tags['main']}, latest {tags['latest']}: not {newer.short}'s image"
            )
            if not newer_published or older_published:
                raise DemoError(
                    f"the older commit won: main {tags['main']}, latest {tags['latest']}, "
                    f"{newer.short}'s image {digest}"
                )
        self.summary["reordered"] = {
            "pushed": [older.sha, newer.sha],
            "delivered": [newer.sha, older.sha],
            "newer": sides["newer"],
            "older": sides["older"],
            "registry": tags,
            "branch_head": _head_summary(head),
            "newer_published": newer_published,
            "older_published": older_published,
        }

    def nightly(self) -> None:
        # EventBridge Scheduler's scheduled time: now, on a whole second (after every push).
        scheduled = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        event = {
            "mode": "refresh",
            "scheduled_time": scheduled.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "execution_id": str(uuid.uuid4()),
        }
        with self.progress.step("the nightly refresh (EventBridge Scheduler)") as step:
            result = self.functions.invoke("NightlyRebuildFunction", event)
            requested = [b for b in result["builds"] if b["requested"]]
            step.result = f"{len(requested)} refresh requests handed on: " + ", ".join(
                b["branch"] for b in requested
            )
        outcomes = self.start_requests()
        ran = self.run_builds("nightly-{branch}")
        self.summary["nightly"] = {"response": result, "requests": outcomes, "builds": len(ran)}

    # -- pruning

    def prune(self) -> None:
        name = self.stack.repository_name
        ecr = self.aws.client("ecr")
        # The story is over: from here on the embedded ECR is moto's own, a mirror of the
        # registry (the recorder's PutImage calls acted on the registry itself).
        self.release_registry()
        stored = registry_manifests(self.rig.registry, name)
        with self.progress.step("mirror the local registry into the embedded ECR") as step:
            mirrored = mirror_registry(stored, ecr, name, BACKDATE)
            step.result = (
                f"{mirrored} manifests ({sum(1 for m in stored if m.tags)} tagged), true digests;"
                f" dated {BACKDATE.total_seconds() / 3600:.0f} h back so the pruner's one-hour"
                " in-flight grace has passed"
            )
        policy = ", ".join(f"{k}={v}" for k, v in PRUNE_POLICY.items())
        schedule = json.loads((EVENTS / "image-pruner/daily-schedule.json").read_text())
        with self.progress.step(f"ImagePrunerFunction, dry run ({policy})") as step:
            mark = self.functions.log_mark()
            dry = self.functions.invoke("ImagePrunerFunction", schedule, PRUNE_DRY_RUN="true")[
                "repositories"
            ][0]
            plan = [
                r
                for r in self.functions.log_records(mark)
                if r.get("message", "").startswith("Plan:")
            ]
            kept = [_plan_entry(r) for r in plan if r.get("keep")]
            deleted = [_plan_entry(r) for r in plan if not r.get("keep")]
            step.result = f"would keep {dry['kept']}, delete {dry['planned_deletions']}"
            step.details = [_plan_line("keep", e) for e in kept] + [
                _plan_line("delete", e) for e in deleted
            ]
        with self.progress.step("ImagePrunerFunction, for real") as step:
            before = ecr_digests(ecr, name)
            real = self.functions.invoke("ImagePrunerFunction", schedule, PRUNE_DRY_RUN="false")[
                "repositories"
            ][0]
            remaining = ecr_digests(ecr, name)
            gone = before - remaining
            registry_deleted = delete_from_registry(
                self.rig.registry, name, [m for m in stored if m.digest in gone]
            )
            left = {m.digest for m in registry_manifests(self.rig.registry, name)}
            step.result = (
                f"deleted {real.get('deleted', 0)} images from the embedded ECR "
                f"({len(remaining)} left), failures {len(real.get('failed', []))}; the same "
                f"{registry_deleted} manifests deleted from the local registry "
                f"({len(left)} left; blobs stay until its garbage-collect)"
            )
        self.summary["pruning"] = {
            "policy": PRUNE_POLICY,
            "backdated_hours": BACKDATE.total_seconds() / 3600,
            "mirrored": mirrored,
            "dry_run": dry,
            "run": real,
            "kept": kept,
            "deleted": deleted,
            "ecr_remaining": sorted(remaining),
            "registry_deleted": registry_deleted,
            "registry_remaining": sorted(left),
        }

    # -- the end: records and the report

    def finish(self) -> str:
        dynamodb = self.aws.client("dynamodb")
        items = dynamodb.scan(TableName=self.stack.table_name)["Items"]
        self.summary["records"] = [
            {
                "build_id": item["build_id"]["S"],
                "status": item.get("status", {}).get("S"),
                "branch": item.get("branch", {}).get("S"),
                "trigger": item.get("trigger", {}).get("S"),
                "mode": item.get("mode", {}).get("S"),
                "cache_hit_ratio": float(item["cache_hit_ratio"]["N"])
                if "cache_hit_ratio" in item
                else None,
                "duration_seconds": int(item["duration_seconds"]["N"])
                if "duration_seconds" in item
                else None,
            }
            for item in items
            if item["pk"]["S"].startswith("BUILD#")
        ]
        rows = fetch_builds(BuildsTable(self.stack.table_name, dynamodb), 2, datetime.now(UTC))
        text = report_text(rows, 2, 20, WARM_THRESHOLD)
        self.summary["report"] = text
        builds = {b["story"]: b for b in self.summary["builds"]}
        cold, warm = builds["cold"]["seconds"], builds["unchanged"]["seconds"]
        self.summary["warm_over_cold"] = round(warm / cold, 3) if cold else None
        return text


def _image_results(variables: Mapping[str, str]) -> list[dict[str, Any]]:
    """A Bake file's build: each image's result (LAYERCACHE_IMAGES), as the summary keeps it."""
    results = json.loads(variables.get("LAYERCACHE_IMAGES") or "[]")
    return [
        {
            "image": result["image"],
            "repository": str(result["repository"]).split("/", 1)[1],  # the name, no host
            "digest": result.get("digest"),
            "built_on": list(result.get("built_on") or []),
            "cached_steps": int(result.get("cached_steps") or 0),
            "total_steps": int(result.get("total_steps") or 0),
            "cache_hit": 0 < int(result.get("total_steps") or 0) == result.get("cached_steps"),
            "cache_ref_hit": result.get("cache_ref_hit"),
            "seconds": result.get("build_seconds"),
        }
        for result in results
    ]


def _image_line(image: Mapping[str, Any]) -> str:
    on = f" (on {', '.join(image['built_on'])})" if image["built_on"] else ""
    verdict = "cache hit" if image["cache_hit"] else "rebuilt"
    return (
        f"{image['image'] + on:<16} {image['cached_steps']}/{image['total_steps']} steps cached,"
        f" {verdict:<9} {str(image['digest'])[7:19]}  {image['repository']}"
    )


def _tag_list(text: str) -> list[str]:
    return [tag for tag in text.split(",") if tag]


def _json_or_text(body: str) -> Any:
    try:
        return json.loads(body)
    except (TypeError, json.JSONDecodeError):
        return body


def _push(
    sha: str,
    branch: str,
    changed: list[str],
    message: str,
    *,
    before: str | None = None,
    created: bool = False,
) -> dict[str, Any]:
    payload = push_payload(
        ref=f"refs/heads/{branch}",
        after=sha,
        before=ZERO_SHA if created else before,
        changed=changed,
        message=message,
        created=created,
    )
    return function_url_event("push", payload)


def _starter_outcomes(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """BuildStarterFunction's decisions, from its log lines: each request's "Request
    placed" (where it stands against the branch head) and "Request handled" (what the
    starter did), in the order it handled them."""
    outcomes: list[dict[str, Any]] = []
    placed: dict[str, Any] = {}
    for record in records:
        message = record.get("message")
        if message == "Request placed":
            placed = {
                "branch": record.get("branch"),
                "commit": record.get("commit"),
                "trigger": record.get("trigger"),
                "place": record.get("place"),
                "placement": record.get("reason"),
            }
        elif message == "Request handled":
            outcomes.append(
                {
                    **placed,
                    "action": record.get("action"),
                    "reason": record.get("reason"),
                    "build_id": record.get("build_id"),
                }
            )
            placed = {}
        elif message == "Dropped a message that is not a build request":
            outcomes.append({"action": "rejected", "reason": record.get("error")})
    return outcomes


def _outcome_text(outcome: Mapping[str, Any], numbers: Mapping[str, int]) -> str:
    """One request's outcome on one line: SHAs short, build ids as build numbers."""
    commit = outcome.get("commit")
    who = str(commit)[:7] if commit else f"{outcome.get('branch')} (its head)"
    action = str(outcome.get("action"))
    if action in STARTED_ACTIONS:
        number = outcome.get("build_number")
        text = f"{who} {action} build #{number} ({outcome.get('placement')})"
    else:
        text = f"{who} {action} ({outcome.get('reason')})"
    for build_id, number in numbers.items():
        text = text.replace(f"build {build_id}", f"build #{number}")
    return FULL_SHA.sub(lambda match: match.group(0)[:7], text)


def _head_summary(head: BranchHead | None) -> dict[str, Any] | None:
    if head is None:
        return None
    return {
        "commit": head.commit,
        "sequence": head.sequence,
        "older": list(head.older),
        "published_commit": head.published_commit,
        "published_digest": head.published_digest,
        "published_tags": list(head.published_tags),
    }


def _plan_entry(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "digest": record.get("digest"),
        "tags": list(record.get("tags") or []),
        "why": list(record.get("why") or []),
    }


def _plan_line(verdict: str, entry: Mapping[str, Any]) -> str:
    tags = [
        t for t in entry["tags"] if not (len(t) == 40 and all(c in "0123456789abcdef" for c in t))
    ]
    why = entry["why"][0] if entry["why"] else "?"
    return f"{verdict:<6} {str(entry['digest'])[7:19]}  {','.join(tags) or '(untagged)':<34} {why}"


# ---------------------------------------------------------------- setting up, cleaning up


class _Interrupts:
    """The first Ctrl-C (or SIGTERM, SIGHUP) stops the story; later ones must not cut the
    clean-up short."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.count = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count == 1:
            raise KeyboardInterrupt
        self.progress.line("  (cleaning up: stopping the registry, BuildKit and the embedded AWS)")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    progress = Progress(out, out.isatty())
    missing = missing_prerequisites("remote")
    if missing:
        engine = any("Docker engine" in reason for reason in missing)
        head = "no Docker engine here" if engine else "missing what the local build needs"
        sys.stderr.write(
            f"layercache demo: {head} ({'; '.join(missing)}). To get "
            f"{'one' if engine else 'them'}: {NO_ENGINE_HELP}. Nothing was built.\n"
        )
        return 3
    interrupts = _Interrupts(progress)
    # Ctrl-C, `kill` and a closed terminal all stop the story the same clean way.
    stopping = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, interrupts) for signum in stopping}
    workdir = Path(tempfile.mkdtemp(prefix="layercache-demo-"))
    try:
        return _run(args, progress, workdir)
    except KeyboardInterrupt:
        progress.line("Interrupted: everything the demo started is stopped.")
        return 130
    except (DemoError, RigError) as error:
        progress.line(f"The demo failed: {error}")
        return 1
    finally:
        if args.keep:
            progress.line(f"Kept {workdir} (builds/, logs/functions.log, checkouts/, rig/)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run(args: argparse.Namespace, progress: Progress, workdir: Path) -> int:
    os.environ.update(FAKE_CREDENTIALS)
    os.environ.update({"POWERTOOLS_DEV": "false"})
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    progress.line("layercache demo: the whole pipeline on an embedded AWS and a local registry")
    aws = EmbeddedAws(host=args.host, port=args.port) if args.serve else EmbeddedAws()
    with contextlib.ExitStack() as outer:
        with progress.step("embedded AWS") as step:
            aws.start()
            outer.callback(aws.stop)
            step.result = f"moto server on {aws.endpoint}"
        with contextlib.ExitStack() as inner:
            with progress.step("local registry, standalone BuildKit, busybox base image") as step:
                rig = inner.enter_context(Rig(workdir / "rig"))
                step.result = f"registry {rig.registry.host}, builder {rig.builder}"
            demo = _set_up(progress, aws, rig, workdir, outer, inner)
            demo.play()
            demo.prune()
            # The monorepo scene builds on this module's story (see its docstring).
            from layercache_dev.demo.monorepo import MonorepoScene

            monorepo = MonorepoScene(demo)
            monorepo.play(workdir, outer)
            monorepo.prune()
            table = demo.finish()
            monorepo_table = monorepo.report()
            demo.summary["monorepo"] = monorepo.summary
        progress.line()
        progress.line("layercache report (from BuildsTable in the embedded AWS)")
        progress.line(table.rstrip())
        progress.line()
        progress.line(
            f"layercache report --table {monorepo.scene.stack.table_name} (the monorepo's stack)"
        )
        progress.line(monorepo_table.rstrip())
        progress.line()
        # The closing lines, in the JSON summary too: both say the same.
        demo.summary["closing"] = _closing(demo.summary) + "\n" + monorepo.closing()
        progress.line(demo.summary["closing"])
        if args.json:
            args.json.write_text(json.dumps(demo.summary, indent=2, default=str) + "\n")
        if args.serve:
            _serve(aws, demo.stack, progress)
    return 0


def _set_up(
    progress: Progress,
    aws: EmbeddedAws,
    rig: Rig,
    workdir: Path,
    outer: contextlib.ExitStack,
    inner: contextlib.ExitStack,
) -> Demo:
    """Deploy the resources, and wire the functions and the CodeBuild stand-in to them."""
    with progress.step("deploy the stack's resources") as step:
        names = StackNames.from_env_json()
        stack = aws.deploy(
            {
                "SourceRepository": "octo-org/service",
                "WatchedBranches": [DEFAULT_BRANCH, NEW_BRANCH],
                **PRUNE_POLICY,
            },
            build_repository_uri=rig.repository(names.repository),
            names=names,
        )
        outer.callback(ecr_like_deletes())
        # The recorder publishes the moving tags through ECR; the images are in the registry.
        release_registry = registry_backed_images(rig.registry, stack.repository_name)
        outer.callback(release_registry)
        step.result = (
            f"table {stack.table_name}, queue {stack.names.queue}, ECR repository "
            f"{stack.repository_name} (its images in the local registry), project "
            f"{stack.project_name}, secret {stack.names.secret}, topic {stack.names.topic}"
        )
    functions = LocalFunctions(stack, workdir / "logs" / "functions.log")
    outer.callback(functions.close)
    source = SourceRepository()
    recorded: list[dict[str, Any]] = []

    recorders: dict[str, Callable[[dict[str, Any]], None]] = {
        stack.project_name: lambda event: recorded.append(
            functions.invoke("BuildRecorderFunction", event)
        )
    }

    def to_recorder(event: dict[str, Any]) -> None:
        """EventBridge: a build state change to its stack's BuildRecorderFunction."""
        recorders[event["detail"]["project-name"]](event)

    codebuild = LocalCodeBuild(rig, source, workdir=workdir, deliver=to_recorder)
    codebuild.install()
    outer.callback(codebuild.uninstall)
    # Lambda's SQS event source mapping of BuildStarterFunction (template.yaml's Events).
    starter = FifoEventSource(
        aws.client("sqs"),
        stack.queue_url,
        functions.handler("BuildStarterFunction"),
        region=REGION,
    )
    return Demo(
        progress,
        aws,
        stack,
        rig,
        functions,
        codebuild,
        source,
        starter,
        release_registry,
        recorded=recorded,
        recorders=recorders,
    )


def _closing(summary: Mapping[str, Any]) -> str:
    builds = {b["story"]: b for b in summary["builds"]}
    cold, warm = builds["cold"], builds["unchanged"]
    pruning = summary["pruning"]
    return (
        f"Cold build {cold['seconds']:.1f}s; unchanged {warm['seconds']:.1f}s "
        f"({cold['seconds'] / max(warm['seconds'], 0.01):.0f}x faster, "
        f"{warm['cache_hit_ratio']:.0%} cached); change halfway "
        f"{builds['halfway']['seconds']:.1f}s ({builds['halfway']['cache_hit_ratio']:.0%}); "
        f"new branch {builds['new-branch']['seconds']:.1f}s "
        f"({builds['new-branch']['cache_hit_ratio']:.0%}, from main's cache)."
        f"\n{_reordered_line(summary['reordered'])}"
        f"\nPruner (embedded ECR and local registry): kept {len(pruning['kept'])} "
        f"({_by_reason(pruning['kept'])}); deleted {len(pruning['deleted'])} "
        f"({_by_reason(pruning['deleted'])})."
    )


def _reordered_line(scene: Mapping[str, Any]) -> str:
    newer, older = scene["newer"], scene["older"]
    fate = (
        f"{older['action']}, not built"
        if not older["built"]
        else "built, not published"
        if not scene["older_published"]
        else "built and published"
    )
    winner = (
        f"main and latest on {newer['commit'][:7]}'s image"
        if scene["newer_published"]
        else f"main and latest NOT on {newer['commit'][:7]}'s image"
    )
    return (
        f"Out of order: {newer['commit'][:7]} delivered before its parent "
        f"{older['commit'][:7]}; {older['commit'][:7]} {fate}; {winner}."
    )


def _by_reason(entries: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for entry in entries:
        reason = str(entry["why"][0]).split(":", 1)[0] if entry["why"] else "?"
        counts[reason] = counts.get(reason, 0) + 1
    return ", ".join(f"{count} {reason}" for reason, count in counts.items())


def _serve(aws: EmbeddedAws, stack: Stack, progress: Progress) -> None:
    """Keep the embedded AWS up until Ctrl-C (the registry and BuildKit are stopped)."""
    progress.line()
    progress.line(f"Serving the embedded AWS on {aws.host}:{aws.port} until Ctrl-C. Try:")
    progress.line(
        f"  AWS_ENDPOINT_URL={aws.endpoint} .venv/bin/layercache report --table {stack.table_name}"
    )
    progress.line(
        "  sam local invoke GitHubWebhookFunction -e events/github-webhook/push-main.json"
        " --env-vars events/env.json --add-host host.docker.internal:host-gateway"
    )
    progress.line(
        "  sam local invoke BuildStarterFunction -e events/build-starter/push-main.json"
        " --env-vars events/env.json --add-host host.docker.internal:host-gateway"
    )
    progress.line(SERVING)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        progress.line("Stopped serving.")


# ---------------------------------------------------------------- command line


def add_parser(subparsers: Any) -> None:
    parser = add_command_parser(subparsers, "demo", COMMANDS["demo"][1], __doc__)
    parser.add_argument("--keep", action="store_true", help="Leave the temp dir for inspection")
    parser.add_argument("--json", type=Path, metavar="FILE", help="Write a summary as JSON")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="After the story, keep the embedded AWS up (for sam local invoke) until Ctrl-C",
    )
    parser.add_argument("--port", type=int, default=5000, help="--serve port (default 5000)")
    parser.add_argument(
        "--host",
        default="0.0.0.0",  # noqa: S104 - sam local's containers reach it through the host
        help="--serve address (default 0.0.0.0: containers must reach it)",
    )
    parser.set_defaults(run=run)
