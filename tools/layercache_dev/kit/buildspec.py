"""The buildspec run as CodeBuild runs it: its phases in one bash shell, its exports read back.

`run_buildspec` runs the phases of ``buildspecs/buildspec.yml`` in bash the way CodeBuild
does, with ``LAYERCACHE_DRIVER_DIR`` pointing at ``buildspecs/`` (so the driver the tests
exercise is the file CodeBuild runs), and returns a `BuildOutcome`: the exit status, the
variables the buildspec exports and the driver's report.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from layercache_dev.kit.paths import BUILDSPEC

PHASES = ("install", "pre_build", "build", "post_build")


@dataclass
class BuildOutcome:
    """One run of the buildspec: exit status, exported variables, driver report, log."""

    returncode: int
    variables: dict[str, str]
    report: dict[str, Any]
    log: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def steps(self) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = self.report.get("steps", [])
        return steps

    def step(self, fragment: str) -> dict[str, Any]:
        """The one step whose name contains `fragment`."""
        found = [step for step in self.steps if fragment in step["name"]]
        if len(found) != 1:
            raise KeyError(
                f"{len(found)} steps match {fragment!r}: {[s['name'] for s in self.steps]}"
            )
        return found[0]

    @property
    def hit_ratio(self) -> float:
        return float(self.variables.get("LAYERCACHE_CACHE_HIT_RATIO", "nan"))


def buildspec_script(buildspec: Mapping[str, Any], exported: Iterable[str], dump: Path) -> str:
    """A bash script that runs the buildspec's phases as CodeBuild does.

    Commands share one shell (buildspec version 0.2), a failing command ends its phase
    and skips the later phases except post_build, and at the end the exported
    variables are written NUL-separated to `dump`.
    """
    lines = ["status=0"]
    for phase in PHASES:
        commands = (buildspec.get("phases", {}).get(phase) or {}).get("commands") or []
        guard = "true" if phase == "post_build" else '[ "$status" = 0 ]'
        for command in commands:
            lines.append(f"if {guard}; then eval {_shell_quote(command)} || status=$?; fi")
    names = " ".join(exported)
    lines.append(
        f'for name in {names}; do printf \'%s=%s\\0\' "$name" "${{!name-}}"; done > {dump}'
    )
    lines.append('exit "$status"')
    return "\n".join(lines) + "\n"


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def report_path(run_dir: Path) -> Path:
    """Where the driver writes its report in a run's folder (LAYERCACHE_REPORT_FILE)."""
    return run_dir / "report.json"


def run_buildspec(
    context: Path, env: Mapping[str, str], run_dir: Path, *, buildspec_path: Path = BUILDSPEC
) -> BuildOutcome:
    """Run the buildspec in `context` with `env`; `run_dir` (it exists) holds the script,
    the exported variables and the driver's report (`report_path`)."""
    buildspec = yaml.safe_load(buildspec_path.read_text())
    exported = list(buildspec.get("env", {}).get("exported-variables") or [])
    dump = run_dir / "exported"
    script = run_dir / "buildspec.sh"
    script.write_text(buildspec_script(buildspec, exported, dump))
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(script)],
        env=dict(env),
        cwd=context,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    variables: dict[str, str] = {}
    if dump.exists():
        for item in dump.read_text().split("\0"):
            if "=" in item:
                name, value = item.split("=", 1)
                if value:
                    variables[name] = value
    report_file = report_path(run_dir)
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    return BuildOutcome(
        result.returncode, variables, report, result.stdout + result.stderr, seconds
    )
