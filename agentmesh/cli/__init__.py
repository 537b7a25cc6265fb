"""The `agentmesh` command line."""

from __future__ import annotations

import sys


def main() -> None:
    """`agentmesh ...`: every container starts `agentmesh serve`, so that command loads only
    agentmesh/cli/serve.py and the chosen role; the other commands (and the libraries they
    import: rich tables, the registry client, the local mesh) load the whole tree in cli/main.py."""
    if sys.argv[1:2] == ["serve"]:
        import typer

        from agentmesh.cli.serve import serve

        serve_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        serve_app.command()(serve)
        serve_app(args=sys.argv[2:], prog_name="agentmesh serve")
        return
    from agentmesh.cli.main import main as full_tree

    full_tree()
