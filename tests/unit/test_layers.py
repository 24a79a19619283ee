"""The house rules of functions/layercache: handlers -> one service package -> the shared
modules. Service packages never import each other, the shared modules import no service,
and nothing that ships imports the dev kit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "functions" / "layercache"
SERVICES = ("triggers", "starting", "recording", "pruning")
SHARED = ("build_records", "build_requests", "settings", "aws", "github_token")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_package_imports_no_other_service(service: str) -> None:
    others = {f"layercache.{name}" for name in SERVICES if name != service}
    for path in (PACKAGE / service).glob("*.py"):
        reached = {name for name in imports_of(path) if name.startswith(tuple(others))}
        assert not reached, f"{path.name} reaches into {sorted(reached)}"


@pytest.mark.parametrize("module", SHARED)
def test_shared_modules_import_no_service_and_no_handler(module: str) -> None:
    forbidden = tuple(f"layercache.{name}" for name in (*SERVICES, "handlers"))
    reached = {n for n in imports_of(PACKAGE / f"{module}.py") if n.startswith(forbidden)}
    assert not reached, f"{module} reaches into {sorted(reached)}"


def test_shipped_code_never_imports_the_dev_kit() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert not any(name.startswith("layercache_dev") for name in imports_of(path)), path
