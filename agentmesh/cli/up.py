"""`agentmesh up` and `agentmesh status`: the local mesh."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import typer

from agentmesh import health
from agentmesh.cli.common import EXIT_FAILED, console, err_console
from agentmesh.embedded_redis import EmbeddedRedis
from agentmesh.localmesh.plan import REDIS_PORT, MeshOptions, build_plan, ports_in_use
from agentmesh.localmesh.supervisor import STATE_FILE, LocalMesh, MeshStartError, collect_status
from agentmesh.net import port_open

DEFAULT_STATE_DIR = Path(".agentmesh")


def _state_dir(value: Path | None) -> Path:
    return value or Path(os.environ.get("AGENTMESH_STATE_DIR", DEFAULT_STATE_DIR))


def busy_ports(ports: list[int]) -> list[int]:
    return [p for p in ports if port_open("127.0.0.1", p)]


async def _run(mesh: LocalMesh) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await mesh.start()
        console.print("[green]mesh is up[/green] — `agentmesh status` in another shell; Ctrl-C to stop")
        await mesh.supervise(stop)
    finally:
        console.print("stopping the mesh…")
        await mesh.stop()


def up(
    state_dir: Path = typer.Option(None, help="Where logs and mesh.json go (default ./.agentmesh)."),
    redis_url: str = typer.Option(
        None, envvar="REDIS_URL", help="Use this Redis instead of starting an embedded valkey on port 6390."
    ),
    model_url: str = typer.Option(
        None, envvar="MODEL_BASE_URL", help="OpenAI-compatible model API; default: the scripted model server."
    ),
    model_name: str = typer.Option("scripted", envvar="MODEL_NAME", help="Model name sent to the model API."),
) -> None:
    """Start the local mesh in the foreground (Redis, registry, example tools, scripted model, agents)."""
    state = _state_dir(state_dir)
    redis = None if redis_url else EmbeddedRedis(port=REDIS_PORT, data_dir=state / "redis", appendonly=True)
    url = redis_url or redis.url  # type: ignore[union-attr]
    options = MeshOptions(redis_url=url, model_base_url=model_url, model_name=model_name)
    plan = build_plan(options)
    busy = busy_ports(ports_in_use(plan) + ([] if redis_url else [REDIS_PORT]))
    if busy:
        err_console.print(
            f"[red]ports already in use: {', '.join(map(str, busy))}[/red] — is a mesh already running? "
            "(`agentmesh status`)"
        )
        raise typer.Exit(EXIT_FAILED)
    mesh = LocalMesh(plan, state, redis=redis, redis_url=url, report=console.print)
    try:
        asyncio.run(_run(mesh))
    except MeshStartError as exc:
        err_console.print(f"[red]the mesh did not start:[/red] {exc}")
        raise typer.Exit(EXIT_FAILED) from None


def status(
    state_dir: Path = typer.Option(None, help="State directory of the mesh (default ./.agentmesh)."),
    as_json: bool = typer.Option(False, "--json", help="Print the status document as JSON."),
) -> None:
    """Health of every service of the running local mesh; exit 0 when all are SERVING."""
    state_file = _state_dir(state_dir) / STATE_FILE
    if not state_file.exists():
        err_console.print(f"no mesh is running (no {state_file}); start one with `agentmesh up`")
        raise typer.Exit(EXIT_FAILED)
    document = asyncio.run(collect_status(json.loads(state_file.read_text())))
    if as_json:
        typer.echo(json.dumps(document, indent=2))
    else:
        from rich.table import Table

        table = Table("service", "kind", "gRPC", "HTTP", "pid", "health")
        for s in document["services"]:
            colour = "green" if s["health"] == health.SERVING else "red"
            table.add_row(
                s["name"], s["kind"], s["grpc"] or "", s["http"] or "", str(s["pid"] or ""),
                f"[{colour}]{s['health']}[/{colour}]",
            )  # fmt: skip
        console.print(f"redis: {document['redis']}")
        console.print(table)
    if any(s["health"] != health.SERVING for s in document["services"]):
        raise typer.Exit(EXIT_FAILED)
