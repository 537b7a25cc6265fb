"""TaskWorker: the loop an agent replica runs to execute queued tasks.

    worker = TaskWorker(queue, execute, concurrency=settings.worker_concurrency)
    host.on_drain(lambda: worker.drain(settings.drain_grace_s))
    runner = asyncio.create_task(worker.run())      # returns once drained

- One reader per shard; a reader takes one of the `concurrency` slots, then
  claims the shard's next task (one script: read the entry and begin the
  attempt) and waits on a blocking XREADGROUP only when the shard was empty.
  So a replica never holds more entries than it runs, and other replicas get
  the rest.
- A reclaimer takes over entries of lost workers (XAUTOCLAIM after the claim
  idle timeout); the start script resumes them from their last checkpoint.
  **Recovery goes first**: the reclaimer looks for idle entries (XPENDING IDLE, a
  read) every quarter of the idle timeout, and when it finds one it waits for a
  slot ahead of every reader (`Slots`, urgent waiters served first): the next slot
  that frees runs the crashed task, not new work. So a crash costs about the idle
  timeout plus the time until one running task (or one blocking read) ends.
- Housekeeping every idle timeout: the outbox sweeper and the queue metrics.
- `drain(grace)`: stop reading, let running attempts finish for `grace`
  seconds, then hand the rest back (lease released, entry re-queued) so another
  replica resumes them at once — nothing is lost and no failure is counted.
- Redis outages do not stop the loop: it backs off and carries on; running
  attempts retry their writes while their lease lasts. Starting a delivered entry
  rides out an outage for at most the claim idle timeout (after it the entry is
  anyone's to reclaim), then gives the slot up with an error log naming the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from opentelemetry import trace

from agentmesh.kit import metrics
from agentmesh.kit.errors import Unavailable
from agentmesh.kit.retry import Reconnect
from memory import keys
from memory.tasks.entries import QueueEntry
from memory.tasks.execution import Attempt, Executor, LeaseLost, run_attempt
from memory.tasks.queue import TaskQueue
from memory.tasks.sweeper import TaskSweeper

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("agentmesh.tasks")


def consumer_name() -> str:
    """Unique per process start: `<host>-<pid>-<random>`."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class TaskWorker:
    def __init__(
        self,
        queue: TaskQueue,
        execute: Executor,
        *,
        concurrency: int = 4,
        consumer: str | None = None,
        housekeeping: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.queue = queue
        self.execute = execute
        self.concurrency = concurrency
        self.consumer = consumer or consumer_name()
        self.housekeeping = housekeeping
        self.sweeper = TaskSweeper(queue)
        self._slots = Slots(concurrency)
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._grace_s = 10.0
        self._started = False
        # Readers block while holding a slot; with fewer slots than shards they take turns,
        # so they block for less to keep every shard's latency bounded.
        share = min(1.0, concurrency / queue.config.shards)
        self._block_ms = max(50, int(min(queue.config.read_block_s, 2.0) * 1000 * share))

    @property
    def busy(self) -> int:
        return len(self._running)

    @property
    def recovering(self) -> int:
        """Abandoned entries waiting for a slot (they get the next one before any new work)."""
        return self._slots.urgent_waiting

    async def run(self) -> None:
        """Work until `drain()` is called and the drain has finished."""
        self._started = True
        await self._until_ready()
        readers = [
            asyncio.create_task(self._reader(shard), name=f"reader {shard}") for shard in self.queue.shards()
        ]
        loops = [asyncio.create_task(self._reclaimer(), name="reclaimer")]
        if self.housekeeping:
            loops.append(asyncio.create_task(self._housekeeper(), name="housekeeper"))
        try:
            await self._stopping.wait()
            # Readers stop after their current (short) blocking read; cancelling one mid-read
            # could leave a delivered entry unseen until the idle timeout.
            await asyncio.wait(readers, timeout=2 * self._block_ms / 1000 + 1)
            await self._finish_in_flight()
        finally:
            for loop in [*readers, *loops]:
                loop.cancel()
            await asyncio.gather(*readers, *loops, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._forget_consumer()
            self._stopped.set()

    async def drain(self, grace_s: float = 10.0) -> None:
        """Stop taking tasks; give running ones `grace_s` to finish, then hand them back."""
        self._grace_s = grace_s
        self._stopping.set()
        if self._started:
            await self._stopped.wait()

    # -- loops ---------------------------------------------------------------------------------

    async def _until_ready(self) -> None:
        backoff = Reconnect()
        while not self._stopping.is_set():
            try:
                await self.queue.ensure_groups()
                return
            except Exception:
                log.warning("task queue not reachable yet", exc_info=True)
                await backoff.wait(self._stopping)

    async def _reader(self, shard: int) -> None:
        backoff = Reconnect()
        while not self._stopping.is_set():
            await self._slots.acquire()
            handed = False
            try:
                if self._stopping.is_set():
                    break
                attempt = await self.queue.claim(self.consumer, shard)
                if attempt is not None:
                    self._spawn(self._execute(attempt), attempt.task_id)
                    handed = True
                else:  # nothing to start now: wait for the next entry
                    entries = await self.queue.read(self.consumer, shard, count=1, block_ms=self._block_ms)
                    for entry in entries:
                        self._spawn(self._handle(entry), entry.task_id)
                        handed = True
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("reading the task queue failed", exc_info=True, extra={"shard": shard})
                await backoff.wait(self._stopping)
            finally:
                if not handed:
                    self._slots.release()

    async def _reclaimer(self) -> None:
        interval = max(0.1, self.queue.config.claim_idle_timeout_s / 4)
        while not self._stopping.is_set():
            await _sleep_or_stop(interval * random.uniform(0.8, 1.2), self._stopping)
            for shard in self.queue.shards():
                if self._stopping.is_set():
                    return
                try:
                    await self._reclaim_shard(shard)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("reclaiming idle entries failed", exc_info=True, extra={"shard": shard})

    async def _reclaim_shard(self, shard: int) -> None:
        """Take over the shard's abandoned entries one slot at a time, each slot ahead of the readers."""
        while not self._stopping.is_set() and await self.queue.reclaimable(shard, count=1):
            await self._slots.acquire(urgent=True)
            handed = False
            try:
                if self._stopping.is_set():
                    return
                for entry in await self.queue.reclaim(self.consumer, shard, count=1):
                    self._spawn(self._handle(entry), entry.task_id)
                    handed = True
            finally:
                if not handed:
                    self._slots.release()
            if not handed:  # another replica took it meanwhile, or it needed no run
                return

    async def _housekeeper(self) -> None:
        interval = max(0.5, self.queue.config.claim_idle_timeout_s)
        while not self._stopping.is_set():
            try:
                await self.sweeper.sweep()
                await self.queue.stats()
            except Exception:
                log.warning("task housekeeping failed", exc_info=True)
            metrics.TASK_WORKERS_BUSY.labels(domain=self.queue.domain).set(self.busy)
            await _sleep_or_stop(interval * random.uniform(0.8, 1.2), self._stopping)

    # -- one entry ---------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None], task_id: str) -> None:
        handler = asyncio.create_task(work, name=f"task {task_id}")
        self._running.add(handler)
        metrics.TASK_WORKERS_BUSY.labels(domain=self.queue.domain).set(self.busy)
        handler.add_done_callback(self._done)

    def _done(self, handler: asyncio.Task[None]) -> None:
        self._running.discard(handler)
        self._slots.release()
        metrics.TASK_WORKERS_BUSY.labels(domain=self.queue.domain).set(self.busy)
        if not handler.cancelled() and handler.exception() is not None:
            log.error("task handler crashed", exc_info=handler.exception())

    async def _handle(self, entry: QueueEntry) -> None:
        if self._stopping.is_set():  # read while the drain began: leave it for another replica
            with contextlib.suppress(Exception):
                await self.queue.requeue(entry)
            return
        attempt = await start_through_outage(
            lambda: self.queue.start(entry, self.consumer),
            self._stopping,
            deadline_s=self.queue.config.claim_idle_timeout_s,
            what=f"starting task {entry.task_id}",
        )
        if attempt is not None:
            await self._execute(attempt)

    async def _execute(self, attempt: Attempt) -> None:
        attributes: dict[str, str | int] = {
            "agentmesh.task_id": attempt.task_id,
            "agentmesh.domain": self.queue.domain,
            "agentmesh.attempt": attempt.number,
        }
        with _tracer.start_as_current_span(
            "task.attempt", context=attempt.trace_context, kind=trace.SpanKind.CONSUMER, attributes=attributes
        ):
            try:
                await run_attempt(attempt, self.execute)
            except LeaseLost:
                log.warning("task taken over by another worker; stopped", extra={"task_id": attempt.task_id})
            except asyncio.CancelledError:
                if not attempt.finished:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(attempt.hand_back())
                raise

    async def _finish_in_flight(self) -> None:
        running = list(self._running)
        if running:
            _, pending = await asyncio.wait(running, timeout=self._grace_s)
            for handler in pending:
                handler.cancel()
            if pending:
                log.info("handing back unfinished tasks", extra={"count": len(pending)})
                await asyncio.gather(*pending, return_exceptions=True)

    async def _forget_consumer(self) -> None:
        """Remove this consumer from the groups where it holds nothing (keeps XINFO tidy)."""
        for shard in self.queue.shards():
            stream = keys.queue(self.queue.domain, shard)
            pending = await self.queue.redis.xpending_range(
                stream, self.queue.group, "-", "+", 1, consumername=self.consumer
            )
            if not pending:
                await self.queue.redis.xgroup_delconsumer(stream, self.queue.group, self.consumer)


async def _sleep_or_stop(seconds: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


class Slots:
    """The worker's `concurrency` slots. Waiters with `urgent=True` (recovery of abandoned tasks)
    are served before ordinary ones (readers taking new work), each kind in arrival order."""

    def __init__(self, count: int) -> None:
        self._free = count
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        return self._free

    @property
    def urgent_waiting(self) -> int:
        return sum(1 for waiter in self._urgent if not waiter.done())

    async def acquire(self, *, urgent: bool = False) -> None:
        self._prune()
        ahead = self._urgent if urgent else (self._urgent or self._normal)
        if self._free > 0 and not ahead:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._normal).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted as we were cancelled: pass the slot on
            raise

    def release(self) -> None:
        self._free += 1
        while self._free > 0:
            self._prune()
            waiters = self._urgent or self._normal
            if not waiters:
                return
            self._free -= 1
            waiters.popleft().set_result(None)

    def _prune(self) -> None:
        for waiters in (self._urgent, self._normal):
            while waiters and waiters[0].done():
                waiters.popleft()


async def start_through_outage(
    start: Callable[[], Awaitable[Attempt | None]], stop: asyncio.Event, *, deadline_s: float, what: str
) -> Attempt | None:
    """Start an attempt, riding out a Redis outage for at most `deadline_s` (the entry stays ours
    meanwhile; after the claim idle timeout any worker may reclaim it, so waiting longer only
    holds a slot). None when the deadline passed: the entry is left to the reclaimers."""
    backoff = Reconnect()
    give_up = time.monotonic() + deadline_s
    while True:
        try:
            return await start()
        except Unavailable as exc:
            if stop.is_set():
                raise
            if time.monotonic() >= give_up:
                log.error(
                    "Redis unreachable for %.1f s while %s; the entry is left for the reclaimers: %s",
                    deadline_s,
                    what,
                    exc.message,
                    extra={"deadline_s": deadline_s},
                )
                return None
            await backoff.wait(stop)
