"""Every benchmark module loads: a rename in the product must not break `make bench` silently."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import bench

HERE = Path(bench.__file__).parent
MODULES = sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name != "__main__")


@pytest.mark.parametrize("name", MODULES)
def test_the_benchmark_module_imports(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert module.__name__ == f"bench.{name}"


def test_every_benchmark_module_is_checked() -> None:
    assert {"agent", "auth", "tasks", "tools", "registry", "footprint"} <= set(MODULES)
