"""The build driver (buildspecs/build_driver.py) as an importable module.

The driver lives beside the buildspec because it ships to CodeBuild from there; tests
and the benchmark import it through here (``from layercache_dev.kit.driver
import build_driver``) so there is only ever the one copy. (mypy sees it as a plain module;
the driver itself is type-checked where it lives.)
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from layercache_dev.kit.paths import BUILDSPECS

DRIVER_PATH = BUILDSPECS / "build_driver.py"


def load_driver() -> ModuleType:
    """Import buildspecs/build_driver.py once, as the module `build_driver`."""
    loaded = sys.modules.get("build_driver")
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location("build_driver", DRIVER_PATH)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {DRIVER_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_driver"] = module  # dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


build_driver = load_driver()

__all__ = ["DRIVER_PATH", "build_driver", "load_driver"]
