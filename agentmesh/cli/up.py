"""`agentmesh up` and `agentmesh status`: the local mesh."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from agentmesh.cli.common import (
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    console,
    current_settings,
    err_console,
)
from agentmesh.kit import health
from agentmesh.kit.config import Settings
from agentmesh.kit.net import port_bindable
from agentmesh.kit.signals import stop_signals
from agentmesh.localmesh.devauth import DevIssuer, dev_issuer, mesh_issuer
from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agentmesh.localmesh.plan import (
    CONSOLE_DEV_TOKENS,
    DEFAULT_TOOLS,
    DEMO_SCRIPT,
    REPO_ROOT,
    MeshOptions,
    build_plan,
    default_agents,
    ports_in_use,
    service_names,
)
from agentmesh.localmesh.supervisor import STATE_FILE, LocalMesh, MeshStartError, collect_status

DEFAULT_STATE_DIR: Path = Settings.model_fields["state_dir"].default
MAX_PORT = 65_535
DETACH_TIMEOUT_S = 180.0
TRACES_DIR = "traces"


def _state_dir(value: Path | None) -> Path:
    return value or current_settings().state_dir


def busy_ports(ports: list[int]) -> list[int]:
    return [p for p in ports if not port_bindable("127.0.0.1", p)]


def _report(text: str) -> None:
    """The supervisor's lines (names, addresses, log paths) are plain text, never markup."""
    console.print(text, markup=False)


async def _run(mesh: LocalMesh, registry: str, *, demo: bool, issuer: DevIssuer | None) -> bool:
    """Start the mesh, play the demo once it is healthy, serve until a signal; False if the demo failed."""
    async with stop_signals() as stop:  # stopping the mesh runs inside: a second Ctrl-C cannot cut it
        return await _serve(mesh, registry, stop, demo=demo, issuer=issuer)


async def _serve(
    mesh: LocalMesh, registry: str, stop: asyncio.Event, *, demo: bool, issuer: DevIssuer | None
) -> bool:
    """The mesh's life from start to stop; `stop` is set by a signal."""
    ok = True
    try:
        await mesh.start()
        console.print("[green]mesh is up[/green]")
        for planned in mesh.plan:
            if planned.url:
                console.print(f"operator console: {planned.url} (sign in with a mesh token)")
        _write_profile(registry, mesh.redis_url, issuer)
        if demo:
            # The supervisor restarts crashed services while the stories play.
            supervising = asyncio.ensure_future(mesh.supervise(stop))
            ok = await _play_demo(registry, (), issuer)
            if not stop.is_set():
                console.print(
                    'the mesh keeps serving: `agentmesh status`, `agentmesh run fulfillment "…"`, '
                    "`agentmesh demo` in another shell; Ctrl-C to stop"
                )
            await supervising
        else:
            console.print("`agentmesh status` or `agentmesh demo` in another shell; Ctrl-C to stop")
            await mesh.supervise(stop)
    finally:
        console.print("stopping the mesh…")
        await mesh.stop()
    return ok


def _write_profile(registry: str, redis_url: str, issuer: DevIssuer | None) -> None:
    """Point the CLI profile at this mesh with this mesh's tokens (other fields are kept)."""
    from agentmesh.cli.profile_file import ProfileError, load_profile, profile_path, save_profile

    try:
        profile = load_profile()
    except ProfileError as exc:
        err_console.print(f"[yellow]not updating the CLI profile:[/yellow] {escape(str(exc))}")
        return
    profile.registry, profile.redis_url = registry, redis_url
    if issuer is not None:  # a demo user's token and a separate approver's (holding refunds:approve)
        profile.token, profile.approver_token = issuer.user_token(), issuer.approver_token()
    else:
        profile.token = profile.approver_token = None
    save_profile(profile)
    console.print(escape(f"CLI profile {profile_path()} now points at this mesh (registry {registry})"))


async def _play_demo(registry: str, stories: tuple[str, ...], issuer: DevIssuer | None) -> bool:
    from agentmesh.localmesh.demo import play, print_summary

    outcomes, scripted = await play(registry, stories, issuer=issuer)
    print_summary(outcomes, scripted)
    return all(o.status != "failed" for o in outcomes)


def up(
    state_dir: Path = typer.Option(None, help="Where logs and mesh.json go (default ./.agentmesh)."),
    redis_url: str | None = typer.Option(
        None,
        help="Use this Redis instead of starting an embedded valkey on port 6390 (default: REDIS_URL).",
    ),
    model_url: str | None = typer.Option(
        None,
        help="OpenAI-compatible model API (default: MODEL_BASE_URL, else the scripted model server).",
    ),
    model_name: str | None = typer.Option(
        None, help="Model name sent to the model API (default: MODEL_NAME, else scripted)."
    ),
    model_script: Path = typer.Option(
        DEMO_SCRIPT, "--model-script", help="Script of the scripted model server (ignored with a model URL)."
    ),
    agent_specs: list[Path] = typer.Option(
        None,
        "--agent",
        help="Domain spec to serve (repeatable; default: refunds, fulfillment, training, conformance).",
    ),
    tools: list[str] = typer.Option(
        None, "--tool", help=f"Example tool to run (repeatable; default: {', '.join(DEFAULT_TOOLS)})."
    ),
    demo: bool = typer.Option(False, "--demo", help="Play the demo stories once the mesh is healthy."),
    record_traces: bool = typer.Option(
        True,
        "--traces/--no-traces",
        help="Record every service's spans in <state-dir>/traces (OTLP JSON lines) for `agentmesh trace`.",
    ),
    detach: bool = typer.Option(
        False,
        "--detach",
        help="Run the mesh in the background; return once every service is SERVING "
        "(logs in <state-dir>/logs, stop it with `agentmesh down`).",
    ),
    insecure_no_auth: bool = typer.Option(
        False,
        "--insecure-no-auth",
        help="Run every service without authentication (callers name themselves in headers). "
        "Local development only: it warns at every start.",
    ),
    replicas: int = typer.Option(
        1,
        "--replicas",
        min=1,
        help="Agent processes per domain (they share the domain's task queue: kill one and another "
        "resumes its tasks). Replicas after the first are named agent-<domain>-<n> and take the agent "
        "ports after every domain's (50065, 50066, ...); 3 fit beside the default tools.",
    ),
    port_offset: int | None = typer.Option(
        None,
        "--port-offset",
        min=0,
        help="Add this to every port (registry 50051, agents 5006x, tools 5007x, model 50099, valkey 6390), "
        "e.g. to run a second mesh beside the first (default: AGENTMESH_PORT_OFFSET, else 0).",
    ),
) -> None:
    """Start the local mesh in the foreground (Redis, registry, example tools, scripted model, agents)."""
    from agents.spec import SpecError, load_spec

    # Unset options take their defaults from Settings (the same variables the services read).
    settings = current_settings()
    if redis_url is None and "redis_url" in settings.model_fields_set:  # else: the embedded valkey
        redis_url = settings.redis_url
    model_url = model_url or settings.model_base_url
    model_name = model_name or settings.model_name or "scripted"
    port_offset = settings.port_offset if port_offset is None else port_offset

    try:
        agents = (
            [(load_spec(path).slug, path.resolve()) for path in agent_specs]
            if agent_specs
            else default_agents()
        )
    except SpecError as exc:
        err_console.print(str(exc), markup=False)
        raise typer.Exit(EXIT_USAGE) from None
    unknown = sorted(set(tools or ()) - set(DEFAULT_TOOLS))
    if unknown:
        err_console.print(
            f"[red]unknown example tool(s): {escape(', '.join(unknown))}[/red] "
            f"(known: {', '.join(DEFAULT_TOOLS)})"
        )
        raise typer.Exit(EXIT_USAGE)
    state = _state_dir(state_dir)
    traces = {"AGENTMESH_TRACE_DIR": str((state / TRACES_DIR).resolve())} if record_traces else {}
    options = MeshOptions(
        extra_env=traces,
        port_offset=port_offset,
        redis_url=redis_url or "",
        model_base_url=model_url,
        model_name=model_name,
        model_script=model_script.resolve(),
        agents=agents,
        tools=tuple(tools or DEFAULT_TOOLS),
        replicas={domain: replicas for domain, _ in agents},
    )
    try:
        planned = build_plan(options)
    except ValueError as exc:
        err_console.print(f"[red]{escape(str(exc))}[/red] (fewer --replicas, or fewer --agent/--tool)")
        raise typer.Exit(EXIT_USAGE) from None
    ports = ports_in_use(planned) + ([] if redis_url else [options.redis_port])
    if max(ports) > MAX_PORT:
        err_console.print(f"[red]--port-offset {port_offset} puts ports above {MAX_PORT}[/red]")
        raise typer.Exit(EXIT_USAGE)
    busy = busy_ports(ports)
    if busy:
        err_console.print(
            f"[red]ports already in use: {', '.join(map(str, busy))}[/red] — is a mesh already running? "
            "(`agentmesh status`; `--port-offset` runs another beside it)"
        )
        raise typer.Exit(EXIT_FAILED)
    if detach:
        argv = [sys.executable, "-m", "agentmesh", "up", "--state-dir", str(state.resolve())]
        argv += ["--port-offset", str(port_offset), "--model-name", model_name]
        argv += ["--replicas", str(replicas)]
        argv += ["--model-script", str(options.model_script)]
        argv += ["--redis-url", redis_url] if redis_url else []
        argv += ["--model-url", model_url] if model_url else []
        for _, spec_path in agents:
            argv += ["--agent", str(spec_path)]
        for tool in options.tools:
            argv += ["--tool", tool]
        argv += ["--demo"] if demo else []
        argv += [] if record_traces else ["--no-traces"]
        argv += ["--insecure-no-auth"] if insecure_no_auth else []
        _detach(argv, state)
        return
    options = replace(options, console_dev_tokens=state / CONSOLE_DEV_TOKENS)
    issuer: DevIssuer | None = None
    if insecure_no_auth:
        err_console.print(
            "[yellow]WARNING: authentication is OFF (--insecure-no-auth): "
            "any caller can act as any user[/yellow]"
        )
        options = replace(options, insecure_no_auth=True)
    else:
        issuer = dev_issuer(state)
        options = replace(
            options,
            signing_key=issuer.key_path,
            jwks=issuer.jwks_path,
            service_tokens={name: issuer.service_token(name) for name in service_names(options)},
        )
        # The console's sign-in page offers the same two identities as the CLI profile.
        dev_tokens = {"demo user": issuer.user_token(), "approver": issuer.approver_token()}
        (state / CONSOLE_DEV_TOKENS).parent.mkdir(parents=True, exist_ok=True)
        (state / CONSOLE_DEV_TOKENS).write_text(json.dumps(dev_tokens))
    redis = None
    if not redis_url:
        redis = EmbeddedRedis(port=options.redis_port, data_dir=state / "redis", appendonly=True)
        options = replace(options, redis_url=redis.url)
    plan = build_plan(options)
    mesh = LocalMesh(plan, state, redis=redis, redis_url=options.redis_url, report=_report, cwd=REPO_ROOT)
    try:
        ok = asyncio.run(_run(mesh, options.registry_address, demo=demo, issuer=issuer))
    except MeshStartError as exc:
        err_console.print(f"[red]the mesh did not start:[/red] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILED) from None
    if not ok:
        raise typer.Exit(EXIT_FAILED)


def _detach(argv: list[str], state: Path) -> None:
    from agentmesh.localmesh.detached import DetachError, spawn_up, wait_healthy

    console.print(f"starting the mesh in the background (log: {state / 'logs' / 'up.log'})…")
    try:
        started = asyncio.run(
            wait_healthy(spawn_up(argv, state, cwd=REPO_ROOT), state, timeout=DETACH_TIMEOUT_S)
        )
    except DetachError as exc:
        err_console.print(f"[red]the mesh did not start:[/red] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILED) from None
    _print_status(started.status)
    console.print(f"[green]mesh is up[/green] (supervisor pid {started.pid})")
    console.print(f"logs: {state.resolve() / 'logs'} (one file per service; up.log for the supervisor)")
    console.print(
        "stop it with `agentmesh down" + (f" --state-dir {state}" if state != DEFAULT_STATE_DIR else "") + "`"
    )


def down(
    state_dir: Path = typer.Option(None, help="State directory of the mesh (default ./.agentmesh)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was stopped as JSON."),
) -> None:
    """Stop the local mesh `agentmesh up` started (detached or not): nothing it started is left running."""
    from agentmesh.localmesh.detached import stop_detached

    state = _state_dir(state_dir)
    stopped = stop_detached(state)
    if stopped is None:
        err_console.print(f"no mesh is running (no {state / STATE_FILE})")
        raise typer.Exit(EXIT_FAILED)
    if as_json:
        typer.echo(
            json.dumps(
                {"stopped": stopped.pids, "by_supervisor": stopped.by_supervisor, "killed": stopped.killed}
            )
        )
        return
    how = "by its supervisor" if stopped.by_supervisor else "directly (its supervisor was gone)"
    console.print(f"stopped {len(stopped.pids)} processes {how}")
    if stopped.killed:
        console.print(
            f"[yellow]{len(stopped.killed)} outlived SIGTERM and were killed:[/yellow] {stopped.killed}"
        )


def demo(
    registry: str = typer.Option(
        None, "--registry", help="Registry of the mesh (default: env, profile, :50051)."
    ),
    state_dir: Path = typer.Option(
        None,
        help="State directory of the mesh (default ./.agentmesh): its dev issuer mints the stories' tokens.",
    ),
    stories: list[str] = typer.Option(
        None,
        "--story",
        help="Play only this story (repeatable): refund, refund-approval, denied, fulfillment, "
        "training-dummy.",
    ),
) -> None:
    """Play the example stories against a running mesh (`agentmesh up` elsewhere); exit 1 if one fails."""
    from agentmesh.cli.profile_file import resolve_registry
    from agentmesh.localmesh.demo import STORIES

    known = [s.name for s in STORIES]
    unknown = sorted(set(stories or ()) - set(known))
    if unknown:
        err_console.print(
            f"[red]unknown story: {escape(', '.join(unknown))}[/red] (stories: {', '.join(known)})"
        )
        raise typer.Exit(EXIT_USAGE)
    address = resolve_registry(registry)
    if asyncio.run(health.check(address, "agentmesh.v1.ToolRegistryService", 2.0)) != health.SERVING:
        err_console.print(
            f"[red]no registry is serving at {escape(address)}[/red]; start the mesh with `agentmesh up`"
        )
        raise typer.Exit(EXIT_UNREACHABLE)
    if not asyncio.run(_play_demo(address, tuple(stories or ()), mesh_issuer(_state_dir(state_dir)))):
        raise typer.Exit(EXIT_FAILED)


def _print_status(document: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table("service", "kind", "gRPC", "HTTP", "pid", "health")
    for s in document["services"]:
        colour = "green" if s["health"] == health.SERVING else "red"
        http = f"http://{s['http']}/" if s["kind"] == "console" and s["http"] else s["http"] or ""
        table.add_row(
            s["name"], s["kind"], s["grpc"] or "", http, str(s["pid"] or ""),
            f"[{colour}]{s['health']}[/{colour}]",
        )  # fmt: skip
    console.print(f"redis: {escape(str(document['redis']))}")
    if document.get("auth") == "off":
        console.print("[yellow]auth: off (--insecure-no-auth): callers name themselves[/yellow]")
    else:
        console.print("auth: on")
    console.print(table)


def status(
    state_dir: Path = typer.Option(None, help="State directory of the mesh (default ./.agentmesh)."),
    as_json: bool = typer.Option(False, "--json", help="Print the status document as JSON."),
) -> None:
    """Health of every service of the running local mesh; exit 0 when all are SERVING."""
    state_file = _state_dir(state_dir) / STATE_FILE
    if not state_file.exists():
        err_console.print(escape(f"no mesh is running (no {state_file}); start one with `agentmesh up`"))
        raise typer.Exit(EXIT_FAILED)
    document = asyncio.run(collect_status(json.loads(state_file.read_text())))
    if as_json:
        typer.echo(json.dumps(document, indent=2))
    else:
        _print_status(document)
    if any(s["health"] != health.SERVING for s in document["services"]):
        raise typer.Exit(EXIT_FAILED)
