"""The build driver's decisions on a scripted `docker`: what it does after each kind of
failure, and which BuildKit image its standalone builder runs.

The fake docker plays back one scripted `buildx build` per call (BuildKit's rawjson
progress, buildx's ERROR lines, an exit status) and logs every argv, so each test can
say how many builds ran and with which arguments. The docker tier
(tests/docker/test_build_failures.py) shows the same on a real engine.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from layercache_dev.kit.driver import build_driver

SHA = "0123456789abcdef0123456789abcdef01234567"
REPO = "registry.example:5000/team/app"
CACHE_MAIN = f"{REPO}:cache-main"
DIGEST = "sha256:" + "e" * 64
LAYER = "sha256:" + "9" * 64
PINNED = build_driver.DEFAULT_BUILDKIT_IMAGE
MIRROR = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/layercache-buildkit"

FAKE_DOCKER = '''\
#!{python}
"""docker as the driver calls it, played back from scenario.json; every argv is logged."""
import json, pathlib, sys

state = pathlib.Path({state!r})
args = sys.argv[1:]
with (state / "calls.jsonl").open("a") as log:
    log.write(json.dumps(args) + "\\n")
scenario = json.loads((state / "scenario.json").read_text())
present_file = state / "present.json"
present = set(json.loads(present_file.read_text()) if present_file.exists() else [])

if args[:2] == ["buildx", "version"]:
    print("github.com/docker/buildx v0.13.1 deadbeef")
elif args[:2] == ["buildx", "build"]:
    counter = state / "builds"
    number = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(number + 1))
    run = scenario["builds"][min(number, len(scenario["builds"]) - 1)]
    for item in run["stream"]:
        print(item if isinstance(item, str) else json.dumps(item, indent=2), flush=True)
    if run["exit"] == 0:
        metadata = pathlib.Path(args[args.index("--metadata-file") + 1])
        metadata.write_text(json.dumps({{"containerimage.digest": {digest!r}}}))
    sys.exit(run["exit"])
elif args[:2] == ["buildx", "inspect"]:
    sys.exit(0 if scenario.get("builder_exists", True) else 1)
elif args[:3] == ["buildx", "imagetools", "inspect"]:
    sys.exit(0 if args[3] in present else 1)
elif args[:3] == ["buildx", "imagetools", "create"]:
    if scenario.get("copy_fails"):
        print("ERROR: unexpected status: 429 Too Many Requests", file=sys.stderr)
        sys.exit(1)
    tag, source = args[args.index("--tag") + 1], args[-1]
    present.update({{tag, tag.rsplit(":", 1)[0] + "@" + source.partition("@")[2]}})
    present_file.write_text(json.dumps(sorted(present)))
elif args[:1] == ["login"]:
    sys.stdin.read()
'''


# ---------------------------------------------------------------- the progress BuildKit reports


def vertex(
    digest: str, name: str, *, cached: bool = False, error: str = "", done: bool = True
) -> dict[str, Any]:
    update: dict[str, Any] = {"digest": digest, "name": name, "started": "2026-11-29T10:00:00Z"}
    if cached:
        update["cached"] = True
    if done:
        update["completed"] = "2026-11-29T10:00:01Z"
    if error:
        update["error"] = error
    return {"vertexes": [update]}


def output(digest: str, text: str) -> dict[str, Any]:
    """A step's own output (stderr), as BuildKit streams it."""
    data = base64.b64encode(text.encode()).decode()
    return {"logs": [{"vertex": digest, "stream": 2, "data": data}]}


def imported(ref: str = CACHE_MAIN) -> dict[str, Any]:
    return vertex("imp", f"importing cache manifest from {ref}")


def not_there(ref: str = CACHE_MAIN) -> dict[str, Any]:
    error = f"failed to configure registry cache importer: {ref}: not found"
    return vertex("imp", f"importing cache manifest from {ref}", error=error)


CACHED_STEPS = [
    vertex("s1", "[1/3] RUN make deps", cached=True),
    vertex("s2", "[2/3] RUN make tools", cached=True),
]
RUN_STEP = "[3/3] RUN make app"
IMAGE_EXPORT = vertex("exp", "exporting to image")
CACHE_EXPORT = vertex("cex", "exporting cache to registry")
SUCCESS = {
    "stream": [imported(), *CACHED_STEPS, vertex("s3", RUN_STEP), IMAGE_EXPORT, CACHE_EXPORT],
    "exit": 0,
}


def failed_push(error: str) -> dict[str, Any]:
    """A warm build whose every step ran (or came from the cache) and whose push failed."""
    return {
        "stream": [
            imported(),
            *CACHED_STEPS,
            vertex("s3", RUN_STEP),
            vertex("exp", "exporting to image", error=error),
            f"ERROR: failed to solve: {error}",
        ],
        "exit": 1,
    }


def failed_step(error: str, *, said: str = "", cache: bool = True) -> dict[str, Any]:
    """A build whose third step failed with `error`, having printed `said`."""
    stream: list[Any] = [imported() if cache else not_there(), *CACHED_STEPS]
    stream.append(vertex("s3", RUN_STEP, done=False))
    if said:
        stream.append(output("s3", said))
    stream += [vertex("s3", RUN_STEP, error=error), f"ERROR: failed to solve: {error}"]
    return {"stream": stream, "exit": 1}


# ---------------------------------------------------------------- running the driver


@dataclass
class Run:
    status: int
    log: str
    builds: list[list[str]]
    calls: list[list[str]]
    variables: dict[str, str]


@dataclass
class FakeDocker:
    path: Path
    state: Path

    def run(
        self,
        builds: list[dict[str, Any]],
        capsys: pytest.CaptureFixture[str],
        *,
        env: dict[str, str] | None = None,
        **scenario: Any,
    ) -> Run:
        (self.state / "scenario.json").write_text(json.dumps({"builds": builds, **scenario}))
        exports = self.state / "exports"
        status = build_driver.main(
            ["--no-login"],
            {
                "LAYERCACHE_IMAGE_REPOSITORY_URI": REPO,
                "LAYERCACHE_BRANCH": "main",
                "LAYERCACHE_COMMIT": SHA,
                "LAYERCACHE_DOCKER": str(self.path),
                "LAYERCACHE_EXPORT_FILE": str(exports),
                **(env or {}),
            },
        )
        logged = self.state / "calls.jsonl"  # none when the driver never called docker
        calls = [
            json.loads(line)
            for line in (logged.read_text() if logged.exists() else "").split("\n")
            if line
        ]
        logged.unlink(missing_ok=True)
        (self.state / "builds").unlink(missing_ok=True)
        variables: dict[str, str] = {}
        if status == 0:
            for line in exports.read_text().splitlines():
                name, _, value = line.removeprefix("export ").partition("=")
                variables[name] = value.strip("'")
        return Run(
            status,
            capsys.readouterr().err,
            [call for call in calls if call[:2] == ["buildx", "build"]],
            calls,
            variables,
        )


@pytest.fixture
def docker(tmp_path: Path) -> FakeDocker:
    state = tmp_path / "docker-state"
    state.mkdir()
    path = tmp_path / "docker"
    path.write_text(FAKE_DOCKER.format(python=sys.executable, state=str(state), digest=DIGEST))
    path.chmod(0o755)
    return FakeDocker(path, state)


def option(args: list[str], name: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == name]


# ---------------------------------------------------------------- item 1: which failures rebuild


@pytest.mark.parametrize(
    "error",
    [
        f"failed to push {REPO}:{SHA}: unexpected status from HEAD request to "
        f"https://registry.example:5000/v2/team/app/blobs/{LAYER}: 403 Forbidden",
        f"failed to push {REPO}:{SHA}: denied: User: arn:aws:sts::123456789012:assumed-role/"
        "build/x is not authorized to perform: ecr:InitiateLayerUpload on resource: app",
        f"failed to push {REPO}:{SHA}: unexpected status: 401 Unauthorized",
        f"failed to push {REPO}:{SHA}: failed to authorize: no basic auth credentials",
        f"failed to push {REPO}:{SHA}: authentication required",
    ],
)
def test_a_refused_push_fails_at_once_with_the_registrys_error(
    docker: FakeDocker, capsys: pytest.CaptureFixture[str], error: str
) -> None:
    run = docker.run([failed_push(error), SUCCESS], capsys)

    assert run.status == 1
    assert len(run.builds) == 1, "a refused push must not rebuild everything without the cache"
    assert "rebuilding without it" not in run.log
    last = run.log.strip().splitlines()[-1]
    assert last.startswith("layercache: build failed: the registry refused")
    assert error in last


def test_any_other_push_error_fails_at_once_too(
    docker: FakeDocker, capsys: pytest.CaptureFixture[str]
) -> None:
    error = (
        f"failed to push {REPO}:{SHA}: tag invalid: The image tag '{SHA}' already exists in "
        "the 'team/app' repository and cannot be overwritten because the repository is immutable."
    )
    run = docker.run([failed_push(error), SUCCESS], capsys)

    assert run.status == 1
    assert len(run.builds) == 1
    assert (
        run.log.strip().splitlines()[-1] == f"layercache: build failed: exporting to image: {error}"
    )


MISSING_LAYER = (
    "failed to copy: httpReadSeeker: failed open: could not fetch content descriptor "
    f"{LAYER} (application/vnd.oci.image.layer.v1.tar+gzip) from remote: not found"
)


@pytest.mark.parametrize(
    "failure",
    [
        failed_push(f"failed to push {REPO}:{SHA}: {MISSING_LAYER}"),  # a cached layer to push
        failed_step(MISSING_LAYER),  # a layer a step that must run builds on (seen on the rig)
        failed_step(f"failed to load cache key: {MISSING_LAYER}"),
    ],
    ids=["at-push", "under-a-step", "cache-key"],
)
def test_a_cache_layer_that_cannot_be_fetched_is_built_again_without_the_cache(
    docker: FakeDocker, capsys: pytest.CaptureFixture[str], failure: dict[str, Any]
) -> None:
    run = docker.run([failure, SUCCESS], capsys)

    assert run.status == 0, run.log
    first, retry = run.builds
    assert option(first, "--cache-from") == [f"type=registry,ref={CACHE_MAIN}"]
    assert option(retry, "--cache-from") == []
    assert "--no-cache" in retry
    assert option(retry, "--cache-to") == option(first, "--cache-to")  # a whole cache again
    assert run.variables["LAYERCACHE_CACHE_STATUS"] == "fallback"
    assert "could not use the cache" in run.log
    assert "could not fetch content descriptor" in run.log


def test_a_fetch_failure_without_a_cache_read_is_the_builds_own(
    docker: FakeDocker, capsys: pytest.CaptureFixture[str]
) -> None:
    """No cache manifest was read (a branch's first build): the cache cannot be to blame."""
    run = docker.run([failed_step(MISSING_LAYER, cache=False), SUCCESS], capsys)

    assert run.status == 1
    assert len(run.builds) == 1


def test_a_failed_cache_export_warns_at_once_and_keeps_the_image(
    docker: FakeDocker, capsys: pytest.CaptureFixture[str]
) -> None:
    export_failed = {
        "stream": [
            imported(),
            *CACHED_STEPS,
            vertex("s3", RUN_STEP),
            IMAGE_EXPORT,
            vertex(
                "cex", "exporting cache to registry", error="unexpected status: 400 Bad Request"
            ),
            "ERROR: failed to solve: error writing manifest blob: 400 Bad Request",
        ],
        "exit": 1,
    }
    run = docker.run([export_failed, SUCCESS], capsys)

    assert run.status == 0
    first, repeat = run.builds
    assert "--no-cache" not in repeat  # no rebuild: the same builder has every step
    assert option(repeat, "--cache-to") == []
    assert option(repeat, "--cache-from") == option(first, "--cache-from")
    assert run.variables["LAYERCACHE_CACHE_STATUS"] == "export-failed"
    assert run.variables["LAYERCACHE_IMAGE_DIGEST"] == DIGEST
    warning = "layercache: warning: the image was pushed but the cache export failed"
    second_run = run.log.index("layercache: $ ", run.log.index("layercache: $ ") + 1)
    assert run.log.index(warning) < second_run  # at once, before anything else runs


# ---------------------------------------------------------------- item 2: what failed, and retries

START_FAILURES = {
    # This BuildKit's way: runc's words in the step's output, the error just an exit code.
    "runc-in-output": failed_step(
        'process "/bin/sh -c make app" did not complete successfully: exit code: 1',
        said="runc run failed: unable to start container process: error during container "
        "init: read init-p: connection reset by peer\n",
    ),
    # BuildKit's containerd worker, and newer runc executors: the words in the error.
    "shim-task": failed_step(
        'process "/bin/sh -c make app" did not complete successfully: failed to create shim '
        "task: OCI runtime create failed: runc create failed: unable to start container "
        "process: error during container init: read init-p: connection reset by peer: unknown"
    ),
    "failed-to-start": failed_step(
        'process "/bin/sh -c make app" did not complete successfully: failed to start '
        "container: context deadline exceeded"
    ),
}


@pytest.mark.parametrize("failure", START_FAILURES.values(), ids=START_FAILURES.keys())
def test_a_container_that_failed_to_start_gets_one_retry_on_the_same_builder(
    docker: FakeDocker, capsys: pytest.CaptureFixture[str], failure: dict[str, Any]
) -> None:
    run = docker.run([failure, SUCCESS], capsys)

    assert run.status == 0, run.log
    first, retry = run.builds
    assert retry == first  # the same build, on the same builder, with the same cache
    assert "a build container failed to start" in run.log
    assert "retrying once on the same builder" in run.log
    assert run.variables["LAYERCACHE_CACHE_STATUS"] == "warm"


def test_a_container_that_never_starts_fails_after_exactly_one_retry(
    docker: FakeDocker, capsys: pytest.CaptureFixture[str]
) -> None:
    failure = START_FAILURES["runc-in-output"]
    run = docker.run([failure, failure, failure, SUCCESS], capsys)

    assert run.status == 1
    assert len(run.builds) == 2
    last = run.log.strip().splitlines()[-1]
    assert last.startswith(f"layercache: build failed: {RUN_STEP}: process")
    assert "read init-p: connection reset by peer" in last


@pytest.mark.parametrize(
    "failure",
    [
        # The command's own words are not BuildKit's: its error quotes the command.
        failed_step(
            'process "/bin/sh -c echo failed to start; exit 2" did not complete '
            "successfully: exit code: 2"
        ),
        # Nor is what the command printed, unless it is the runtime's own line.
        failed_step(
            'process "/bin/sh -c ./start-db" did not complete successfully: exit code: 1',
            said="database failed to start: permission denied\n",
        ),
        # A file missing from the context is no cache problem, though it says "not found".
        failed_step(
            'failed to compute cache key: failed to calculate checksum of ref abc::def: "/nope": '
            "not found"
        ),
    ],
    ids=["words-in-command", "words-in-output", "missing-file"],
)
def test_other_failures_are_not_retried(
    docker: FakeDocker, capsys: pytest.CaptureFixture[str], failure: dict[str, Any]
) -> None:
    run = docker.run([failure, SUCCESS], capsys)

    assert run.status == 1
    assert len(run.builds) == 1
    assert "retrying" not in run.log
    assert "rebuilding" not in run.log


def test_the_failure_summary_names_the_step_that_failed_not_the_missing_cache(
    docker: FakeDocker, capsys: pytest.CaptureFixture[str]
) -> None:
    """BuildKit lists every vertex up front; the branch's cache ref, not there yet on its
    first build, reports "not found" after the step failed."""
    branch_cache = f"{REPO}:cache-feature-x"
    error = 'process "/bin/sh -c make app" did not complete successfully: exit code: 2'
    stream = [
        vertex("s0", "[builder 1/2] RUN make deps", done=False),
        vertex("s3", "[stage-1 3/3] RUN make app", done=False),
        output("s3", "make: *** [app] Error 2\n"),
        vertex("s3", "[stage-1 3/3] RUN make app", error=error),
        vertex("s0", "[builder 1/2] RUN make deps", error="context canceled"),
        not_there(branch_cache),
        imported(CACHE_MAIN),
        f"ERROR: failed to solve: {error}",
    ]
    run = docker.run(
        [{"stream": stream, "exit": 1}], capsys, env={"LAYERCACHE_BRANCH": "feature-x"}
    )

    assert run.status == 1
    last = run.log.strip().splitlines()[-1]
    assert last == f"layercache: build failed: [stage-1 3/3] RUN make app: {error}"
    assert "importing cache manifest" not in last


def test_the_failure_summary_falls_back_to_buildxs_error_line() -> None:
    summary = build_driver.read_progress(
        [json.dumps(not_there(), indent=2) + "\n", "ERROR: failed to solve: something odd\n"]
    ).summary()
    assert build_driver.failure_reason(summary) == "ERROR: failed to solve: something odd"
    assert build_driver.failure_reason(build_driver.summarize([]), 137) == (
        "docker buildx build failed (exit status 137)"
    )


# ---------------------------------------------------------------- item 5: the BuildKit image


def test_the_default_buildkit_image_is_pinned_by_digest() -> None:
    assert re.fullmatch(r"moby/buildkit:v0\.\d+\.\d+@sha256:[0-9a-f]{64}", PINNED)
    request = build_driver.request_from(
        build_driver.parse_args([]),
        {
            "LAYERCACHE_IMAGE_REPOSITORY_URI": REPO,
            "LAYERCACHE_BRANCH": "main",
            "LAYERCACHE_COMMIT": SHA,
        },
    )
    assert request.buildkit_image == PINNED
    assert request.buildkit_mirror == ""  # no mirror unless the project names one


def test_mirror_refs() -> None:
    digest = PINNED.partition("@")[2]
    assert build_driver.mirror_refs(PINNED, MIRROR) == (
        f"{MIRROR}@{digest}",
        f"{MIRROR}:v0.32.2-{digest.removeprefix('sha256:')[:12]}",
    )
    assert build_driver.mirror_refs("localhost:5000/moby/buildkit@" + digest, "m/bk") == (
        f"m/bk@{digest}",
        f"m/bk:{digest.removeprefix('sha256:')[:12]}",
    )
    assert build_driver.mirror_refs("localhost:5000/bk:v1", "m/bk") == ("m/bk:v1", "m/bk:v1")
    assert build_driver.mirror_refs("bk", "m/bk") == ("m/bk:latest", "m/bk:latest")


STANDALONE = {"LAYERCACHE_BUILDER": "docker-container"}


def created_with(run: Run) -> list[str]:
    creates = [call for call in run.calls if call[:2] == ["buildx", "create"]]
    return [opt.removeprefix("image=") for call in creates for opt in option(call, "--driver-opt")]


def test_first_use_copies_the_pinned_image_into_the_mirror_and_runs_that(
    docker: FakeDocker, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**STANDALONE, "LAYERCACHE_BUILDKIT_MIRROR": MIRROR}
    pull_ref, push_ref = build_driver.mirror_refs(PINNED, MIRROR)

    first = docker.run([SUCCESS], capsys, env=env, builder_exists=False)

    assert first.status == 0, first.log
    copies = [call for call in first.calls if call[:3] == ["buildx", "imagetools", "create"]]
    assert copies == [["buildx", "imagetools", "create", "--tag", push_ref, PINNED]]
    assert created_with(first) == [pull_ref]

    later = docker.run([SUCCESS], capsys, env=env, builder_exists=False)

    assert later.status == 0
    assert not [call for call in later.calls if call[:3] == ["buildx", "imagetools", "create"]]
    assert created_with(later) == [pull_ref]  # from ECR, by the same digest


def test_a_mirror_that_cannot_be_filled_is_a_warning(
    docker: FakeDocker, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**STANDALONE, "LAYERCACHE_BUILDKIT_MIRROR": MIRROR}
    run = docker.run([SUCCESS], capsys, env=env, builder_exists=False, copy_fails=True)

    assert run.status == 0
    assert created_with(run) == [PINNED]
    assert f"layercache: warning: could not mirror {PINNED} to {MIRROR}" in run.log
    assert "429 Too Many Requests" in run.log


def test_without_a_mirror_the_builder_runs_the_pinned_image(
    docker: FakeDocker, capsys: pytest.CaptureFixture[str]
) -> None:
    run = docker.run([SUCCESS], capsys, env=STANDALONE, builder_exists=False)

    assert run.status == 0
    assert created_with(run) == [PINNED]
    assert not [
        call
        for call in run.calls
        if call[:2] == ["buildx", "imagetools"] and "buildkit" in call[-1]
    ]


def test_the_mirrors_registry_is_logged_in_to() -> None:
    def hosts(**env: str) -> list[str]:
        values = {"LAYERCACHE_IMAGE_REPOSITORY_URI": REPO, "LAYERCACHE_BRANCH": "main"}
        values |= {"LAYERCACHE_COMMIT": SHA, **env}
        request = build_driver.request_from(build_driver.parse_args([]), values)
        found: list[str] = build_driver.registry_hosts(request)
        return found

    mirror_host = MIRROR.split("/")[0]
    assert hosts(LAYERCACHE_BUILDKIT_MIRROR=MIRROR, **STANDALONE) == sorted(
        [mirror_host, "registry.example:5000"]
    )
    assert hosts(LAYERCACHE_BUILDKIT_MIRROR=MIRROR) == ["registry.example:5000"]  # no builder


# ---------------------------------------------------------------- item 12: build tags written once


def seed_registry(docker: FakeDocker, *refs: str) -> None:
    (docker.state / "present.json").write_text(json.dumps(sorted(refs)))


def test_a_first_build_pushes_both_build_tags(
    docker: FakeDocker, capsys: pytest.CaptureFixture[str]
) -> None:
    run = docker.run([SUCCESS], capsys)

    assert run.status == 0
    (build,) = run.builds
    assert option(build, "--tag") == [f"{REPO}:{SHA}", f"{REPO}:main-{SHA[:7]}"]
    assert "--push" in build
    assert run.variables["LAYERCACHE_IMAGE_TAGS"] == f"{SHA},main-{SHA[:7]}"


def test_a_rebuild_of_a_commit_leaves_its_tags_on_the_first_image(
    docker: FakeDocker, capsys: pytest.CaptureFixture[str]
) -> None:
    """A nightly refresh of an unchanged branch: `<sha>` keeps naming what was deployed."""
    seed_registry(docker, f"{REPO}:{SHA}", f"{REPO}:main-{SHA[:7]}")

    run = docker.run([SUCCESS], capsys, env={"LAYERCACHE_MODE": "refresh"})

    assert run.status == 0
    (build,) = run.builds
    assert option(build, "--tag") == []
    assert "--push" not in build
    assert option(build, "--output") == [f"type=image,name={REPO},push-by-digest=true,push=true"]
    assert run.variables["LAYERCACHE_IMAGE_TAGS"] == ""
    assert run.variables["LAYERCACHE_IMAGE_DIGEST"] == DIGEST
    assert run.variables["LAYERCACHE_MOVING_TAGS"] == "main,latest"  # the branch still moves
    assert "build tags are written once" in run.log


def test_a_commit_built_on_another_branch_first_gets_only_this_branchs_tag(
    docker: FakeDocker, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fast-forward merge: the commit was built on its feature branch before main."""
    seed_registry(docker, f"{REPO}:{SHA}", f"{REPO}:feature-x-{SHA[:7]}")

    run = docker.run([SUCCESS], capsys)

    (build,) = run.builds
    assert option(build, "--tag") == [f"{REPO}:main-{SHA[:7]}"]
    assert run.variables["LAYERCACHE_IMAGE_TAGS"] == f"main-{SHA[:7]}"


@pytest.mark.parametrize(
    ("branch", "pattern"), [("v2.1.0", "v*.*.*"), ("main", "latest"), ("release", "*")]
)
def test_a_moving_tag_the_repository_keeps_immutable_stops_the_build_before_it_runs(
    docker: FakeDocker, capsys: pytest.CaptureFixture[str], branch: str, pattern: str
) -> None:
    run = docker.run(
        [SUCCESS],
        capsys,
        env={"LAYERCACHE_BRANCH": branch, "LAYERCACHE_IMMUTABLE_TAG_PATTERN": pattern},
    )

    assert run.status != 0
    assert run.builds == []
    assert f"immutable tag pattern {pattern!r}" in run.log


def test_branches_outside_the_immutable_pattern_build_as_usual(
    docker: FakeDocker, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"LAYERCACHE_BRANCH": "v2-maintenance", "LAYERCACHE_IMMUTABLE_TAG_PATTERN": "v*.*.*"}
    run = docker.run([SUCCESS], capsys, env=env)

    assert run.status == 0
    assert run.variables["LAYERCACHE_MOVING_TAGS"] == "v2-maintenance"


@pytest.mark.parametrize(
    ("tag", "pattern", "matches"),
    [
        ("v1.2.3", "v*.*.*", True),
        ("v1.2.3-rc.1", "v*.*.*", True),
        ("v1.2", "v*.*.*", False),
        ("v1x2y3", "v*.*.*", False),  # `.` is literal, not a regex wildcard
        ("latest", "latest", True),
        ("latest-2", "latest", False),
        ("anything", "", False),  # no pattern: nothing is immutable
        ("cache-main", "*", True),
    ],
)
def test_the_tag_pattern_is_ecrs_wildcard(tag: str, pattern: str, matches: bool) -> None:
    assert build_driver.matches_tag_pattern(tag, pattern) is matches


def test_the_cache_ref_hit_is_the_branchs_own_whichever_import_finishes_first(
    docker: FakeDocker, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seen under load on the docker tier: main's cache was read before the branch's."""
    own = f"{REPO}:cache-feature-x"
    stream = [
        vertex("imp-main", f"importing cache manifest from {CACHE_MAIN}"),
        vertex("imp-own", f"importing cache manifest from {own}"),
        *CACHED_STEPS,
        vertex("s3", RUN_STEP),
        IMAGE_EXPORT,
        CACHE_EXPORT,
    ]
    run = docker.run(
        [{"stream": stream, "exit": 0}], capsys, env={"LAYERCACHE_BRANCH": "feature-x"}
    )

    assert run.status == 0
    assert run.variables["LAYERCACHE_CACHE_REF_HIT"] == own
