"""The one process entrypoint of every `agentmesh serve` role (registry, agent, tool, model).

    def main() -> None:
        settings = load_settings(Role.MODEL)
        run_process(settings, "model", lambda: serve(settings), fatal=(ScriptError,))

`load_settings` turns a configuration error into its message on stderr and exit code 2.
`run_process` configures logging and tracing from the settings (tracing is off unless an
OTEL exporter is configured), runs the service until it returns (it stops on SIGTERM/SIGINT
through `stop_signals()`), flushes tracing, and turns a start-up error of the `fatal` types
into one log line and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from agentmesh.kit.config import ConfigError, Role, Settings
from agentmesh.kit.logs import configure_logging
from agentmesh.kit.tracing import configure_tracing, shutdown_tracing

log = logging.getLogger(__name__)

EXIT_CONFIG = 2  # a configuration or start-up error (the CLI's "bad usage")


def load_settings(role: Role | None = None) -> Settings:
    """Settings from the environment (for `role`, if given); exit 2 naming each bad variable."""
    try:
        return Settings.from_env(None, role=role.value) if role is not None else Settings.from_env()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def run_process(
    settings: Settings,
    name: str,
    serve: Callable[[], Coroutine[Any, Any, None]],
    *,
    fatal: tuple[type[BaseException], ...] = (),
) -> None:
    """Logging and tracing for `name` (AGENTMESH_SERVICE_NAME wins), then `serve()` to the end.

    `serve` is called inside the event loop's run: build gRPC channels and Redis clients in
    the coroutine it returns, never before (they bind to the loop that exists when made).
    """
    service = settings.service_name or name
    configure_logging(service, settings.log_level, settings.log_format)
    configure_tracing(service, trace_dir=settings.trace_dir)
    try:
        asyncio.run(serve())
    except fatal as exc:
        log.error("%s", exc)
        raise SystemExit(EXIT_CONFIG) from None
    finally:
        shutdown_tracing()
