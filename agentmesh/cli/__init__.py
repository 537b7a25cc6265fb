"""The `agentmesh` command line."""

from __future__ import annotations

import sys


def main() -> None:
    """`agentmesh ...`: every container starts `agentmesh serve`, so that command loads only
    agentmesh/cli/serve.py (no CLI framework) and the chosen role; the other commands (and the
    libraries they import: typer, rich tables, the registry client, the local mesh) load the whole
    tree in cli/main.py."""
    if sys.argv[1:2] == ["serve"]:
        from agentmesh.cli.serve import command

        command(sys.argv[2:])
        return
    from agentmesh.cli.main import main as full_tree

    full_tree()
