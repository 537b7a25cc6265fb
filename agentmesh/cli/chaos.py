"""`agentmesh chaos set|reset|show`: the training dummy's failures and latency, changed at run time.

    agentmesh chaos set --failure-rate 0.3 --latency 200     # 30 % UNAVAILABLE, +200 ms per call
    agentmesh chaos show                                      # counters and the behaviour in force
    agentmesh chaos reset [--stats]                           # behave again (and zero the counters)

Goes through the dummy's own Configure / Stats RPCs (examples/dummy/control.py) on the endpoint
the registry binds to it; `set` changes only the values given (the rest of the behaviour stays).
Exit codes: 0 done, 1 the dummy refused or is not bound, 3 the registry or the dummy could not
be reached.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from agentmesh.cli.common import EXIT_FAILED, EXIT_UNREACHABLE, console, err_console
from agentmesh.kit.errors import AgentmeshError, DeadlineExceeded, Unavailable

app = typer.Typer(help="Change the training dummy's failures and latency at run time.", no_args_is_help=True)

RegistryOption = typer.Option(None, "--registry", help="Registry address (default: env, profile, :50051).")
TokenOption = typer.Option(None, "--token", help="Bearer token (default: AGENTMESH_TOKEN, the profile).")
JsonOption = typer.Option(False, "--json", help="Print JSON.")


StateDirOption = typer.Option(
    None,
    "--state-dir",
    help="State directory of the local mesh whose dev issuer signs (default ./.agentmesh).",
)


def _control(
    registry: str | None,
    token: str | None,
    action: Callable[[Any, Any], Awaitable[dict[str, Any]]],
    state_dir: Path | None = None,
) -> dict[str, Any]:
    from agentmesh.cli.profile_file import resolve_registry, resolve_token
    from agentmesh.cli.up import _state_dir
    from agentmesh.kit.channels import create_channel
    from agentmesh.localmesh.devauth import mesh_issuer, operator_credentials
    from agents.client import caller_metadata
    from tool_registry.resolver import ToolResolver

    address = resolve_registry(registry)

    async def go() -> dict[str, Any]:
        channel = create_channel(address, control_plane=True)
        metadata = caller_metadata(token=resolve_token(token))
        resolver = ToolResolver(channel, metadata=lambda: metadata)
        # The dummy's controls are not tools: with auth on they take a token for the method itself,
        # which the local mesh's issuer mints for its operator (no issuer: auth is off).
        credentials = operator_credentials(mesh_issuer(_state_dir(state_dir)))
        try:
            return await action(resolver, credentials)
        finally:
            await resolver.close()
            await channel.close()

    try:
        return asyncio.run(go())
    except (Unavailable, DeadlineExceeded) as exc:
        err_console.print(
            Text(f"the registry at {address} or the dummy could not be reached: {exc.message}", "red")
        )
        raise typer.Exit(EXIT_UNREACHABLE) from None
    except AgentmeshError as exc:
        err_console.print(Text(f"{exc.code.name}: {exc.message}", "red"))
        raise typer.Exit(EXIT_FAILED) from None


def _print(document: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(document, indent=2))
        return
    if not document:
        console.print("the dummy behaves (no failures, no added latency)")
    for key, value in document.items():
        console.print(Text(f"{key} = {value}"))


def _seconds(millis: float) -> str:
    return f"{millis / 1000:.3f}s"


@app.command("set")
def set_behaviour(
    failure_rate: float | None = typer.Option(
        None, "--failure-rate", min=0.0, max=1.0, help="Share of calls answered UNAVAILABLE."
    ),
    latency_ms: float | None = typer.Option(None, "--latency", min=0.0, help="Added latency per call (ms)."),
    exhausted_rate: float | None = typer.Option(
        None, "--exhausted-rate", min=0.0, max=1.0, help="Share answered RESOURCE_EXHAUSTED + RetryInfo."
    ),
    hang_rate: float | None = typer.Option(
        None, "--hang-rate", min=0.0, max=1.0, help="Share that hang past the deadline (no effect)."
    ),
    succeed_then_hang_rate: float | None = typer.Option(
        None, "--succeed-then-hang-rate", min=0.0, max=1.0, help="Share that do the work, then hang."
    ),
    fail_next: int | None = typer.Option(None, "--fail-next", min=0, help="The next N calls fail."),
    seed: int | None = typer.Option(
        None, "--seed", help="Make the rates repeatable with this number (0: random)."
    ),
    replace: bool = typer.Option(False, "--replace", help="Drop every value not given here."),
    registry: str | None = RegistryOption,
    token: str | None = TokenOption,
    state_dir: Path | None = StateDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Change the dummy's failure rates and latency (the values not given stay as they are)."""
    given: dict[str, Any] = {
        "unavailable_rate": failure_rate,
        "latency": None if latency_ms is None else _seconds(latency_ms),
        "exhausted_rate": exhausted_rate,
        "hang_rate": hang_rate,
        "succeed_then_hang_rate": succeed_then_hang_rate,
        "fail_next": fail_next,
        "seed": seed,
    }
    changes = {key: value for key, value in given.items() if value is not None}

    async def action(resolver: Any, credentials: Any) -> dict[str, Any]:
        from examples.dummy.control import configure, stats

        current = {} if replace else dict((await stats(resolver, credentials)).get("behaviour", {}))
        return await configure(resolver, {**current, **changes}, credentials)

    _print(_control(registry, token, action, state_dir), as_json)


@app.command("reset")
def reset(
    reset_stats: bool = typer.Option(False, "--stats", help="Also zero the dummy's counters."),
    registry: str | None = RegistryOption,
    token: str | None = TokenOption,
    state_dir: Path | None = StateDirOption,
    as_json: bool = JsonOption,
) -> None:
    """The dummy behaves again: no injected failures, no added latency."""

    async def action(resolver: Any, credentials: Any) -> dict[str, Any]:
        from examples.dummy.control import configure

        return await configure(resolver, {"reset_stats": True} if reset_stats else {}, credentials)

    _print(_control(registry, token, action, state_dir), as_json)


@app.command("show")
def show(
    registry: str | None = RegistryOption,
    token: str | None = TokenOption,
    state_dir: Path | None = StateDirOption,
    as_json: bool = JsonOption,
) -> None:
    """The dummy's counters (calls, side effects, injected failures) and its behaviour."""

    async def action(resolver: Any, credentials: Any) -> dict[str, Any]:
        from examples.dummy.control import stats

        return await stats(resolver, credentials)

    _print(_control(registry, token, action, state_dir), as_json)
