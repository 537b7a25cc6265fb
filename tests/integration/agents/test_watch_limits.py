"""WatchTask streams are bounded per caller and per replica (RESOURCE_EXHAUSTED + RetryInfo), and while
the bound holds them, unary calls keep their Redis connections: no "Redis unavailable"."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import grpc
import pytest

from agentmesh.kit.errors import from_rpc_error
from agentmesh.v1 import agent_service_pb2 as pb
from agents.model.script import Script
from agents.scripted_model import ScriptedModelServer
from tests.integration.agents.conftest import FIXTURE_DOMAINS, AgentFactory
from tests.support.waiting import until

pytestmark = pytest.mark.integration

# A model that answers only after the test is over: submitted tasks stay open, so do their watches.
STALL = {"name": "stall", "rules": [{"then": {"answer": "late", "delay": 600}}]}


def _as(user: str) -> list[tuple[str, str]]:
    return [("x-agentmesh-user", user)]


async def _watch_outcome(stub: Any, task_id: str, user: str) -> str:
    """OPEN while the stream stays open (canceled at the end), else the code and reason it ended with."""
    call = stub.WatchTask(pb.WatchTaskRequest(task_id=task_id), metadata=_as(user))
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.CANCELLED:
            return "OPEN"
        error = from_rpc_error(exc)
        hint = (
            "" if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or error.retry_after else ":NO_RETRY_INFO"
        )
        return f"{exc.code().name}:{error.reason}{hint}"
    return "ENDED"


async def _storm(
    agent: AgentFactory, *, users: int, per_user: int, settle: bool, **settings: Any
) -> tuple[Counter[str], int]:
    async with (
        ScriptedModelServer(Script.model_validate(STALL)) as stall,
        agent(FIXTURE_DOMAINS / "trainee.yaml", model_url=stall.base_url, **settings) as (process, stub),
    ):
        tasks = {}
        for n in range(users):
            user = f"u{n}"
            reply = await stub.SubmitTask(
                pb.SubmitTaskRequest(instruction="wait", request_id=f"w-{n}"), metadata=_as(user)
            )
            tasks[user] = reply.task_id
        watchers: list[asyncio.Future[str]] = []
        for user in tasks:  # one user after the other when `settle`: which bound refuses is then known
            watchers += [
                asyncio.ensure_future(_watch_outcome(stub, tasks[user], user)) for _ in range(per_user)
            ]
            if settle or user == list(tasks)[-1]:
                await until(
                    lambda started=list(watchers): (
                        process.servicer.streams.open + sum(w.done() for w in started) == len(started)
                    ),
                    what=f"each of {len(watchers)} watches held or refused",
                    timeout=60,
                )
        # Unary calls still get Redis connections while the streams hold theirs.
        answered = 0
        for user, task_id in tasks.items():
            await stub.GetTask(pb.GetTaskRequest(task_id=task_id), metadata=_as(user), timeout=10)
            answered += 1
        held = process.servicer.streams.open
        for watcher in watchers:
            watcher.cancel()
        outcomes: Counter[str] = Counter()
        for watcher in watchers:
            try:
                outcomes[await watcher] += 1
            except asyncio.CancelledError:
                outcomes["OPEN"] += 1
        assert held == outcomes["OPEN"]
        return outcomes, answered


async def test_watch_streams_are_bounded_per_caller_and_per_replica(agent: AgentFactory) -> None:
    outcomes, answered = await _storm(
        agent,
        users=3,
        per_user=4,
        settle=True,
        max_streams=8,
        max_streams_per_caller=3,
        redis_max_connections=32,
    )
    # u0 and u1: 3 held, the 4th refused per caller; u2: 2 held, then the replica is full.
    assert outcomes == Counter(
        {"OPEN": 8, "RESOURCE_EXHAUSTED:RATE_LIMITED": 2, "RESOURCE_EXHAUSTED:OVERLOADED": 2}
    )
    assert answered == 3


@pytest.mark.chaos
async def test_500_concurrent_watch_streams_never_exhaust_the_redis_pool(agent: AgentFactory) -> None:
    outcomes, answered = await _storm(
        agent, users=20, per_user=25, settle=False
    )  # the shipped defaults: 256 / 32 / 512
    assert outcomes["OPEN"] == 256
    assert set(outcomes) <= {"OPEN", "RESOURCE_EXHAUSTED:OVERLOADED"}, outcomes  # never UNAVAILABLE
    assert answered == 20
