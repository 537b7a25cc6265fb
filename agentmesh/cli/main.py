"""`agentmesh`: the command line of the mesh.

Sub-commands live in their own modules and are mounted here. Exit codes that
scripts can rely on: the one table in agentmesh/cli/common.py (EXIT_CODES_HELP, shown by
`--help`, and the README's "Exit codes").
"""

from __future__ import annotations

import asyncio
import json

import typer
from rich.markup import escape

from agentmesh import __version__
from agentmesh.cli import auth as auth_cli
from agentmesh.cli import chaos as chaos_cli
from agentmesh.cli import memory as memory_cli
from agentmesh.cli import profile as profile_cli
from agentmesh.cli import run as run_cli
from agentmesh.cli import serve as serve_cli
from agentmesh.cli import task_commands
from agentmesh.cli import tasks as tasks_cli
from agentmesh.cli import tools as tools_cli
from agentmesh.cli import trace as trace_cli
from agentmesh.cli import up as up_cli
from agentmesh.cli.common import EXIT_CODES_HELP, EXIT_FAILED, EXIT_UNREACHABLE, console, usage_error
from agentmesh.kit import health
from agentmesh.kit.config import ConfigError, Settings, reference_markdown
from agentmesh.kit.protos import proto_include_dir

app = typer.Typer(
    name="agentmesh",
    help="agentmesh: a gRPC micro-agent mesh (agents, tool registry, durable tasks on Redis).",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the configuration contract.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(tools_cli.app, name="tools")
app.add_typer(profile_cli.app, name="profile")
task_commands.mount(tasks_cli.app)
app.add_typer(auth_cli.keys_app, name="keys")
app.add_typer(auth_cli.token_app, name="token")
app.add_typer(tasks_cli.app, name="tasks")
app.command("up")(up_cli.up)
app.command("status")(up_cli.status)
app.command("down")(up_cli.down)
app.command("trace")(trace_cli.trace)
app.command("demo")(up_cli.demo)
app.add_typer(memory_cli.memory_app, name="memory")
app.command("usage")(memory_cli.usage)
app.command("run")(run_cli.run)
app.add_typer(run_cli.agent_app, name="agent")
app.add_typer(chaos_cli.app, name="chaos")


@app.command("serve", help=serve_cli.SUMMARY)
def serve(role: str | None = typer.Argument(None, help=serve_cli.ROLE_HELP)) -> None:
    # Listed here for `agentmesh --help`; `agentmesh serve` itself runs serve_cli.command without typer.
    serve_cli.serve(role)


@app.command()
def version() -> None:
    """Print the agentmesh version."""
    typer.echo(__version__)


@app.command("proto-path")
def proto_path() -> None:
    """Print the include directory holding agentmesh/v1/*.proto (tool_options.proto) for protoc/buf."""
    typer.echo(str(proto_include_dir()))


@config_app.command("show")
def config_show(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the settings this environment resolves to (secrets hidden)."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise usage_error(str(exc)) from None
    values = settings.model_dump(mode="json", by_alias=True)
    for secret in ("AGENTMESH_SERVICE_TOKEN", "MODEL_API_KEY"):
        if values.get(secret):
            values[secret] = "***"
    if as_json:
        typer.echo(json.dumps(values, indent=2))
        return
    for key, value in values.items():
        console.print(f"[cyan]{key}[/cyan]={escape('' if value is None else str(value))}")


@config_app.command("docs")
def config_docs() -> None:
    """Print the configuration reference (Markdown), as in docs/configuration.md."""
    typer.echo(reference_markdown(), nl=False)


@app.command("health")
def health_check(
    target: str = typer.Argument(..., help="gRPC target, e.g. localhost:50051."),
    service: str = typer.Option("", "--service", "-s", help="Service name; empty for the whole server."),
    timeout: float = typer.Option(2.0, help="Seconds to wait for an answer."),
) -> None:
    """Call grpc.health.v1.Health/Check; exit 0 when SERVING, 1 NOT_SERVING, 3 unreachable."""
    status = asyncio.run(health.check(target, service, timeout))
    typer.echo(status)
    if status == health.UNKNOWN:
        raise typer.Exit(EXIT_UNREACHABLE)
    if status != health.SERVING:
        raise typer.Exit(EXIT_FAILED)


def main() -> None:
    app()
