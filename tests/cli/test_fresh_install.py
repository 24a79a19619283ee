"""The user package alone, in a fresh virtualenv from PyPI: `layercache report --stack` works
against the moto server, and moto (a developer dependency) is not there.

Needs PyPI: skipped with the reason when the index can't be reached, unless
LAYERCACHE_REQUIRE_PYPI=1 (then it fails). pip builds a project inside its source folder
(build/, *.egg-info), so the checkout's files are copied first, as `pipx install git+URL`
installs from a clone of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import ROOT, MotoServer, ServedStack

pytestmark = pytest.mark.pypi

REQUIRE_VARIABLE = "LAYERCACHE_REQUIRE_PYPI"
NOT_COPIED = (".git", ".venv", ".aws-sam", "build", "*.egg-info", "__pycache__", ".*_cache")


def index_unreachable() -> str | None:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    try:
        with urllib.request.urlopen(f"{index}/boto3/", timeout=15) as response:  # noqa: S310
            response.read(1)
    except (urllib.error.URLError, OSError) as error:
        return f"package index {index} unreachable ({error})"
    return None


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with `pip install <checkout>` done: the user package and its dependencies."""
    reason = index_unreachable()
    if reason is not None:
        if os.environ.get(REQUIRE_VARIABLE) == "1":
            pytest.fail(f"{reason} and {REQUIRE_VARIABLE}=1", pytrace=False)
        pytest.skip(f"{reason}; set {REQUIRE_VARIABLE}=1 to fail instead")
    work = tmp_path_factory.mktemp("fresh-install")
    checkout = work / "checkout"
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(*NOT_COPIED))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(checkout)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def test_report_from_the_user_package_alone(
    user_venv: Path, moto_server: MotoServer, seeded_stack: ServedStack, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    result = subprocess.run(
        [
            str(user_venv / "bin" / "layercache"),
            "report",
            "--stack",
            seeded_stack.name,
            "--html",
            str(page),
        ],
        env=moto_server.command_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert "Recent builds (9 of 9 in the last 14 days)" in result.stdout
    assert 'id="build-history"' in page.read_text()


def test_the_user_package_brings_no_developer_kit(user_venv: Path) -> None:
    python = str(user_venv / "bin" / "python")
    for module in ("moto", "layercache_dev", "yaml"):
        result = subprocess.run(
            [python, "-c", f"import {module}"], capture_output=True, text=True, check=False
        )

        assert result.returncode == 1, f"{module} is importable in the user's virtualenv"
        assert f"ModuleNotFoundError: No module named '{module}'" in result.stderr
    requires = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(sorted(m.requires('layercache')))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert requires == "['boto3>=1.34', 'matplotlib>=3.8', 'rich>=13']"
