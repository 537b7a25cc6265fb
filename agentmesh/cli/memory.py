"""`agentmesh memory …` and `agentmesh usage`: what the mesh remembers and what it consumed.

    agentmesh memory session show --tenant T --user U --session S [--budget N] [--json]
    agentmesh memory forget --user U [--tenant T] [--domain D | --target ADDR] [--yes] [--json]
    agentmesh usage --domain D [--tenant T] [--user U] [--session S] [--json]

Redis comes from `--redis`, else REDIS_URL (the configuration contract).
Exit codes: agentmesh/cli/common.py's table (1 also: nothing found).
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, TypeVar

import typer
from google.protobuf import json_format
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agentmesh.cli.common import EXIT_FAILED, EXIT_USAGE, console, err_console, fail, usage_error
from agentmesh.kit.config import ConfigError, Settings
from agentmesh.kit.errors import AgentmeshError, InvalidArgument
from memory import keys
from memory.connection import AnyRedis, create_redis, describe
from memory.context import ContextPacket, Turn
from memory.sessions import SessionInfo, SessionStore
from memory.usage import UsageReport, UsageStore

T = TypeVar("T")

memory_app = typer.Typer(
    help="What the mesh remembers about users: conversation sessions, long-term facts; forget a user.",
    no_args_is_help=True,
)
session_app = typer.Typer(
    help="Conversation sessions (per tenant, user and session id).", no_args_is_help=True
)
memory_app.add_typer(session_app, name="session")

REDIS = typer.Option(None, "--redis", help="Redis URL. Default: REDIS_URL.")
JSON = typer.Option(False, "--json", help="Print JSON.")
TENANT = typer.Option(..., "--tenant", help="Tenant id (the token's `tid`).")
USER = typer.Option(..., "--user", help="User id (the token's `sub`).")


def _url(explicit: str | None) -> str:
    if explicit:
        return explicit
    try:
        return Settings.from_env().redis_url
    except ConfigError as exc:
        raise usage_error(str(exc)) from None


def _run(url: str, work: Callable[[AnyRedis], Awaitable[T]]) -> T:
    """Run `work` with a client; map our errors to exit codes."""

    async def main() -> T:
        client = create_redis(url)
        try:
            return await work(client)
        finally:
            await client.aclose()

    try:
        return asyncio.run(main())
    except AgentmeshError as exc:
        raise fail(exc, f"Redis at {describe(url)}") from None


def _time(epoch: float) -> str:
    if not epoch:
        return "-"
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _preview(text: str | None, width: int = 90) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


# --- memory session show -----------------------------------------------------------


def _turn_json(turn: Turn) -> dict[str, Any]:
    data = asdict(turn)
    data["role"] = turn.role.value
    data["tool_calls"] = [asdict(call) for call in turn.tool_calls]
    return data


def _packet_json(packet: ContextPacket) -> dict[str, Any]:
    data = asdict(packet)
    data["messages"] = packet.as_messages()
    data.pop("system")
    return data


@session_app.command("show")
def session_show(
    tenant: str = TENANT,
    user: str = USER,
    session: str = typer.Option(..., "--session", help="Session id."),
    budget: int = typer.Option(8192, "--budget", min=64, help="Token budget of the packet to build."),
    as_json: bool = JSON,
    redis: str | None = REDIS,
) -> None:
    """Show a session's stored turns and the context packet the next model call would get."""

    async def load(client: AnyRedis) -> tuple[SessionInfo | None, list[Turn], ContextPacket]:
        store = SessionStore(client)
        info = await store.info(tenant, user, session)
        turns = await store.turns(tenant, user, session)
        return info, turns, await store.packet(tenant, user, session, budget=budget)

    info, turns, packet = _run(_url(redis), load)
    if info is None:
        err_console.print(escape(f"no session {session!r} for user {user!r} in tenant {tenant!r}"))
        raise typer.Exit(EXIT_FAILED)
    if as_json:
        document = {
            "session": asdict(info),
            "turns": [_turn_json(t) for t in turns],
            "packet": _packet_json(packet),
        }
        typer.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    console.print(
        f"[bold]session[/bold] {escape(session)}  tenant {escape(tenant)}  user {escape(user)}\n"
        f"{info.turns} turns · created {_time(info.created_at)} · last turn {_time(info.updated_at)} · "
        f"{info.compactions} compactions ({info.folded} turns folded) · {info.dropped} dropped at the cap"
    )
    if info.summary:
        console.print(f"[bold]running summary[/bold]\n{escape(info.summary)}")
    table = Table("#", "role", "tokens", "task/step", "content", title="stored turns", title_justify="left")
    for index, turn in enumerate(turns):
        calls = ", ".join(f"{c.name}({_preview(c.arguments, 30)})" for c in turn.tool_calls)
        content = _preview(turn.content) + (f" → {calls}" if calls else "")
        step = f"{turn.task_id}/{turn.step}" if turn.task_id else ""
        role = turn.role.value + (" (error)" if turn.is_error else "")
        role += " (compacted)" if turn.compacted else ""
        table.add_row(str(index), role, str(turn.tokens), Text(step), Text(content))
    console.print(table)
    console.print(
        f"[bold]context packet[/bold] {packet.tokens}/{packet.budget} tokens · {packet.turns_included} turns "
        f"in, {packet.turns_omitted} left out · {packet.facts_included} facts · summary "
        f"{'yes' if packet.summary_included else 'no'}"
        + (" · [yellow]needs compaction[/yellow]" if packet.needs_compaction else "")
    )
    messages = Table("role", "content", title_justify="left")
    for message in packet.as_messages():
        calls = ", ".join(c["function"]["name"] for c in message.get("tool_calls", ()))
        preview = _preview(message.get("content")) + (f" → {calls}" if calls else "")
        messages.add_row(message["role"], Text(preview))
    console.print(messages)


# --- memory forget -----------------------------------------------------------------


@memory_app.command("forget")
def forget(
    user: str = USER,
    tenant: str | None = typer.Option(
        None, "--tenant", help="The tenant: must be your token's (`tid`); a check, not a choice."
    ),
    domain: str = typer.Option(
        "refunds", "--domain", help="The agent to ask (any agent of the mesh serves ForgetUser)."
    ),
    target: str | None = typer.Option(None, "--target", help="Ask this agent address directly."),
    registry: str | None = typer.Option(None, "--registry", help="Registry (default: env, profile)."),
    token: str | None = typer.Option(
        None, "--token", help="Token holding memory:admin (default: AGENTMESH_TOKEN, the CLI profile)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = JSON,
) -> None:
    """Delete everything the mesh remembers about one user of your tenant (ForgetUser, memory:admin).

    Removes the user's sessions (turns and summaries), long-term facts, usage
    counters and rate-limit buckets, and prints what was deleted. The tenant's
    per-domain totals stay (aggregates), and task records are kept until their
    retention ends. Run it when the user has no running tasks.
    """
    from agentmesh.cli.auth import token_claims
    from agentmesh.cli.profile_file import resolve_token
    from agentmesh.cli.run import _client
    from agents.client import caller_metadata

    if as_json and not yes:
        err_console.print("--json needs --yes (there is no one to confirm)")
        raise typer.Exit(EXIT_USAGE)
    bearer = resolve_token(token)
    if bearer and tenant and token_claims(bearer).get("tid") != tenant:
        err_console.print(f"your token is not for tenant {tenant!r}: users are forgotten in its tenant")
        raise typer.Exit(EXIT_USAGE)
    metadata = caller_metadata(token=bearer, tenant=None if bearer else tenant)

    async def ask(validate_only: bool) -> Any:
        client = await _client(domain, target, registry, metadata)
        try:
            return await client.forget_user(user, validate_only=validate_only)
        finally:
            await client.close()

    def call(validate_only: bool) -> Any:
        try:
            return asyncio.run(ask(validate_only))
        except AgentmeshError as exc:
            err_console.print(f"[red]{exc.message}[/red]")
            raise typer.Exit(EXIT_FAILED) from None

    if not yes:
        counts = dict(call(True).deleted)
        if not counts.get("keys"):
            console.print(escape(f"nothing stored for user {user!r}"))
            return
        console.print(
            f"user {escape(repr(user))}: {counts.get('sessions', 0)} sessions, "
            f"{counts.get('facts', 0)} facts, "
            f"{counts.get('usage_counters', 0)} usage counters, "
            f"{counts.get('rate_limit_buckets', 0)} rate-limit buckets ({counts.get('keys', 0)} keys)"
        )
        if not typer.confirm("Delete all of it?", default=False):
            console.print("nothing deleted")
            raise typer.Exit(EXIT_FAILED)
    report = call(False)
    deleted = dict(report.deleted)
    if as_json:
        typer.echo(json.dumps({"tenant": report.tenant, "user": report.user, "deleted": deleted}, indent=2))
        return
    console.print(
        f"deleted for user {escape(repr(user))} in tenant {escape(repr(report.tenant))}: "
        f"{deleted.get('sessions', 0)} sessions, "
        f"{deleted.get('facts', 0)} facts, {deleted.get('usage_counters', 0)} usage counters, "
        f"{deleted.get('rate_limit_buckets', 0)} rate-limit buckets ({deleted.get('keys', 0)} keys)"
    )


# --- usage -----------------------------------------------------------------------------


def usage(
    domain: str = typer.Option(..., "--domain", help="Agent domain, e.g. refunds."),
    tenant: str | None = typer.Option(None, "--tenant", help="Tenant id; default: all tenants."),
    user: str | None = typer.Option(None, "--user", help="One user's usage in the domain (needs --tenant)."),
    session: str | None = typer.Option(None, "--session", help="One session's usage in the domain."),
    as_json: bool = JSON,
    redis: str | None = REDIS,
) -> None:
    """Tokens, tool calls and cost consumed in a domain: overall, per tenant, per user or per session."""
    if user is not None and tenant is None:
        err_console.print("--user needs --tenant (user ids are per tenant)")
        raise typer.Exit(EXIT_USAGE)

    async def load(client: AnyRedis) -> tuple[dict[str, str], UsageReport]:
        store = UsageStore(client)
        if session is not None:
            if user is not None and tenant is not None:
                owner = (tenant, user)
            else:
                pattern = keys.usage_session_pattern(session, domain, tenant)
                owners = {
                    parsed
                    async for key in client.scan_iter(match=pattern)
                    if (parsed := keys.parse_user_tag(key.decode() if isinstance(key, bytes) else str(key)))
                }
                if len(owners) > 1:
                    raise InvalidArgument(
                        f"session {session!r} exists for several users; add --tenant and --user"
                    )
                owner = owners.pop() if owners else (tenant or "-", "-")
            report = await store.for_session(owner[0], owner[1], session, domain)
            return {"domain": domain, "tenant": owner[0], "user": owner[1], "session": session}, report
        if user is not None and tenant is not None:
            report = await store.for_user(tenant, user, domain)
            return {"domain": domain, "tenant": tenant, "user": user}, report
        scope = {"domain": domain, "tenant": tenant or "*"}
        return scope, await store.for_domain(domain, tenant)

    scope, report = _run(_url(redis), load)
    used = report.usage
    if as_json:
        document = {
            "scope": scope,
            "usage": json_format.MessageToDict(used, always_print_fields_with_no_presence=True),
            "tasks": report.tasks,
            "unpriced_tokens": report.unpriced_tokens,
        }
        typer.echo(json.dumps(document, indent=2))
        return
    title = " · ".join(f"{name} {value}" for name, value in scope.items())
    table = Table("", "", title=f"usage: {escape(title)}", title_justify="left", show_header=False)
    table.add_row("tasks", str(report.tasks))
    table.add_row("model turns", str(used.iterations))
    table.add_row("prompt tokens", f"{used.prompt_tokens:,}")
    table.add_row("completion tokens", f"{used.completion_tokens:,}")
    table.add_row("total tokens", f"{used.total_tokens:,}")
    table.add_row("tool calls", str(used.tool_calls))
    table.add_row("cost (USD)", f"{used.cost_usd:.6f}")
    table.add_row("wall time", f"{used.wall_time.ToTimedelta()}")
    if report.unpriced_tokens:
        table.add_row("[yellow]unpriced tokens[/yellow]", f"{report.unpriced_tokens:,} (not in the cost)")
    console.print(table)
