"""Settling a task the task layer is about to fail: the agent runtime's hook goes first.

The task layer fails a task itself in two places: it dead-letters a task that failed too many
attempts (memory/tasks/dead_letters.py) and it expires a pending action nobody answered
(memory/tasks/sweeper.py). Before either, the agent runtime's `settle_failed` hook may record
steps — its compensations of the task's completed side effects (agents/compensation.py) — each
checkpointed on its own, guarded by the record's revision.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from agentmesh.kit.errors import Aborted, FailedPrecondition, NotFound
from agentmesh.v1 import task_pb2
from memory.tasks.events import step_event
from memory.tasks.records import Field, Patch, TaskSnapshot, now_ms
from memory.tasks.store import CAS_RETRIES, TaskStore

log = logging.getLogger(__name__)

# `settle_failed(task with its steps, stop reason, error, status message, record)`: what the agent
# runtime does before the task layer itself fails a task — dead-lettering it, or expiring its
# pending action (its compensations); `record(step)` checkpoints one step of it.
StepRecorder = Callable[[task_pb2.Step], Awaitable[None]]
SettleFailed = Callable[[task_pb2.Task, int, task_pb2.TaskError, str, StepRecorder], Awaitable[object]]


class Settlement:
    """Runs the agent runtime's `settle_failed` hook (None: nothing to settle) on a failing task."""

    def __init__(self, store: TaskStore, hook: SettleFailed | None) -> None:
        self.store = store
        self.hook = hook

    async def settle(
        self, snapshot: TaskSnapshot, stop_reason: int, error: task_pb2.TaskError, message: str
    ) -> TaskSnapshot | None:
        """Run `settle_failed` on a task the task layer is about to fail; the snapshot to fail it
        from after that (None: the task changed meanwhile, e.g. canceled or resumed)."""
        task_id = snapshot.task.task_id
        full = await self.store.snapshot(task_id, steps=True)
        if full is None or full.rev != snapshot.rev:
            return None

        async def record(step: task_pb2.Step) -> None:
            for _ in range(CAS_RETRIES):
                current = await self.store.snapshot(task_id)
                if current is None:
                    raise NotFound(f"task {task_id} is gone")
                result = await self.store.commit(
                    task_id,
                    Patch(
                        guard="rev",
                        guard_value=str(current.rev),
                        step=step,
                        events=[step_event(step, finished=True)],
                        fields={Field.UPDATED: now_ms()},
                    ),
                )
                if result.ok or result.status == "step_conflict":  # recorded (here or by a rival)
                    return
                if result.status != "stale":
                    raise FailedPrecondition(f"task {task_id}: recording step {step.index}: {result.status}")
            raise Aborted(f"task {task_id} kept changing while recording step {step.index}")

        assert self.hook is not None
        try:
            await self.hook(full.task, stop_reason, error, message, record)
        except Exception:  # fail it all the same: an operator sees the effects (`show`)
            log.exception("settling a failing task failed", extra={"task_id": task_id})
        return await self.store.snapshot(task_id)
