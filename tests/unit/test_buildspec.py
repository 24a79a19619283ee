"""The buildspec, the build driver's pure parts, and how CodeBuild reaches the driver.

No network and no Docker: the docker tier (tests/docker) runs the same buildspec and
driver against a real engine and registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from layercache.build_records import BuildMode
from layercache_dev.kit.buildspec import buildspec_script
from layercache_dev.kit.driver import DRIVER_PATH, build_driver
from layercache_dev.kit.paths import BUILDSPEC, BUILDSPECS
from layercache_dev.kit.template import parameter_defaults, resolve, resource

SHA = "0123456789abcdef0123456789abcdef01234567"
slug = build_driver.branch_slug
BUILDSPEC_DATA: dict[str, Any] = yaml.safe_load(BUILDSPEC.read_text())


def commands(phase: str) -> list[str]:
    found: list[str] = BUILDSPEC_DATA["phases"][phase]["commands"]
    return found


# ---------------------------------------------------------------- the buildspec


def test_buildspec_parses_and_exports_what_the_driver_reports() -> None:
    assert str(BUILDSPEC_DATA["version"]) == "0.2"
    assert BUILDSPEC_DATA["env"]["shell"] == "bash"
    exported = BUILDSPEC_DATA["env"]["exported-variables"]
    assert tuple(exported) == build_driver.EXPORTED_VARIABLES
    for name in (
        "LAYERCACHE_IMAGE_DIGEST",
        "LAYERCACHE_IMAGE_TAGS",
        "LAYERCACHE_MOVING_TAGS",
        "LAYERCACHE_CACHE_HIT_RATIO",
        "LAYERCACHE_CACHE_REF_HIT",
        "LAYERCACHE_BUILD_SECONDS",
        "LAYERCACHE_PUSH_SECONDS",
    ):
        assert name in exported


def test_build_phase_calls_the_driver_the_tests_call() -> None:
    build = commands("build")
    assert build[0] == 'python3 "$LAYERCACHE_DRIVER_DIR/build_driver.py"'
    assert build[1] == '. "$LAYERCACHE_EXPORT_FILE"'
    # The rig points LAYERCACHE_DRIVER_DIR at buildspecs/, the directory the template
    # packages as the driver bundle: one file for tests and CodeBuild.
    assert DRIVER_PATH == BUILDSPECS / "build_driver.py"
    assert Path(str(build_driver.__file__)) == DRIVER_PATH
    assert resource("BuildDriverBundle")["Properties"]["ContentUri"] == "buildspecs/"


def test_install_phase_fetches_the_bundle_unless_a_driver_dir_is_given() -> None:
    (install,) = commands("install")
    assert 'if [ -z "${LAYERCACHE_DRIVER_DIR:-}" ]' in install
    assert 'aws lambda get-layer-version-by-arn --arn "$LAYERCACHE_DRIVER_BUNDLE"' in install
    assert "--query Content.Location" in install
    assert "unzip" in install
    assert "export LAYERCACHE_DRIVER_DIR" in install


def test_commit_falls_back_to_the_resolved_source_version() -> None:
    assert (
        'export LAYERCACHE_COMMIT="${LAYERCACHE_COMMIT:-$CODEBUILD_RESOLVED_SOURCE_VERSION}"'
        in commands("pre_build")
    )


def test_template_wires_the_bundle_with_least_privilege() -> None:
    project = resource("ImageBuildProject")["Properties"]
    env = {
        item["Name"]: item["Value"]
        for item in project["Environment"]["EnvironmentVariables"]
        if "Name" in item  # not a build secret's slot (`!If`)
    }
    assert env["LAYERCACHE_DRIVER_BUNDLE"] == {"Ref": "BuildDriverBundle"}
    assert env["LAYERCACHE_BUILDER"] == "docker-container"
    assert project["Environment"]["PrivilegedMode"] is True
    statements = resource("BuildProjectRole")["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ]
    fetch = [s for s in statements if isinstance(s, dict) and s.get("Sid") == "FetchBuildDriver"]
    assert fetch == [
        {
            "Sid": "FetchBuildDriver",
            "Effect": "Allow",
            "Action": "lambda:GetLayerVersion",
            "Resource": {"Ref": "BuildDriverBundle"},
        }
    ]


def test_buildspec_runs_end_to_end_with_a_stand_in_driver(tmp_path: Path) -> None:
    """The phases, run as CodeBuild runs them, export what the driver wrote."""
    driver_dir = tmp_path / "driver"
    driver_dir.mkdir()
    (driver_dir / "build_driver.py").write_text(
        "import os, pathlib\n"
        "pathlib.Path(os.environ['LAYERCACHE_EXPORT_FILE']).write_text(\n"
        '    "export LAYERCACHE_IMAGE_DIGEST=sha256:abc\\n"\n'
        '    "export LAYERCACHE_IMAGE_TAGS=\'"\n'
        "    + os.environ['LAYERCACHE_COMMIT'] + \",main'\\n\")\n"
    )
    dump = tmp_path / "exported"
    script = tmp_path / "buildspec.sh"
    script.write_text(
        buildspec_script(BUILDSPEC_DATA, BUILDSPEC_DATA["env"]["exported-variables"], dump)
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "LAYERCACHE_DRIVER_DIR": str(driver_dir),
        "CODEBUILD_RESOLVED_SOURCE_VERSION": SHA,
        "LAYERCACHE_BRANCH": "main",
    }
    result = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    exported = dict(item.split("=", 1) for item in dump.read_text().split("\0") if item)
    assert exported["LAYERCACHE_IMAGE_DIGEST"] == "sha256:abc"
    assert exported["LAYERCACHE_IMAGE_TAGS"] == f"{SHA},main"


def test_emulated_phases_stop_at_a_failure_but_run_post_build(tmp_path: Path) -> None:
    spec = {
        "phases": {
            "pre_build": {"commands": ["export A=1", "false", "export B=1"]},
            "build": {"commands": ["export C=1"]},
            "post_build": {"commands": ["export D=1"]},
        }
    }
    dump = tmp_path / "exported"
    script = tmp_path / "run.sh"
    script.write_text(buildspec_script(spec, ["A", "B", "C", "D"], dump))
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    exported = dict(item.split("=", 1) for item in dump.read_text().split("\0") if item)
    assert exported == {"A": "1", "B": "", "C": "", "D": "1"}


# ---------------------------------------------------------------- names and tags


# The slug itself: tests/unit/test_build_driver_slug.py.


def test_long_branch_names_still_fit_every_tag() -> None:
    long = slug("b" * 300)
    assert len(f"cache-{long}") <= 128
    assert len(f"{long}-{SHA[:7]}") <= 128
    assert build_driver.image_tags("b" * 300, SHA)[1] == f"{long}-{SHA[:7]}"
    assert build_driver.moving_tags("b" * 300, "main") == [long]


def test_the_build_pushes_only_immutable_tags() -> None:
    """`<commit>` and `<slug>-<sha7>`: no later build writes them with another image."""
    assert build_driver.image_tags("main", SHA) == [SHA, "main-0123456"]
    assert build_driver.image_tags("feat/x", SHA) == [SHA, f"{slug('feat/x')}-0123456"]


def test_moving_tags_are_the_branch_and_latest_on_the_default_branch() -> None:
    assert build_driver.moving_tags("main", "main") == ["main", "latest"]
    assert build_driver.moving_tags("refs/heads/main", "main") == ["main", "latest"]
    assert build_driver.moving_tags("feat/x", "main") == [slug("feat/x")]
    assert build_driver.moving_tags("main", "trunk") == ["main"]


def request(**overrides: Any) -> Any:
    values: dict[str, Any] = {
        "repository": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app",
        "branch": "feat/x",
        "commit": SHA,
        "default_branch": "main",
    }
    values.update(overrides)
    return build_driver.BuildRequest(**values)


def test_cache_refs_branch_first_then_default_branch() -> None:
    repo = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app"
    feat = slug("feat/x")
    assert request().cache_from_refs() == [f"{repo}:cache-{feat}", f"{repo}:cache-main"]
    assert request(branch="main").cache_from_refs() == [f"{repo}:cache-main"]
    assert request(cache_repository="r/cache").cache_from_refs() == [
        f"r/cache:cache-{feat}",
        "r/cache:cache-main",
    ]


def test_buildx_command_for_a_normal_build(tmp_path: Path) -> None:
    req = request()
    args = build_driver.buildx_command(
        req,
        builder="layercache",
        cache_from=req.cache_from_refs(),
        cache_to=req.cache_ref(req.branch),
        no_cache=False,
        metadata_file=tmp_path / "m.json",
    )
    joined = " ".join(args)
    assert args[:2] == ["buildx", "build"]
    assert "--push" in args
    assert "--builder layercache" in joined
    assert "--progress=rawjson" in args
    cache_from = [args[i + 1] for i, arg in enumerate(args) if arg == "--cache-from"]
    assert cache_from == [f"type=registry,ref={ref}" for ref in req.cache_from_refs()]
    cache_to = args[args.index("--cache-to") + 1]
    assert cache_to == (
        f"type=registry,ref={req.repository}:cache-{slug('feat/x')},"
        "mode=max,image-manifest=true,oci-mediatypes=true,compression=zstd"
    )
    assert "--pull" not in args
    assert "--no-cache" not in args
    assert args[-1] == "."


@pytest.mark.parametrize("branch", ["main", "feat/x"])
def test_buildx_command_tags_only_the_immutable_tags(branch: str, tmp_path: Path) -> None:
    req = request(branch=branch)
    args = build_driver.buildx_command(
        req,
        builder="",
        cache_from=[],
        cache_to=None,
        no_cache=False,
        metadata_file=tmp_path / "m.json",
    )
    tags = [args[i + 1] for i, arg in enumerate(args) if arg == "--tag"]
    assert tags == [f"{req.repository}:{SHA}", f"{req.repository}:{slug(branch)}-0123456"]
    for moving in req.moving_tags():  # `main`, `latest` / `feat-x`: the recorder's to move
        assert f"{req.repository}:{moving}" not in tags


def test_buildx_command_for_refresh_and_clean(tmp_path: Path) -> None:
    refresh = request(mode=BuildMode.REFRESH.value, refresh_date="2026-11-29")
    args = build_driver.buildx_command(
        refresh, builder="", cache_from=[], cache_to=None, no_cache=False, metadata_file=tmp_path
    )
    assert "--pull" in args
    assert args[args.index("--build-arg") + 1] == "LAYERCACHE_REFRESH_DATE=2026-11-29"
    assert "--builder" not in args
    clean = request(mode=BuildMode.CLEAN.value)
    args = build_driver.buildx_command(
        clean,
        builder="",
        cache_from=[],
        cache_to="r:cache-x",
        no_cache=True,
        metadata_file=tmp_path,
    )
    assert "--no-cache" in args
    assert "--cache-to" in args


def test_modes_match_the_trigger_side() -> None:
    assert set(build_driver.MODES) == {mode.value for mode in BuildMode}


def test_request_from_environment() -> None:
    env = {
        "LAYERCACHE_IMAGE_REPOSITORY_URI": "r/app",
        "LAYERCACHE_BRANCH": "main",
        "LAYERCACHE_COMMIT": "",
        "CODEBUILD_RESOLVED_SOURCE_VERSION": SHA,
        "LAYERCACHE_MODE": "REFRESH",
    }
    req = build_driver.request_from(build_driver.parse_args([]), env)
    assert req.commit == SHA
    assert req.mode == "refresh"
    assert req.default_branch == "main"
    with pytest.raises(SystemExit, match="repository"):
        build_driver.request_from(
            build_driver.parse_args([]), {**env, "LAYERCACHE_IMAGE_REPOSITORY_URI": ""}
        )
    with pytest.raises(SystemExit, match="unknown mode"):
        build_driver.request_from(build_driver.parse_args([]), {**env, "LAYERCACHE_MODE": "fast"})


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("github.com/docker/buildx 0.13.1+ds1 0.13.1+ds1-3", (0, 13)),
        ("github.com/docker/buildx v0.11.2 9872040", (0, 11)),
        ("nothing useful", None),
    ],
)
def test_buildx_version(output: str, version: tuple[int, int] | None) -> None:
    assert build_driver.buildx_version(output) == version


def test_ecr_hosts() -> None:
    match = build_driver.ECR_HOST.match("123456789012.dkr.ecr.eu-west-1.amazonaws.com")
    assert match is not None
    assert match.group(1) == "eu-west-1"
    assert build_driver.ECR_HOST.match("127.0.0.1:5000") is None


def test_export_lines_survive_the_shell(tmp_path: Path) -> None:
    values = {"LAYERCACHE_IMAGE_TAGS": "a,b", "LAYERCACHE_CACHE_REF_HIT": "it's $HOME"}
    file = tmp_path / "exports"
    file.write_text(build_driver.export_lines(values))
    out = subprocess.run(
        [
            "bash",
            "-c",
            f'. {file}; printf "%s|%s" "$LAYERCACHE_IMAGE_TAGS" "$LAYERCACHE_CACHE_REF_HIT"',
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "a,b|it's $HOME"


# ---------------------------------------------------------------- BuildKit's progress


def vertex(digest: str, name: str, start: str, end: str | None = None, **extra: Any) -> str:
    update: dict[str, Any] = {"digest": digest, "name": name, "started": start, **extra}
    if end:
        update["completed"] = end
    return json.dumps({"vertexes": [update]}, indent=2)


T = "2026-11-29T10:00:{:02d}.123456789Z"
PROGRESS = "\n".join(
    [
        vertex("d0", "[internal] load build definition from Dockerfile", T.format(0), T.format(0)),
        vertex("d1", "[builder 1/3] FROM reg/base:1@sha256:aa", T.format(1), T.format(1)),
        vertex("d2", "importing cache manifest from reg/app:cache-feat", T.format(1)),
        vertex(
            "d2",
            "importing cache manifest from reg/app:cache-feat",
            T.format(1),
            T.format(1),
            error="failed to configure registry cache importer: reg/app:cache-feat: not found",
        ),
        vertex("d3", "importing cache manifest from reg/app:cache-main", T.format(1), T.format(2)),
        vertex("d4", "[builder 2/3] RUN make deps", T.format(2), T.format(2), cached=True),
        vertex("d5", "[builder 3/3] COPY . .", T.format(2), T.format(2), cached=True),
        "not json: a stray line",
        vertex("d6", "[stage-1 2/2] COPY --from=builder /app /app", T.format(3)),
        vertex("d6", "[stage-1 2/2] COPY --from=builder /app /app", T.format(3), T.format(8)),
        vertex("d7", "exporting to image", T.format(8), T.format(11)),
        vertex("d8", "exporting cache to registry", T.format(11), T.format(12)),
    ]
)


def test_progress_summary() -> None:
    summary = build_driver.summarize(build_driver.parse_progress(PROGRESS))
    assert [step.name for step in summary.steps] == [
        "[builder 2/3] RUN make deps",
        "[builder 3/3] COPY . .",
        "[stage-1 2/2] COPY --from=builder /app /app",
    ]
    assert summary.cached_steps == 2
    assert summary.hit_ratio == pytest.approx(2 / 3)
    assert summary.imported_refs == ["reg/app:cache-main"]
    assert build_driver.is_missing_ref(summary.import_errors["reg/app:cache-feat"])
    assert summary.image_exported
    assert summary.cache_export_error == ""
    assert summary.build_seconds == pytest.approx(8.0)
    assert summary.push_seconds == pytest.approx(3.0)
    assert summary.cache_export_seconds == pytest.approx(1.0)


def test_report_variables() -> None:
    summary = build_driver.summarize(build_driver.parse_progress(PROGRESS))
    report = build_driver.BuildReport(
        "sha256:ff", [SHA, "feat-0123456"], summary, "warm", moving_tags=["feat"]
    )
    variables = report.variables()
    assert variables["LAYERCACHE_CACHE_HIT_RATIO"] == "0.667"
    assert variables["LAYERCACHE_CACHE_REF_HIT"] == "reg/app:cache-main"
    assert variables["LAYERCACHE_IMAGE_TAGS"] == f"{SHA},feat-0123456"
    assert variables["LAYERCACHE_MOVING_TAGS"] == "feat"
    assert variables["LAYERCACHE_BUILD_SECONDS"] == "8.0"
    assert variables["LAYERCACHE_PUSH_SECONDS"] == "3.0"
    assert tuple(variables) == build_driver.EXPORTED_VARIABLES


def test_failed_cache_export_is_told_apart_from_a_failed_push() -> None:
    export_failed = PROGRESS.replace(
        '"name": "exporting cache to registry",',
        '"name": "exporting cache to registry",\n  "error": "unexpected status: 400 Bad Request",',
    )
    summary = build_driver.summarize(build_driver.parse_progress(export_failed))
    assert summary.image_exported
    assert summary.cache_export_error == "unexpected status: 400 Bad Request"

    push_failed = PROGRESS.replace(
        '"name": "exporting to image",', '"name": "exporting to image",\n  "error": "denied",'
    )
    summary = build_driver.summarize(build_driver.parse_progress(push_failed))
    assert not summary.image_exported
    assert summary.image_export_error == "denied"


def test_progress_echo_makes_a_readable_log(capsys: pytest.CaptureFixture[str]) -> None:
    run_log = json.dumps(
        {"logs": [{"vertex": "d6", "stream": 1, "data": "aGVsbG8gZnJvbSBSVU4K"}]}, indent=2
    )
    reader = build_driver.ProgressReader(sys.stderr)
    for line in (PROGRESS + "\n" + run_log + "\n" + "ERROR: failed to solve\n").splitlines(True):
        reader.feed(line)
    reader.finish()
    log = capsys.readouterr().err
    assert "  CACHED [builder 2/3] RUN make deps\n" in log
    assert "  done   exporting to image\n" in log
    assert "  none   importing cache manifest from reg/app:cache-feat (no cache there yet" in log
    assert "hello from RUN\n" in log
    assert "not json: a stray line\n" in log
    assert log.endswith("ERROR: failed to solve\n")
    assert log.count("[stage-1 2/2] COPY --from=builder /app /app") == 1


# ---------------------------------------------------------------- a build started by hand


@pytest.mark.parametrize(
    ("source_version", "branch"),
    [
        ("main", "main"),  # the README's `--source-version main`
        ("refs/heads/main", "main"),
        ("refs/heads/feature/x", "feature/x"),
        (f"refs/heads/feature/x^{{{SHA}}}", "feature/x"),  # CodeBuild's ref-and-commit form
        ("feature/x", "feature/x"),
        ("release-1.2", "release-1.2"),
    ],
)
def test_branch_from_source_version(source_version: str, branch: str) -> None:
    assert build_driver.branch_from_source_version(source_version) == branch


@pytest.mark.parametrize(
    "source_version",
    [
        SHA,  # a commit
        SHA[:7],  # an abbreviated commit
        "refs/tags/v1.0",
        f"refs/tags/v1.0^{{{SHA}}}",
        "tags/v1.0",
        "pr/12",  # a GitHub pull request, as StartBuild takes it
        "refs/pull/12/head",
        f"refs/pull/12/head^{{{SHA}}}",
        "refs/heads/",
        "arn:aws:s3:::pipeline-bucket/source.zip",  # a CodePipeline artifact
        "HEAD",
        " ",
    ],
)
def test_a_source_version_that_names_no_branch_is_a_clear_error(source_version: str) -> None:
    with pytest.raises(build_driver.SourceVersionError) as raised:
        build_driver.branch_from_source_version(source_version)
    message = str(raised.value)
    assert "names no branch" in message
    assert "--source-version refs/heads/<branch>" in message
    assert "LAYERCACHE_BRANCH" in message
    assert "tag before a branch" in message  # why the bare name is not the safe form


MANUAL_ENV = {
    "LAYERCACHE_IMAGE_REPOSITORY_URI": "r/app",
    "CODEBUILD_RESOLVED_SOURCE_VERSION": SHA,
}


def test_request_takes_the_branch_from_the_source_version_without_layercache_branch() -> None:
    args = build_driver.parse_args([])
    env = {**MANUAL_ENV, "CODEBUILD_SOURCE_VERSION": "refs/heads/feature/x"}
    req = build_driver.request_from(args, env)
    assert (req.branch, req.commit) == ("feature/x", SHA)
    assert req.tags() == [SHA, f"{slug('feature/x')}-0123456"]
    assert req.moving_tags() == [slug("feature/x")]
    # What a trigger passes wins over the source version.
    env_with_branch = {**env, "LAYERCACHE_BRANCH": "main"}
    assert build_driver.request_from(args, env_with_branch).branch == "main"
    assert build_driver.request_from(build_driver.parse_args(["--branch", "b"]), env).branch == "b"


@pytest.mark.parametrize("source_version", [SHA, "refs/tags/v1.0", "pr/12", "refs/pull/12/head"])
def test_request_refuses_a_source_version_without_a_branch(source_version: str) -> None:
    env = {**MANUAL_ENV, "CODEBUILD_SOURCE_VERSION": source_version}
    with pytest.raises(SystemExit, match=r"--source-version refs/heads/<branch>"):
        build_driver.request_from(build_driver.parse_args([]), env)


def test_request_without_any_branch_says_where_one_comes_from() -> None:
    with pytest.raises(
        SystemExit, match=r"missing branch \(LAYERCACHE_BRANCH, or CODEBUILD_SOURCE"
    ):
        build_driver.request_from(build_driver.parse_args([]), MANUAL_ENV)


FAKE_DIGEST = "sha256:" + "f" * 64
FAKE_DOCKER = '''\
#!{python}
"""docker as the driver calls it: buildx version/inspect/build, login; argv is logged."""
import json, pathlib, sys

args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:2] == ["buildx", "version"]:
    print("github.com/docker/buildx v0.13.1 deadbeef")
elif args[:2] == ["buildx", "build"]:
    def status(digest, name, cached=False):
        vertex = {{"digest": digest, "name": name, "cached": cached,
                  "started": "2026-11-29T10:00:00.1Z", "completed": "2026-11-29T10:00:01.1Z"}}
        print(json.dumps({{"vertexes": [vertex]}}, indent=2))
    status("d1", "[1/2] RUN make deps", cached=True)
    status("d2", "[2/2] COPY . .")
    status("d3", "exporting to image")
    metadata = pathlib.Path(args[args.index("--metadata-file") + 1])
    metadata.write_text(json.dumps({{"containerimage.digest": {digest!r}}}))
elif args[:3] == ["buildx", "imagetools", "inspect"]:
    sys.exit(1)  # an empty registry: no tag exists yet
elif args[:1] == ["login"]:
    sys.stdin.read()
'''
FAKE_AWS = """\
#!/bin/sh
# `aws ecr get-login-password`: the driver's ECR login asks for a password.
echo fake-password
"""


def project_env() -> dict[str, str]:
    """ImageBuildProject's environment as the template declares it, with stand-in values
    (the template's own intrinsic functions evaluated, with no build secrets)."""
    refs = {
        **parameter_defaults(),
        "ImageRepository.RepositoryUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app",
        "CacheRepository.RepositoryUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app-cache",
        "ImmutableTagPattern": "v*.*.*",
        "BuildDriverBundle": "arn:aws:lambda:eu-west-1:123456789012:layer:driver:1",
        "BuildKitMirrorRepository.RepositoryUri": "",  # the fake docker has no registry
    }
    variables = resource("ImageBuildProject")["Properties"]["Environment"]["EnvironmentVariables"]
    return {item["Name"]: str(item["Value"]) for item in resolve(variables, refs)}


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A docker that builds instantly, and an `aws` for the ECR login: (docker, argv log)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker-calls.jsonl"
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable, log=str(log), digest=FAKE_DIGEST))
    (bin_dir / "aws").write_text(FAKE_AWS)
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return docker, log


def docker_calls(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_the_readmes_manual_build_succeeds(
    fake_docker: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`aws codebuild start-build --project-name <name> --source-version main`: CodeBuild
    runs the driver with the project's environment, no LAYERCACHE_BRANCH or
    LAYERCACHE_COMMIT, CODEBUILD_SOURCE_VERSION=main and the commit it resolved."""
    docker, log = fake_docker
    exports = tmp_path / "exports"
    env = {
        **project_env(),
        "CODEBUILD_SOURCE_VERSION": "main",
        "CODEBUILD_RESOLVED_SOURCE_VERSION": SHA,
        "LAYERCACHE_EXPORT_FILE": str(exports),
        "LAYERCACHE_DOCKER": str(docker),
    }
    assert "LAYERCACHE_BRANCH" not in env

    assert build_driver.main([], env) == 0

    repo = env["LAYERCACHE_IMAGE_REPOSITORY_URI"]
    (build,) = [call for call in docker_calls(log) if call[:2] == ["buildx", "build"]]
    tags = [build[i + 1] for i, arg in enumerate(build) if arg == "--tag"]
    assert tags == [f"{repo}:{SHA}", f"{repo}:main-0123456"]
    # The cache in its own repository (the stack's CacheRepository), never the image's.
    cache = env["LAYERCACHE_CACHE_REPOSITORY_URI"]
    assert cache == f"{repo}-cache"
    assert f"type=registry,ref={cache}:cache-main,mode=max" in " ".join(build)
    assert ["login", "--username", "AWS", "--password-stdin", repo.split("/")[0]] in docker_calls(
        log
    )
    exported = subprocess.run(
        ["bash", "-c", f". {exports}; env"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert f"LAYERCACHE_IMAGE_TAGS={SHA},main-0123456" in exported
    assert "LAYERCACHE_MOVING_TAGS=main,latest" in exported
    assert f"LAYERCACHE_IMAGE_DIGEST={FAKE_DIGEST}" in exported
    log_text = capsys.readouterr().err
    assert "branch 'main' from CODEBUILD_SOURCE_VERSION=main" in log_text
    assert "start builds with --source-version refs/heads/main" in log_text  # the safe form


def test_the_safe_manual_build_of_a_feature_branch_through_the_buildspec(
    fake_docker: tuple[Path, Path], tmp_path: Path
) -> None:
    """`--source-version refs/heads/feature/x`, run as CodeBuild runs the buildspec: the
    commit comes from CODEBUILD_RESOLVED_SOURCE_VERSION, the branch from the source
    version, and both tag lists are exported."""
    docker, _ = fake_docker
    # The buildspec's `python3` is this interpreter: a pyenv shim would put its own
    # directory (and a real `aws`) first on PATH.
    (docker.parent / "python3").symlink_to(sys.executable)
    dump = tmp_path / "exported"
    script = tmp_path / "buildspec.sh"
    script.write_text(
        buildspec_script(BUILDSPEC_DATA, BUILDSPEC_DATA["env"]["exported-variables"], dump)
    )
    env = {
        **project_env(),
        "PATH": os.environ["PATH"],
        "LAYERCACHE_DRIVER_DIR": str(DRIVER_PATH.parent),
        "LAYERCACHE_DOCKER": str(docker),
        "CODEBUILD_SOURCE_VERSION": "refs/heads/feature/x",
        "CODEBUILD_RESOLVED_SOURCE_VERSION": SHA,
        "TMPDIR": str(tmp_path),
    }
    result = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    exported = dict(item.split("=", 1) for item in dump.read_text().split("\0") if item)
    assert exported["LAYERCACHE_IMAGE_TAGS"] == f"{SHA},{slug('feature/x')}-0123456"
    assert exported["LAYERCACHE_MOVING_TAGS"] == slug("feature/x")
    assert exported["LAYERCACHE_IMAGE_DIGEST"] == FAKE_DIGEST
    assert "warning" not in result.stderr  # refs/heads/<branch> is the safe form


@pytest.mark.parametrize("source_version", [SHA, "refs/tags/v1.0", "pr/12"])
def test_a_manual_build_without_a_branch_fails_before_building(
    source_version: str, fake_docker: tuple[Path, Path]
) -> None:
    docker, log = fake_docker
    env = {
        **project_env(),
        "CODEBUILD_SOURCE_VERSION": source_version,
        "CODEBUILD_RESOLVED_SOURCE_VERSION": SHA,
        "LAYERCACHE_DOCKER": str(docker),
    }
    with pytest.raises(SystemExit, match=r"names no branch.*refs/heads/<branch>"):
        build_driver.main([], env)
    assert docker_calls(log) == []
