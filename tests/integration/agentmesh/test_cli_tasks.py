"""`agentmesh tasks dead-letters list|redrive` against a real server."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from agentmesh.cli.main import app
from agentmesh.kit.net import free_port
from agentmesh.v1 import agent_service_pb2, task_pb2
from agents.requests import new_task
from memory.connection import create_redis
from memory.tasks.execution import Checkpointer, TaskOutcome, run_attempt
from memory.tasks.queue import TaskQueue
from memory.tasks.store import TaskConfig
from tests.support.task_helpers import OWNER, TENANT, claim, reclaim_one

pytestmark = pytest.mark.integration
runner = CliRunner()
CONFIG = TaskConfig(shards=2, claim_idle_timeout_s=1.0, read_block_s=0.2, max_attempts=1)


async def _dead_letter(url: str) -> str:
    """A task that fails once (max_attempts=1) and is dead-lettered at its next start."""
    redis = create_redis(url)
    queue = TaskQueue(redis, domain="refunds", config=CONFIG)
    await queue.ensure_groups()
    request = agent_service_pb2.SubmitTaskRequest(instruction="x", request_id="poison")
    task = await queue.submit(new_task(request), tenant=TENANT, owner=OWNER)

    async def explode(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        raise RuntimeError("bad input")

    await run_attempt(await claim(queue), explode)
    assert await queue.start(await reclaim_one(queue), "c2") is None
    await redis.aclose()
    return task.task_id


async def _state(url: str, task_id: str) -> int:
    redis = create_redis(url)
    queue = TaskQueue(redis, domain="refunds", config=CONFIG)
    state = (await queue.store.get(task_id, tenant=TENANT, owner=OWNER)).state
    await redis.aclose()
    return state


def _cli(*args: str, url: str) -> tuple[int, str]:
    result = runner.invoke(
        app,
        ["tasks", "dead-letters", *args],
        env={"REDIS_URL": url, "AGENTMESH_QUEUE_SHARDS": "2", "COLUMNS": "200"},
    )
    return result.exit_code, result.output


def test_list_and_redrive(redis_url: str) -> None:
    task_id = asyncio.run(_dead_letter(redis_url))
    code, out = _cli("list", "--domain", "refunds", url=redis_url)
    assert code == 0 and task_id in out and "bad input" in out
    code, out = _cli("list", "--domain", "refunds", "--json", url=redis_url)
    letters = json.loads(out)
    assert code == 0 and [(d["task_id"], d["failed_attempts"]) for d in letters] == [(task_id, 1)]
    code, out = _cli("redrive", letters[0]["entry_id"], "--domain", "refunds", "--json", url=redis_url)
    assert code == 0 and json.loads(out)[0]["outcome"] == "redriven"
    assert asyncio.run(_state(redis_url, task_id)) == task_pb2.TASK_STATE_SUBMITTED
    code, out = _cli("list", "--domain", "refunds", url=redis_url)
    assert code == 0 and "no dead letters" in out


def test_redrive_all_and_unknown_entries(redis_url: str) -> None:
    asyncio.run(_dead_letter(redis_url))
    code, out = _cli("redrive", "--all", "--domain", "refunds", url=redis_url)
    assert code == 0 and "redriven" in out
    code, out = _cli("redrive", "1-0", "--domain", "refunds", url=redis_url)
    assert code == 1 and "gone" in out


@pytest.mark.parametrize(
    "args",
    [
        ["redrive", "--domain", "refunds"],  # neither ids nor --all
        ["redrive", "1-0", "--all", "--domain", "refunds"],  # both
        ["list", "--domain", "Not_A_Slug"],
        ["list"],  # --domain is required
    ],
)
def test_usage_errors_exit_2(args: list[str], redis_url: str) -> None:
    code, _ = _cli(*args, url=redis_url)
    assert code == 2


def test_unreachable_redis_exits_3(monkeypatch: pytest.MonkeyPatch) -> None:
    from memory import connection

    monkeypatch.setattr(connection, "RETRIES", 1)
    code, out = _cli("list", "--domain", "refunds", url=f"redis://127.0.0.1:{free_port()}/0")
    assert code == 3 and "unreachable" in out
