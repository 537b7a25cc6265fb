"""`agentmesh run DOMAIN "instruction"` and `agentmesh agent card|validate|spec-schema`.

`run` finds the domain's agent through the registry (or `--target`), submits
the task and prints its steps as they happen (WatchTask), then its outcome and
usage (`--json`: one Run call, the task as JSON); output from the scripted
model is labelled as such. Exit codes: agentmesh/cli/common.py's table; 0 also when the
task waits for input or continues on the durable path (printed), 1 when it failed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import typer
from google.protobuf import json_format
from rich.markup import escape

from agentmesh.cli.common import EXIT_FAILED, EXIT_USAGE, console, err_console, fail
from agentmesh.kit.errors import AgentmeshError, NotFound
from agentmesh.kit.validation import DOMAIN_SLUG
from agentmesh.v1 import task_pb2

agent_app = typer.Typer(help="Agent cards and domain specs.", no_args_is_help=True)

_STEP_KINDS = {
    task_pb2.STEP_KIND_MODEL_CALL: "model",
    task_pb2.STEP_KIND_TOOL_CALL: "tool",
    task_pb2.STEP_KIND_SANITIZE: "sanitize",
    task_pb2.STEP_KIND_COMPACTION: "compact",
    task_pb2.STEP_KIND_DELEGATION: "delegate",
    task_pb2.STEP_KIND_COMPENSATION: "compensate",
}
_DONE = {task_pb2.TASK_STATE_COMPLETED}
_FAILED = {task_pb2.TASK_STATE_FAILED, task_pb2.TASK_STATE_REJECTED, task_pb2.TASK_STATE_CANCELED}
_STOPPED = {task_pb2.TASK_STATE_INPUT_REQUIRED, task_pb2.TASK_STATE_COMPLETED, *_FAILED}


def _check_domain(domain: str) -> None:
    if not DOMAIN_SLUG.fullmatch(domain):
        err_console.print(
            f"[red]{escape(repr(domain))} is not a domain name[/red] "
            f"(must match {escape(DOMAIN_SLUG.pattern)})"
        )
        raise typer.Exit(EXIT_USAGE)


async def _client(
    domain: str, target: str | None, registry: str | None, metadata: list[tuple[str, str]]
) -> Any:
    from agentmesh.cli.profile_file import resolve_registry
    from agents.client import AgentClient

    if target:
        return AgentClient.connect(target, metadata=metadata)
    address = resolve_registry(registry)
    try:
        return await AgentClient.for_domain(domain, registry=address, metadata=metadata)
    except NotFound:
        err_console.print(
            f"[red]no agent for domain {escape(repr(domain))} in the registry at {escape(address)}[/red]"
        )
        raise typer.Exit(EXIT_FAILED) from None
    except AgentmeshError as exc:
        raise fail(exc, f"the registry at {address}") from None


def model_of(task: task_pb2.Task) -> tuple[str, bool]:
    """The model that answered (from the model-call steps) and whether it was the scripted model."""
    for step in task.steps:
        model, scripted = model_of_step(step)
        if model:
            return model, scripted
    return "", False


def _ms(duration: Any) -> str:
    return f"{duration.seconds * 1000 + duration.nanos / 1e6:.0f} ms"


def _label(model: str, scripted: bool) -> str:
    label = f" · model {escape(model)}" if model else ""
    if scripted:
        label += " [bold yellow](SCRIPTED MODEL — canned answers, not a language model)[/bold yellow]"
    return label


def model_of_step(step: task_pb2.Step) -> tuple[str, bool]:
    if step.kind in (task_pb2.STEP_KIND_MODEL_CALL, task_pb2.STEP_KIND_SANITIZE) and step.result_json:
        try:
            record = json.loads(step.result_json)
        except json.JSONDecodeError:
            return "", False
        if isinstance(record, dict) and record.get("model"):
            model = str(record["model"])
            return model, bool(record.get("scripted")) or model.startswith("scripted:")
    return "", False


def print_step(step: task_pb2.Step) -> None:
    kind = _STEP_KINDS.get(step.kind, "step")
    extra = ""
    if step.usage.total_tokens:
        extra = f"  {step.usage.total_tokens} tok"
    if step.attempts > 1:
        extra += f"  {step.attempts} attempts"
    console.print(
        f"  #{step.index:<3} {kind:<9} {escape(step.summary)}  [dim]{_ms(step.duration)}{extra}[/dim]"
    )


def print_outcome(task: task_pb2.Task) -> None:
    state = task_pb2.TaskState.Name(task.state).removeprefix("TASK_STATE_")
    reason = task_pb2.StopReason.Name(task.stop_reason).removeprefix("STOP_REASON_")
    usage = task.usage
    color = "green" if task.state in _DONE else ("red" if task.state in _FAILED else "yellow")
    console.print(
        f"[{color}]{state}[/{color}] ({reason.lower()}) · {usage.iterations} model turns · "
        f"{usage.total_tokens} tokens · {usage.tool_calls} tool calls · ${usage.cost_usd:.6f} · "
        f"{_ms(usage.wall_time)}"
    )
    if task.status_message and task.state not in _DONE:
        console.print(f"  {escape(task.status_message)}")
    if task.HasField("pending_action"):
        pending = task.pending_action
        console.print(
            f"  pending action {pending.action_id}: {escape(pending.tool_name)} "
            f"{escape(pending.arguments_json)} (needs {escape(pending.required_scope)})"
        )
    if task.final_answer:
        console.print(task.final_answer, markup=False, highlight=False)


async def follow(
    client: Any, task: task_pb2.Task, where: str, timeout: float, *, after_event_id: str = ""
) -> task_pb2.Task:
    """Print the task's steps as they finish (WatchTask) until it ends or waits; the task then.

    `after_event_id` continues a task already followed (e.g. after ResumeTask) without
    printing its earlier steps again.
    """
    if not after_event_id:
        console.print(f"[bold]{escape(task.domain)}[/bold] at {escape(where)} · task {task.task_id}")
    labelled = bool(after_event_id)

    async def watch() -> None:
        nonlocal labelled
        async for event in client.watch_task(task.task_id, after_event_id):
            if event.HasField("step_update") and event.step_update.finished:
                step = event.step_update.step
                model, scripted = model_of_step(step)
                if model and not labelled:
                    console.print(f" {_label(model, scripted).removeprefix(' · ')}")
                    labelled = True
                print_step(step)
            elif event.HasField("status_update") and event.status_update.state in _STOPPED:
                return

    try:
        await asyncio.wait_for(watch(), timeout)
    except TimeoutError:
        console.print(f"[yellow]still running after {timeout:g}s[/yellow]; follow it with its task id")
    final: task_pb2.Task = await client.get_task(task.task_id, view=task_pb2.TASK_VIEW_BASIC)
    print_outcome(final)
    return final


def run(
    domain: str = typer.Argument(..., help="The agent's domain, e.g. fulfillment."),
    instruction: str = typer.Argument(..., help="What the agent should do."),
    session: str = typer.Option("", "--session", "-s", help="Session to continue (memory per session)."),
    registry: str = typer.Option(
        None, "--registry", help="Registry address (default: env, profile, :50051)."
    ),
    target: str = typer.Option(
        None, "--target", help="Call this agent address directly, skipping the registry."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the task as JSON."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds to wait for Run."),
    max_iterations: int = typer.Option(0, "--max-iterations", help="Lower the domain's iteration budget."),
    token_cap: int = typer.Option(0, "--token-cap", help="Lower the domain's token budget."),
    max_tool_calls: int = typer.Option(0, "--max-tool-calls", help="Lower the domain's tool-call budget."),
    deadline: float = typer.Option(0.0, "--deadline", help="Task deadline in seconds (0 = domain default)."),
    request_id: str = typer.Option(
        "", "--request-id", help="Idempotency key: repeating it returns the same task."
    ),
    token: str = typer.Option(
        None, "--token", help="Bearer token to call with (default: AGENTMESH_TOKEN, then the CLI profile)."
    ),
    tenant: str = typer.Option(
        None, "--tenant", help="Deprecated; a mesh with --insecure-no-auth only: the tenant to name."
    ),
    user: str = typer.Option(
        None, "--user", help="Deprecated; a mesh with --insecure-no-auth only: the user to name."
    ),
) -> None:
    """Run an agent on an instruction and print its steps, outcome and usage."""
    from agentmesh.cli.profile_file import resolve_token
    from agents.client import caller_metadata, limits

    _check_domain(domain)
    bearer = resolve_token(token)
    if tenant or user:
        if token:
            err_console.print(
                "--tenant/--user name a caller only without a token: the token says who you are"
            )
            raise typer.Exit(EXIT_USAGE)
        err_console.print(
            "[yellow]--tenant/--user are deprecated: only a mesh running with --insecure-no-auth reads "
            "them; use --token or the CLI profile[/yellow]"
        )
        bearer = None
    metadata = caller_metadata(token=bearer, tenant=tenant, user=user)

    where = target or "registry " + (registry or "default")
    task_limits = limits(
        max_iterations=max_iterations,
        token_cap=token_cap,
        max_tool_calls=max_tool_calls,
        deadline=deadline or None,
    )

    async def go() -> task_pb2.Task:
        client = await _client(domain, target, registry, metadata)
        try:
            if as_json:  # one document: Run, within --timeout
                task: task_pb2.Task = await client.run(
                    instruction,
                    session_id=session,
                    request_id=request_id,
                    limits=task_limits,
                    timeout=timeout,
                )
                return task
            # Steps as they happen: the durable path (SubmitTask) followed with WatchTask.
            submitted = await client.submit(
                instruction,
                session_id=session,
                request_id=request_id or str(uuid.uuid4()),
                limits=task_limits,
            )
            return await follow(client, submitted, where, timeout)
        except AgentmeshError as exc:
            raise fail(exc, f"the {domain} agent at {client.target}") from None
        finally:
            await client.close()

    task = asyncio.run(go())
    if as_json:
        document = json_format.MessageToDict(task)
        model, scripted = model_of(task)
        document["model"] = model
        document["scripted"] = scripted
        typer.echo(json.dumps(document, indent=2, ensure_ascii=False))
    if task.state in _FAILED:
        raise typer.Exit(EXIT_FAILED)


@agent_app.command("card")
def card(
    domain: str = typer.Argument(..., help="The agent's domain."),
    registry: str = typer.Option(
        None, "--registry", help="Registry address (default: env, profile, :50051)."
    ),
    target: str = typer.Option(None, "--target", help="Ask this agent address directly."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print an agent's card: skills, tools, caps (GetAgentCard on the agent)."""
    from agentmesh.cli.profile_file import resolve_token
    from agents.card import card_json
    from agents.client import caller_metadata

    _check_domain(domain)

    async def go() -> Any:
        client = await _client(domain, target, registry, caller_metadata(token=resolve_token(None)))
        try:
            return await client.card()
        except AgentmeshError as exc:
            raise fail(exc, f"the {domain} agent at {client.target}") from None
        finally:
            await client.close()

    document = card_json(asyncio.run(go()))
    if as_json:
        typer.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    console.print(
        f"[bold]{escape(document.get('displayName', domain))}[/bold] ({escape(domain)}) "
        f"at {escape(str(document.get('endpoint')))}"
    )
    console.print(escape(document.get("description", "")))
    console.print(f"model: {escape(document.get('model', ''))}")
    for skill in document.get("skills", []):
        console.print(
            f"  skill [cyan]{escape(skill.get('skillId', ''))}[/cyan]: {escape(skill.get('description', ''))}"
        )
    for tool in document.get("tools", []):
        console.print(f"  tool  [cyan]{escape(tool['name'])}[/cyan] {escape(tool.get('versionRange', ''))}")
    console.print(f"caps: {escape(json.dumps(document.get('caps', {})))}")
    console.print(f"defaults: {escape(json.dumps(document.get('defaultLimits', {})))}")


@agent_app.command("validate")
def validate(path: Path = typer.Argument(..., help="A domain spec (YAML).")) -> None:
    """Check a domain spec; exit 1 naming every bad field."""
    from agents.spec import SpecError, load_spec

    try:
        spec = load_spec(path)
    except SpecError as exc:
        err_console.print(escape(str(exc)))
        raise typer.Exit(EXIT_FAILED) from None
    console.print(
        f"[green]ok[/green] {spec.slug}: {len(spec.tools)} tools, caps {spec.caps.model_dump(mode='json')}"
    )


@agent_app.command("spec-schema")
def spec_schema(as_json: bool = typer.Option(False, "--json", help="Only the JSON Schema.")) -> None:
    """Print the domain spec reference (docs/domain-spec.md), or its JSON Schema."""
    from agents.spec import reference_markdown, spec_json_schema

    if as_json:
        typer.echo(json.dumps(spec_json_schema(), indent=2, sort_keys=True))
        return
    typer.echo(reference_markdown(), nl=False)
