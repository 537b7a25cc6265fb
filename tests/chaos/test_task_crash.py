"""Crash recovery of durable tasks with real processes: a worker SIGKILLed while it holds tasks,
Redis restarted gracefully (AOF everysec) and SIGKILLed (AOF always) mid-run.

Workers are `tests/support/task_worker.py` processes whose executor logs every step execution
in Redis before checkpointing it. After each scenario every task must be COMPLETED exactly once,
with every step checkpointed once and no step executed again after its checkpoint.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agentmesh.localmesh.proc import ServiceProcess
from agentmesh.v1 import agent_service_pb2, task_pb2
from agents.requests import new_task
from memory import keys
from memory.connection import AnyRedis, create_redis
from memory.tasks.queue import TaskQueue
from memory.tasks.store import TaskConfig
from tests.support.task_worker import exec_log_key
from tests.support.waiting import until

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

DOMAIN = "chaos"
TENANT, OWNER = "acme", "chaos-monkey"
STEPS = 4


@dataclass
class Run:
    redis_url: str
    idle: float
    tasks: int
    redis: AnyRedis = field(init=False)
    queue: TaskQueue = field(init=False)
    ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.redis = create_redis(self.redis_url)
        config = TaskConfig(shards=2, claim_idle_timeout_s=self.idle, read_block_s=0.2, max_attempts=10)
        self.queue = TaskQueue(self.redis, domain=DOMAIN, config=config)

    async def submit(self) -> None:
        for n in range(self.tasks):
            request = agent_service_pb2.SubmitTaskRequest(
                instruction=f"chaos task {n}", request_id=f"chaos-{n}"
            )
            self.ids.append((await self.queue.submit(new_task(request), tenant=TENANT, owner=OWNER)).task_id)

    async def executions(self, task_id: str) -> list[tuple[int, int, int]]:
        """(step, attempt, pid) of every step execution, in the order they happened."""
        raw = await self.redis.hgetall(exec_log_key(task_id))
        ordered = sorted(raw.items(), key=lambda item: int(item[1]))
        parsed = []
        for field_, _ in ordered:
            index, attempt, pid, _nonce = field_.decode().split(":")
            parsed.append((int(index), int(attempt), int(pid)))
        return parsed

    async def completed(self) -> int:
        done = 0
        for task_id in self.ids:
            snapshot = await self.queue.store.snapshot(task_id)
            done += snapshot is not None and snapshot.task.state == task_pb2.TASK_STATE_COMPLETED
        return done

    async def close(self) -> None:
        await self.redis.aclose()


def _workers(start: Callable[..., ServiceProcess], url: str, count: int, idle: float) -> list[ServiceProcess]:
    argv = [sys.executable, "-m", "tests.support.task_worker", url, DOMAIN, "--steps", str(STEPS)]
    argv += ["--step-delay", "0.1", "--concurrency", "4", "--idle", str(idle)]
    return [start(f"task-worker-{n}", argv, None) for n in range(count)]


async def _await_completion(run: Run, workers: list[ServiceProcess], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while await _retrying(run.completed) < len(run.ids):
        for worker in workers:
            assert worker.running() or worker.returncode == -9, f"{worker.name} died:\n{worker.log_tail()}"
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {w.name}\n{w.log_tail(15)}" for w in workers)
            raise AssertionError(f"only {await run.completed()}/{len(run.ids)} tasks completed\n{logs}")
        await asyncio.sleep(0.1)


async def _retrying(call: Callable[[], object]) -> int:
    """Poll through a Redis restart."""
    for _ in range(100):
        try:
            return await call()  # type: ignore[misc, no-any-return]
        except Exception:
            await asyncio.sleep(0.1)
    return await call()  # type: ignore[misc, no-any-return]


async def _check_exactly_once(run: Run, lost_pids: set[int]) -> dict[str, int]:
    """Every task COMPLETED once; every step checkpointed once and never executed after it."""
    recovered = reexecuted = 0
    for task_id in run.ids:
        task = await run.queue.store.get(task_id, tenant=TENANT, owner=OWNER)
        assert task.state == task_pb2.TASK_STATE_COMPLETED, task
        assert [s.index for s in task.steps] == list(range(STEPS)), task_id
        events = await run.queue.events.read(task_id, tenant=TENANT, owner=OWNER, limit=1000)
        finals = [e for e in events if e.status_update.state == task_pb2.TASK_STATE_COMPLETED]
        assert len(finals) == 1, f"task {task_id} completed {len(finals)} times"
        executions = await run.executions(task_id)
        for step in task.steps:
            checkpointed_by = int(step.summary.removeprefix("attempt "))
            runs = [(attempt, pid) for index, attempt, pid in executions if index == step.index]
            # The last execution is the one that checkpointed: nothing ran the step after it.
            assert runs and runs[-1][0] == checkpointed_by, (task_id, step.index, runs)
            # A step ran more than once only because the attempt running it was lost mid-step.
            for attempt, pid in runs[:-1]:
                assert attempt < checkpointed_by, (task_id, step.index, runs)
                assert not lost_pids or pid in lost_pids, (task_id, step.index, runs, lost_pids)
            reexecuted += len(runs) - 1
        recovered += task.attempt > 1
    stats = await run.queue.stats()
    assert stats.dead_letters == 0
    return {"recovered": recovered, "reexecuted_steps": reexecuted}


async def _wait_for_victim(run: Run, pid: int, timeout: float = 60.0) -> None:
    """Until the victim holds at least one task mid-run (a step executed, the task not finished)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task_id in run.ids:
            if any(p == pid for _, _, p in await run.executions(task_id)):
                snapshot = await run.queue.store.snapshot(task_id)
                if snapshot is not None and snapshot.task.state == task_pb2.TASK_STATE_WORKING:
                    return
        await asyncio.sleep(0.02)
    raise AssertionError("the victim never picked up a task")


# -- scenarios --------------------------------------------------------------------------------


async def scenario_worker_killed(redis_url: str, service_process: Callable[..., ServiceProcess]) -> None:
    run = Run(redis_url, idle=1.5, tasks=24)
    try:
        await run.submit()
        workers = _workers(service_process, redis_url, 3, run.idle)
        victim = workers[0]
        assert victim.pid is not None
        await _wait_for_victim(run, victim.pid)
        victim.kill()
        await _await_completion(run, workers)
        report = await _check_exactly_once(run, {victim.pid})
        assert report["recovered"] >= 1, report  # the kill did hit tasks in flight
        stats = await run.queue.stats()
        assert stats.depth == 0 and stats.pending == 0, stats
    finally:
        await run.close()


async def scenario_redis_restart(
    tmp_redis: Callable[..., EmbeddedRedis],
    service_process: Callable[..., ServiceProcess],
    *,
    hard: bool,
) -> None:
    server = tmp_redis(appendonly=True, appendfsync="always" if hard else "everysec")
    run = Run(server.url, idle=3.0, tasks=16)
    try:
        await run.submit()
        workers = _workers(service_process, server.url, 2, run.idle)

        async def mid_run() -> bool:  # some tasks done, others in flight
            return await run.completed() >= 2

        await until(mid_run, what="the first 2 of 16 tasks completed before the restart", timeout=60)
        server.restart(hard=hard)
        await _await_completion(run, workers)
        await _check_exactly_once(run, set())
        # Every submitted task is still listed (the owner index survived) and complete on disk.
        page = await run.queue.store.list_tasks(tenant=TENANT, owner=OWNER, page_size=100)
        assert sorted(t.task_id for t in page.tasks) == sorted(run.ids) and len(set(run.ids)) == run.tasks
        for task_id in run.ids:  # nothing of a task went missing
            shard = run.queue.shard_of(task_id)
            assert await run.redis.exists(*keys.task_keys(DOMAIN, shard, task_id)) == 2
    finally:
        await run.close()


async def test_a_killed_worker_loses_no_task_and_reruns_no_checkpointed_step(
    redis_url: str, service_process: Callable[..., ServiceProcess]
) -> None:
    await scenario_worker_killed(redis_url, service_process)


async def test_redis_graceful_restart_loses_no_task(
    tmp_redis: Callable[..., EmbeddedRedis], service_process: Callable[..., ServiceProcess]
) -> None:
    await scenario_redis_restart(tmp_redis, service_process, hard=False)


async def test_redis_sigkill_with_aof_always_loses_no_task(
    tmp_redis: Callable[..., EmbeddedRedis], service_process: Callable[..., ServiceProcess]
) -> None:
    await scenario_redis_restart(tmp_redis, service_process, hard=True)


# -- the same, 20 times in a row (make chaos) ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(20))
async def test_worker_kill_loop(
    round_: int, redis_url: str, service_process: Callable[..., ServiceProcess]
) -> None:
    await scenario_worker_killed(redis_url, service_process)


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(20))
async def test_redis_restart_loop(
    round_: int, tmp_redis: Callable[..., EmbeddedRedis], service_process: Callable[..., ServiceProcess]
) -> None:
    await scenario_redis_restart(tmp_redis, service_process, hard=False)


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(20))
async def test_redis_sigkill_loop(
    round_: int, tmp_redis: Callable[..., EmbeddedRedis], service_process: Callable[..., ServiceProcess]
) -> None:
    await scenario_redis_restart(tmp_redis, service_process, hard=True)
