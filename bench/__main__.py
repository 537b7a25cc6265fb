"""`python -m bench` (make bench): run every bench module's `main()`."""

from __future__ import annotations

import importlib
import pkgutil

import bench


def run_all() -> None:
    for module in sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")):
        entry = getattr(importlib.import_module(f"bench.{module}"), "main", None)
        if callable(entry):
            print(f"== bench.{module}", flush=True)
            entry()


if __name__ == "__main__":
    run_all()
