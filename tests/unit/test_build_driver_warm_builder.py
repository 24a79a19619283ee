"""The warm tier's builder (`prepare_builder`) on a scripted `docker` that keeps an
engine's state in files: which builder containers exist (and their image), which builder
names this client's buildx config knows, and every argv it was called with.

A reused host (a fleet's, the Docker server) keeps the engine's container and state
volume but not the build container's ~/.docker: the driver must find the builder again
by name, never start an empty one beside it. The docker tier
(tests/docker/test_warm_tier.py) shows the same on a real engine and buildx.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from layercache_dev.kit.driver import build_driver

PINNED = build_driver.DEFAULT_BUILDKIT_IMAGE
NAME = build_driver.STANDALONE_BUILDER
CONTAINER = f"buildx_buildkit_{NAME}0"
FLEET = {"LAYERCACHE_BUILD_HOST": "fleet"}

FAKE_ENGINE = '''\
#!{python}
"""docker's builder commands against an engine kept in files (containers/, config/)."""
import json, os, pathlib, sys, time

state = pathlib.Path({state!r})
args = sys.argv[1:]
with (state / "calls.jsonl").open("a") as log:
    log.write(json.dumps(args) + "\\n")
containers, config = state / "containers", state / "config"
scenario = json.loads((state / "scenario.json").read_text())

if args[:2] == ["container", "inspect"]:
    found = containers / args[-1]
    if not found.exists():
        print(f"Error: No such container: {{args[-1]}}", file=sys.stderr)
        sys.exit(1)
    print(found.read_text())
elif args[:2] == ["container", "rm"]:
    (containers / args[-1]).unlink(missing_ok=True)
elif args[:2] == ["buildx", "inspect"]:
    sys.exit(0 if (config / args[-1]).exists() else 1)
elif args[:2] == ["buildx", "create"]:
    name = args[args.index("--name") + 1]
    image = [a for a in args if a.startswith("image=")][0].removeprefix("image=")
    if scenario.get("create_error"):
        print(scenario["create_error"], file=sys.stderr)
        sys.exit(1)
    time.sleep(scenario.get("create_delay", 0))  # a build starting at the same moment
    try:
        os.close(os.open(config / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        print(f'ERROR: existing instance for "{{name}}" but no append mode, specify the '
              "node name to make changes for existing instances", file=sys.stderr)
        sys.exit(1)
    container = containers / f"buildx_buildkit_{{name}}0"
    if not container.exists():  # buildx's Bootstrap: an existing container is started
        container.write_text(image)
    print(name)
elif args[:3] == ["buildx", "imagetools", "inspect"]:
    sys.exit(1)
'''


@dataclass
class Engine:
    docker: Path
    state: Path

    def keep(self, container: str, image: str) -> None:
        """A container an earlier build left on this engine."""
        (self.state / "containers" / container).write_text(image)

    def know(self, name: str) -> None:
        """A builder name this client's buildx config already holds."""
        (self.state / "config" / name).touch()

    def forget_config(self) -> None:
        """A new build container: ~/.docker/buildx is gone, the engine's state is not."""
        for entry in (self.state / "config").iterdir():
            entry.unlink()

    def image_of(self, container: str) -> str:
        return (self.state / "containers" / container).read_text()

    def calls(self) -> list[list[str]]:
        log = self.state / "calls.jsonl"
        found = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        log.unlink(missing_ok=True)
        return found

    def prepare(
        self,
        env: dict[str, str] | None = None,
        setting: str = "docker-container",
        **scenario: object,
    ) -> Any:
        (self.state / "scenario.json").write_text(json.dumps(scenario))
        return build_driver.prepare_builder(
            str(self.docker), setting, PINNED, env=FLEET if env is None else env
        )


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    state = tmp_path / "engine"
    (state / "containers").mkdir(parents=True)
    (state / "config").mkdir()
    docker = tmp_path / "docker"
    docker.write_text(FAKE_ENGINE.format(python=sys.executable, state=str(state)))
    docker.chmod(0o755)
    return Engine(docker, state)


def creates(calls: list[list[str]]) -> list[list[str]]:
    return [call for call in calls if call[:2] == ["buildx", "create"]]


def test_a_new_host_creates_the_builder_from_the_pinned_image(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    builder = engine.prepare()

    assert builder == build_driver.Builder(NAME, "new")
    assert engine.image_of(CONTAINER) == PINNED
    assert len(creates(engine.calls())) == 1
    log = capsys.readouterr().err
    assert "builder layercache new on this engine (it starts from the registry cache)" in log
    assert "LAYERCACHE_BUILDER_STATE=new" in log


def test_a_kept_host_finds_the_builder_again_by_name_with_its_state(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    engine.prepare()
    engine.calls()
    engine.forget_config()

    builder = engine.prepare()

    assert builder == build_driver.Builder(NAME, "kept")
    calls = engine.calls()
    # Re-created under the same name, with the kept container's image: buildx then starts
    # that container; nothing removes it, and no image is looked up or mirrored.
    assert [option for option in creates(calls)[0] if option.startswith("image=")] == [
        f"image={PINNED}"
    ]
    assert not [call for call in calls if call[:2] == ["container", "rm"]]
    assert not [call for call in calls if call[:2] == ["buildx", "imagetools"]]
    log = capsys.readouterr().err
    assert "re-creating the standalone BuildKit builder layercache" in log
    assert "kept from an earlier build on this engine (its local cache is warm)" in log
    assert "LAYERCACHE_BUILDER_STATE=kept" in log


def test_a_builder_the_config_still_knows_is_used_as_it_is(engine: Engine) -> None:
    engine.keep(CONTAINER, PINNED)
    engine.know(NAME)

    assert engine.prepare() == build_driver.Builder(NAME, "kept")
    assert creates(engine.calls()) == []


def test_a_kept_container_of_another_image_is_replaced_and_its_state_kept(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    engine.keep(CONTAINER, "moby/buildkit:v0.11.0")

    builder = engine.prepare()

    assert builder.state == "new"
    assert engine.image_of(CONTAINER) == PINNED
    calls = engine.calls()
    assert ["container", "rm", "--force", CONTAINER] in calls
    assert not [call for call in calls if call[:2] == ["volume", "rm"]]
    assert "runs moby/buildkit:v0.11.0, not " in capsys.readouterr().err


def test_a_lost_race_whose_builder_cannot_be_started_fails_the_build(engine: Engine) -> None:
    # buildx said another build created the builder, but it is not there to start: the
    # driver re-inspects rather than trusting the message, and fails with the reason.
    message = 'ERROR: existing instance for "layercache" but no append mode'

    with pytest.raises(build_driver.BuildFailed, match="could not start the builder layercache"):
        engine.prepare(create_error=message)
    assert ["buildx", "inspect", "--bootstrap", NAME] in engine.calls()


def test_two_builds_creating_the_builder_at_once_both_build(engine: Engine) -> None:
    results: list[Any] = []
    errors: list[BaseException] = []
    (engine.state / "scenario.json").write_text(json.dumps({"create_delay": 0.5}))

    def prepare() -> None:
        try:
            results.append(
                build_driver.prepare_builder(
                    str(engine.docker), "docker-container", PINNED, env=FLEET
                )
            )
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=prepare) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert [builder.name for builder in results] == [NAME, NAME]
    calls = engine.calls()
    assert len(creates(calls)) == 2  # both tried; one lost the race and used the winner's
    assert ["buildx", "inspect", "--bootstrap", NAME] in calls


def test_any_other_create_failure_fails_the_build_with_buildxs_words(engine: Engine) -> None:
    with pytest.raises(build_driver.BuildFailed, match="no space left on device"):
        engine.prepare(create_error="ERROR: failed to create volume: no space left on device")


def test_a_docker_server_build_without_docker_host_is_warned_about(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    engine.prepare({"LAYERCACHE_BUILD_HOST": "docker-server"})
    assert "DOCKER_HOST is not set" in capsys.readouterr().err

    engine.forget_config()
    engine.prepare({"LAYERCACHE_BUILD_HOST": "docker-server", "DOCKER_HOST": "tcp://server:9876"})
    log = capsys.readouterr().err
    assert "DOCKER_HOST is not set" not in log
    assert "build host docker-server: builder layercache kept" in log


def test_a_builder_name_can_be_given_and_a_named_builder_is_left_alone(engine: Engine) -> None:
    assert engine.prepare(setting="docker-container:team-a") == build_driver.Builder(
        "team-a", "new"
    )
    assert (engine.state / "containers" / "buildx_buildkit_team-a0").exists()
    engine.calls()

    assert engine.prepare(setting="rig-builder") == build_driver.Builder("rig-builder", "named")
    assert engine.calls() == []


def test_driver_options_are_passed_to_the_new_builder(engine: Engine) -> None:
    engine.prepare({**FLEET, "LAYERCACHE_BUILDKIT_DRIVER_OPTS": "network=host,memory=2g"})

    (create,) = creates(engine.calls())
    options = [create[i + 1] for i, arg in enumerate(create) if arg == "--driver-opt"]
    assert options == [f"image={PINNED}", "network=host", "memory=2g"]


@pytest.mark.parametrize("host", ["on-demand", "fleet", "docker-server", "FLEET", ""])
def test_the_build_hosts(host: str) -> None:
    assert build_driver.build_host_of({"LAYERCACHE_BUILD_HOST": host}) in build_driver.BUILD_HOSTS


def test_an_unknown_build_host_stops_the_build_before_it_starts() -> None:
    env = {
        "LAYERCACHE_IMAGE_REPOSITORY_URI": "registry.example:5000/team/app",
        "LAYERCACHE_BRANCH": "main",
        "LAYERCACHE_COMMIT": "0" * 40,
        "LAYERCACHE_BUILD_HOST": "spot",
    }
    with pytest.raises(SystemExit, match="unknown build host 'spot'"):
        build_driver.request_from(build_driver.parse_args([]), env)
