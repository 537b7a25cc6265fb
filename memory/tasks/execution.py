"""Running a task: the executor interface, checkpoints, and one attempt's hold on a task.

The agent runtime implements one coroutine:

    async def execute(task: Task, checkpoint: Checkpointer) -> TaskOutcome:
        for step in plan(task, done=checkpoint.steps):        # resume after the last checkpoint
            ...                                               # model call / tool call
            if await checkpoint.save(step, usage=usage):      # persisted; True = cancel requested
                return Canceled()
        return Completed(final_answer="...")

`task` carries the checkpointed steps (`task.steps`, also `checkpoint.steps`);
a step with a checkpoint must never run again, so the idempotency key of a
side effect is (task id, step index) and a resumed attempt starts at
`checkpoint.next_index`. `checkpoint.resumption` holds the answer to a pause
(ResumeTask) until the next checkpoint. The task's last step may instead be handed over with
`checkpoint.save_last(step)`: it is then written by the script that records the outcome (one
Redis round trip per task less); see `Checkpointer.save_last`.

An `Attempt` is the hold of one process on one task: its attempt number is the
fencing token every write is checked against (memory/tasks/store.py), and a
background heartbeat keeps its lease and its queue entry alive. If the attempt
was taken over (the worker stalled past the claim idle timeout and another
worker resumed the task), every write raises `LeaseLost`: stop, write nothing,
acknowledge nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from opentelemetry import propagate
from opentelemetry.context import Context
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay

from agentmesh.kit import metrics
from agentmesh.kit.errors import Unavailable
from agentmesh.kit.retry import Backoff
from agentmesh.v1 import task_pb2
from memory.tasks import states
from memory.tasks.entries import QueueEntry, entry_record
from memory.tasks.events import artifact_event, status_event, step_event
from memory.tasks.records import (
    RESUMPTION_FIELDS,
    CommitResult,
    Field,
    Patch,
    Resumption,
    TaskSnapshot,
    finish,
    new_id,
    now_ms,
    set_millis,
)
from memory.tasks.store import TaskConfig, TaskStore, record_finished

log = logging.getLogger(__name__)
# Checkpoint writes ride out a short Redis outage (within the caller's budget).
_WRITE_RETRY = Backoff(initial_s=0.05, max_s=1.0)


class LeaseLost(Exception):
    """This attempt no longer owns the task (taken over, finished or expired): stop without writing."""


# -- outcomes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Completed:
    """Finished with a final answer (TASK_STATE_COMPLETED)."""

    final_answer: str
    artifacts: Sequence[task_pb2.Artifact] = ()
    usage: task_pb2.Usage | None = None
    message: str = "completed"


@dataclass(frozen=True, slots=True)
class Failed:
    """Ended without an answer (TASK_STATE_FAILED): a budget, a tool or the model stopped it."""

    stop_reason: int
    error: task_pb2.TaskError
    message: str = ""
    usage: task_pb2.Usage | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """The agent refused the task (TASK_STATE_REJECTED): nothing was done."""

    stop_reason: int
    error: task_pb2.TaskError
    message: str = ""
    usage: task_pb2.Usage | None = None


@dataclass(frozen=True, slots=True)
class InputRequired:
    """Paused until ResumeTask answers `pending_action` (TASK_STATE_INPUT_REQUIRED)."""

    pending_action: task_pb2.PendingAction
    stop_reason: int = task_pb2.STOP_REASON_AWAITING_APPROVAL
    message: str = ""
    usage: task_pb2.Usage | None = None


@dataclass(frozen=True, slots=True)
class Canceled:
    """Stopped because a cancel was requested (TASK_STATE_CANCELED)."""

    message: str = ""


TaskOutcome = Completed | Failed | Rejected | InputRequired | Canceled


class Executor(Protocol):
    async def __call__(self, task: task_pb2.Task, checkpoint: Checkpointer, /) -> TaskOutcome: ...


# -- the checkpointer -------------------------------------------------------------------------


class Checkpointer:
    """What an executor uses to persist its progress; see the module docstring."""

    def __init__(self, attempt: Attempt) -> None:
        self._attempt = attempt

    @property
    def task(self) -> task_pb2.Task:
        return self._attempt.task

    @property
    def steps(self) -> Sequence[task_pb2.Step]:
        """The checkpointed steps, and the last step handed over with `save_last` if any."""
        return self._attempt.steps

    @property
    def next_index(self) -> int:
        return len(self.steps)

    @property
    def resumption(self) -> Resumption | None:
        return self._attempt.resumption

    @property
    def canceled(self) -> bool:
        return bool(self._attempt.cancel)

    @property
    def cancel_reason(self) -> str:
        return self._attempt.cancel

    @property
    def attempt(self) -> int:
        return self._attempt.number

    @property
    def trace_context(self) -> Context:
        return self._attempt.trace_context

    async def save(
        self,
        step: task_pb2.Step,
        *,
        usage: task_pb2.Usage | None = None,
        artifacts: Sequence[task_pb2.Artifact | task_pb2.ArtifactUpdate] = (),
    ) -> bool:
        """Checkpoint a finished step (with the task's usage so far and any new artifacts).

        Steps are saved in order (`step.index == next_index`). Returns True when a cancel
        was requested: return `Canceled()` then. Raises LeaseLost if the task was taken over.
        """
        return await self._attempt.save(step, usage=usage, artifacts=artifacts)

    def save_last(
        self,
        step: task_pb2.Step,
        *,
        usage: task_pb2.Usage | None = None,
        artifacts: Sequence[task_pb2.Artifact | task_pb2.ArtifactUpdate] = (),
    ) -> None:
        """Hand over the task's last step: it is checkpointed by the script that records the
        outcome the executor returns next (the step, its events and the outcome in one fenced
        script: one round trip instead of two), with the same checks as `save`.

        Nothing is written yet: until the outcome is recorded the step is not durable (a crash
        repeats it), so hand over only a step after which nothing with a side effect runs. If
        the executor writes anything else first (`save`), raises, or the attempt is handed
        back, the step is checkpointed on its own before that.
        """
        self._attempt.hold(step, usage=usage, artifacts=artifacts)

    async def started(self, step: task_pb2.Step) -> bool:
        """Announce a step that starts (an event for watchers; nothing is checkpointed)."""
        return await self._attempt.announce(step)


# -- one attempt ------------------------------------------------------------------------------


class AttemptQueue(Protocol):
    """What an attempt needs of the part that started it (memory/tasks/delivery.py's TaskDelivery,
    or memory/tasks/admission.py's TaskAdmission for an inline Run)."""

    domain: str
    config: TaskConfig
    store: TaskStore


@dataclass(frozen=True, slots=True)
class _LastStep:
    """A step handed over with `Checkpointer.save_last`, not written yet."""

    step: task_pb2.Step
    usage: task_pb2.Usage | None
    updates: tuple[task_pb2.ArtifactUpdate, ...]


class Attempt:
    """One process's hold on one task. Created by TaskDelivery.start (a queue entry) or
    TaskAdmission.run (inline).

    `task` is the task as this attempt has written it, steps included (changed in place as steps
    are saved); `_record` is the same without the steps — what a commit encodes — so saving a
    step never copies the steps before it.
    """

    def __init__(
        self,
        queue: AttemptQueue,
        snapshot: TaskSnapshot,
        *,
        start_id: str,
        entry: QueueEntry | None,
        consumer: str = "",
        inline: bool = False,
    ) -> None:
        self.queue = queue
        self.store = queue.store
        self.task = snapshot.task
        self._record = _without_steps(snapshot.task)
        self._last: _LastStep | None = None
        self.task_id = snapshot.task.task_id
        self.number = snapshot.task.attempt
        self.start_id = start_id
        self.entry = entry
        self.consumer = consumer
        self.inline = inline  # a Run executing in the receiving process, registered in the outbox
        self.keys = queue.store.task_keys(self.task_id)
        self.fails = snapshot.fails
        self.retention_ms = snapshot.retention_ms or queue.config.retention_ms
        self.cancel = snapshot.cancel
        self.resumption = snapshot.resumption
        self.carrier = dict(snapshot.carrier)
        self.trace_context = propagate.extract(self.carrier) if self.carrier else Context()
        self.checkpointer = Checkpointer(self)
        self.finished = False
        self._timer: asyncio.TimerHandle | None = None
        self._beat: asyncio.Task[None] | None = None

    @property
    def lease_value(self) -> str:
        return f"{self.number}:{self.start_id}"

    # -- writes, all fenced by the attempt number --------------------------------------------

    async def _commit(self, patch: Patch) -> CommitResult:
        patch.guard = "fence"
        patch.guard_value = str(self.number)
        patch.commit_id = patch.commit_id or new_id()
        result = await _with_retries(
            self.queue.config.claim_idle_timeout_s,
            lambda: self.store.commit(self.task_id, patch, task_keys=self.keys),
        )
        if result.status in {"fenced", "missing"}:
            self.finished = True
            raise LeaseLost(
                f"task {self.task_id}: attempt {self.number} no longer holds the task ({result.status})"
            )
        if result.status == "step_conflict":
            raise ValueError(
                f"task {self.task_id}: step {patch.step.index if patch.step else '?'} was "
                "already checkpointed with different content"
            )
        if not result.ok:
            raise RuntimeError(f"task {self.task_id}: unexpected commit answer {result.status}")
        self.cancel = result.cancel
        if result.last_event_id:
            self.task.last_event_id = result.last_event_id
        return result

    def _renew(self, patch: Patch) -> Patch:
        patch.lease = "set"
        patch.lease_value = self.lease_value
        patch.lease_ms = self.queue.config.lease_ms
        return patch

    @property
    def steps(self) -> Sequence[task_pb2.Step]:
        """The checkpointed steps, and the step handed over with `hold` if any."""
        if self._last is None:
            return self.task.steps
        return [*self.task.steps, self._last.step]

    async def save(
        self,
        step: task_pb2.Step,
        *,
        usage: task_pb2.Usage | None,
        artifacts: Sequence[task_pb2.Artifact | task_pb2.ArtifactUpdate],
    ) -> bool:
        if self._last is not None:
            await self._save_last_now()
        return await self._save(step, usage, tuple(_artifact_update(a) for a in artifacts))

    async def _save(
        self,
        step: task_pb2.Step,
        usage: task_pb2.Usage | None,
        updates: tuple[task_pb2.ArtifactUpdate, ...],
    ) -> bool:
        self._check_next(step)
        now = now_ms()
        events = [step_event(step, finished=True), *(artifact_event(u) for u in updates)]
        patch = Patch(guard="fence", step=step, events=events, fields={Field.UPDATED: now})
        record = None
        if usage is not None or updates:  # the record changes: encode it (without the steps)
            record = self._changed(now, usage, updates)
            patch.task = record
        if self.resumption is not None:
            patch.delete = RESUMPTION_FIELDS
        await self._commit(self._renew(patch))
        self.resumption = None
        if record is not None:
            self._record = record
        else:
            set_millis(self._record.update_time, now)
        task = self.task
        task.steps.append(step)
        set_millis(task.update_time, now)
        if usage is not None:
            task.usage.CopyFrom(usage)
        for update in updates:
            _merge_artifact(task, update)
        return bool(self.cancel)

    def _check_next(self, step: task_pb2.Step) -> None:
        expected = len(self.task.steps)
        if step.index != expected:
            raise ValueError(f"task {self.task_id}: step {step.index} saved, expected step {expected}")
        if self.finished:
            raise LeaseLost(f"task {self.task_id}: attempt {self.number} has already finished")

    def _changed(
        self, now: int, usage: task_pb2.Usage | None, updates: Sequence[task_pb2.ArtifactUpdate]
    ) -> task_pb2.Task:
        """A copy of the record (no steps: small) with a step's usage and artifacts applied."""
        record = task_pb2.Task()
        record.CopyFrom(self._record)
        set_millis(record.update_time, now)
        if usage is not None:
            record.usage.CopyFrom(usage)
        for update in updates:
            _merge_artifact(record, update)
        return record

    def hold(
        self,
        step: task_pb2.Step,
        *,
        usage: task_pb2.Usage | None,
        artifacts: Sequence[task_pb2.Artifact | task_pb2.ArtifactUpdate],
    ) -> None:
        """Keep the task's last step for the script that records the outcome (Checkpointer.save_last)."""
        if self._last is not None:
            raise ValueError(
                f"task {self.task_id}: step {self._last.step.index} was already handed over last"
            )
        self._check_next(step)
        self._last = _LastStep(step, usage, tuple(_artifact_update(a) for a in artifacts))

    async def _save_last_now(self) -> None:
        """Checkpoint the step handed over with `hold` on its own (something else is written first)."""
        last, self._last = self._last, None
        if last is not None:
            await self._save(last.step, last.usage, last.updates)

    async def _save_last_before(self, what: str) -> None:
        """`_save_last_now` before a failure or a hand-back, which must be written all the same: only
        a lost lease stops them."""
        try:
            await self._save_last_now()
        except LeaseLost:
            raise
        except Exception:
            log.warning(
                "could not checkpoint the last step before %s",
                what,
                exc_info=True,
                extra={"task_id": self.task_id},
            )

    def _with_last(
        self, record: task_pb2.Task, usage: task_pb2.Usage | None, patch: Patch
    ) -> tuple[task_pb2.Step | None, list[task_pb2.TaskEvent]]:
        """Put the step handed over with `hold` into the ending `patch` of `record`: its checkpoint,
        its events, its artifacts and (unless the outcome brings its own) its usage. Returns the
        step and its events (to go before the outcome's)."""
        last, self._last = self._last, None
        if last is None:
            return None, []
        if usage is None and last.usage is not None:
            record.usage.CopyFrom(last.usage)
        for update in last.updates:
            _merge_artifact(record, update)
        patch.step = last.step  # the ending patches clear the resumption fields anyway
        return last.step, [step_event(last.step, finished=True), *(artifact_event(u) for u in last.updates)]

    async def announce(self, step: task_pb2.Step) -> bool:
        await self._commit(self._renew(Patch(guard="fence", events=[step_event(step, finished=False)])))
        return bool(self.cancel)

    async def heartbeat(self) -> bool:
        """Renew the lease and the queue entry's idle time (one script); True if a cancel was
        requested."""
        patch = Patch(guard="fence")
        if self.entry is not None:
            patch.touch = (self.entry.entry_id, self.consumer)
        await self._commit(self._renew(patch))
        return bool(self.cancel)

    def start_heartbeats(self) -> None:
        """Renew the lease every third of the idle timeout until the attempt ends.

        A timer, not a task per attempt: most attempts end before the first beat is due.
        """
        if self._timer is None and not self.finished:
            interval = self.queue.config.claim_idle_timeout_s / 3
            self._timer = asyncio.get_running_loop().call_later(interval, self._beat_due)

    def _beat_due(self) -> None:
        self._timer = None
        if not self.finished:
            self._beat = asyncio.create_task(self._beat_once(), name=f"heartbeat {self.task_id}")

    async def _beat_once(self) -> None:
        try:
            await self.heartbeat()
        except LeaseLost:
            log.warning("lease lost during a heartbeat", extra={"task_id": self.task_id})
            return
        except Exception:  # one failed beat is not fatal: the next beat or save renews the lease
            log.warning("heartbeat failed", exc_info=True, extra={"task_id": self.task_id})
        self.start_heartbeats()

    async def stop_heartbeats(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        beat, self._beat = self._beat, None
        if beat is not None and beat is not asyncio.current_task():
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await beat

    # -- endings ---------------------------------------------------------------------------

    async def finish(self, outcome: TaskOutcome) -> task_pb2.Task:
        """Record the outcome (with the last step handed over by `save_last`, if any) and
        acknowledge the queue entry, in one fenced script. Returns the task."""
        if isinstance(outcome, InputRequired) and not self.cancel:
            return await self._pause(outcome)
        now = now_ms()
        if isinstance(outcome, Completed):
            done = self._ending(states.COMPLETED, task_pb2.STOP_REASON_FINAL_ANSWER, outcome.message, now)
            done.final_answer = outcome.final_answer
            usage = outcome.usage
        elif isinstance(outcome, Failed | Rejected):
            message = outcome.message or outcome.error.message or "failed"
            state = states.FAILED if isinstance(outcome, Failed) else states.REJECTED
            done = self._ending(state, outcome.stop_reason, message, now)
            done.error.CopyFrom(outcome.error)
            usage = outcome.usage
        else:  # Canceled, or a pause requested after a cancel
            message = outcome.message or self.cancel or "canceled"
            done = self._ending(states.CANCELED, task_pb2.STOP_REASON_CANCELED, message, now)
            usage = outcome.usage if isinstance(outcome, InputRequired) else None
        patch = Patch(
            guard="fence",
            task=done,
            delete=(Field.RUNNING, Field.CANCEL, *RESUMPTION_FIELDS),
            lease="release",
            ttl_ms=self.retention_ms,
        )
        last, events = self._with_last(done, usage, patch)
        if isinstance(outcome, Completed) and outcome.artifacts:
            for artifact in outcome.artifacts:
                _merge_artifact(done, _artifact_update(artifact))
            events += [artifact_event(_artifact_update(a)) for a in outcome.artifacts]
        if usage is not None:
            done.usage.CopyFrom(usage)
        patch.events = [*events, status_event(done)]
        await self._commit(self._release(patch))
        self.finished = True
        await self.stop_heartbeats()
        record_finished(self.queue.domain, done.state)
        self._ended(done, last)
        return done

    def _ending(self, state: int, stop_reason: int, message: str, now: int) -> task_pb2.Task:
        return finish(
            self._record,
            state,
            stop_reason=stop_reason,
            message=message,
            now=now,
            retention_ms=self.retention_ms,
        )

    def _ended(self, record: task_pb2.Task, last: task_pb2.Step | None) -> None:
        """The attempt wrote its last change, `record`: it becomes the task (with its steps). Nothing
        is written after it, so `_record` is left as it was."""
        record.steps.extend(self.task.steps)
        if last is not None:
            record.steps.append(last)
        record.last_event_id = self.task.last_event_id
        self.task = record

    async def _pause(self, outcome: InputRequired) -> task_pb2.Task:
        states.check_transition(self.task_id, self._record.state, states.INPUT_REQUIRED)
        paused = task_pb2.Task()
        paused.CopyFrom(self._record)
        paused.state = states.INPUT_REQUIRED
        paused.stop_reason = outcome.stop_reason  # type: ignore[assignment]
        paused.status_message = outcome.message or outcome.pending_action.message or "waiting for input"
        paused.pending_action.CopyFrom(outcome.pending_action)
        set_millis(paused.update_time, now_ms())
        # A paused Run task lives on the durable path now: give it the durable retention.
        retention = max(self.retention_ms, self.queue.config.retention_ms)
        patch = Patch(
            guard="fence",
            task=paused,
            fields={Field.RETENTION: retention},
            delete=(Field.RUNNING, Field.CANCEL, *RESUMPTION_FIELDS),
            lease="release",
        )
        last, events = self._with_last(paused, outcome.usage, patch)
        if outcome.usage is not None:
            paused.usage.CopyFrom(outcome.usage)
        patch.events = [*events, status_event(paused)]
        await self.store.remember_pause(paused)
        await self._commit(self._release(patch))
        self.finished = True
        await self.stop_heartbeats()
        self._ended(paused, last)
        return paused

    async def fail(self, error: BaseException | str) -> None:
        """This attempt failed (the executor raised): count it, free the task for a retry.

        After `max_attempts` failed attempts the next start dead-letters the task. A queue
        entry stays pending and is retried after the claim idle timeout (the backoff); an
        inline Run is handed to the queue at once (in the same script).
        """
        await self._save_last_before("counting a failed attempt")
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        reason = f"attempt {self.number} failed: {reason}"[:1000]
        now = now_ms()
        self.task.status_message = reason
        patch = Patch(
            guard="fence",
            fields={
                Field.FAILS: self.fails + 1,
                Field.ERROR: reason,
                Field.MESSAGE: reason,
                Field.UPDATED: now,
            },
            delete=(Field.RUNNING,),
            lease="release",
        )
        if self.inline:
            patch.outbox = "rem"
            patch.enqueue = entry_record(self.carrier)
        await self._commit(patch)
        self.finished = True
        await self.stop_heartbeats()
        metrics.TASK_ATTEMPTS_FAILED.labels(domain=self.queue.domain).inc()

    async def hand_back(
        self, message: str = "handed back by a stopping worker", *, stop_reason: int = 0
    ) -> None:
        """Give the task up without counting a failure (drain, Run deadline): another worker resumes
        it from the last checkpoint at once."""
        await self._save_last_before("handing the task back")
        now = now_ms()
        self.task.status_message = message
        self.task.stop_reason = stop_reason  # type: ignore[assignment]
        set_millis(self.task.update_time, now)
        fields: dict[str, str | bytes | int] = {
            Field.MESSAGE: message,
            Field.UPDATED: now,
            Field.STOP: stop_reason,
        }
        if self.inline:  # a Run going durable keeps the durable retention
            fields[Field.RETENTION] = max(self.retention_ms, self.queue.config.retention_ms)
        # Released, and queued afresh (the old entry acknowledged) in the same script.
        patch = Patch(guard="fence", fields=fields, delete=(Field.RUNNING,), lease="release")
        patch.enqueue = entry_record(self.entry.carrier if self.entry is not None else self.carrier)
        await self._commit(self._release(patch))
        self.finished = True
        await self.stop_heartbeats()

    async def abandon(self) -> None:
        """Stop heartbeating without writing (the lease was lost)."""
        self._last = None
        self.finished = True
        await self.stop_heartbeats()

    def _release(self, patch: Patch) -> Patch:
        """This attempt's hold on the queue ends with `patch`: its entry is acknowledged, or its
        inline run leaves the outbox."""
        if self.entry is not None:
            patch.ack = self.entry.entry_id
        if self.inline:
            patch.outbox = "rem"
        return patch


async def run_attempt(attempt: Attempt, execute: Executor) -> task_pb2.Task:
    """Execute one attempt to its end: outcome recorded, failure counted, or LeaseLost raised.

    Cancellation (asyncio) propagates: the caller decides between hand-back and nothing.
    """
    if attempt.cancel:
        return await attempt.finish(Canceled())
    attempt.start_heartbeats()
    try:
        try:
            outcome = await execute(attempt.task, attempt.checkpointer)
        except LeaseLost:
            await attempt.abandon()
            raise
        except Exception as exc:
            log.exception(
                "task executor raised", extra={"task_id": attempt.task_id, "attempt": attempt.number}
            )
            await attempt.fail(exc)
            return attempt.task
        return await attempt.finish(outcome)
    finally:
        await attempt.stop_heartbeats()


# -- helpers ----------------------------------------------------------------------------------


def _without_steps(task: task_pb2.Task) -> task_pb2.Task:
    """A copy of `task` without its steps and last event id: the record as stored (once per
    attempt)."""
    record = task_pb2.Task()
    record.CopyFrom(task)
    record.ClearField("steps")
    record.ClearField("last_event_id")
    return record


def _artifact_update(item: task_pb2.Artifact | task_pb2.ArtifactUpdate) -> task_pb2.ArtifactUpdate:
    if isinstance(item, task_pb2.ArtifactUpdate):
        return item
    return task_pb2.ArtifactUpdate(artifact=item, append=False, last_chunk=True)


def _merge_artifact(task: task_pb2.Task, update: task_pb2.ArtifactUpdate) -> None:
    """Apply an artifact update to the task's artifacts (replace by id, or append chunks)."""
    for existing in task.artifacts:
        if existing.artifact_id == update.artifact.artifact_id:
            if update.append:
                existing.parts.extend(update.artifact.parts)
                existing.metadata.update(update.artifact.metadata)
            else:
                existing.CopyFrom(update.artifact)
            return
    task.artifacts.append(update.artifact)


async def _with_retries(budget_s: float, call: Callable[[], Awaitable[CommitResult]]) -> CommitResult:
    """Retry a commit while Redis is unavailable, up to `budget_s` (commits are idempotent)."""
    try:
        return await call()  # the common case, without setting up a retry loop
    except Unavailable:
        pass
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(Unavailable),
        stop=stop_after_delay(budget_s),
        wait=_WRITE_RETRY.wait,
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = [
    "Attempt",
    "Canceled",
    "Checkpointer",
    "Completed",
    "Executor",
    "Failed",
    "InputRequired",
    "LeaseLost",
    "Rejected",
    "TaskOutcome",
    "run_attempt",
]
