"""`agentmesh serve`: the container entrypoint; AGENTMESH_ROLE chooses what runs.

Each role is a module exposing `main()`, imported only when chosen so one image
serves every role without loading the others. The command itself parses its one
optional argument by hand: every container starts here, so it loads no CLI
framework or terminal library (typer, click, rich: ~4 MB and ~0.2 s of start).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import cast

from agentmesh.cli.exits import EXIT_OK, EXIT_USAGE
from agentmesh.kit.config import ConfigError, Role, Settings

ROLE_ENTRYPOINTS: dict[Role, str] = {
    Role.REGISTRY: "tool_registry.server:main",
    Role.AGENT: "agents.server:main",
    Role.MODEL: "agents.scripted_model:main",
    Role.CONSOLE: "agentmesh.console.server:main",
}
SUMMARY = "Serve one role of the mesh, configured by the environment (see docs/configuration.md)."
ROLE_HELP = "registry | agent | tool | model | console (default: $AGENTMESH_ROLE)."
USAGE = f"Usage: agentmesh serve [ROLE]\n\n  {SUMMARY}\n\nArguments:\n  ROLE  {ROLE_HELP}\n"


def entrypoint_for(settings: Settings) -> str:
    if settings.role is Role.TOOL:
        if not settings.tool:
            raise ConfigError("AGENTMESH_ROLE=tool needs AGENTMESH_TOOL (e.g. payments, or module:function)")
        return settings.tool if ":" in settings.tool else f"examples.{settings.tool}:main"
    return ROLE_ENTRYPOINTS[settings.role]


def load(entrypoint: str) -> Callable[[], None]:
    module_name, _, function = entrypoint.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"no module {module_name!r} for entrypoint {entrypoint!r}") from None
        raise
    target = getattr(module, function or "main", None)
    if not callable(target):
        raise ConfigError(f"{module_name!r} has no callable {function or 'main'!r}")
    return cast(Callable[[], None], target)


def serve(role: str | None) -> None:
    """Serve `role` (None: $AGENTMESH_ROLE); a bad configuration exits with EXIT_USAGE and the reason."""
    try:
        settings = Settings.from_env(None, role=role) if role else Settings.from_env()
        main = load(entrypoint_for(settings))
    except ConfigError as exc:
        print(f"agentmesh serve: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    if role:  # the role's main() reads the environment itself
        os.environ["AGENTMESH_ROLE"] = settings.role.value
    main()


def command(args: Sequence[str]) -> None:
    """`agentmesh serve [ROLE]` from the arguments after `serve`."""
    if any(arg in ("-h", "--help") for arg in args):
        print(USAGE, end="")
        raise SystemExit(EXIT_OK)
    if len(args) > 1 or any(arg.startswith("-") for arg in args):
        print(f"agentmesh serve: unexpected arguments {' '.join(args)!r}\n\n{USAGE}", end="", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    serve(args[0] if args else None)
