"""The operator console's aiohttp application: routes, security headers, sign-in, pages.

Pages are rendered on the server from Jinja2 templates with autoescaping on for every
template: model, tool and user text is untrusted and reaches the browser only as
escaped text. The only scripts are the console's own static files (a strict CSP
forbids inline script and style), and the live task timeline arrives as server-rendered,
escaped HTML fragments over Server-Sent Events.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import grpc
import jinja2
from aiohttp import web
from google.protobuf import timestamp_pb2

from agentmesh.console.auth import CSRF_FIELD, Authentication
from agentmesh.console.mesh import Identity, MeshClient
from agentmesh.console.protosrc import proto_source
from agentmesh.console.replicas import BREAKER_STATES, ReplicaFigures, fetch_figures
from agentmesh.kit import health
from agentmesh.kit.errors import Unauthenticated
from agentmesh.kit.validation import OPAQUE_ID
from agentmesh.v1 import agent_service_pb2, task_pb2, tool_options_pb2, tool_pb2

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATES_DIR = HERE / "templates"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # `same-origin`, not `no-referrer`: with the latter Chromium sends `Origin: null` on form posts.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
PUBLIC_PATHS = ("/signin", "/static/", "/healthz", "/favicon.ico")
MAX_REASON_CHARS = 1024
TASK_PAGE_SIZES = (20, 50, 100)
TERMINAL_STATES = {
    task_pb2.TASK_STATE_COMPLETED,
    task_pb2.TASK_STATE_FAILED,
    task_pb2.TASK_STATE_CANCELED,
    task_pb2.TASK_STATE_REJECTED,
}

WHO: web.AppKey[Authentication] = web.AppKey("auth", Authentication)
MESH: web.AppKey[MeshClient] = web.AppKey("mesh", MeshClient)
TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("templates", jinja2.Environment)
HTTP: web.AppKey[aiohttp.ClientSession] = web.AppKey("http", aiohttp.ClientSession)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- formatting helpers the templates use -----------------------------------------------------------


def state_name(state: int) -> str:
    return enum_name(task_pb2.TaskState, state, "TASK_STATE_") if state else "UNSPECIFIED"


def enum_name(enum: Any, value: int, prefix: str) -> str:
    try:
        return str(enum.Name(value)).removeprefix(prefix)
    except ValueError:
        return str(value)


def when(stamp: timestamp_pb2.Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return ""
    return datetime.fromtimestamp(stamp.seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def pretty_json(text: str) -> str:
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
    except ValueError:
        return text


def duration(value: Any) -> str:
    seconds = value.seconds + value.nanos / 1e9
    return f"{seconds:.3f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def make_templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        enable_async=False,
    )
    env.filters.update(
        state=state_name,
        when=when,
        pretty_json=pretty_json,
        duration=duration,
        side_effect=lambda v: enum_name(tool_options_pb2.SideEffect, v, "SIDE_EFFECT_"),
        step_kind=lambda v: enum_name(task_pb2.StepKind, v, "STEP_KIND_"),
        outcome=lambda v: enum_name(task_pb2.ToolOutcome, v, "TOOL_OUTCOME_"),
        stop_reason=lambda v: enum_name(task_pb2.StopReason, v, "STOP_REASON_"),
        action_kind=lambda v: enum_name(task_pb2.PendingActionKind, v, "PENDING_ACTION_KIND_"),
        breaker=lambda v: BREAKER_STATES.get(v, str(v)),
    )
    return env


# -- middlewares -------------------------------------------------------------------------------------


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        raise
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@web.middleware
async def signed_in(request: web.Request, handler: Handler) -> web.StreamResponse:
    who = await request.app[WHO].identity(request)
    request["who"] = who
    if who is None and not request.path.startswith(PUBLIC_PATHS):
        response = web.HTTPSeeOther("/signin")
        if request.cookies.get("am_session"):
            request.app[WHO].end_session(response)
        raise response
    return await handler(request)


# -- rendering -----------------------------------------------------------------------------------------


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    who: Identity | None = request.get("who")
    context.setdefault("who", who)
    context.setdefault("csrf", request.app[WHO].csrf_token(who) if who else "")
    context.setdefault("csrf_field", CSRF_FIELD)
    context.setdefault("path", request.path)
    html = request.app[TEMPLATES].get_template(template).render(**context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def rpc_failure(request: web.Request, exc: grpc.aio.AioRpcError, what: str) -> web.Response:
    code = exc.code()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        response = web.HTTPSeeOther("/signin")
        request.app[WHO].end_session(response)
        raise response
    status = {
        grpc.StatusCode.PERMISSION_DENIED: 403,
        grpc.StatusCode.NOT_FOUND: 404,
        grpc.StatusCode.INVALID_ARGUMENT: 400,
        grpc.StatusCode.FAILED_PRECONDITION: 409,
        grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    }.get(code, 502)
    return render(
        request, "error.html", status=status, what=what, code=code.name, message=exc.details() or ""
    )


NOTICES = {"approved": "approved", "rejected": "rejected", "canceled": "canceled"}


def notice_of(request: web.Request) -> str:
    """A known notice (after a redirect), never free text from the URL."""
    notice = NOTICES.get(request.query.get("notice", ""), "")
    task = request.query.get("task", "")
    if notice and task and OPAQUE_ID.fullmatch(task):
        return f"task {task} {notice}"
    return notice


def unknown_domain(request: web.Request, domain: str) -> web.Response:
    return render(
        request,
        "error.html",
        status=404,
        what="agent",
        code="NOT_FOUND",
        message=f"no agent for domain {domain!r} in the registry's directory",
    )


async def form_of(request: web.Request) -> dict[str, str]:
    data = await request.post()
    return {key: value for key, value in data.items() if isinstance(value, str)}


def who_of(request: web.Request) -> Identity:
    who: Identity | None = request.get("who")
    if who is None:
        raise web.HTTPSeeOther("/signin")
    return who


# -- sign-in ---------------------------------------------------------------------------------------------


async def signin_page(request: web.Request, *, error: str = "", status: int = 200) -> web.StreamResponse:
    auth = request.app[WHO]
    response = web.Response(content_type="text/html", charset="utf-8", status=status)
    nonce = auth.login_nonce(request, response)
    html = render(
        request,
        "signin.html",
        login_csrf=nonce,
        problem=auth.problem,
        dev=sorted(auth.dev_tokens),
        error=error,
    )
    response.text = html.text or ""
    return response


async def signin(request: web.Request) -> web.StreamResponse:
    auth = request.app[WHO]
    form = await form_of(request)
    auth.check_csrf(request, form.get(CSRF_FIELD, ""), None)
    token = form.get("token", "")
    if form.get("dev"):
        token = auth.dev_tokens.get(form["dev"], "")
    try:
        who = await auth.verify(token)
    except Unauthenticated as exc:
        # Answered in place (401), not by a redirect carrying the text: no URL can make the
        # sign-in page say something of an attacker's choosing.
        return await signin_page(request, error=str(exc), status=401)
    response = web.HTTPSeeOther("/")
    auth.start_session(request, response, who)
    raise response


async def signout(request: web.Request) -> web.StreamResponse:
    form = await form_of(request)
    request.app[WHO].check_csrf(request, form.get(CSRF_FIELD, ""), request.get("who"))
    response = web.HTTPSeeOther("/signin")
    request.app[WHO].end_session(response)
    raise response


# -- overview and agents -----------------------------------------------------------------------------


async def _replicas(
    request: web.Request, cards: list[agent_service_pb2.AgentCard]
) -> dict[str, ReplicaFigures]:
    session = request.app[HTTP]
    figures = await asyncio.gather(*(fetch_figures(session, card.http_url) for card in cards))
    return {card.domain: f for card, f in zip(cards, figures, strict=True)}


async def overview(request: web.Request) -> web.StreamResponse:
    who, mesh = who_of(request), request.app[MESH]
    registry_state = await health.check(mesh.registry_target, "agentmesh.v1.ToolRegistryService", timeout=1.0)
    cards: list[agent_service_pb2.AgentCard] = []
    problem = ""
    try:
        cards = await mesh.agents(who, fresh=True)
    except grpc.aio.AioRpcError as exc:
        problem = f"{exc.code().name}: {exc.details()}"
    states = await asyncio.gather(
        *(health.check(card.endpoint, "agentmesh.v1.AgentService", timeout=1.0) for card in cards)
    )
    replicas = await _replicas(request, cards)
    tools: list[tool_pb2.ToolSpec] = []
    if not problem:
        try:
            tools = await mesh.list_tools(who)
        except grpc.aio.AioRpcError as exc:
            problem = f"{exc.code().name}: {exc.details()}"
    return render(
        request,
        "overview.html",
        registry=mesh.registry_target,
        registry_state=registry_state,
        agents=list(zip(cards, states, strict=True)),
        replicas=replicas,
        tool_names=sorted({t.name for t in tools}),
        problem=problem,
    )


async def agents_page(request: web.Request) -> web.StreamResponse:
    who, mesh = who_of(request), request.app[MESH]
    try:
        cards = await mesh.agents(who, fresh=True)
    except grpc.aio.AioRpcError as exc:
        return rpc_failure(request, exc, "the agent directory")
    return render(request, "agents.html", agents=cards, replicas=await _replicas(request, cards))


# -- tools -----------------------------------------------------------------------------------------------


async def tools_page(request: web.Request) -> web.StreamResponse:
    who, mesh = who_of(request), request.app[MESH]
    try:
        tools = await mesh.list_tools(who)
        cards = await mesh.agents(who)
    except grpc.aio.AioRpcError as exc:
        return rpc_failure(request, exc, "the tool list")
    replicas = await _replicas(request, cards)
    breakers: dict[str, list[tuple[str, float]]] = {}
    for domain, figures in replicas.items():
        for tool, state in figures.breakers.items():
            breakers.setdefault(tool, []).append((domain, state))
    by_name: dict[str, list[tool_pb2.ToolSpec]] = {}
    for spec in tools:
        by_name.setdefault(spec.name, []).append(spec)
    metrics_available = any(f.available for f in replicas.values())
    return render(
        request,
        "tools.html",
        tools=sorted(by_name.items()),
        breakers=breakers,
        metrics_available=metrics_available,
    )


def source_of(tool: tool_pb2.ToolSpec) -> str:
    if not tool.file_descriptor_set:
        return ""
    try:
        return proto_source(tool.file_descriptor_set)
    except Exception as exc:  # a stored set the renderer cannot read: say so, show the rest
        return f"// the proto source cannot be shown: {exc}"


def _schema_text(text: str) -> str:
    return pretty_json(text) if text else ""


async def tool_page(request: web.Request) -> web.StreamResponse:
    who, mesh = who_of(request), request.app[MESH]
    name = request.match_info["name"]
    version = request.query.get("version", "latest")
    try:
        tool = await mesh.get_tool(who, name, version)
        versions = [t.version for t in await mesh.list_tools(who) if t.name == name]
    except grpc.aio.AioRpcError as exc:
        return rpc_failure(request, exc, f"tool {name}")
    return render(
        request,
        "tool.html",
        tool=tool,
        versions=versions,
        input_schema=_schema_text(tool.input_schema_json),
        output_schema=_schema_text(tool.output_schema_json),
        source=source_of(tool),
    )


async def tool_diff(request: web.Request) -> web.StreamResponse:
    who, mesh = who_of(request), request.app[MESH]
    name = request.match_info["name"]
    old_version, new_version = request.query.get("from", ""), request.query.get("to", "")
    if not old_version or not new_version:
        raise web.HTTPSeeOther(f"/tools/{name}")
    try:
        old = await mesh.get_tool(who, name, old_version)
        new = await mesh.get_tool(who, name, new_version)
        verdict = await mesh.check_compatibility(who, new, old.version)
    except grpc.aio.AioRpcError as exc:
        return rpc_failure(request, exc, f"tool {name}")

    def lines(text: str) -> list[str]:
        return text.splitlines()

    def diff(a: str, b: str, label: str) -> list[str]:
        return list(
            difflib.unified_diff(
                lines(a), lines(b), f"{label} {old.version}", f"{label} {new.version}", lineterm=""
            )
        )

    return render(
        request,
        "diff.html",
        tool=new,
        old=old,
        new=new,
        verdict=verdict,
        input_diff=diff(_schema_text(old.input_schema_json), _schema_text(new.input_schema_json), "input"),
        output_diff=diff(
            _schema_text(old.output_schema_json), _schema_text(new.output_schema_json), "output"
        ),
        source_diff=diff(source_of(old), source_of(new), "proto"),
    )


# -- tasks -----------------------------------------------------------------------------------------------


STATE_CHOICES = [
    state_name(value) for value in task_pb2.TaskState.values() if value != task_pb2.TASK_STATE_UNSPECIFIED
]


async def tasks_page(request: web.Request) -> web.StreamResponse:
    who, mesh = who_of(request), request.app[MESH]
    try:
        cards = await mesh.agents(who)
    except grpc.aio.AioRpcError as exc:
        return rpc_failure(request, exc, "the agent directory")
    domains = [card.domain for card in cards]
    domain = request.query.get("domain") or (domains[0] if domains else "")
    state = request.query.get("state", "")
    session_id = request.query.get("session", "")
    page_token = request.query.get("page_token", "")
    size_text = request.query.get("size", "50")
    page_size = int(size_text) if size_text.isdigit() and int(size_text) in TASK_PAGE_SIZES else 50
    states = [task_pb2.TaskState.Value(f"TASK_STATE_{state}")] if state in STATE_CHOICES else []
    tasks: list[task_pb2.Task] = []
    next_token = ""
    listed_ms = 0.0
    if domain:
        if domain not in domains:
            return unknown_domain(request, domain)
        started = time.perf_counter()
        try:
            page = await mesh.list_tasks(
                who, domain, states=states, session_id=session_id, page_size=page_size, page_token=page_token
            )
        except grpc.aio.AioRpcError as exc:
            return rpc_failure(request, exc, f"the tasks of {domain}")
        tasks, next_token = list(page.tasks), page.next_page_token
        listed_ms = (time.perf_counter() - started) * 1000
    filters = {"domain": domain, "state": state, "session": session_id, "size": str(page_size)}
    next_url = "/tasks?" + urlencode({**filters, "page_token": next_token}) if next_token else ""
    started = time.perf_counter()
    response = render(
        request,
        "tasks.html",
        domains=domains,
        domain=domain,
        state=state,
        session=session_id,
        states=STATE_CHOICES,
        tasks=tasks,
        next_url=next_url,
    )
    rendered_ms = (time.perf_counter() - started) * 1000
    response.headers["Server-Timing"] = f"list;dur={listed_ms:.2f}, render;dur={rendered_ms:.2f}"
    return response


async def task_page(request: web.Request) -> web.StreamResponse:
    who, mesh = who_of(request), request.app[MESH]
    domain, task_id = request.match_info["domain"], request.match_info["task_id"]
    try:
        task = await mesh.get_task(who, domain, task_id)
    except LookupError:
        return unknown_domain(request, domain)
    except grpc.aio.AioRpcError as exc:
        return rpc_failure(request, exc, f"task {task_id}")
    return render(
        request,
        "task.html",
        domain=domain,
        task=task,
        terminal=task.state in TERMINAL_STATES,
        awaiting_approval=task.pending_action.kind
        in (task_pb2.PENDING_ACTION_KIND_APPROVAL, task_pb2.PENDING_ACTION_KIND_OUTCOME_UNKNOWN)
        and task.state == task_pb2.TASK_STATE_INPUT_REQUIRED,
        notice=notice_of(request),
    )


def _sse(event: str, html: str, event_id: str = "") -> bytes:
    lines = [f"event: {event}"]
    if event_id:
        lines.append(f"id: {event_id}")
    lines += [f"data: {line}" for line in html.splitlines() or [""]]
    return ("\n".join(lines) + "\n\n").encode()


async def task_events(request: web.Request) -> web.StreamResponse:
    """The task's timeline as Server-Sent Events, each an escaped HTML fragment (WatchTask)."""
    who, mesh = who_of(request), request.app[MESH]
    domain, task_id = request.match_info["domain"], request.match_info["task_id"]
    after = request.headers.get("Last-Event-ID") or request.query.get("after", "")
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", **SECURITY_HEADERS}
    )
    await response.prepare(request)
    template = request.app[TEMPLATES].get_template("event.html")
    try:
        # aclosing: a browser that goes away ends the WatchTask call now, not at garbage collection.
        async with contextlib.aclosing(mesh.watch_task(who, domain, task_id, after)) as events:
            async for event in events:
                kind = event.WhichOneof("event") or ""
                html = template.render(event=event, kind=kind)
                await response.write(_sse("timeline", html, event.event_id))
    except LookupError:
        await response.write(_sse("problem", f"no agent for domain {domain!r}"))
    except grpc.aio.AioRpcError as exc:
        # Plain text: the page puts it in with textContent.
        await response.write(_sse("problem", f"{exc.code().name}: {exc.details()}"))
    await response.write(_sse("end", ""))
    return response


async def cancel_task(request: web.Request) -> web.StreamResponse:
    who, mesh = who_of(request), request.app[MESH]
    form = await form_of(request)
    request.app[WHO].check_csrf(request, form.get(CSRF_FIELD, ""), who)
    domain, task_id = request.match_info["domain"], request.match_info["task_id"]
    try:
        await mesh.cancel_task(who, domain, task_id, form.get("reason", "")[:MAX_REASON_CHARS])
    except LookupError:
        return unknown_domain(request, domain)
    except grpc.aio.AioRpcError as exc:
        return rpc_failure(request, exc, f"cancelling task {task_id}")
    raise web.HTTPSeeOther(f"/tasks/{domain}/{task_id}?notice=canceled")


async def decide_task(request: web.Request) -> web.StreamResponse:
    who, mesh = who_of(request), request.app[MESH]
    form = await form_of(request)
    request.app[WHO].check_csrf(request, form.get(CSRF_FIELD, ""), who)
    domain, task_id = request.match_info["domain"], request.match_info["task_id"]
    decision = form.get("decision", "")
    if decision not in ("approve", "reject"):
        raise web.HTTPBadRequest(text="decision must be approve or reject")
    try:
        await mesh.decide(
            who,
            domain,
            task_id,
            form.get("action_id", ""),
            approve=decision == "approve",
            reason=form.get("reason", "")[:MAX_REASON_CHARS],
        )
    except LookupError:
        return unknown_domain(request, domain)
    except grpc.aio.AioRpcError as exc:
        return rpc_failure(request, exc, f"deciding on task {task_id}")
    back = form.get("back", "")
    notice = "approved" if decision == "approve" else "rejected"
    if back == "approvals":
        raise web.HTTPSeeOther(f"/approvals?{urlencode({'notice': notice, 'task': task_id})}")
    raise web.HTTPSeeOther(f"/tasks/{domain}/{task_id}?notice={notice}")


async def approvals_page(request: web.Request) -> web.StreamResponse:
    """Tasks awaiting approval in each domain where the agent lets this user see them."""
    who, mesh = who_of(request), request.app[MESH]
    try:
        cards = await mesh.agents(who)
    except grpc.aio.AioRpcError as exc:
        return rpc_failure(request, exc, "the agent directory")

    async def inbox(domain: str) -> tuple[str, list[task_pb2.Task], str]:
        try:
            page = await mesh.list_tasks(who, domain, awaiting_approval=True, page_size=100)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                return domain, [], f"you do not hold {domain}:approve"
            return domain, [], f"{exc.code().name}: {exc.details()}"
        return domain, list(page.tasks), ""

    boxes = await asyncio.gather(*(inbox(card.domain) for card in cards))
    return render(request, "approvals.html", boxes=boxes, notice=notice_of(request))


async def usage_page(request: web.Request) -> web.StreamResponse:
    who, mesh = who_of(request), request.app[MESH]
    try:
        cards = await mesh.agents(who)
    except grpc.aio.AioRpcError as exc:
        return rpc_failure(request, exc, "the agent directory")

    async def one(domain: str) -> tuple[str, agent_service_pb2.GetUsageResponse | None, str]:
        try:
            return domain, await mesh.usage(who, domain), ""
        except grpc.aio.AioRpcError as exc:
            return domain, None, f"{exc.code().name}: {exc.details()}"

    rows = await asyncio.gather(*(one(card.domain) for card in cards))
    total_cost = sum(r.usage.cost_usd for _, r, _ in rows if r is not None)
    total_tokens = sum(r.usage.total_tokens for _, r, _ in rows if r is not None)
    return render(request, "usage.html", rows=rows, total_cost=total_cost, total_tokens=total_tokens)


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def favicon(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204)


# -- the application ---------------------------------------------------------------------------------


def create_app(mesh: MeshClient, auth: Authentication) -> web.Application:
    app = web.Application(middlewares=[security_headers, signed_in], client_max_size=64 * 1024)
    app[WHO] = auth
    app[MESH] = mesh
    app[TEMPLATES] = make_templates()

    async def http_session(app: web.Application) -> AsyncIterator[None]:
        app[HTTP] = aiohttp.ClientSession()
        yield
        await app[HTTP].close()
        await mesh.close()

    app.cleanup_ctx.append(http_session)
    app.router.add_get("/signin", signin_page)
    app.router.add_post("/signin", signin)
    app.router.add_post("/signout", signout)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/", overview)
    app.router.add_get("/agents", agents_page)
    app.router.add_get("/tools", tools_page)
    app.router.add_get("/tools/{name}", tool_page)
    app.router.add_get("/tools/{name}/diff", tool_diff)
    app.router.add_get("/tasks", tasks_page)
    app.router.add_get("/tasks/{domain}/{task_id}", task_page)
    app.router.add_get("/tasks/{domain}/{task_id}/events", task_events)
    app.router.add_post("/tasks/{domain}/{task_id}/cancel", cancel_task)
    app.router.add_post("/tasks/{domain}/{task_id}/decide", decide_task)
    app.router.add_get("/approvals", approvals_page)
    app.router.add_get("/usage", usage_page)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    return app
