"""A task worker process for the crash tests, with a deterministic step executor.

    python -m tests.support.task_worker REDIS_URL DOMAIN --steps 4 --step-delay 0.1 --idle 1.5

Each step, from the task's last checkpoint on, first records its execution in
Redis (hash `test:exec:<task id>`, field "<step>:<attempt>:<pid>:<nonce>" ->
nanoseconds; HSET is idempotent, so a command re-sent by the client after a lost
reply is not mistaken for a second execution), works for `--step-delay`
seconds, then checkpoints the step (summary "attempt <n>"). So a test can prove
that no step runs again after its checkpoint, and that every task completes
exactly once. SIGTERM drains gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time
import uuid

from agentmesh.v1 import task_pb2
from memory.connection import create_redis
from memory.tasks.execution import Checkpointer, Completed, TaskOutcome
from memory.tasks.queue import TaskQueue
from memory.tasks.store import TaskConfig
from memory.tasks.worker import TaskWorker


def exec_log_key(task_id: str) -> str:
    return f"test:exec:{task_id}"


async def main(args: argparse.Namespace) -> None:
    redis = create_redis(args.redis_url)
    config = TaskConfig(
        shards=args.shards, claim_idle_timeout_s=args.idle, read_block_s=0.2, max_attempts=args.max_attempts
    )
    queue = TaskQueue(redis, domain=args.domain, config=config)
    pid = os.getpid()

    async def execute(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        for index in range(checkpoint.next_index, args.steps):
            execution = f"{index}:{checkpoint.attempt}:{pid}:{uuid.uuid4().hex[:8]}"
            await redis.hset(exec_log_key(task.task_id), execution, time.time_ns())
            await asyncio.sleep(args.step_delay)
            step = task_pb2.Step(index=index, summary=f"attempt {checkpoint.attempt}")
            if await checkpoint.save(step):
                return Completed("canceled?")
        return Completed(f"done by {pid}")

    worker = TaskWorker(queue, execute, concurrency=args.concurrency, consumer=f"test-worker-{pid}")
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(worker.drain(5)))
    print(f"worker {pid} ready", flush=True)
    await worker.run()
    await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("redis_url")
    parser.add_argument("domain")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--step-delay", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--idle", type=float, default=1.5)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--max-attempts", type=int, default=10)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(parser.parse_args()))
