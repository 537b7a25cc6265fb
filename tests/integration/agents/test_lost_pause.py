"""A NON_IDEMPOTENT call is never sent twice, even when the pause that parked its task is lost.

Real parts: valkey, the registry, the training dummy (its ledger counts effects), the scripted
model, the agent's executor and queue. Workers "die" as in test_compensation (`DiesAt`): the
first with the call made and its result never saved; the second (which parks the task OUTCOME
UNKNOWN) right after saving the parked step, before its pause (the pending action) is stored.
The third must park again, not send the call under a new step index (a new idempotency key).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis_asyncio

from agentmesh.kit.testing import local_settings
from agentmesh.v1 import agent_service_pb2 as pb
from agentmesh.v1 import task_pb2
from agents.caller import Caller
from agents.model.script import load_script
from agents.requests import check_submit_request, new_task
from agents.scripted_model import ScriptedModelServer
from agents.server import AgentProcess
from agents.spec import load_spec
from examples import dummy
from memory.tasks.execution import Attempt, InputRequired
from memory.tasks.queue import TaskQueue
from tests.integration.agents.conftest import DOMAINS, ROOT
from tests.integration.agents.test_compensation import Died, DiesAt
from tests.support.auth import DEFAULT_SCOPES, issuer, key_path
from tests.support.registry import Registry
from tests.support.task_helpers import OWNER, TENANT, claim, reclaim_one

pytestmark = pytest.mark.integration


@pytest.fixture
async def training(registry: Registry, redis_url: str) -> AsyncIterator[tuple[AgentProcess, Any]]:
    """The training agent's parts (no server, no worker: the test runs each attempt) and the dummy."""
    tool = dummy.build()
    client = redis_asyncio.Redis.from_url(redis_url)
    registry_address = f"127.0.0.1:{registry.host.grpc_port}"
    async with contextlib.AsyncExitStack() as stack:
        tool_settings = local_settings(
            registry=registry_address,
            service_name="dummy",
            signing_key=key_path(),
            service_token=issuer().service_token("dummy"),
        )
        await stack.enter_async_context(tool.serving(tool_settings, redis=client, register=True))
        assert tool.registration is not None
        await tool.registration.registered.wait()
        model = await stack.enter_async_context(
            ScriptedModelServer(load_script(ROOT / "agents" / "scripts" / "training.yaml"))
        )
        settings = local_settings(
            redis_url=redis_url,
            registry=registry_address,
            model_base_url=model.base_url,
            model_name="scripted",
            signing_key=key_path(),
            claim_idle_timeout_s=1.0,
            queue_shards=2,
            max_attempts=5,
        )
        process = AgentProcess(settings, load_spec(DOMAINS / "training.yaml"))
        try:
            yield process, tool
        finally:
            await process._close()
    await client.aclose()


async def _take_over(queue: TaskQueue, consumer: str) -> Attempt:
    """The dead worker's task, once its entry is idle and its lease expired: a checkpoint renews the
    lease after the entry was delivered, so the entry can be idle long enough while the lease still
    holds ("busy": the start leaves it, and it comes back after another idle timeout)."""
    for _ in range(10):
        attempt = await queue.start(await reclaim_one(queue, consumer), consumer)
        if attempt is not None:
            return attempt
    raise AssertionError("the dead worker's task was never taken over")


async def test_a_lost_pause_parks_the_task_again_without_repeating_the_call(
    training: tuple[AgentProcess, Any],
) -> None:
    process, tool = training
    queue = process.queue
    await queue.ensure_groups()
    request = pb.SubmitTaskRequest(instruction="Act once on lost-pause", request_id="lost-pause-1")
    budget = check_submit_request(process.spec, request)
    request.labels.update(Caller(tenant=TENANT, user=OWNER, scopes=frozenset(DEFAULT_SCOPES)).labels())
    task = await queue.submit(new_task(request), tenant=TENANT, owner=OWNER, limits=budget.to_proto())

    def effects() -> int:
        return int(tool.state.effects_by_action.get("lost-pause", 0))

    first = await claim(queue, "first")
    with pytest.raises(Died):  # the call was made; its result never saved
        await process.executor(
            first.task, DiesAt(first.checkpointer, "dummy_act_once", after_checkpoint=False)
        )  # type: ignore[arg-type]
    assert effects() == 1

    second = await _take_over(queue, "second")
    with pytest.raises(Died):  # parks OUTCOME_UNKNOWN: the parked step saved, the pause never stored
        await process.executor(
            second.task, DiesAt(second.checkpointer, "dummy_act_once", after_checkpoint=True)
        )  # type: ignore[arg-type]
    parked_step = second.task.steps[-1]
    assert parked_step.outcome == task_pb2.TOOL_OUTCOME_UNKNOWN

    third = await _take_over(queue, "third")
    outcome = await process.executor(third.task, third.checkpointer)
    assert effects() == 1, "the NON_IDEMPOTENT call was sent again"
    assert isinstance(outcome, InputRequired), outcome
    assert outcome.pending_action.kind == task_pb2.PENDING_ACTION_KIND_OUTCOME_UNKNOWN
    assert outcome.pending_action.action_id == f"act-{parked_step.index}"
    assert len(third.task.steps) == parked_step.index + 1  # nothing new recorded
    assert task.task_id == third.task_id
