"""Run every bench module's `main()` (or the ones named: `python -m bench registry kit`)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

HELPERS = {"common"}


def main() -> None:
    wanted = set(sys.argv[1:])
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if module.name.startswith("_") or module.name in HELPERS or (wanted and module.name not in wanted):
            continue
        entry = getattr(importlib.import_module(f"bench.{module.name}"), "main", None)
        if callable(entry):
            print(f"== bench.{module.name}", flush=True)
            entry()


if __name__ == "__main__":
    main()
