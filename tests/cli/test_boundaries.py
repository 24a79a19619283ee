"""What each distribution's code may import: the user's command never the dev kit or moto;
the dev kit's rooms (demo/, bench/) the test kit, never each other; the kit neither room."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from layercache_dev.kit.paths import ROOT

COMMAND = ROOT / "cli" / "layercache_cli"
DEV = ROOT / "tools" / "layercache_dev"
ROOMS = ("demo", "bench")


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def reaching(folder: Path, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """The modules under `folder` that import a `forbidden` package (or a module in one)."""
    found = {
        str(path.relative_to(ROOT)): sorted(
            name
            for name in imports_of(path)
            if any(name == package or name.startswith(f"{package}.") for package in forbidden)
        )
        for path in folder.rglob("*.py")
    }
    return {path: names for path, names in found.items() if names}


def test_the_command_imports_neither_the_dev_kit_nor_moto() -> None:
    assert reaching(COMMAND, ("layercache_dev", "moto", "yaml")) == {}


@pytest.mark.parametrize("room", ROOMS)
def test_a_room_imports_no_other_room(room: str) -> None:
    others = tuple(f"layercache_dev.{other}" for other in ROOMS if other != room)
    assert reaching(DEV / room, others) == {}


def test_the_kit_imports_no_room() -> None:
    rooms = tuple(f"layercache_dev.{room}" for room in ROOMS)
    assert reaching(DEV / "kit", rooms) == {}
