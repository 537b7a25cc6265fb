"""The task's last step written with its outcome (`Checkpointer.save_last`): one fenced script for
both, with every check `save` has, nothing written when it is refused, and every event replayed."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis.asyncio as aioredis

from agentmesh.v1 import task_pb2
from memory.tasks.execution import Attempt, Checkpointer, Completed, InputRequired, LeaseLost, run_attempt
from memory.tasks.queue import TaskQueue
from memory.tasks.records import CommitResult, Patch
from tests.support.task_helpers import OWNER, TENANT, claim, events_key, reclaim_one, submit, task_key

pytestmark = pytest.mark.integration

ANSWER = task_pb2.Step(index=1, kind=task_pb2.STEP_KIND_MODEL_CALL, summary="the answer")
ARTIFACT = task_pb2.Artifact(artifact_id="a-1", name="receipt", parts=[task_pb2.Part(text="paid")])


class Commits:
    """Counts the commits (scripts) of a queue's store."""

    def __init__(self, queue: TaskQueue, monkeypatch: pytest.MonkeyPatch) -> None:
        self.patches: list[Patch] = []
        commit = queue.store.commit

        async def counted(task_id: str, patch: Patch, **kw: Any) -> CommitResult:
            self.patches.append(patch)
            return await commit(task_id, patch, **kw)

        monkeypatch.setattr(queue.store, "commit", counted)


async def _watch_all(queue: TaskQueue, task_id: str) -> list[task_pb2.TaskEvent]:
    return [e async for e in queue.events.watch(task_id, tenant=TENANT, owner=OWNER)]


async def _first_step_saved(queue: TaskQueue) -> tuple[task_pb2.Task, Attempt]:
    task = await submit(queue)
    attempt = await claim(queue)
    await attempt.checkpointer.save(task_pb2.Step(index=0, summary="looked up the order"))
    return task, attempt


async def test_the_last_step_and_the_outcome_are_one_script_and_watchers_see_both(
    queue: TaskQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    task, attempt = await _first_step_saved(queue)
    commits = Commits(queue, monkeypatch)
    usage = task_pb2.Usage(total_tokens=42)
    attempt.checkpointer.save_last(ANSWER, usage=usage, artifacts=[ARTIFACT])
    assert attempt.checkpointer.next_index == 2  # the step counts as taken
    done = await attempt.finish(Completed("refunded"))
    assert len(commits.patches) == 1 and commits.patches[0].step == ANSWER  # one round trip
    assert [s.summary for s in done.steps] == ["looked up the order", "the answer"]
    stored = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert [s.summary for s in stored.steps] == ["looked up the order", "the answer"]
    assert stored.state == task_pb2.TASK_STATE_COMPLETED and stored.final_answer == "refunded"
    assert stored.usage.total_tokens == 42  # the step's usage (the outcome brought none)
    assert [a.artifact_id for a in stored.artifacts] == ["a-1"]
    assert stored.last_event_id == done.last_event_id
    events = await _watch_all(queue, task.task_id)
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-3:] == ["step_update", "artifact_update", "status_update"]  # step, then the outcome
    assert events[-3].step_update.step.summary == "the answer" and events[-3].step_update.finished
    assert events[-1].status_update.state == task_pb2.TASK_STATE_COMPLETED
    assert events[-1].status_update.usage.total_tokens == 42


async def test_the_last_step_and_its_artifacts_come_before_the_outcome_artifacts(queue: TaskQueue) -> None:
    """A Completed outcome with artifacts of its own adds them after the last step's events: the
    watchers see the step, its artifact, the outcome's artifact, then the status."""
    task, attempt = await _first_step_saved(queue)
    attempt.checkpointer.save_last(ANSWER, artifacts=[ARTIFACT])
    summary = task_pb2.Artifact(artifact_id="a-2", name="summary", parts=[task_pb2.Part(text="50 EUR")])
    await attempt.finish(Completed("refunded", artifacts=[summary]))
    events = await _watch_all(queue, task.task_id)
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-4:] == ["step_update", "artifact_update", "artifact_update", "status_update"]
    assert events[-4].step_update.step.summary == "the answer" and events[-4].step_update.finished
    assert [e.artifact_update.artifact.artifact_id for e in events[-3:-1]] == ["a-1", "a-2"]
    stored = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert [s.summary for s in stored.steps] == ["looked up the order", "the answer"]
    assert [a.artifact_id for a in stored.artifacts] == ["a-1", "a-2"]


async def test_the_outcome_usage_wins_over_the_last_step_usage(queue: TaskQueue) -> None:
    task, attempt = await _first_step_saved(queue)
    attempt.checkpointer.save_last(ANSWER, usage=task_pb2.Usage(total_tokens=1))
    await attempt.finish(Completed("ok", usage=task_pb2.Usage(total_tokens=7)))
    stored = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert stored.usage.total_tokens == 7


async def test_a_fenced_attempt_writes_neither_the_last_step_nor_the_outcome(
    queue: TaskQueue, client: Any
) -> None:
    """The combined script is fenced like every write: a stale attempt's last step and outcome are
    both refused, and nothing of the task changes."""
    task, stale = await _first_step_saved(queue)
    entry = await reclaim_one(queue, "worker-b")  # the stale worker stalled past the idle timeout
    fresh = await queue.start(entry, "worker-b")
    assert fresh is not None
    record = task_key(queue, task.task_id)
    before = await client.hgetall(record)
    events = await client.xlen(events_key(queue, task.task_id))
    stale.checkpointer.save_last(ANSWER)
    with pytest.raises(LeaseLost):
        await stale.finish(Completed("a's answer"))
    assert await client.hgetall(record) == before  # no step 1, no outcome, lease untouched
    assert await client.xlen(events_key(queue, task.task_id)) == events
    await fresh.finish(Completed("b's answer"))


async def test_a_conflicting_last_step_is_refused_before_anything_is_written(
    single_queue: TaskQueue, redis_client: aioredis.Redis
) -> None:
    """A step checkpointed before with other content refuses the whole ending: the task is not
    finished over a step that disagrees with it."""
    task, attempt = await _first_step_saved(single_queue)
    attempt.task.ClearField("steps")  # as if this attempt had not seen step 0 (a second save of it)
    record = task_key(single_queue, task.task_id)
    before = await redis_client.hgetall(record)
    events = await redis_client.xlen(events_key(single_queue, task.task_id))
    attempt.checkpointer.save_last(task_pb2.Step(index=0, summary="something else"))
    refusal = f"task {task.task_id}: step 0 was already checkpointed with different content"
    with pytest.raises(ValueError, match=rf"^{re.escape(refusal)}$"):  # names the step
        await attempt.finish(Completed("done"))
    assert await redis_client.hgetall(record) == before
    assert await redis_client.xlen(events_key(single_queue, task.task_id)) == events


async def test_the_last_step_must_be_the_next_one_and_only_one(queue: TaskQueue) -> None:
    _, attempt = await _first_step_saved(queue)
    with pytest.raises(ValueError, match="expected step 1"):
        attempt.checkpointer.save_last(task_pb2.Step(index=3))
    attempt.checkpointer.save_last(ANSWER)
    with pytest.raises(ValueError, match="already handed over"):
        attempt.checkpointer.save_last(task_pb2.Step(index=2))
    await attempt.finish(Completed("ok"))


async def test_a_save_after_the_last_step_writes_it_first(queue: TaskQueue) -> None:
    task, attempt = await _first_step_saved(queue)
    attempt.checkpointer.save_last(ANSWER)
    await attempt.checkpointer.save(task_pb2.Step(index=2, summary="a compensation"))
    done = await attempt.finish(Completed("ok"))
    assert [s.index for s in done.steps] == [0, 1, 2]
    stored = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert [s.summary for s in stored.steps] == ["looked up the order", "the answer", "a compensation"]


async def test_an_executor_that_raises_after_its_last_step_keeps_the_step(queue: TaskQueue) -> None:
    task = await submit(queue)

    async def raises(_: task_pb2.Task, checkpoint: Checkpointer) -> Completed:
        checkpoint.save_last(task_pb2.Step(index=0, kind=task_pb2.STEP_KIND_MODEL_CALL, summary="turn"))
        raise RuntimeError("boom")

    await run_attempt(await claim(queue), raises)
    snapshot = await queue.store.snapshot(task.task_id, steps=True)
    assert snapshot is not None and snapshot.fails == 1 and "boom" in snapshot.error
    assert [s.summary for s in snapshot.task.steps] == ["turn"]  # checkpointed, then the failure


async def test_a_pause_carries_the_last_step(queue: TaskQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    task, attempt = await _first_step_saved(queue)
    commits = Commits(queue, monkeypatch)
    attempt.checkpointer.save_last(ANSWER, usage=task_pb2.Usage(total_tokens=5))
    pending = task_pb2.PendingAction(
        action_id="act-1", kind=task_pb2.PENDING_ACTION_KIND_INPUT, message="which order?"
    )
    paused = await attempt.finish(InputRequired(pending))
    assert len(commits.patches) == 1
    stored = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert stored.state == task_pb2.TASK_STATE_INPUT_REQUIRED
    assert (
        [s.summary for s in stored.steps]
        == [s.summary for s in paused.steps]
        == [
            "looked up the order",
            "the answer",
        ]
    )
    assert stored.usage.total_tokens == 5


async def test_a_hand_back_after_the_last_step_writes_it_first_with_its_usage(queue: TaskQueue) -> None:
    """A hand-back (drain, Run deadline) cannot carry the step: it is saved on its own first, with
    the usage handed over with it, so the next attempt starts from both."""
    task, attempt = await _first_step_saved(queue)
    attempt.checkpointer.save_last(ANSWER, usage=task_pb2.Usage(total_tokens=42))
    await attempt.hand_back()
    snapshot = await queue.store.snapshot(task.task_id, steps=True)
    assert snapshot is not None
    assert [s.summary for s in snapshot.task.steps] == ["looked up the order", "the answer"]
    assert snapshot.task.usage.total_tokens == 42
