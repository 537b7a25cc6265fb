"""Footprint guards: `agentmesh serve` loads only the serve command, and a service's modules leave
heavy libraries to the point of use (bench/footprint.py measures what this keeps)."""

from __future__ import annotations

import json
import subprocess
import sys

CHECK = """
import json, sys
{setup}
heavy = ("agentmesh.cli.main", "agentmesh.cli.tools", "agentmesh.cli.up", "agentmesh.localmesh",
         "protovalidate", "jsonschema", "kubernetes", "matplotlib",
         "typer", "click", "rich", "grpc_tools.protoc")
print(json.dumps(sorted(name for name in heavy if name in sys.modules)))
"""


def loaded(setup: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", CHECK.format(setup=setup)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_serve_loads_only_the_serve_command() -> None:
    setup = """
sys.argv = ["agentmesh", "serve", "--help"]
from agentmesh.cli import main
try:
    main()
except SystemExit:
    pass
"""
    assert loaded(setup) == []


def test_the_other_commands_still_load_the_whole_tree() -> None:
    setup = """
sys.argv = ["agentmesh", "version"]
from agentmesh.cli import main
try:
    main()
except SystemExit:
    pass
"""
    assert "agentmesh.cli.main" in loaded(setup)


def test_service_modules_import_no_validation_or_cli_libraries() -> None:
    assert loaded("import agents.server, tool_registry.server, examples.dummy, agents.scripted_model") == []
