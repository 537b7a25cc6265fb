"""`agentmesh tasks`: operate the durable task queue.

    agentmesh tasks dead-letters list    --domain refunds [--limit 50] [--json]
    agentmesh tasks dead-letters show    --domain refunds TASK_ID [--json]
    agentmesh tasks dead-letters redrive --domain refunds ENTRY_ID... | --all [--json]

Redis comes from `--redis` or REDIS_URL, the shard count from `--shards` or
AGENTMESH_QUEUE_SHARDS (it must match the agents'). Exit codes: agentmesh/cli/common.py's
table (1 also: some dead letter could not be redriven).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agentmesh.cli.common import EXIT_FAILED, console, current_settings, err_console, fail, usage_error
from agentmesh.kit.errors import AgentmeshError
from agentmesh.kit.validation import DOMAIN_SLUG
from agentmesh.v1 import task_pb2
from memory.connection import create_redis, describe
from memory.tasks.dead_letters import DeadLetter, RedriveResult
from memory.tasks.effects import task_effects
from memory.tasks.queue import TaskQueue
from memory.tasks.records import TaskSnapshot
from memory.tasks.store import TaskConfig

T = TypeVar("T")

app = typer.Typer(help="Operate the durable task queue.", no_args_is_help=True)
dead_letters_app = typer.Typer(help="Inspect and redrive dead-lettered tasks.", no_args_is_help=True)
app.add_typer(dead_letters_app, name="dead-letters")

RedisOption = typer.Option(None, "--redis", help="Redis URL (default: REDIS_URL).")
DomainOption = typer.Option(..., "--domain", "-d", help="Agent domain, e.g. refunds.")
ShardsOption = typer.Option(
    None,
    "--shards",
    min=1,
    max=256,
    help="Queue shards (default: AGENTMESH_QUEUE_SHARDS, as the agents use).",
)
JsonOption = typer.Option(False, "--json", help="Print JSON.")


def _queue_call(
    redis_url: str | None, domain: str, shards: int | None, action: Callable[[TaskQueue], Awaitable[T]]
) -> T:
    if not DOMAIN_SLUG.fullmatch(domain):
        raise usage_error(f"--domain {domain!r} is not a domain slug ({DOMAIN_SLUG.pattern})")
    settings = current_settings()
    url = redis_url or settings.redis_url
    config = TaskConfig.from_settings(settings, **({"shards": shards} if shards else {}))

    async def run() -> T:
        redis = create_redis(url, client_name="agentmesh-cli")
        try:
            return await action(TaskQueue(redis, domain=domain, config=config))
        finally:
            await redis.aclose()

    try:
        return asyncio.run(run())
    except AgentmeshError as exc:
        raise fail(exc, f"Redis at {describe(url)}") from None
    except ValueError as exc:
        err_console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(EXIT_FAILED) from None


def _when(millis: int) -> str:
    if not millis:
        return "-"
    return datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@dead_letters_app.command("list")
def list_dead_letters(
    domain: str = DomainOption,
    redis_url: str | None = RedisOption,
    shards: int | None = ShardsOption,
    limit: int = typer.Option(100, "--limit", min=1, max=10_000, help="Newest N dead letters."),
    as_json: bool = JsonOption,
) -> None:
    """List the newest dead letters of a domain: entry, task, failed attempts, reason."""
    letters: list[DeadLetter] = _queue_call(redis_url, domain, shards, lambda q: q.dead_letters(limit=limit))
    if as_json:
        typer.echo(json.dumps([asdict(letter) for letter in letters], indent=2))
        return
    if not letters:
        console.print(f"no dead letters in {escape(domain)}")
        return
    table = Table(title=f"dead letters of {domain}")
    for column in ("entry", "task", "attempts", "dead since"):
        table.add_column(column, no_wrap=True)  # ids must stay copyable
    table.add_column("reason")
    for letter in letters:
        table.add_row(
            Text(letter.entry_id),
            Text(letter.task_id),
            str(letter.failed_attempts),
            _when(letter.dead_ms),
            Text(letter.reason),
        )
    console.print(table)


@dataclass(frozen=True, slots=True)
class _Shown:
    snapshot: TaskSnapshot | None
    letter: DeadLetter | None


async def _find(queue: TaskQueue, task_id: str) -> _Shown:
    snapshot = await queue.store.snapshot(task_id, steps=True)
    letters = [d for d in await queue.dead_letters(limit=10_000) if d.task_id == task_id]
    return _Shown(snapshot, letters[0] if letters else None)


@dead_letters_app.command("show")
def show_dead_letter(
    task_id: str = typer.Argument(..., help="Task id (from `list`)."),
    domain: str = DomainOption,
    redis_url: str | None = RedisOption,
    shards: int | None = ShardsOption,
    as_json: bool = JsonOption,
) -> None:
    """Show a dead-lettered task: why, and the side effects its steps completed (tool, arguments
    digest, result, idempotency key, compensation) — what a redrive would build on."""
    shown: _Shown = _queue_call(redis_url, domain, shards, lambda q: _find(q, task_id))
    if shown.snapshot is None and shown.letter is None:
        err_console.print(
            f"[red]no task {escape(task_id)} in {escape(domain)} (expired, or another domain)[/red]"
        )
        raise typer.Exit(EXIT_FAILED)
    task = shown.snapshot.task if shown.snapshot is not None else None
    if task is not None:
        effects = [e.as_dict() for e in task_effects(task_id, list(task.steps))]
    else:  # the record expired: what the dead letter kept of the effects
        effects = [dict(e) for e in shown.letter.effects] if shown.letter is not None else []
    document: dict[str, Any] = {
        "task_id": task_id,
        "state": task_pb2.TaskState.Name(task.state) if task is not None else None,
        "stop_reason": task_pb2.StopReason.Name(task.stop_reason) if task is not None else None,
        "status_message": task.status_message if task is not None else None,
        "failed_attempts": shown.snapshot.fails if shown.snapshot is not None else None,
        "dead_letter": asdict(shown.letter) if shown.letter is not None else None,
        "effects": effects,
    }
    if as_json:
        typer.echo(json.dumps(document, indent=2))
        return
    _print_shown(document)


def _print_shown(document: dict[str, Any]) -> None:
    letter = document["dead_letter"]
    console.print(f"task {escape(document['task_id'])}")
    if document["state"] is None:
        console.print("  the task record expired; the effects below are what its dead letter kept")
    else:
        console.print(f"  state: {document['state']} ({document['stop_reason']})")
        console.print(f"  status: {escape(document['status_message'])}")
    if letter is not None:
        console.print(
            f"  dead letter {escape(letter['entry_id'])} since {_when(int(letter['dead_ms']))}, "
            f"after {letter['failed_attempts']} failed attempts"
        )
    else:
        console.print("  not in the dead letters (redriven, or never dead-lettered)")
    effects: list[dict[str, Any]] = document["effects"]
    if not effects:
        console.print("no side-effecting step completed")
        return
    table = Table(title="side effects (a redrive resumes after the last checkpoint, with the same keys)")
    for column in ("step", "tool", "class", "status", "arguments sha256", "idempotency key"):
        table.add_column(column, no_wrap=True)  # ids must stay copyable
    table.add_column("result")
    table.add_column("compensation")
    for effect in effects:
        table.add_row(
            str(effect["step"]),
            Text(str(effect["tool"])),
            Text(str(effect.get("side_effect", ""))),
            Text(str(effect["status"])),
            Text(str(effect["arguments_sha256"])[:16]),
            Text(str(effect.get("idempotency_key", ""))),
            Text(str(effect.get("result", ""))),
            Text(str(effect.get("compensation", ""))),
        )
    console.print(table)


@dead_letters_app.command("redrive")
def redrive_dead_letters(
    entry_ids: list[str] = typer.Argument(None, help="Dead-letter entry ids (from `list`)."),
    domain: str = DomainOption,
    redis_url: str | None = RedisOption,
    shards: int | None = ShardsOption,
    everything: bool = typer.Option(False, "--all", help="Redrive every dead letter of the domain."),
    as_json: bool = JsonOption,
) -> None:
    """Re-open dead-lettered tasks (attempts reset) and queue them again."""
    if bool(entry_ids) == everything:
        raise usage_error("name dead-letter entry ids, or pass --all (not both)")
    wanted = None if everything else list(entry_ids)
    results: list[RedriveResult] = _queue_call(redis_url, domain, shards, lambda q: q.redrive(wanted))
    failed = [r for r in results if r.outcome != "redriven"]
    if as_json:
        typer.echo(json.dumps([asdict(result) for result in results], indent=2))
    elif not results:
        console.print(f"no dead letters in {escape(domain)}")
    else:
        table = Table(title=f"redrive in {domain}")
        for column in ("entry", "task", "outcome"):
            table.add_column(column, no_wrap=True)
        table.add_column("detail")
        for result in results:
            style = "green" if result.outcome == "redriven" else "yellow"
            table.add_row(
                result.entry_id, result.task_id, Text(result.outcome, style=style), Text(result.detail)
            )
        console.print(table)
    if failed:
        raise typer.Exit(EXIT_FAILED)
