"""TaskQueue: durable tasks of one domain on sharded Redis Streams, with crash recovery.

What the agent runtime calls (tenant/owner come from the caller's token):

    queue = TaskQueue(redis, domain="refunds", config=TaskConfig.from_settings(settings))
    task = await queue.submit(request, tenant=t, owner=o, limits=in_force)      # SubmitTask
    task = await queue.run(request, execute, tenant=t, owner=o, timeout_s=9.5)  # Run (inline)
    task = await queue.resume(request, tenant=t, owner=o)                       # ResumeTask
    queue.store.get / list_tasks / cancel / list_awaiting_approval              # memory/tasks/store.py
    queue.events.watch(task_id, tenant=t, owner=o, after_event_id=...)          # WatchTask
    worker = TaskWorker(queue, execute, concurrency=settings.worker_concurrency) # memory/tasks/worker.py

This module only assembles the parts of the task layer of one domain; each holds one job:

    admission     submit and run: creating a task, idempotent on its request id
    answers       resume and resume_as_approver: answering a paused task
    delivery      ensure_groups, claim, read, reclaim, start, requeue: entries to workers
    dead_letters  dead_letters and redrive; where poisoned and unreadable entries go
    settlement    the agent runtime's hook before the task layer fails a task
    stats         depth, pending, lag, dead letters, outbox

Layout: N shards per domain (`AGENTMESH_QUEUE_SHARDS`). The slot of a shard,
`{q:<domain>:<shard>}`, holds its stream (consumer group named after the
domain), its dead letters, its outbox of inline runs, the owner indexes of
its tasks, and the tasks themselves: a task lives in the shard written in its
id (memory/tasks/ids.py), chosen at creation.

Because a task and its stream share a slot, each step of a task's life is one
script (memory/tasks/scripts.py), i.e. one round trip:

- submit: the record, its first event, its owner-index entry and its queue
  entry, all at once (idempotent on the task id, derived from the request id);
- claim: read the shard's next entry and begin an attempt on its task
  (attempt number = fencing token, lease, WORKING event); a worker waits on a
  blocking read only when the shard was empty;
- checkpoint: the step, its event, the lease renewal;
- finish: the final record and event, the retention TTL and the
  acknowledgement of the entry — a fenced-out worker can neither write nor
  acknowledge anything.

A worker that dies leaves its entry pending; after the idle timeout another
worker XAUTOCLAIMs it, the start script sees the dead attempt, counts a
failure and resumes from the last checkpoint. After `AGENTMESH_MAX_ATTEMPTS`
failed attempts the task is FAILED (STOP_REASON_DEAD_LETTERED) and, in the
same script, its entry moves to the dead letters, where an operator can
`redrive` it (`agentmesh tasks dead-letters list|redrive`).

Run executes inline: its record is created with a lease and registered in the
shard's outbox; if its process dies, the sweeper (memory/tasks/sweeper.py)
queues it once the lease has expired.

Trace context: the W3C `traceparent` of the submitting call is stored with the
task and carried in each queue entry; attempts run in that trace.
"""

from __future__ import annotations

from memory.connection import AnyRedis
from memory.tasks import ids
from memory.tasks.admission import TaskAdmission
from memory.tasks.answers import TaskAnswers
from memory.tasks.dead_letters import DeadLetters
from memory.tasks.delivery import TaskDelivery
from memory.tasks.reader import TaskEvents
from memory.tasks.settlement import SettleFailed, Settlement
from memory.tasks.stats import QueueStats, queue_stats
from memory.tasks.store import TaskConfig, TaskStore, not_found


class TaskQueue:
    """Durable tasks of one domain; see the module docstring."""

    def __init__(
        self,
        redis: AnyRedis,
        *,
        domain: str,
        config: TaskConfig | None = None,
        settle_failed: SettleFailed | None = None,
    ) -> None:
        self.redis = redis
        self.domain = domain
        # The consumer group is named after the domain (the Helm chart's KEDA trigger reads its lag).
        self.group = domain
        self.config = config or TaskConfig()
        self.store = TaskStore(redis, domain=domain, config=self.config)
        self.events = TaskEvents(self.store, block_s=self.config.read_block_s)
        # Called before the task layer fails a task (the agent runtime's compensations): when it
        # dead-letters one, and when the sweeper expires a pending action.
        self.settlement = Settlement(self.store, settle_failed)
        self.admission = TaskAdmission(self.store)
        self.answers = TaskAnswers(self.store)
        self.letters = DeadLetters(self.store, self.settlement, group=self.group)
        self.delivery = TaskDelivery(self.store, self.letters, group=self.group)

        # What callers use, by the part that does it.
        self.submit = self.admission.submit
        self.run = self.admission.run
        self.resume = self.answers.resume
        self.resume_as_approver = self.answers.resume_as_approver
        self.ensure_groups = self.delivery.ensure_groups
        self.claim = self.delivery.claim
        self.read = self.delivery.read
        self.reclaim = self.delivery.reclaim
        self.reclaimable = self.delivery.reclaimable
        self.start = self.delivery.start
        self.requeue = self.delivery.requeue
        self.dead_letters = self.letters.newest
        self.redrive = self.letters.redrive

    def shard_of(self, task_id: str) -> int:
        """The shard a task lives in (written in its id); NOT_FOUND for an id no task can have."""
        shard = ids.shard_of(task_id)
        if shard is None:
            raise not_found(task_id)
        return shard

    def shards(self) -> range:
        return range(self.config.shards)

    async def stats(self) -> QueueStats:
        """Depth, pending, lag and dead letters over all shards; also exported as metrics."""
        return await queue_stats(self.redis, domain=self.domain, group=self.group, shards=self.config.shards)
