"""`agentmesh tasks submit|get|list|watch|cancel|resume|approve|reject`: durable tasks over the API.

    agentmesh tasks submit [--wait] refunds "Refund order ORD-1"
    agentmesh tasks list [--domain refunds] [--state working] [--session s-1] [--awaiting-approval]
    agentmesh tasks get TASK_ID            agentmesh tasks watch TASK_ID [--after EVENT_ID]
    agentmesh tasks approve TASK_ID [--reason "…"]   agentmesh tasks reject TASK_ID --reason "…"
    agentmesh tasks resume TASK_ID "the input the task asked for"
    agentmesh tasks cancel TASK_ID [--reason "…"]

Every command is an AgentService call through `AgentClient`, with the caller's token (`--token`,
AGENTMESH_TOKEN or the CLI profile); agents are found through the registry's directory
(`--registry`, AGENTMESH_REGISTRY or the profile). A task id names no domain, so the commands that
take one ask the domain's agent (`--domain`) or every agent in the directory. Server text (task
instructions, answers, tool arguments) is printed as plain text, never as markup; `--json` prints
the API's JSON (one document, or one event per line for `watch`). Exit codes: 0 done (a task that
completed or waits for input), 1 the task failed / the call was refused, 2 bad usage or an invalid
request, 3 the registry or an agent could not be reached.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.table import Table
from rich.text import Text

from agentmesh.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, console, err_console, fail
from agentmesh.cli.run import _FAILED, _check_domain, follow, model_of_step, print_outcome
from agentmesh.kit.errors import AgentmeshError, NotFound
from agentmesh.v1 import task_pb2

T = TypeVar("T")

TokenOption = typer.Option(None, "--token", help="Bearer token (default: AGENTMESH_TOKEN, the profile).")
RegistryOption = typer.Option(None, "--registry", help="Registry address (default: env, profile, :50051).")
TargetOption = typer.Option(None, "--target", help="Call this agent address directly (needs --domain).")
TenantOption = typer.Option(None, "--tenant", help="Tenant to act in (until tokens carry it).")
UserOption = typer.Option(None, "--user", help="User to act as (until tokens carry it).")
JsonOption = typer.Option(False, "--json", help="Print JSON.")
DomainOption = typer.Option(None, "--domain", "-d", help="The task's domain (default: ask every agent).")
TimeoutOption = typer.Option(300.0, "--timeout", help="Seconds to follow the task with --wait.")

_STATES = {
    name.removeprefix("TASK_STATE_").lower(): number
    for name, number in task_pb2.TaskState.items()
    if number != task_pb2.TASK_STATE_UNSPECIFIED
}
_OUTCOMES = {
    number: name.removeprefix("TOOL_OUTCOME_").lower().replace("_", " ")
    for name, number in task_pb2.ToolOutcome.items()
}
_KINDS = {
    task_pb2.STEP_KIND_MODEL_CALL: "model",
    task_pb2.STEP_KIND_TOOL_CALL: "tool",
    task_pb2.STEP_KIND_SANITIZE: "sanitize",
    task_pb2.STEP_KIND_COMPACTION: "compact",
    task_pb2.STEP_KIND_DELEGATION: "delegate",
}
RESULT_CHARS = 160  # tool arguments and results on the terminal; --json has them whole


@dataclass(frozen=True)
class CommandCaller:
    """Who the commands act as and where they find the agents."""

    token: str | None
    registry: str | None
    target: str | None
    tenant: str | None
    user: str | None

    def metadata(self) -> list[tuple[str, str]]:
        from agentmesh.cli.profile_file import resolve_token
        from agents.client import caller_metadata

        return caller_metadata(token=resolve_token(self.token), tenant=self.tenant, user=self.user)

    @property
    def registry_address(self) -> str:
        from agentmesh.cli.profile_file import resolve_registry

        return resolve_registry(self.registry)

    async def client(self, domain: str) -> Any:
        from agents.client import AgentClient

        if self.target:
            return AgentClient.connect(self.target, metadata=self.metadata())
        try:
            return await AgentClient.for_domain(
                domain, registry=self.registry_address, metadata=self.metadata()
            )
        except NotFound:
            err_console.print(
                Text(f"no agent for domain {domain!r} in the registry at {self.registry_address}", "red")
            )
            raise typer.Exit(EXIT_FAILED) from None
        except AgentmeshError as exc:
            raise fail(exc, f"the registry at {self.registry_address}") from None

    async def domains(self, wanted: Sequence[str] | None) -> list[str]:
        """The domains asked for, or every domain in the registry's directory."""
        if wanted:
            for domain in wanted:
                _check_domain(domain)
            return list(wanted)
        if self.target:
            err_console.print("[red]--target needs --domain[/red]")
            raise typer.Exit(EXIT_USAGE)
        from agents.client import list_agents

        try:
            cards = await list_agents(registry=self.registry_address, metadata=self.metadata())
        except AgentmeshError as exc:
            raise fail(exc, f"the registry at {self.registry_address}") from None
        return [card.domain for card in cards]


def _caller(
    token: str | None, registry: str | None, target: str | None, tenant: str | None, user: str | None
) -> CommandCaller:
    return CommandCaller(token=token, registry=registry, target=target, tenant=tenant, user=user)


async def _with_client(caller: CommandCaller, domain: str, action: Callable[[Any], Awaitable[T]]) -> T:
    client = await caller.client(domain)
    try:
        return await action(client)
    except AgentmeshError as exc:
        raise fail(exc, f"the {domain} agent at {client.target}") from None
    finally:
        await client.close()


async def _locate(caller: CommandCaller, task_id: str, domain: str | None) -> tuple[str, task_pb2.Task]:
    """The task's domain and the task (FULL view): from `domain`'s agent, or the first agent that has it."""
    domains = await caller.domains([domain] if domain else None)

    async def ask(name: str) -> task_pb2.Task | None:
        client = await caller.client(name)
        try:
            task: task_pb2.Task = await client.get_task(task_id, view=task_pb2.TASK_VIEW_FULL)
            return task
        except NotFound:
            return None
        except AgentmeshError as exc:
            if domain:
                raise fail(exc, f"the {name} agent at {client.target}") from None
            err_console.print(Text(f"(skipped the {name} agent: {exc.code.name} {exc.message})", "yellow"))
            return None
        finally:
            await client.close()

    found = await asyncio.gather(*(ask(name) for name in domains))
    for name, task in zip(domains, found, strict=True):
        if task is not None:
            return name, task
    where = f"the {domain} agent" if domain else f"any of the agents ({', '.join(domains) or 'none'})"
    err_console.print(Text(f"task {task_id} not found in {where}", "red"))
    raise typer.Exit(EXIT_FAILED)


def _json(message: Message) -> dict[str, Any]:
    document: dict[str, Any] = json_format.MessageToDict(message)
    return document


def _echo_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


def _state(task: task_pb2.Task | task_pb2.TaskStatusUpdate) -> str:
    return task_pb2.TaskState.Name(task.state).removeprefix("TASK_STATE_")


def _when(stamp: Any) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _clip(text: str, limit: int = RESULT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _exit_for(task: task_pb2.Task) -> None:
    if task.state in _FAILED:
        raise typer.Exit(EXIT_FAILED)


def print_task(task: task_pb2.Task) -> None:
    """A task on the terminal: header, instruction, steps with arguments and results, outcome."""
    header = Text()
    header.append(task.domain, "bold")
    header.append(f" · task {task.task_id} · created {_when(task.create_time)}")
    if task.session_id:
        header.append(f" · session {task.session_id}")
    if task.owner:
        header.append(f" · owner {task.tenant}/{task.owner}")
    console.print(header)
    console.print(Text("instruction: ", "dim") + Text(_clip(task.instruction, 400)))
    for step in task.steps:
        print_step_detail(step)
    print_outcome(task)
    if task.last_event_id:
        console.print(Text(f"last event {task.last_event_id} (watch on with --after it)", "dim"))


def print_step_detail(step: task_pb2.Step) -> None:
    kind = _KINDS.get(step.kind, "step")
    line = Text(f"  #{step.index:<3} {kind:<9}")
    if step.tool_name:
        line.append(f"{step.tool_name} {step.tool_version}".strip() + " ", "cyan")
        line.append(_OUTCOMES.get(step.outcome, "?"), "green" if step.outcome == 1 else "yellow")
        if step.attempts > 1:
            line.append(f" after {step.attempts} attempts", "yellow")
    else:
        line.append(_clip(step.summary))
        model, scripted = model_of_step(step)
        if model and model not in step.summary:
            line.append(f" ({model}{', scripted' if scripted else ''})", "dim")
    ms = step.duration.seconds * 1000 + step.duration.nanos / 1e6
    extra = f"  {ms:.0f} ms"
    if step.usage.total_tokens:
        extra += f"  {step.usage.total_tokens} tok"
    if step.usage.cost_usd:
        extra += f"  ${step.usage.cost_usd:.6f}"
    line.append(extra, "dim")
    console.print(line)
    if step.tool_name:
        if step.arguments_json:
            console.print(Text("        args   ", "dim") + Text(_clip(step.arguments_json)))
        if step.result_json:
            console.print(Text("        result ", "dim") + Text(_clip(step.result_json)))


def print_event(event: task_pb2.TaskEvent) -> None:
    """One line (or a few) per event of the timeline, each with its event id to resume from."""
    head = Text(f"{event.event_id:<18} {_when(event.create_time)[11:19]}  ", "dim")
    which = event.WhichOneof("event")
    if which == "status_update":
        update = event.status_update
        reason = task_pb2.StopReason.Name(update.stop_reason).removeprefix("STOP_REASON_").lower()
        line = head + Text(_state(update), "bold")
        if update.stop_reason:
            line.append(f" ({reason})")
        if update.message:
            line.append("  " + _clip(update.message))
        console.print(line)
        if update.HasField("pending_action"):
            pending = update.pending_action
            console.print(
                Text(f"{'':<28}waiting on {pending.action_id}: ", "yellow")
                + Text(f"{pending.tool_name} {_clip(pending.arguments_json)}")
                + Text(f" (needs {pending.required_scope})" if pending.required_scope else "", "dim")
            )
        if update.HasField("usage") and update.usage.total_tokens:
            usage = update.usage
            console.print(
                Text(
                    f"{'':<28}{usage.iterations} model turns · {usage.total_tokens} tokens · "
                    f"{usage.tool_calls} tool calls · ${usage.cost_usd:.6f}",
                    "dim",
                )
            )
        if update.final_answer:
            console.print(Text(f"{'':<28}answer: ", "green") + Text(update.final_answer))
    elif which == "step_update":
        if event.step_update.finished:
            console.print(head, end="")
            print_step_detail(event.step_update.step)
        else:
            step = event.step_update.step
            console.print(head + Text(f"step #{step.index} started {step.tool_name}".rstrip(), "dim"))
    elif which == "approval":
        record = event.approval
        verdict = Text("approved", "green") if record.approved else Text("rejected", "red")
        console.print(
            head
            + verdict
            + Text(f" {record.action_id} by {record.approver or '?'}")
            + Text(f": {record.reason}" if record.reason else "")
        )
    elif which == "artifact_update":
        artifact = event.artifact_update.artifact
        console.print(head + Text(f"artifact {artifact.name or artifact.artifact_id}"))


# -- commands ---------------------------------------------------------------------------------


def submit(
    domain: str = typer.Argument(..., help="The agent's domain, e.g. refunds."),
    instruction: str = typer.Argument(..., help="What the agent should do."),
    wait: bool = typer.Option(False, "--wait", help="Follow the task until it ends or waits for input."),
    session: str = typer.Option("", "--session", "-s", help="Session to continue (memory per session)."),
    request_id: str = typer.Option(
        "", "--request-id", help="Idempotency key: repeating it returns the same task (default: random)."
    ),
    timeout: float = TimeoutOption,
    as_json: bool = JsonOption,
    token: str | None = TokenOption,
    registry: str | None = RegistryOption,
    target: str | None = TargetOption,
    tenant: str | None = TenantOption,
    user: str | None = UserOption,
) -> None:
    """Queue a durable task (SubmitTask); with --wait, follow it until it ends or waits."""
    _check_domain(domain)
    caller = _caller(token, registry, target, tenant, user)

    async def go(client: Any) -> task_pb2.Task:
        task: task_pb2.Task = await client.submit(
            instruction, request_id=request_id or str(uuid.uuid4()), session_id=session
        )
        if not wait:
            return task
        if as_json:
            async for event in client.watch_task(task.task_id):
                if _stops(event):
                    break
        else:
            await follow(client, task, client.target, timeout)
        full: task_pb2.Task = await client.get_task(task.task_id, view=task_pb2.TASK_VIEW_FULL)
        return full

    task = asyncio.run(_with_client(caller, domain, go))
    if as_json:
        _echo_json(_json(task))
    elif not wait:
        console.print(Text(f"{task.task_id} {_state(task)}"))
        console.print(Text(f"follow it: agentmesh tasks watch {task.task_id} --domain {domain}", "dim"))
    _exit_for(task)


_STOPPING = {
    task_pb2.TASK_STATE_INPUT_REQUIRED,
    task_pb2.TASK_STATE_COMPLETED,
    task_pb2.TASK_STATE_FAILED,
    task_pb2.TASK_STATE_CANCELED,
    task_pb2.TASK_STATE_REJECTED,
}


def _stops(event: task_pb2.TaskEvent) -> bool:
    return event.HasField("status_update") and event.status_update.state in _STOPPING


def get(
    task_id: str = typer.Argument(..., help="The task's id."),
    domain: str | None = DomainOption,
    as_json: bool = JsonOption,
    token: str | None = TokenOption,
    registry: str | None = RegistryOption,
    target: str | None = TargetOption,
    tenant: str | None = TenantOption,
    user: str | None = UserOption,
) -> None:
    """Print a task: its steps with tool arguments and results, usage, outcome, pending action."""
    caller = _caller(token, registry, target, tenant, user)
    _, task = asyncio.run(_locate(caller, task_id, domain))
    if as_json:
        _echo_json(_json(task))
        return
    print_task(task)


def list_tasks(
    domains: list[str] = typer.Option(None, "--domain", "-d", help="Only this domain (repeatable)."),
    states: list[str] = typer.Option(
        None, "--state", help=f"Only tasks in this state (repeatable): {', '.join(_STATES)}."
    ),
    session: str = typer.Option("", "--session", "-s", help="Only tasks of this session."),
    awaiting_approval: bool = typer.Option(
        False, "--awaiting-approval", help="Tasks waiting for an approval you may give (<domain>:approve)."
    ),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000, help="Newest N tasks."),
    as_json: bool = JsonOption,
    token: str | None = TokenOption,
    registry: str | None = RegistryOption,
    target: str | None = TargetOption,
    tenant: str | None = TenantOption,
    user: str | None = UserOption,
) -> None:
    """List your tasks, newest first, over every domain (or --domain), by state and session."""
    unknown = sorted(set(states or ()) - set(_STATES))
    if unknown:
        err_console.print(Text(f"unknown state {', '.join(unknown)} (states: {', '.join(_STATES)})", "red"))
        raise typer.Exit(EXIT_USAGE)
    if awaiting_approval and (states or session):
        err_console.print("[red]--awaiting-approval takes no --state or --session[/red]")
        raise typer.Exit(EXIT_USAGE)
    caller = _caller(token, registry, target, tenant, user)
    wanted = [_STATES[name] for name in states or ()]

    async def one(domain: str) -> list[task_pb2.Task]:
        async def pages(client: Any) -> list[task_pb2.Task]:
            tasks: list[task_pb2.Task] = []
            token = ""
            while len(tasks) < limit:
                page = await client.list_tasks(
                    states=wanted,
                    session_id=session,
                    awaiting_approval=awaiting_approval,
                    page_size=min(limit - len(tasks), 1000),
                    page_token=token,
                )
                tasks.extend(page.tasks)
                token = page.next_page_token
                if not token:
                    break
            return tasks

        return await _with_client(caller, domain, pages)

    async def go() -> list[task_pb2.Task]:
        domains_ = await caller.domains(domains)
        found = await asyncio.gather(*(one(domain) for domain in domains_))
        merged = [task for tasks in found for task in tasks]
        merged.sort(key=lambda t: (t.create_time.seconds, t.create_time.nanos), reverse=True)
        return merged[:limit]

    tasks = asyncio.run(go())
    if as_json:
        _echo_json([_json(task) for task in tasks])
        return
    if not tasks:
        console.print("no tasks awaiting your approval" if awaiting_approval else "no tasks")
        return
    table = Table(title="tasks awaiting approval" if awaiting_approval else "tasks")
    for column in ("task", "domain", "state", "created"):
        table.add_column(column, no_wrap=True)  # ids must stay copyable
    table.add_column("session")
    table.add_column("pending" if awaiting_approval else "instruction")
    for task in tasks:
        detail = (
            f"{task.pending_action.tool_name} {task.pending_action.arguments_json}"
            if awaiting_approval
            else task.instruction
        )
        table.add_row(
            Text(task.task_id),
            Text(task.domain),
            Text(_state(task)),
            Text(_when(task.create_time)),
            Text(task.session_id),
            Text(_clip(detail, 80)),
        )
    console.print(table)


def watch(
    task_id: str = typer.Argument(..., help="The task's id."),
    after: str = typer.Option("", "--after", help="Resume after this event id (printed with each event)."),
    domain: str | None = DomainOption,
    as_json: bool = typer.Option(False, "--json", help="One JSON event per line."),
    token: str | None = TokenOption,
    registry: str | None = RegistryOption,
    target: str | None = TargetOption,
    tenant: str | None = TenantOption,
    user: str | None = UserOption,
) -> None:
    """The task's live timeline (WatchTask) until it ends; --after EVENT_ID resumes a watch."""
    caller = _caller(token, registry, target, tenant, user)

    async def go() -> task_pb2.Task:
        found_domain, _ = await _locate(caller, task_id, domain)

        async def stream(client: Any) -> task_pb2.Task:
            async for event in client.watch_task(task_id, after):
                if as_json:
                    typer.echo(json.dumps(_json(event), ensure_ascii=False))
                else:
                    print_event(event)
            final: task_pb2.Task = await client.get_task(task_id, view=task_pb2.TASK_VIEW_BASIC)
            return final

        return await _with_client(caller, found_domain, stream)

    try:
        task = asyncio.run(go())
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    _exit_for(task)


def cancel(
    task_id: str = typer.Argument(..., help="The task's id."),
    reason: str = typer.Option("", "--reason", help="Why (recorded on the task)."),
    domain: str | None = DomainOption,
    as_json: bool = JsonOption,
    token: str | None = TokenOption,
    registry: str | None = RegistryOption,
    target: str | None = TargetOption,
    tenant: str | None = TenantOption,
    user: str | None = UserOption,
) -> None:
    """Cancel a task (a running attempt stops at its next checkpoint)."""
    caller = _caller(token, registry, target, tenant, user)

    async def go() -> task_pb2.Task:
        found_domain, _ = await _locate(caller, task_id, domain)
        return await _with_client(caller, found_domain, lambda c: c.cancel(task_id, reason=reason))

    task = asyncio.run(go())
    if as_json:
        _echo_json(_json(task))
        return
    console.print(Text(f"{task.task_id} {_state(task)}"))


def _answer(
    caller: CommandCaller,
    task_id: str,
    domain: str | None,
    *,
    kinds: set[task_pb2.PendingActionKind.ValueType],
    wait: bool,
    timeout: float,
    as_json: bool,
    answer: Callable[[Any, task_pb2.Task], Awaitable[task_pb2.Task]],
) -> None:
    """ResumeTask on the task's pending action (checked to be of one of `kinds`); follow it with --wait."""

    async def go() -> task_pb2.Task:
        found_domain, waiting = await _locate(caller, task_id, domain)
        if waiting.state != task_pb2.TASK_STATE_INPUT_REQUIRED or not waiting.HasField("pending_action"):
            err_console.print(Text(f"task {task_id} is {_state(waiting)}: nothing to answer", "red"))
            raise typer.Exit(EXIT_FAILED)
        pending = waiting.pending_action
        if pending.kind not in kinds:
            kind = task_pb2.PendingActionKind.Name(pending.kind).removeprefix("PENDING_ACTION_KIND_")
            err_console.print(
                Text(f"task {task_id} waits for {kind.lower().replace('_', ' ')}, not this answer", "red")
            )
            raise typer.Exit(EXIT_USAGE)

        async def act(client: Any) -> task_pb2.Task:
            resumed = await answer(client, waiting)
            if not wait:
                return resumed
            if as_json:
                async for event in client.watch_task(task_id, waiting.last_event_id):
                    if _stops(event):
                        break
            else:
                await follow(client, resumed, client.target, timeout, after_event_id=waiting.last_event_id)
            full: task_pb2.Task = await client.get_task(task_id, view=task_pb2.TASK_VIEW_FULL)
            return full

        return await _with_client(caller, found_domain, act)

    task = asyncio.run(go())
    if as_json:
        _echo_json(_json(task))
    elif not wait:
        console.print(Text(f"{task.task_id} {_state(task)}"))
    _exit_for(task)


_DECISIONS = {task_pb2.PENDING_ACTION_KIND_APPROVAL, task_pb2.PENDING_ACTION_KIND_OUTCOME_UNKNOWN}


def _decide(approve: bool) -> Callable[..., None]:
    def command(
        task_id: str = typer.Argument(..., help="The task's id."),
        reason: str = typer.Option("", "--reason", help="Why (recorded as a task event)."),
        wait: bool = typer.Option(False, "--wait", help="Follow the task until it ends or waits again."),
        timeout: float = TimeoutOption,
        domain: str | None = DomainOption,
        as_json: bool = JsonOption,
        token: str | None = TokenOption,
        registry: str | None = RegistryOption,
        target: str | None = TargetOption,
        tenant: str | None = TenantOption,
        user: str | None = UserOption,
    ) -> None:
        async def answer(client: Any, waiting: task_pb2.Task) -> task_pb2.Task:
            pending = waiting.pending_action
            resumed: task_pb2.Task = await client.resume(
                task_id,
                pending.action_id,
                approve=approve,
                reason=reason,
                request_id=f"{'approve' if approve else 'reject'}-{task_id}-{pending.action_id}",
            )
            return resumed

        _answer(
            _caller(token, registry, target, tenant, user),
            task_id,
            domain,
            kinds=_DECISIONS,
            wait=wait,
            timeout=timeout,
            as_json=as_json,
            answer=answer,
        )

    command.__doc__ = (
        "Approve the task's pending action (a tool call waiting for approval, or an outcome-unknown call)."
        if approve
        else "Reject the task's pending action; --reason says why."
    )
    return command


approve = _decide(True)
reject = _decide(False)


def resume(
    task_id: str = typer.Argument(..., help="The task's id."),
    text: str = typer.Argument(..., help="The input the task asked for."),
    wait: bool = typer.Option(False, "--wait", help="Follow the task until it ends or waits again."),
    timeout: float = TimeoutOption,
    domain: str | None = DomainOption,
    as_json: bool = JsonOption,
    token: str | None = TokenOption,
    registry: str | None = RegistryOption,
    target: str | None = TargetOption,
    tenant: str | None = TenantOption,
    user: str | None = UserOption,
) -> None:
    """Give a task the input it waits for (ResumeTask with a text part)."""

    async def answer(client: Any, waiting: task_pb2.Task) -> task_pb2.Task:
        resumed: task_pb2.Task = await client.resume(
            task_id,
            waiting.pending_action.action_id,
            parts=[task_pb2.Part(text=text)],
            request_id=f"input-{task_id}-{waiting.pending_action.action_id}",
        )
        return resumed

    _answer(
        _caller(token, registry, target, tenant, user),
        task_id,
        domain,
        kinds={task_pb2.PENDING_ACTION_KIND_INPUT},
        wait=wait,
        timeout=timeout,
        as_json=as_json,
        answer=answer,
    )


def mount(app: typer.Typer) -> None:
    """Add the task commands to `agentmesh tasks`."""
    app.command("submit")(submit)
    app.command("get")(get)
    app.command("list")(list_tasks)
    app.command("watch")(watch)
    app.command("cancel")(cancel)
    app.command("resume")(resume)
    app.command("approve")(approve)
    app.command("reject")(reject)
