"""The driver's hot path: which docker processes an ordinary build runs, and which it
runs side by side (the write-once tag lookups, the builder check).

A fake docker logs each call with the moments it started and ended; a registry lookup
(`imagetools inspect`) and a builder check (`buildx inspect`) wait a while, as on a
real network, so lookups that ran side by side overlap in the log. buildx's version is
asked only to explain a `buildx build` that failed before BuildKit reported anything.
A loopback registry, or one `docker login` stored Basic credentials for (ECR), is asked
whether a tag exists directly, without a process.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from layercache_dev.kit.driver import build_driver

SHA = "0123456789abcdef0123456789abcdef01234567"
REPO = "registry.example:5000/team/app"
DIGEST = "sha256:" + "e" * 64
LOOKUP_SECONDS = 0.4

FAKE_DOCKER = """\
#!{python}
import json, pathlib, sys, time

state = pathlib.Path({state!r})
args = sys.argv[1:]
scenario = json.loads((state / "scenario.json").read_text())
started = time.monotonic()
status = 0
if args[:2] == ["buildx", "version"]:
    print(scenario.get("version", "github.com/docker/buildx v0.13.1 deadbeef"))
    status = scenario.get("version_exit", 0)
elif args[:2] == ["buildx", "build"]:
    for line in scenario["build_output"]:
        print(line if isinstance(line, str) else json.dumps(line), flush=True)
    status = scenario["build_exit"]
    if status == 0:
        metadata = pathlib.Path(args[args.index("--metadata-file") + 1])
        metadata.write_text(json.dumps({{"containerimage.digest": {digest!r}}}))
elif args[:3] == ["buildx", "imagetools", "inspect"] or args[:2] == ["buildx", "inspect"]:
    time.sleep({lookup})
    status = 0 if args[-1] in scenario.get("present", []) else 1
elif args[:2] == ["container", "inspect"]:
    status = 1
with (state / "calls.jsonl").open("a") as log:
    log.write(json.dumps({{"args": args, "start": started, "end": time.monotonic()}}) + "\\n")
sys.exit(status)
"""


def vertex(digest: str, name: str, **update: Any) -> dict[str, Any]:
    """One status update of BuildKit's rawjson stream: a vertex that ran and completed."""
    times = {"started": "2026-12-01T10:00:00Z", "completed": "2026-12-01T10:00:01Z"}
    return {"vertexes": [{"digest": digest, "name": name, **times, **update}]}


STEP = vertex("s1", "[1/1] RUN make", cached=True)
EXPORT = vertex("e", "exporting to image")


@dataclass
class Call:
    args: list[str]
    start: float
    end: float


@dataclass
class Outcome:
    status: int
    log: str
    calls: list[Call]

    def named(self, *prefix: str) -> list[Call]:
        return [call for call in self.calls if tuple(call.args[: len(prefix)]) == prefix]


@pytest.fixture
def run_driver(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    state = tmp_path / "state"
    state.mkdir()
    docker = tmp_path / "docker"
    docker.write_text(
        FAKE_DOCKER.format(
            python=sys.executable, state=str(state), digest=DIGEST, lookup=LOOKUP_SECONDS
        )
    )
    docker.chmod(0o755)

    def run(env: dict[str, str] | None = None, **scenario: Any) -> Outcome:
        scenario = {"build_output": [STEP, EXPORT], "build_exit": 0, **scenario}
        (state / "scenario.json").write_text(json.dumps(scenario))
        status = build_driver.main(
            ["--no-login"],
            {
                "LAYERCACHE_IMAGE_REPOSITORY_URI": REPO,
                "LAYERCACHE_BRANCH": "main",
                "LAYERCACHE_COMMIT": SHA,
                "LAYERCACHE_DOCKER": str(docker),
                "LAYERCACHE_EXPORT_FILE": str(tmp_path / "exports"),
                **(env or {}),
            },
        )
        logged = state / "calls.jsonl"
        lines = logged.read_text().splitlines() if logged.exists() else []
        logged.unlink(missing_ok=True)
        return Outcome(status, capsys.readouterr().err, [Call(**json.loads(x)) for x in lines])

    return run


def overlap(first: Call, second: Call) -> bool:
    return first.start < second.end and second.start < first.end


def test_an_ordinary_build_runs_the_tag_lookups_and_the_build_and_nothing_else(
    run_driver: Any,
) -> None:
    outcome = run_driver()

    assert outcome.status == 0, outcome.log
    assert [call.args[:3] for call in outcome.calls] == [
        ["buildx", "imagetools", "inspect"],
        ["buildx", "imagetools", "inspect"],
        ["buildx", "build", "--progress=rawjson"],
    ]
    assert not outcome.named("buildx", "version")


def test_the_build_tags_are_looked_up_side_by_side(run_driver: Any) -> None:
    outcome = run_driver()

    commit, branch_tag = outcome.named("buildx", "imagetools", "inspect")
    assert {commit.args[-1], branch_tag.args[-1]} == {f"{REPO}:{SHA}", f"{REPO}:main-{SHA[:7]}"}
    assert overlap(commit, branch_tag)
    (build,) = outcome.named("buildx", "build")
    assert build.start >= max(commit.end, branch_tag.end)  # the build knows what to push


def test_the_standalone_builder_is_checked_beside_the_tag_lookups(run_driver: Any) -> None:
    outcome = run_driver(
        env={"LAYERCACHE_BUILDER": "docker-container"}, present=[build_driver.STANDALONE_BUILDER]
    )

    assert outcome.status == 0, outcome.log
    lookups = outcome.named("buildx", "imagetools", "inspect")
    assert len(lookups) == 2
    (build,) = outcome.named("buildx", "build")
    checks = [call for call in outcome.calls if call not in (*lookups, build)]
    assert outcome.named("buildx", "inspect")  # the builder is there: not created again
    # The builder's checks began while the tags were being looked up, not after them.
    assert min(check.start for check in checks) < min(lookup.end for lookup in lookups)
    assert option(build.args, "--builder") == [build_driver.STANDALONE_BUILDER]
    assert build.start >= max(call.end for call in (*checks, *lookups))


def test_tags_already_written_are_still_left_alone(run_driver: Any) -> None:
    outcome = run_driver(present=[f"{REPO}:{SHA}"])

    (build,) = outcome.named("buildx", "build")
    assert option(build.args, "--tag") == [f"{REPO}:main-{SHA[:7]}"]


def option(args: list[str], name: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == name]


def test_a_buildx_too_old_for_the_progress_stream_is_named_when_the_build_fails(
    run_driver: Any,
) -> None:
    outcome = run_driver(
        build_output=['ERROR: invalid progress mode "rawjson"'],
        build_exit=1,
        version="github.com/docker/buildx v0.11.2 9872040",
    )

    assert outcome.status == 1
    assert "buildx 0.11 is too old: the driver needs >= 0.12" in outcome.log
    assert len(outcome.named("buildx", "build")) == 1  # no retry of a build buildx can't run


def test_a_missing_buildx_is_named_when_the_build_fails(run_driver: Any) -> None:
    outcome = run_driver(
        build_output=["docker: 'buildx' is not a docker command."],
        build_exit=1,
        version="docker: 'buildx' is not a docker command.",
        version_exit=1,
    )

    assert outcome.status == 1
    assert "docker buildx is not available" in outcome.log


def test_a_build_that_failed_in_buildkit_does_not_ask_for_buildxs_version(
    run_driver: Any,
) -> None:
    failed = vertex("s1", "[1/1] RUN make", error="exit code: 2")

    outcome = run_driver(
        build_output=[failed, "ERROR: failed to solve: exit code: 2"], build_exit=1
    )

    assert outcome.status == 1
    assert "[1/1] RUN make: exit code: 2" in outcome.log
    assert not outcome.named("buildx", "version")


def test_concurrently_keeps_the_order_and_raises_the_first_failure() -> None:
    assert build_driver.concurrently([lambda: 1, lambda: 2, lambda: 3]) == [1, 2, 3]
    assert build_driver.concurrently([]) == []

    def fails(message: str) -> Any:
        def call() -> int:
            raise build_driver.BuildFailed(message)

        return call

    with pytest.raises(build_driver.BuildFailed, match="first"):
        build_driver.concurrently([lambda: 1, fails("first"), fails("second")])


# ---------------------------------------------------------------- asking the registry directly


class Registry(BaseHTTPRequestHandler):
    """A registry's manifest endpoint on loopback: HEAD answers from `statuses`."""

    statuses: ClassVar[dict[str, int]] = {}
    seen: ClassVar[list[dict[str, str]]] = []

    def do_HEAD(self) -> None:
        Registry.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        self.send_response(Registry.statuses.get(self.path, 404))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[str]:
    """`127.0.0.1:<port>`, a loopback registry (`Registry`) for the test."""
    Registry.statuses, Registry.seen = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_loopback_registry_is_asked_directly_with_every_manifest_type(registry: str) -> None:
    Registry.statuses = {f"/v2/team/app/manifests/{SHA}": 200}

    assert build_driver.image_exists("/no/docker/here", f"{registry}/team/app:{SHA}", {})
    assert not build_driver.image_exists("/no/docker/here", f"{registry}/team/app:other", {})
    (first, _) = Registry.seen
    accepted = first["accept"]
    assert "application/vnd.oci.image.index.v1+json" in accepted
    assert "application/vnd.docker.distribution.manifest.v2+json" in accepted
    assert "authorization" not in first


def test_a_digest_ref_is_asked_by_its_digest(registry: str) -> None:
    Registry.statuses = {f"/v2/mirror/buildkit/manifests/{DIGEST}": 200}

    assert build_driver.manifest_status(f"{registry}/mirror/buildkit@{DIGEST}", {}) == 200


def test_any_other_answer_leaves_the_question_to_imagetools(registry: str, tmp_path: Path) -> None:
    Registry.statuses = {f"/v2/team/app/manifests/{SHA}": 500}
    docker = tmp_path / "docker"
    docker.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls"}\nexit 0\n')
    docker.chmod(0o755)

    assert build_driver.image_exists(str(docker), f"{registry}/team/app:{SHA}", {})
    assert (tmp_path / "calls").read_text().split() == [
        "buildx", "imagetools", "inspect", f"{registry}/team/app:{SHA}"
    ]  # fmt: skip


def test_a_registry_without_a_stored_login_is_never_asked_directly(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"other.example": {"auth": "x"}}}))

    assert build_driver.manifest_status(f"{REPO}:{SHA}", {"DOCKER_CONFIG": str(tmp_path)}) is None


def test_the_stored_login_is_docker_logins_basic_credentials(tmp_path: Path) -> None:
    ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {ecr: {"auth": "QVdTOnRva2Vu"}, "helper.example": {}}})
    )
    env = {"DOCKER_CONFIG": str(tmp_path)}

    assert build_driver.stored_login(ecr, env) == "QVdTOnRva2Vu"  # AWS:token
    assert build_driver.stored_login("helper.example", env) == ""  # a credential helper's
    assert build_driver.stored_login(ecr, {"DOCKER_CONFIG": str(tmp_path / "none")}) == ""


def test_with_a_loopback_registry_an_ordinary_build_runs_one_process(
    run_driver: Any, registry: str
) -> None:
    outcome = run_driver(env={"LAYERCACHE_IMAGE_REPOSITORY_URI": f"{registry}/team/app"})

    assert outcome.status == 0, outcome.log
    assert [call.args[:2] for call in outcome.calls] == [["buildx", "build"]]
    assert sorted(seen["path"] for seen in Registry.seen) == sorted(
        [f"/v2/team/app/manifests/{SHA}", f"/v2/team/app/manifests/main-{SHA[:7]}"]
    )


def test_a_bake_file_that_buildx_cannot_read_names_an_old_buildx(tmp_path: Path) -> None:
    docker = tmp_path / "docker"
    docker.write_text(
        "#!/bin/sh\n"
        'if [ "$2" = version ]; then echo "github.com/docker/buildx v0.9.1 ed00243"; exit 0; fi\n'
        'echo "unknown flag: --print" >&2; exit 1\n'
    )
    docker.chmod(0o755)
    bake = build_driver.bake_module()

    with pytest.raises(build_driver.BuildFailed, match=r"buildx 0\.9 is too old"):
        bake.read_definition(str(docker), ["docker-bake.hcl"], [])
