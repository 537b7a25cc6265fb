"""`agentmesh tools …`: register, list, inspect, diff, deprecate and bind tools; browse agents.

The registry address comes from `--registry`, else AGENTMESH_REGISTRY, else the
CLI profile (`agentmesh profile`), else localhost:50051. Human tables by default,
`--json` for scripts. Exit codes: agentmesh/cli/common.py's table (1 also: incompatible).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import typer
from google.protobuf import descriptor_pb2, duration_pb2, json_format
from google.protobuf.message import Message
from rich.markup import escape

from agentmesh.cli.common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    Column,
    console,
    fail,
    print_id_table,
    usage_error,
)
from agentmesh.cli.profile_file import resolve_registry, resolve_token
from agentmesh.kit.channels import create_channel
from agentmesh.kit.errors import AgentmeshError, from_rpc_error
from agentmesh.v1 import tool_options_pb2, tool_pb2, tool_registry_service_pb2_grpc
from agentmesh.v1 import tool_registry_service_pb2 as rs
from tool_registry.compat import check_compatibility
from tool_registry.descriptors import load_tool_schema, tool_methods
from tool_registry.protoc import compile_protos
from tool_registry.reflection_client import fetch_descriptor_set
from tool_registry.server import REGISTRY_MAX_MESSAGE_BYTES

T = TypeVar("T")

app = typer.Typer(
    help="Tools in the registry: register, list, get, diff, deprecate, bind.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
)
agents_app = typer.Typer(help="The agent directory.", epilog=EXIT_CODES_HELP, no_args_is_help=True)
app.add_typer(agents_app, name="agents")

RegistryOption = typer.Option(None, "--registry", "-r", help="Registry target (default $AGENTMESH_REGISTRY).")
JsonOption = typer.Option(False, "--json", help="Print JSON for scripts.")

_SIDE_EFFECTS = {
    name.removeprefix("SIDE_EFFECT_").lower().replace("_", "-"): value
    for name, value in tool_options_pb2.SideEffect.items()
    if value
}


class BadUsage(Exception):
    """Bad command-line input: exit 2."""


def registry_target(option: str | None) -> str:
    """--registry, then AGENTMESH_REGISTRY, then the CLI profile, then localhost:50051."""
    return resolve_registry(option)


class _Bearer(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Every registry call carries the caller's token (the registry verifies it: auth is on)."""

    def __init__(self, token: str) -> None:
        from agents.client import caller_metadata

        self.metadata = caller_metadata(token=token)

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        for key, value in self.metadata:
            if key not in metadata:
                metadata.add(key, value)
        return await continuation(details._replace(metadata=metadata), request)


def _run(
    target: str | None,
    body: Callable[[tool_registry_service_pb2_grpc.ToolRegistryServiceStub], Awaitable[T]],
    *,
    token: str | None = None,
) -> T:
    """`body` against the registry, its calls carrying --token / AGENTMESH_TOKEN / the profile's token."""

    async def main() -> T:
        options = [
            ("grpc.max_send_message_length", REGISTRY_MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", REGISTRY_MAX_MESSAGE_BYTES),
        ]
        bearer = resolve_token(token)
        async with create_channel(
            registry_target(target),
            control_plane=True,
            extra_options=options,
            interceptors=(_Bearer(bearer),) if bearer else (),
        ) as channel:
            return await body(tool_registry_service_pb2_grpc.ToolRegistryServiceStub(channel))

    try:
        return asyncio.run(main())
    except BadUsage as exc:
        raise usage_error(str(exc)) from None
    except AgentmeshError as exc:
        raise fail(exc, f"registry {registry_target(target)}") from None
    except grpc.aio.AioRpcError as exc:
        raise fail(from_rpc_error(exc), f"registry {registry_target(target)}") from None


def _dict(message: Message, *, schema: bool = False) -> dict[str, Any]:
    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    if not schema:
        _strip_schema(data)
    return data


def _strip_schema(data: Any) -> None:
    if isinstance(data, dict):
        data.pop("file_descriptor_set", None)
        for value in data.values():
            _strip_schema(value)
    elif isinstance(data, list):
        for item in data:
            _strip_schema(item)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def _side_effect_name(value: int) -> str:
    return tool_options_pb2.SideEffect.Name(value).removeprefix("SIDE_EFFECT_")  # type: ignore[arg-type]


# Names, versions, endpoints and methods never wrap (an 80-column terminal broke `crm_get_cu` /
# `stomer`); what does not fit is left out, method first.
TOOL_COLUMNS = (
    Column("name"),
    Column("version"),
    Column("side effect", drop=4),
    Column("endpoint"),
    Column("method", drop=1),
    Column("tags", text=True, drop=2),
    Column("status", drop=3),
)


def tool_row(tool: tool_pb2.ToolSpec) -> list[str]:
    status = "deprecated" if tool.deprecated else ("agent" if tool.kind == tool_pb2.TOOL_KIND_AGENT else "")
    return [
        tool.name,
        tool.version,
        _side_effect_name(tool.side_effect),
        tool.endpoint or "-",
        tool.method,
        ",".join(tool.tags),
        status,
    ]


# -- register ----------------------------------------------------------------------


def _compile(file: Path, include: list[Path]) -> descriptor_pb2.FileDescriptorSet:
    if not file.is_file():
        raise BadUsage(f"{file}: no such file")
    return compile_protos([file], include)


def _overrides(
    name: str | None,
    version: str | None,
    description: str | None,
    side_effect: str | None,
    requires_approval: bool | None,
    scopes: list[str],
    tags: list[str],
    timeout: float | None,
    endpoint: str | None,
) -> tool_pb2.ToolSpec:
    spec = tool_pb2.ToolSpec(
        name=name or "",
        version=version or "",
        description=description or "",
        required_scopes=scopes,
        tags=tags,
        endpoint=endpoint or "",
    )
    if side_effect:
        if side_effect not in _SIDE_EFFECTS:
            raise BadUsage(f"--side-effect must be one of {', '.join(_SIDE_EFFECTS)}")
        spec.side_effect = _SIDE_EFFECTS[side_effect]
    if requires_approval:
        spec.requires_approval = True
    if timeout is not None:
        if timeout < 0:
            raise BadUsage("--timeout must not be negative")
        spec.timeout.CopyFrom(duration_pb2.Duration(seconds=int(timeout), nanos=int((timeout % 1) * 1e9)))
    return spec


@app.command()
def register(
    file: Path | None = typer.Argument(None, help="The .proto file holding the tool method(s)."),
    from_reflection: str | None = typer.Option(
        None, "--from-reflection", help="Fetch descriptors from a live server (HOST:PORT) instead of a file."
    ),
    method: list[str] = typer.Option(
        [], "--method", "-m", help="pkg.Svc/Method; default: every tool method."
    ),
    endpoint: str | None = typer.Option(
        None, "--endpoint", "-e", help="Where the tool is served (HOST:PORT)."
    ),
    include: list[Path] = typer.Option([], "--include", "-I", help="Extra include directories."),
    name: str | None = typer.Option(None, "--name", help="Override the tool name."),
    version: str | None = typer.Option(None, "--version", help="Override the version."),
    description: str | None = typer.Option(None, "--description", help="Override the description."),
    side_effect: str | None = typer.Option(
        None, "--side-effect", help="read-only|idempotent|keyed|non-idempotent"
    ),
    requires_approval: bool | None = typer.Option(
        None, "--requires-approval", help="Every call needs approval."
    ),
    scope: list[str] = typer.Option([], "--scope", help="Required scope (repeatable)."),
    tag: list[str] = typer.Option([], "--tag", help="Tag (repeatable)."),
    timeout: float | None = typer.Option(None, "--timeout", help="Per-attempt timeout in seconds."),
    validate_only: bool = typer.Option(False, "--validate-only", help="Check everything, store nothing."),
    registry: str | None = RegistryOption,
    as_json: bool = JsonOption,
) -> None:
    """Register the tool method(s) of a .proto file, or of a live server through reflection."""
    if (file is None) == (from_reflection is None):
        raise usage_error("give a FILE.proto or --from-reflection HOST:PORT (one of them)")
    try:
        overrides = _overrides(
            name,
            version,
            description,
            side_effect,
            requires_approval,
            scope,
            tag,
            timeout,
            endpoint or from_reflection,
        )
    except BadUsage as exc:
        raise usage_error(str(exc)) from None

    async def body(
        stub: tool_registry_service_pb2_grpc.ToolRegistryServiceStub,
    ) -> list[rs.RegisterToolResponse]:
        if from_reflection is not None:
            async with create_channel(from_reflection) as channel:
                fds, _ = await fetch_descriptor_set(channel)
        else:
            assert file is not None
            fds = _compile(file, include)
        methods = list(method) or tool_methods(fds)
        if not methods:
            raise BadUsage(
                "no method carries the agentmesh.v1.tool option: name one with --method pkg.Svc/Method"
            )
        if len(methods) > 1 and (name or version):
            raise BadUsage("--name/--version apply to one method: pick it with --method")
        data = fds.SerializeToString()
        responses = []
        for full_name in methods:
            tool = tool_pb2.ToolSpec()
            tool.CopyFrom(overrides)
            tool.file_descriptor_set = data
            tool.method = full_name
            responses.append(
                await stub.RegisterTool(rs.RegisterToolRequest(tool=tool, validate_only=validate_only))
            )
        return responses

    responses = _run(registry, body)
    if as_json:
        _print_json([_dict(r) for r in responses])
        return
    for response in responses:
        outcome = rs.RegistrationOutcome.Name(response.outcome).removeprefix("REGISTRATION_OUTCOME_").lower()
        tool = response.tool
        console.print(
            f"[green]{outcome}[/green] {escape(tool.name)} {escape(tool.version)} ({escape(tool.method)}) "
            f"-> {escape(tool.endpoint or '-')}"
        )
        for warning in response.warnings:
            console.print(f"  [yellow]warning:[/yellow] {escape(warning)}")


# -- list / get ----------------------------------------------------------------------


@app.command("list")
def list_tools(
    prefix: str = typer.Option("", "--prefix", help="Only names starting with this."),
    tag: str = typer.Option("", "--tag", help="Only tools with this tag."),
    all_versions: bool = typer.Option(False, "--all-versions", help="Every version, not only the latest."),
    deprecated: bool = typer.Option(False, "--deprecated", help="Include deprecated versions."),
    agents: bool = typer.Option(False, "--agents", help="Include the virtual agent tools."),
    registry: str | None = RegistryOption,
    as_json: bool = JsonOption,
) -> None:
    """List tools (latest version of each by default)."""

    async def body(stub: tool_registry_service_pb2_grpc.ToolRegistryServiceStub) -> list[tool_pb2.ToolSpec]:
        tools: list[tool_pb2.ToolSpec] = []
        token = ""
        while True:
            page = await stub.ListTools(
                rs.ListToolsRequest(
                    page_size=500,
                    page_token=token,
                    name_prefix=prefix,
                    tag=tag,
                    all_versions=all_versions,
                    deprecated=rs.DEPRECATION_FILTER_INCLUDE if deprecated else rs.DEPRECATION_FILTER_EXCLUDE,
                    include_agents=agents,
                )
            )
            tools.extend(page.tools)
            token = page.next_page_token
            if not token:
                return tools

    tools = _run(registry, body)
    if as_json:
        _print_json([_dict(t) for t in tools])
    else:
        print_id_table(
            TOOL_COLUMNS, [tool_row(t) for t in tools], more="--json or `tools get NAME` shows them"
        )


@app.command()
def get(
    name: str = typer.Argument(..., help="Tool name."),
    version: str = typer.Argument("latest", help="Exact version, `latest`, or a range like ^1.2."),
    schema: bool = typer.Option(
        False, "--schema", help="Include the descriptor set (base64) and JSON schemas."
    ),
    registry: str | None = RegistryOption,
    as_json: bool = JsonOption,
) -> None:
    """Show one tool version."""
    view = tool_pb2.TOOL_VIEW_FULL if schema else tool_pb2.TOOL_VIEW_BASIC

    async def body(stub: tool_registry_service_pb2_grpc.ToolRegistryServiceStub) -> tool_pb2.ToolSpec:
        return await stub.GetTool(rs.GetToolRequest(name=name, version=version, view=view))  # type: ignore[no-any-return]

    tool = _run(registry, body)
    if as_json:
        _print_json(_dict(tool, schema=schema))
        return
    data = _dict(tool, schema=False)
    for key in ("input_schema_json", "output_schema_json"):
        data.pop(key, None)
    for key, value in data.items():
        console.print(f"[cyan]{key}[/cyan]: {escape(str(value))}")
    if schema:
        for key in ("input_schema_json", "output_schema_json"):
            if getattr(tool, key):
                console.print(f"[cyan]{key}[/cyan]:")
                console.print_json(getattr(tool, key))


# -- diff ----------------------------------------------------------------------------


def _violations_out(violations: list[dict[str, str]], compared: str, as_json: bool) -> None:
    if as_json:
        _print_json({"compatible": not violations, "compared_version": compared, "violations": violations})
    elif not violations:
        console.print(f"[green]compatible[/green] with {escape(compared or 'nothing registered')}")
    else:
        console.print(f"[red]{len(violations)} breaking change(s)[/red] against {escape(compared)}:")
        for v in violations:
            console.print(f"  - {escape(v['path'])} \\[{escape(v['rule'])}]: {escape(v['message'])}")
    if violations:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def diff(
    first: str = typer.Argument(..., help="A tool NAME, or a FILE.proto."),
    versions: list[str] = typer.Argument(None, help="VERSION_A VERSION_B (with a tool NAME)."),
    against: str | None = typer.Option(None, "--against", help="NAME[@VERSION] to compare FILE.proto with."),
    method: str | None = typer.Option(None, "--method", "-m", help="pkg.Svc/Method in FILE.proto."),
    include: list[Path] = typer.Option([], "--include", "-I", help="Extra include directories."),
    registry: str | None = RegistryOption,
    as_json: bool = JsonOption,
) -> None:
    """What would break: between two registered versions, or a .proto file and a registered version."""
    is_file = first.endswith(".proto") or Path(first).is_file()
    if is_file and not against:
        raise usage_error("diff FILE.proto needs --against NAME[@VERSION]")
    if not is_file and len(versions or []) != 2:
        raise usage_error("diff NAME VERSION_A VERSION_B (two versions)")

    async def body(
        stub: tool_registry_service_pb2_grpc.ToolRegistryServiceStub,
    ) -> tuple[list[dict[str, str]], str]:
        if not is_file:
            old = await stub.GetTool(
                rs.GetToolRequest(name=first, version=versions[0], view=tool_pb2.TOOL_VIEW_FULL)
            )
            new = await stub.GetTool(
                rs.GetToolRequest(name=first, version=versions[1], view=tool_pb2.TOOL_VIEW_FULL)
            )
            found = check_compatibility(
                load_tool_schema(old.file_descriptor_set, old.method),
                load_tool_schema(new.file_descriptor_set, new.method),
            )
            return [{"path": v.path, "rule": v.rule, "message": v.message} for v in found], old.version
        assert against is not None
        tool_name, _, against_version = against.partition("@")
        fds = _compile(Path(first), include)
        methods = [method] if method else tool_methods(fds)
        if len(methods) != 1:
            raise BadUsage(f"{first} has {len(methods)} tool methods: pick one with --method")
        candidate = tool_pb2.ToolSpec(
            file_descriptor_set=fds.SerializeToString(), method=methods[0], name=tool_name
        )
        response = await stub.CheckCompatibility(
            rs.CheckCompatibilityRequest(tool=candidate, against_version=against_version)
        )
        listed = [{"path": v.path, "rule": v.rule, "message": v.message} for v in response.violations]
        return listed, response.compared_version

    found, compared = _run(registry, body)
    _violations_out(found, compared, as_json)


# -- deprecate / bind --------------------------------------------------------------------


@app.command()
def deprecate(
    name: str = typer.Argument(..., help="Tool name."),
    version: str = typer.Argument("", help="Exact version; empty deprecates every version."),
    message: str = typer.Option(..., "--message", help="Why, and what to use instead."),
    registry: str | None = RegistryOption,
    as_json: bool = JsonOption,
) -> None:
    """Mark a version (or every version) deprecated."""

    async def body(stub: tool_registry_service_pb2_grpc.ToolRegistryServiceStub) -> tool_pb2.ToolSpec:
        request = rs.DeprecateToolRequest(name=name, version=version, message=message)
        return await stub.DeprecateTool(request)  # type: ignore[no-any-return]

    tool = _run(registry, body)
    if as_json:
        _print_json(_dict(tool))
    else:
        console.print(
            f"[yellow]deprecated[/yellow] {escape(name)} {escape(version or '(every version)')}: "
            f"{escape(message)}"
        )


@app.command()
def bind(
    name: str = typer.Argument(..., help="Tool name."),
    version: str = typer.Argument(..., help="Exact version."),
    endpoint: str | None = typer.Argument(
        None,
        help="HOST:PORT or a gRPC target; empty clears the binding "
        "(omitted with --transfer-to: the current endpoint stays).",
    ),
    transfer_to: str = typer.Option(
        "",
        "--transfer-to",
        help="Give the tool name to another owner (a token subject such as `service:billing`); "
        "needs a token holding registry:admin.",
    ),
    token: str | None = typer.Option(
        None, "--token", help="Bearer token (default: AGENTMESH_TOKEN, then the CLI profile)."
    ),
    registry: str | None = RegistryOption,
    as_json: bool = JsonOption,
) -> None:
    """Set or clear the endpoint of a tool version, or transfer the tool's name to another owner."""

    async def body(stub: tool_registry_service_pb2_grpc.ToolRegistryServiceStub) -> tool_pb2.ToolSpec:
        target = endpoint
        if target is None and transfer_to:
            current = await stub.GetTool(
                rs.GetToolRequest(name=name, version=version, view=tool_pb2.TOOL_VIEW_BASIC)
            )
            target = current.endpoint
        request = rs.BindToolEndpointRequest(
            name=name, version=version, endpoint=target or "", transfer_to=transfer_to
        )
        return await stub.BindToolEndpoint(request)  # type: ignore[no-any-return]

    tool = _run(registry, body, token=token)
    if as_json:
        _print_json(_dict(tool))
    else:
        console.print(
            f"bound {escape(tool.name)} {escape(tool.version)} -> {escape(tool.endpoint or '(none)')}"
        )
        if transfer_to:
            console.print(f"transferred {escape(tool.name)} to {escape(transfer_to)}")


# -- agents --------------------------------------------------------------------------------


@agents_app.command("list")
def agents_list(registry: str | None = RegistryOption, as_json: bool = JsonOption) -> None:
    """List the agents in the directory."""

    async def body(stub: tool_registry_service_pb2_grpc.ToolRegistryServiceStub) -> list[Any]:
        cards: list[Any] = []
        token = ""
        while True:
            page = await stub.ListAgents(rs.ListAgentsRequest(page_size=500, page_token=token))
            cards.extend(page.agents)
            token = page.next_page_token
            if not token:
                return cards

    cards = _run(registry, body)
    if as_json:
        _print_json([_dict(c) for c in cards])
        return
    columns = (
        Column("domain"),
        Column("name", text=True, drop=2),
        Column("endpoint"),
        Column("revision"),
        Column("description", text=True, drop=1),
    )
    rows = [[c.domain, c.display_name, c.endpoint, str(c.revision), c.description[:60]] for c in cards]
    print_id_table(columns, rows, more="--json or `tools agents get DOMAIN` shows them")


@agents_app.command("get")
def agents_get(
    domain: str = typer.Argument(..., help="Domain slug."),
    registry: str | None = RegistryOption,
    as_json: bool = JsonOption,
) -> None:
    """Show one agent card."""

    async def body(stub: tool_registry_service_pb2_grpc.ToolRegistryServiceStub) -> Any:
        return await stub.GetAgent(rs.GetAgentRequest(domain=domain))

    card = _run(registry, body)
    data = _dict(card)
    if as_json:
        _print_json(data)
        return
    for key, value in data.items():
        console.print(f"[cyan]{key}[/cyan]: {escape(str(value))}")
