"""Dead letters: where a queue entry goes when its task cannot run, and how it comes back.

An entry is dead-lettered, with why, when its task failed `AGENTMESH_MAX_ATTEMPTS` attempts
(the task FAILED with STOP_REASON_DEAD_LETTERED, its side effects settled first — see
memory/tasks/settlement.py — and listed in the letter so they outlive the task's retention), or
when the entry or its task's record cannot be read. Each shard's dead letters are a stream in
the shard's slot, so failing the task and moving its entry are one script. An operator lists
and redrives them (`agentmesh tasks dead-letters list|show|redrive`): a redriven task is
re-opened (FAILED -> SUBMITTED, attempts reset) and queued again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentmesh.kit import metrics
from agentmesh.kit.errors import DataLoss
from agentmesh.v1 import task_pb2
from memory import keys
from memory.codec import as_text
from memory.connection import redis_errors
from memory.tasks import ids, scripts, states
from memory.tasks.effects import task_effects
from memory.tasks.entries import QueueEntry, decode_entry_payload, encode_entry, entry_record, stream_id_key
from memory.tasks.events import status_event
from memory.tasks.records import Field, Patch, TaskSnapshot, finish, now_ms, set_millis
from memory.tasks.settlement import Settlement
from memory.tasks.store import CAS_RETRIES, TaskStore, record_finished

log = logging.getLogger(__name__)

MAX_LETTER_EFFECTS = 50


@dataclass(frozen=True, slots=True)
class DeadLetter:
    shard: int
    entry_id: str
    task_id: str
    reason: str
    failed_attempts: int
    dead_ms: int
    original_entry_id: str
    # The task's side effects when it was dead-lettered: step, tool, status, arguments_sha256, result
    # (memory.tasks.effects; `agentmesh tasks dead-letters show` prints them in full).
    effects: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class RedriveResult:
    entry_id: str
    task_id: str
    outcome: str  # redriven | gone (the task expired) | skipped (not dead-lettered any more)
    detail: str = ""


class DeadLetters:
    """The dead letters of one domain's queue (consumer group `group`) over all its shards."""

    def __init__(self, store: TaskStore, settlement: Settlement, *, group: str) -> None:
        self.store = store
        self.redis = store.redis
        self.domain = store.domain
        self.config = store.config
        self.group = group
        self.settlement = settlement
        self._dead_letter = store.redis.register_script(scripts.DEAD_LETTER)

    # -- moving entries here ----------------------------------------------------------------

    async def park_unreadable(self, shard: int, entry_id: str, record: bytes) -> None:
        """An entry that names no task of its shard (or an unreadable one): here, with why."""
        try:
            decode_entry_payload(record, f"queue entry {entry_id}")
            reason = f"queue entry {entry_id} names no task of shard {shard}"
        except DataLoss as exc:
            reason = str(exc)
        log.error("unreadable queue entry moved to the dead letters", extra={"entry_id": entry_id})
        await self.move(shard, entry_id, "", reason, 0)

    async def move(self, shard: int, entry_id: str, task_id: str, reason: str, fails: int) -> None:
        """Move an entry whose task cannot be changed (unreadable) to the dead letters."""
        with redis_errors("moving an entry to the dead letters"):
            await self._dead_letter(
                keys=[keys.queue(self.domain, shard), keys.dead_letters(self.domain, shard)],
                args=[
                    self.group,
                    entry_id,
                    _letter_record(task_id, reason, fails, entry_id),
                    self.config.dead_letters_maxlen,
                ],
            )

    async def fail_task(self, entry: QueueEntry, snapshot: TaskSnapshot) -> None:
        """FAILED (DEAD_LETTERED) and the entry moved to the dead letters, in one script.

        First `settle_failed` (when set) may record steps — the agent runtime's compensations of
        the task's completed side effects — each checkpointed on its own (guarded by the record's
        revision), so a crash in between leaves the entry pending: the next worker finds the task
        poisoned again and settles only what is left. A failing hook is logged, never retried
        here: the task is dead-lettered all the same. The dead letter lists the task's side
        effects (memory.tasks.effects) so they outlive the task's retention."""
        reason = snapshot.error or "failed too many attempts"
        message = f"dead-lettered after {snapshot.fails} failed attempts: {reason}"
        error = task_pb2.TaskError(
            reason="DEAD_LETTERED",
            message=reason[:1000],
            metadata={"failed_attempts": str(snapshot.fails), "domain": self.domain},
        )
        if self.settlement.hook is not None:
            settled = await self.settlement.settle(
                snapshot, task_pb2.STOP_REASON_DEAD_LETTERED, error, message[:1000]
            )
            if settled is None:
                return
            snapshot = settled
        full = await self.store.snapshot(snapshot.task.task_id, steps=True)
        steps = list(full.task.steps) if full is not None else []
        task = snapshot.task
        done = finish(
            task,
            states.FAILED,
            stop_reason=task_pb2.STOP_REASON_DEAD_LETTERED,
            message=message[:1000],
            now=now_ms(),
            retention_ms=max(snapshot.retention_ms, self.config.retention_ms),
        )
        done.error.CopyFrom(error)
        patch = self.store.terminal_patch(done, snapshot, guard="rev")
        patch.ack = entry.entry_id
        effects = [
            {
                "step": e.step,
                "tool": e.tool,
                "status": e.status,
                "arguments_sha256": e.arguments_sha256,
                "result": e.result,
            }
            for e in task_effects(task.task_id, steps)
        ]
        patch.dead_letter = _letter_record(
            task.task_id, reason, snapshot.fails, entry.entry_id, effects=effects
        )
        result = await self.store.commit(task.task_id, patch)
        if not result.ok:  # changed meanwhile (canceled?): the entry comes back and is settled then
            log.info("dead-lettering raced with another change", extra={"task_id": task.task_id})
            return
        record_finished(self.domain, done.state)
        metrics.TASK_DEAD_LETTERS.labels(domain=self.domain).inc()
        log.warning("task dead-lettered", extra={"task_id": task.task_id, "reason": reason})

    # -- reading and redriving --------------------------------------------------------------

    async def newest(self, *, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters over all shards."""
        found: list[DeadLetter] = []
        for shard in range(self.config.shards):
            with redis_errors("reading the dead letters"):
                items: Any = await self.redis.xrevrange(
                    keys.dead_letters(self.domain, shard), "+", "-", count=limit
                )
            for entry_id, fields in items:
                entry_id = as_text(entry_id)
                try:
                    payload = decode_entry_payload(
                        fields.get(b"e"), f"dead letter {entry_id}", needs_task=False
                    )
                except DataLoss as exc:
                    payload = {"t": "", "reason": str(exc)}
                found.append(
                    DeadLetter(
                        shard=shard,
                        entry_id=entry_id,
                        task_id=str(payload.get("t", "")),
                        reason=str(payload.get("reason", "")),
                        failed_attempts=int(payload.get("fails", 0) or 0),
                        dead_ms=int(payload.get("at", 0) or 0),
                        original_entry_id=str(payload.get("entry", "")),
                        effects=tuple(e for e in payload.get("effects", ()) if isinstance(e, dict)),
                    )
                )
        found.sort(key=lambda d: stream_id_key(d.entry_id), reverse=True)
        return found[:limit]

    async def redrive(
        self, entry_ids: Sequence[str] | None = None, *, limit: int = 1000
    ) -> list[RedriveResult]:
        """Re-open dead-lettered tasks (FAILED -> SUBMITTED, attempts reset) and queue them again.

        `entry_ids=None` redrives every dead letter (up to `limit`).
        """
        letters = await self.newest(limit=limit)
        if entry_ids is not None:
            wanted = set(entry_ids)
            letters = [d for d in letters if d.entry_id in wanted]
            missing = wanted - {d.entry_id for d in letters}
        else:
            missing = set()
        results = [RedriveResult(e, "", "gone", "no such dead letter") for e in sorted(missing)]
        for letter in letters:
            results.append(await self._redrive_one(letter))
        return results

    async def _redrive_one(self, letter: DeadLetter) -> RedriveResult:
        if not letter.task_id:
            return RedriveResult(
                letter.entry_id, "", "skipped", "the dead letter names no task (corrupt entry)"
            )
        for _ in range(CAS_RETRIES):
            snapshot = await self.store.snapshot(letter.task_id)
            if snapshot is None:
                return RedriveResult(letter.entry_id, letter.task_id, "gone", "the task expired")
            task = snapshot.task
            if not states.can_redrive(task.state, task.stop_reason):
                await self._drop(letter)
                return RedriveResult(
                    letter.entry_id,
                    letter.task_id,
                    "skipped",
                    f"task is {states.state_name(task.state)}",
                )
            reopened = task_pb2.Task()
            reopened.CopyFrom(task)
            now = now_ms()
            reopened.state = states.SUBMITTED
            reopened.stop_reason = task_pb2.STOP_REASON_UNSPECIFIED
            reopened.status_message = "redriven from the dead letters"
            for name in ("end_time", "expire_time", "error"):
                reopened.ClearField(name)
            set_millis(reopened.update_time, now)
            # The letter lives in the task's shard, so re-opening, queueing and dropping the letter
            # are one script.
            same_shard = ids.shard_of(task.task_id) == letter.shard
            result = await self.store.commit(
                task.task_id,
                Patch(
                    guard="rev",
                    guard_value=str(snapshot.rev),
                    task=reopened,
                    fields={Field.FAILS: 0, Field.ERROR: ""},
                    delete=(Field.RUNNING, Field.CANCEL),
                    events=[status_event(reopened)],
                    ttl_ms=0,
                    enqueue=entry_record(snapshot.carrier),
                    drop_dead_letter=letter.entry_id if same_shard else "",
                ),
            )
            if result.status == "stale":
                continue
            if not result.ok:
                return RedriveResult(letter.entry_id, letter.task_id, "gone", result.status)
            if not same_shard:
                await self._drop(letter)
            return RedriveResult(letter.entry_id, letter.task_id, "redriven")
        return RedriveResult(letter.entry_id, letter.task_id, "skipped", "the task kept changing; try again")

    async def _drop(self, letter: DeadLetter) -> None:
        with redis_errors("dropping a dead letter"):
            await self.redis.xdel(keys.dead_letters(self.domain, letter.shard), letter.entry_id)


def _letter_record(
    task_id: str, reason: str, fails: int, entry_id: str, *, effects: Sequence[dict[str, Any]] = ()
) -> bytes:
    payload: dict[str, Any] = {
        "t": task_id,
        "reason": reason[:1000],
        "fails": fails,
        "entry": entry_id,
        "at": now_ms(),
    }
    if effects:  # the side effects the task's steps record (bounded: a dead letter stays small)
        payload["effects"] = list(effects[:MAX_LETTER_EFFECTS])
    return encode_entry(payload)
