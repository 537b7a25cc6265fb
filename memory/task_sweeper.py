"""TaskSweeper: finishes what a crashed process left half-done (the outbox), expires pending actions.

Every flow that must end with a queue entry first puts a ticket in the shard's
outbox (memory/task_queue.py). A ticket older than the claim idle timeout means
its writer stopped (crashed) somewhere, or is an inline Run still going. For each one:

- the task does not exist: the creator died before writing it -> drop the ticket
  (a retry of the request writes a new one);
- the task names another ticket, is finished or paused -> drop it;
- an attempt holds a live lease (an inline Run) -> keep it, look again later;
- otherwise -> enqueue it (the same atomic ticket -> entry script the creator
  uses, so a slow creator and the sweeper never both enqueue).

It also fails paused tasks whose pending action expired (STOP_REASON_EXPIRED).
Every worker runs it periodically (TaskWorker); running it on several replicas
at once is safe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agentmesh import metrics
from agentmesh.errors import DataLoss
from memory import keys, task_states
from memory.connection import redis_errors
from memory.task_queue import TaskQueue
from memory.tasks import now_ms

log = logging.getLogger(__name__)

_BATCH = 100


@dataclass(slots=True)
class SweepReport:
    enqueued: int = 0
    dropped: int = 0
    kept: int = 0
    expired: int = 0


class TaskSweeper:
    def __init__(self, queue: TaskQueue, *, grace_s: float | None = None) -> None:
        self.queue = queue
        self.store = queue.store
        self.grace_ms = int((queue.config.claim_idle_timeout_s if grace_s is None else grace_s) * 1000)

    async def sweep(self) -> SweepReport:
        report = SweepReport()
        for shard in self.queue.shards():
            await self._sweep_outbox(shard, report)
        await self._expire_pending(report)
        return report

    async def _sweep_outbox(self, shard: int, report: SweepReport) -> None:
        outbox = keys.outbox(self.queue.domain, shard)
        now = now_ms()
        with redis_errors("reading the task outbox"):
            tickets = await self.queue.redis.zrangebyscore(
                outbox, "-inf", now - self.grace_ms, start=0, num=_BATCH
            )
        for raw in tickets:
            ticket = raw.decode() if isinstance(raw, bytes) else str(raw)
            task_id = ticket.rpartition("/")[0]
            try:
                snapshot = await self.store.snapshot(task_id) if task_id else None
            except DataLoss:  # one unreadable task must not stop the sweep of the others
                log.error("outbox ticket names an unreadable task; dropped", extra={"ticket": ticket})
                snapshot = None
            if (
                snapshot is None
                or snapshot.ticket != ticket
                or task_states.is_terminal(snapshot.task.state)
                or snapshot.task.state == task_states.INPUT_REQUIRED
            ):
                with redis_errors("cleaning the task outbox"):
                    await self.queue.redis.zrem(outbox, ticket)
                report.dropped += 1
            elif snapshot.lease_alive:
                with redis_errors("cleaning the task outbox"):
                    await self.queue.redis.zadd(outbox, {ticket: now}, xx=True)
                report.kept += 1
            elif await self.queue.enqueue_ticket(task_id, shard, ticket, snapshot.carrier) is not None:
                report.enqueued += 1
                metrics.TASK_OUTBOX_REPAIRS.labels(domain=self.queue.domain).inc()
                log.info("queued a task its creator left behind", extra={"task_id": task_id})

    async def _expire_pending(self, report: SweepReport) -> None:
        index = keys.pending_expiry(self.queue.domain)
        now = now_ms()
        with redis_errors("reading pending expiries"):
            due = await self.queue.redis.zrangebyscore(index, "-inf", now, start=0, num=_BATCH)
        for raw in due:
            task_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                if await self.store.expire_pending(task_id, now) is not None:
                    report.expired += 1
                    continue
                snapshot = await self.store.snapshot(task_id)
            except DataLoss:
                log.error("paused task unreadable; dropped from the expiry index", extra={"task_id": task_id})
                snapshot = None
            if snapshot is None or snapshot.task.state != task_states.INPUT_REQUIRED:
                with redis_errors("cleaning pending expiries"):
                    await self.queue.redis.zrem(index, task_id)
