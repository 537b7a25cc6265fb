"""`agentmesh serve`: the container entrypoint; AGENTMESH_ROLE chooses what runs.

Each role is a module exposing `main()`, imported only when chosen so one image
serves every role without loading the others.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import cast

import typer

from agentmesh.cli.common import usage_error
from agentmesh.kit.config import ConfigError, Role, Settings

ROLE_ENTRYPOINTS: dict[Role, str] = {
    Role.REGISTRY: "tool_registry.server:main",
    Role.AGENT: "agents.server:main",
    Role.MODEL: "agents.scripted_model:main",
    Role.CONSOLE: "agentmesh.console.server:main",
}


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


def serve(
    role: str | None = typer.Argument(
        None, help="registry | agent | tool | model | console (default: $AGENTMESH_ROLE)."
    ),
) -> None:
    """Serve one role of the mesh, configured by the environment (see docs/configuration.md)."""
    try:
        settings = Settings.from_env(None, role=role) if role else Settings.from_env()
        main = load(entrypoint_for(settings))
    except ConfigError as exc:
        raise usage_error(str(exc)) from None
    if role:  # the role's main() reads the environment itself
        os.environ["AGENTMESH_ROLE"] = settings.role.value
    main()
