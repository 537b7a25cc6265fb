"""The console's task list page against a bare ListTasks call, with 10,000 tasks in Redis.

Setup: valkey (embedded), the registry, the scripted model and the refunds agent as
processes, and `agentmesh serve console` as a process (tokens from a fresh issuer key).
10,000 tasks of one user are written through the task layer (submitted, then canceled
so no worker runs them). Measured in the same run, one at a time (1 in flight):

- bare: AgentService.ListTasks, page of 50, BASIC view, from this process over gRPC;
- page: GET /tasks?domain=refunds&size=50 on the console with a session cookie — the
  console calls the same ListTasks with the user's token and renders the HTML table.

Both walk the same first pages (page tokens followed, 5 pages deep, then back to the
first). Target: page time <= 1.5x the bare call's (bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import statistics
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path

from agentmesh.kit import metadata as md
from agentmesh.kit.channels import create_channel
from agentmesh.kit.errors import FailedPrecondition
from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agentmesh.v1 import agent_service_pb2, agent_service_pb2_grpc, task_pb2
from agents.requests import new_task
from bench.common import ROOT
from memory.connection import create_redis
from memory.tasks.queue import TaskQueue
from memory.tasks.store import TaskConfig
from tests.support.agent_mesh import running_mesh
from tests.support.console import TENANT, Identities, start_console
from tests.support.http import SessionClient

TASKS = 10_000
PAGE = 50
DEPTH = 5
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SECONDS_PER_SIDE = 3.0
USER = "bench"


async def seed(redis_url: str) -> None:
    redis = create_redis(redis_url)
    queue = TaskQueue(redis, domain="refunds", config=TaskConfig())
    await queue.ensure_groups()
    numbers = itertools.count()
    semaphore = asyncio.Semaphore(64)

    async def one() -> None:
        async with semaphore:
            n = next(numbers)
            task = await queue.submit(
                new_task(
                    agent_service_pb2.SubmitTaskRequest(
                        instruction=f"Customer C-{n:05d} asks about order ORD-{n:05d} <b>{n}</b>",
                        request_id=f"console-bench-{n}",
                    )
                ),
                tenant=TENANT,
                owner=USER,
            )
            # A worker may have taken it first (it then fails at once: the model has no script
            # for it); either way it ends and stays listed.
            with contextlib.suppress(FailedPrecondition):
                await queue.store.cancel(task.task_id, tenant=TENANT, owner=USER, reason="bench")

    try:
        await asyncio.gather(*(one() for _ in range(TASKS)))
    finally:
        await redis.aclose()


async def timed(label: str, call: Callable[[str], Awaitable[str]]) -> list[float]:
    """Mean ms per page over SECONDS_PER_SIDE, walking DEPTH pages deep and starting over."""
    samples: list[float] = []
    token = ""
    depth = 0
    deadline = time.perf_counter() + SECONDS_PER_SIDE
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        token = await call(token)
        samples.append((time.perf_counter() - started) * 1000)
        depth += 1
        if depth >= DEPTH or not token:
            token, depth = "", 0
    return samples


async def run() -> list[tuple[float, float]]:
    server = EmbeddedRedis().start()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            workdir = Path(scratch)
            identities = Identities.create(workdir)
            async with running_mesh(
                server.url,
                workdir / "logs",
                tools=[],
                model_script=ROOT / "agents" / "scripts" / "demo.yaml",
                agents=[ROOT / "agents" / "domains" / "refunds.yaml"],
                registered_tools=[],
                env={"AGENTMESH_LOG_LEVEL": "WARNING", "AGENTMESH_JWKS": str(identities.jwks)},
            ) as mesh:
                started = time.perf_counter()
                await seed(server.url)
                print(f"seeded {TASKS} tasks in {time.perf_counter() - started:.1f} s", flush=True)
                await asyncio.sleep(2)  # let the workers finish any task they took
                console = await start_console(mesh, workdir, identities, {})
                token = console.token(USER)
                metadata = [
                    (md.AUTHORIZATION, f"Bearer {token}"),
                    (md.TENANT, TENANT),
                    (md.USER, USER),
                ]
                channel = create_channel(mesh.agents["refunds"])
                stub = agent_service_pb2_grpc.AgentServiceStub(channel)

                async def bare(page_token: str) -> str:
                    page = await stub.ListTasks(
                        agent_service_pb2.ListTasksRequest(
                            page_size=PAGE, page_token=page_token, view=task_pb2.TASK_VIEW_BASIC
                        ),
                        metadata=metadata,
                        timeout=10,
                    )
                    assert len(page.tasks) == PAGE
                    return str(page.next_page_token)

                async with SessionClient(console.url, timeout=10) as http:
                    form = await http.get("/signin")
                    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', form.text)
                    assert csrf is not None
                    signed = await http.post("/signin", data={"csrf": csrf.group(1), "token": token})
                    assert signed.status_code in (200, 303), signed.text

                    async def page(page_token: str) -> str:
                        params = {"domain": "refunds", "size": str(PAGE)}
                        if page_token:
                            params["page_token"] = page_token
                        answer = await http.get("/tasks", params=params)
                        timing.append(answer.headers.get("server-timing", ""))
                        assert answer.status_code == 200 and answer.text.count("<tr>") > PAGE, answer.text
                        found = re.search(r'href="/tasks\?[^"]*page_token=([^"&]+)', answer.text)
                        if not found:
                            return ""
                        return urllib.parse.parse_qs(f"page_token={found.group(1)}")["page_token"][0]

                    async def floor(_: str) -> str:
                        await http.get("/healthz")
                        return ""

                    floor_ms = statistics.mean(await timed("floor", floor))
                    print(f"console HTTP floor (GET /healthz): {floor_ms:.2f} ms", flush=True)
                    timing: list[str] = []
                    results = []
                    for _ in range(ROUNDS):
                        bare_ms = statistics.mean(await timed("bare", bare))
                        page_ms = statistics.mean(await timed("page", page))
                        results.append((bare_ms, page_ms))
                        parts = [dict(re.findall(r"(\w+);dur=([\d.]+)", t)) for t in timing if t]
                        inside = {k: statistics.mean(float(p[k]) for p in parts) for k in ("list", "render")}
                        timing.clear()
                        print(
                            f"ListTasks {bare_ms:.2f} ms/page   console page {page_ms:.2f} ms/page   "
                            f"ratio {page_ms / bare_ms:.2f}x   (inside the console: ListTasks "
                            f"{inside['list']:.2f} ms, render {inside['render']:.2f} ms)",
                            flush=True,
                        )
                await channel.close()
                return results
    finally:
        server.cleanup()


def main() -> None:
    results = asyncio.run(run())
    ratios = sorted(page / bare for bare, page in results)
    print(
        f"console task list page / bare ListTasks (page of {PAGE}, {TASKS} tasks): "
        f"median {statistics.median(ratios):.2f}x (target <= 1.5x); rounds: "
        + ", ".join(f"{r:.2f}" for r in ratios)
    )


if __name__ == "__main__":
    main()
