"""TaskQueue against a real server and a real 3-node cluster: every operation of the durable path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions as redis_exceptions
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider

from agentmesh.kit import metrics
from agentmesh.kit.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from agentmesh.v1 import agent_service_pb2, task_pb2
from agents.requests import new_task
from memory import keys
from memory.connection import AnyRedis
from memory.tasks import ids
from memory.tasks.entries import entry_record
from memory.tasks.execution import (
    Attempt,
    Canceled,
    Checkpointer,
    Completed,
    Failed,
    InputRequired,
    LeaseLost,
    TaskOutcome,
    _with_retries,
    run_attempt,
)
from memory.tasks.queue import TaskQueue
from memory.tasks.records import CommitResult, Field, step_field
from memory.tasks.store import TaskConfig
from memory.tasks.sweeper import TaskSweeper
from tests.support.task_helpers import (
    OWNER,
    TENANT,
    claim,
    event_kinds,
    events_key,
    read_one,
    reclaim_one,
    steps_executor,
    submit,
    task_key,
)
from tests.support.waiting import until

pytestmark = pytest.mark.integration

W = task_pb2.TASK_STATE_WORKING


async def _stream_state(client: AnyRedis, queue: TaskQueue) -> tuple[int, int]:
    """(entries in all shard streams, pending entries in all groups)."""
    entries = pending = 0
    for shard in queue.shards():
        entries += await client.xlen(keys.queue(queue.domain, shard))
        pending += (await client.xpending(keys.queue(queue.domain, shard), queue.group))["pending"]
    return entries, pending


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _metric(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


# -- submission -----------------------------------------------------------------------------


async def test_submit_creates_a_queued_task(queue: TaskQueue, client: AnyRedis) -> None:
    task = await submit(queue, labels={"ticket": "T-1"}, session_id="s1")
    assert task.state == task_pb2.TASK_STATE_SUBMITTED
    assert (task.tenant, task.owner, task.domain) == (TENANT, OWNER, "refunds")
    assert task.request_id == "req-1" and dict(task.labels) == {"ticket": "T-1"}
    assert task.last_event_id and task.create_time.seconds > 0
    entry = await read_one(queue)
    assert entry.task_id == task.task_id and entry.shard == queue.shard_of(task.task_id)
    assert await event_kinds(queue, task.task_id) == ["SUBMITTED"]
    assert await client.zcard(keys.outbox("refunds", entry.shard)) == 0  # only inline runs use it
    index = keys.owner_tasks("refunds", entry.shard, TENANT, OWNER)
    assert await client.zcard(index) == 1  # indexed by the same script


async def test_submit_is_idempotent_on_the_request_id(queue: TaskQueue, client: AnyRedis) -> None:
    first = await submit(queue)
    again = await submit(queue)
    assert again.task_id == first.task_id
    assert await _stream_state(client, queue) == (1, 0)  # queued once
    page = await queue.store.list_tasks(tenant=TENANT, owner=OWNER)
    assert [t.task_id for t in page.tasks] == [first.task_id]
    other_owner = await submit(queue, owner="bob")
    assert other_owner.task_id != first.task_id


async def test_same_request_id_with_another_request_is_refused(queue: TaskQueue) -> None:
    await submit(queue, instruction="refund order 7")
    with pytest.raises(InvalidArgument) as caught:
        await submit(queue, instruction="refund order 8")
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert caught.value.violations[0].field == "request_id"


async def test_submit_needs_a_request_id(queue: TaskQueue) -> None:
    with pytest.raises(InvalidArgument, match="request_id"):
        await queue.submit(
            new_task(agent_service_pb2.SubmitTaskRequest(instruction="x")), tenant=TENANT, owner=OWNER
        )


# -- the happy path -------------------------------------------------------------------------


async def test_claim_checkpoint_complete(queue: TaskQueue, client: AnyRedis) -> None:
    task = await submit(queue)
    attempt = await claim(queue)
    assert attempt.number == 1 and attempt.task.state == W and not attempt.checkpointer.steps
    done = await run_attempt(attempt, steps_executor(3))
    assert done.state == task_pb2.TASK_STATE_COMPLETED and done.final_answer == "done after 3 steps"
    stored = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert [s.index for s in stored.steps] == [0, 1, 2]
    assert stored.end_time.seconds > 0 and stored.expire_time.seconds > stored.end_time.seconds
    assert await event_kinds(queue, task.task_id) == [
        "SUBMITTED",
        "WORKING",
        "step_update",
        "step_update",
        "step_update",
        "COMPLETED",
    ]
    assert await _stream_state(client, queue) == (0, 0)  # acknowledged and deleted
    snapshot = await queue.store.snapshot(task.task_id)
    assert snapshot is not None and not snapshot.lease_alive and not snapshot.running
    for key in (task_key(queue, task.task_id), events_key(queue, task.task_id)):
        ttl = await client.ttl(key)
        assert 0 < ttl <= queue.config.retention_s, key


async def test_artifacts_and_usage_are_kept(queue: TaskQueue) -> None:
    task = await submit(queue)
    attempt = await claim(queue)
    label = task_pb2.Artifact(artifact_id="label", name="label", parts=[task_pb2.Part(text="part 1")])
    more = task_pb2.ArtifactUpdate(
        artifact=task_pb2.Artifact(artifact_id="label", parts=[task_pb2.Part(text="part 2")]), append=True
    )
    await attempt.checkpointer.save(
        task_pb2.Step(index=0), usage=task_pb2.Usage(iterations=1, total_tokens=40), artifacts=[label]
    )
    assert (await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)).usage.total_tokens == 40
    await attempt.checkpointer.save(
        task_pb2.Step(index=1), usage=task_pb2.Usage(iterations=2, total_tokens=60)
    )
    assert (await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)).usage.total_tokens == 60
    await attempt.checkpointer.save(task_pb2.Step(index=2), artifacts=[more])
    await attempt.finish(Completed("ok", usage=task_pb2.Usage(iterations=2, total_tokens=90)))
    stored = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert [p.text for p in stored.artifacts[0].parts] == ["part 1", "part 2"]
    assert stored.usage.total_tokens == 90
    assert (await event_kinds(queue, task.task_id)).count("artifact_update") == 2


async def test_artifacts_are_replaced_or_appended_as_their_update_says(queue: TaskQueue) -> None:
    """A plain Artifact is a whole one (replaces the one of its id: append off, last chunk);
    an ArtifactUpdate with `append` adds its parts and labels to it; another id is a new one."""
    task = await submit(queue)
    attempt = await claim(queue)
    first = task_pb2.Artifact(artifact_id="label", parts=[task_pb2.Part(text="1")], metadata={"a": "1"})
    chunk = task_pb2.ArtifactUpdate(
        artifact=task_pb2.Artifact(artifact_id="label", parts=[task_pb2.Part(text="2")], metadata={"b": "2"}),
        append=True,
    )
    await attempt.checkpointer.save(task_pb2.Step(index=0), artifacts=[first])
    await attempt.checkpointer.save(task_pb2.Step(index=1), artifacts=[chunk])
    assert [p.text for p in attempt.task.artifacts[0].parts] == ["1", "2"]
    assert dict(attempt.task.artifacts[0].metadata) == {"a": "1", "b": "2"}
    again = task_pb2.Artifact(artifact_id="label", parts=[task_pb2.Part(text="3")])
    receipt = task_pb2.Artifact(artifact_id="receipt", parts=[task_pb2.Part(text="r")])
    await attempt.checkpointer.save(task_pb2.Step(index=2), artifacts=[again, receipt])
    final = task_pb2.Artifact(artifact_id="answer", parts=[task_pb2.Part(text="a")])
    await attempt.finish(Completed("ok", artifacts=[final]))  # the outcome's artifacts join them
    stored = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert [(a.artifact_id, [p.text for p in a.parts], dict(a.metadata)) for a in stored.artifacts] == [
        ("label", ["3"], {}),
        ("receipt", ["r"], {}),
        ("answer", ["a"], {}),
    ]
    events = await queue.events.read(task.task_id, tenant=TENANT, owner=OWNER)
    flags = [
        (e.artifact_update.artifact.artifact_id, e.artifact_update.append, e.artifact_update.last_chunk)
        for e in events
        if e.HasField("artifact_update")
    ]
    assert flags == [
        ("label", False, True),
        ("label", True, False),
        ("label", False, True),
        ("receipt", False, True),
        ("answer", False, True),
    ]
    saved = [(e.step_update.step.index, e.step_update.finished) for e in events if e.HasField("step_update")]
    assert saved == [(0, True), (1, True), (2, True)]  # each save announces its step as finished


async def test_a_saved_step_moves_the_update_time_and_a_finished_attempt_saves_nothing(
    queue: TaskQueue,
) -> None:
    task = await submit(queue)
    attempt = await claim(queue)
    claimed = (await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)).update_time.ToMilliseconds()
    await until(lambda: time.time() * 1000 > claimed + 1, what="the clock to pass the claim's millisecond")
    await attempt.checkpointer.save(task_pb2.Step(index=0))
    stored = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert stored.update_time.ToMilliseconds() > claimed
    await attempt.finish(Completed("ok"))
    with pytest.raises(LeaseLost, match="already finished"):
        await attempt.checkpointer.save(task_pb2.Step(index=1))


async def test_steps_are_saved_in_order(queue: TaskQueue) -> None:
    await submit(queue)
    attempt = await claim(queue)
    with pytest.raises(ValueError, match="expected step 0"):
        await attempt.checkpointer.save(task_pb2.Step(index=1))


async def test_started_steps_are_announced(queue: TaskQueue) -> None:
    task = await submit(queue)
    attempt = await claim(queue)
    assert not await attempt.checkpointer.started(task_pb2.Step(index=0, tool_name="crm_get_customer"))
    events = await queue.events.read(task.task_id, tenant=TENANT, owner=OWNER)
    assert events[-1].step_update.step.tool_name == "crm_get_customer" and not events[-1].step_update.finished


async def test_a_started_step_reports_a_cancel_requested_meanwhile(queue: TaskQueue) -> None:
    task = await submit(queue)
    attempt = await claim(queue)
    assert not await attempt.checkpointer.started(task_pb2.Step(index=0))
    await queue.store.cancel(task.task_id, tenant=TENANT, owner=OWNER, reason="stop it")
    assert await attempt.checkpointer.started(task_pb2.Step(index=0))  # the executor stops before the tool
    assert attempt.checkpointer.canceled
    assert await attempt.heartbeat()  # a heartbeat reports it too
    await attempt.abandon()  # e.g. the lease was lost: no more heartbeats, no hand-back by the worker
    assert attempt.finished


# -- recovery and fencing ---------------------------------------------------------------------


async def test_a_lost_worker_is_resumed_from_its_checkpoint_and_fenced_out(
    queue: TaskQueue, client: AnyRedis
) -> None:
    recoveries = _metric("agentmesh_task_recoveries_total", domain="refunds")
    task = await submit(queue)
    stale = await claim(queue, "worker-a")
    await stale.checkpointer.save(task_pb2.Step(index=0, summary="by a"))
    # worker-a stalls: no heartbeat; after the idle timeout worker-b takes the entry over.
    entry = await reclaim_one(queue, "worker-b")
    assert entry.task_id == task.task_id
    fresh = await queue.start(entry, "worker-b")
    assert fresh is not None and fresh.number == 2
    assert _metric("agentmesh_task_recoveries_total", domain="refunds") == recoveries + 1
    assert [s.summary for s in fresh.checkpointer.steps] == ["by a"]  # resumes after the checkpoint
    snapshot = await queue.store.snapshot(task.task_id)
    assert snapshot is not None and snapshot.fails == 1 and "worker was lost" in snapshot.error
    # The stale worker can no longer write or finish anything.
    with pytest.raises(LeaseLost):
        await stale.checkpointer.save(task_pb2.Step(index=1, summary="by a, too late"))
    announced = await client.xlen(events_key(queue, task.task_id))
    with pytest.raises(LeaseLost):  # nor announce a step to the watchers of b's attempt
        await stale.checkpointer.started(task_pb2.Step(index=1, summary="by a, too late"))
    assert await client.xlen(events_key(queue, task.task_id)) == announced
    with pytest.raises(LeaseLost):
        await stale.finish(Completed("a's answer"))
    done = await run_attempt(fresh, steps_executor(3))
    assert done.final_answer == "done after 3 steps" and done.attempt == 2
    stored = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert [s.summary for s in stored.steps] == ["by a", "step 1", "step 2"]
    assert await _stream_state(client, queue) == (0, 0)


async def test_an_attempt_whose_task_vanished_has_lost_it(queue: TaskQueue, client: AnyRedis) -> None:
    """The task's record is gone (e.g. erased for its owner) while an attempt runs: its next write
    is refused as a lost lease, not an unexpected error."""
    task = await submit(queue)
    attempt = await claim(queue)
    await client.delete(task_key(queue, task.task_id))
    with pytest.raises(LeaseLost, match="missing"):
        await attempt.checkpointer.save(task_pb2.Step(index=0))
    assert attempt.finished


async def test_a_busy_task_is_not_started_twice(queue: TaskQueue) -> None:
    await submit(queue)
    entry = await read_one(queue, "worker-a")
    first = await queue.start(entry, "worker-a")
    assert first is not None
    assert await queue.start(entry, "worker-b") is None  # the live attempt holds the lease
    await first.finish(Completed("ok"))


async def test_heartbeats_keep_a_slow_attempt_alive(queue: TaskQueue) -> None:
    """Event-driven, not timed: after each of 4 heartbeats (every third of the idle timeout, so
    longer than one idle timeout in all) no other worker can take the entry over."""
    task = await submit(queue)
    attempt = await claim(queue, "worker-a")
    beats: list[float] = []
    heartbeat = attempt.heartbeat

    async def counted() -> bool:
        canceled = await heartbeat()
        beats.append(time.monotonic())
        return canceled

    attempt.heartbeat = counted  # type: ignore[method-assign]
    started = time.monotonic()
    attempt.start_heartbeats()
    for beat in range(1, 5):
        await until(lambda beat=beat: len(beats) >= beat, what=f"heartbeat {beat} of the attempt", timeout=15)
        for shard in queue.shards():
            assert await queue.reclaim("worker-b", shard, count=5) == [], f"taken over after beat {beat}"
    # Without the beats the entry would have been reclaimable by now (it was idle past the timeout),
    # and the lease (one idle timeout long) would have run out.
    assert beats[-1] - started > queue.config.claim_idle_timeout_s
    snapshot = await queue.store.snapshot(task.task_id)
    assert snapshot is not None and snapshot.lease_alive
    await attempt.stop_heartbeats()
    done = await attempt.finish(Completed("slow but alive"))
    assert done.attempt == 1 and done.task_id == task.task_id


async def test_heartbeats_are_one_timer_every_third_of_the_idle_timeout(
    queue: TaskQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The beat interval is a third of the idle timeout (so the entry is touched well before it
    could be reclaimed), one timer per attempt however often heartbeats are started, and none
    once the attempt ended. Read from the timers scheduled, not from the clock."""
    await submit(queue)
    attempt = await claim(queue, "worker-a")
    loop = asyncio.get_running_loop()
    delays: list[float] = []
    schedule = loop.call_later

    def recorded(delay: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        if getattr(callback, "__self__", None) is attempt:
            delays.append(delay)
        return schedule(delay, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_later", recorded)
    attempt.start_heartbeats()
    attempt.start_heartbeats()  # already beating: no second timer
    assert delays == [queue.config.claim_idle_timeout_s / 3]
    await attempt.stop_heartbeats()
    await attempt.finish(Completed("done"))
    attempt.start_heartbeats()  # ended: never beats again
    assert len(delays) == 1


async def test_stopping_heartbeats_cancels_a_beat_in_flight_quietly(queue: TaskQueue) -> None:
    """An attempt that ends while a heartbeat is on its way to Redis cancels that beat; the
    cancellation stays inside `stop_heartbeats` (the attempt still records its outcome)."""
    await submit(queue)
    attempt = await claim(queue, "worker-a")
    beating, never = asyncio.Event(), asyncio.Event()

    async def stuck() -> bool:
        beating.set()
        await never.wait()
        return False

    attempt.heartbeat = stuck  # type: ignore[method-assign]
    attempt.start_heartbeats()
    await asyncio.wait_for(beating.wait(), timeout=15)  # the first beat is in flight
    await attempt.stop_heartbeats()
    done = await attempt.finish(Completed("done"))
    assert done.state == task_pb2.TASK_STATE_COMPLETED


def _lose_the_next_reply(
    attempt: Attempt, *, meanwhile: Callable[[], Awaitable[object]] | None = None
) -> list[bool]:
    """Make the attempt's next commit apply in Redis but lose its reply (a connection reset), after
    `meanwhile` ran; the list returned is empty once that happened."""
    script = attempt.store._commit
    lost = [True]

    async def reply_lost_once(**kwargs: Any) -> Any:
        reply = await script(**kwargs)
        if lost and lost.pop():
            if meanwhile is not None:
                await meanwhile()
            raise redis_exceptions.ConnectionError("connection reset after the write (reply lost)")
        return reply

    attempt.store._commit = reply_lost_once  # type: ignore[assignment]
    return lost


async def test_a_write_whose_reply_was_lost_is_applied_once(single_queue: TaskQueue) -> None:
    """An attempt retries a write when Redis does not answer (Unavailable). When the write was
    applied and only its reply lost, the retry carries the same commit id and is answered from
    it: the step is announced once, the revision moves once."""
    task = await submit(single_queue)
    attempt = await claim(single_queue)
    lost = _lose_the_next_reply(attempt)
    before = await single_queue.store.snapshot(task.task_id)
    await attempt.checkpointer.save(task_pb2.Step(index=0, summary="looked up the order"))
    after_lost = await single_queue.store.snapshot(task.task_id)
    await attempt.checkpointer.save(task_pb2.Step(index=1, summary="checked the refund"))
    after_normal = await single_queue.store.snapshot(task.task_id)
    assert before is not None and after_lost is not None and after_normal is not None and not lost
    assert after_lost.rev - before.rev == after_normal.rev - after_lost.rev == 1
    kinds = await event_kinds(single_queue, task.task_id)
    assert kinds.count("step_update") == 2  # one per step, none repeated


async def test_a_heartbeat_between_a_lost_reply_and_its_retry_does_not_hide_the_write(
    single_queue: TaskQueue,
) -> None:
    """A lease renewal records no commit id: when a heartbeat lands between a write whose reply
    was lost and the write's retry, the retry is still answered from the write's commit id — the
    step is announced once and the revision moves once."""
    task = await submit(single_queue)
    attempt = await claim(single_queue)
    lost = _lose_the_next_reply(attempt, meanwhile=attempt.heartbeat)  # renewed before the retry
    before = await single_queue.store.snapshot(task.task_id)
    await attempt.checkpointer.save(task_pb2.Step(index=0, summary="looked up the order"))
    after = await single_queue.store.snapshot(task.task_id)
    assert before is not None and after is not None and not lost
    assert after.rev - before.rev == 1
    assert (await event_kinds(single_queue, task.task_id)).count("step_update") == 1


async def test_a_write_that_stays_unavailable_is_retried_with_pauses_until_its_budget() -> None:
    """The retry loop of every attempt write (no Redis needed): only Unavailable is retried, with a
    pause between tries, until the budget is spent; then the last Unavailable is raised as it was."""
    tries: list[float] = []

    async def unavailable() -> CommitResult:
        tries.append(time.monotonic())
        raise Unavailable(f"redis is down ({len(tries)})")

    started = time.monotonic()
    with pytest.raises(Unavailable) as info:
        await asyncio.wait_for(_with_retries(0.5, unavailable), timeout=10)
    elapsed = time.monotonic() - started
    assert info.value.message == f"redis is down ({len(tries)})"  # the last error, not a RetryError
    assert 0.5 <= elapsed < 5.0 and 3 <= len(tries) < 100

    calls = 0

    async def then_broken() -> CommitResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Unavailable("redis is down")
        raise ValueError("not an outage")

    with pytest.raises(ValueError, match=r"^not an outage$"):
        await asyncio.wait_for(_with_retries(2.0, then_broken), timeout=10)
    assert calls == 2  # any other error ends the retries


# -- failures, dead letters, redrive ---------------------------------------------------------


async def test_poison_task_is_dead_lettered_and_can_be_redriven(queue: TaskQueue, client: AnyRedis) -> None:
    dead_before = _metric("agentmesh_task_dead_letters_total", domain="refunds")
    task = await submit(queue)

    async def explode(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        raise RuntimeError("tool schema mismatch")

    attempt = await claim(queue, "w1")
    await run_attempt(attempt, explode)  # failure 1: entry stays pending, retried after the idle timeout
    retry = await queue.start(await reclaim_one(queue, "w2"), "w2")
    assert retry is not None and retry.number == 2
    await run_attempt(retry, explode)  # failure 2 == max_attempts
    assert await queue.start(await reclaim_one(queue, "w3"), "w3") is None
    failed = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert failed.state == task_pb2.TASK_STATE_FAILED
    assert failed.stop_reason == task_pb2.STOP_REASON_DEAD_LETTERED
    assert "RuntimeError: tool schema mismatch" in failed.error.message
    letters = await queue.dead_letters()
    assert [(d.task_id, d.failed_attempts) for d in letters] == [(task.task_id, 2)]
    assert _metric("agentmesh_task_dead_letters_total", domain="refunds") == dead_before + 1
    assert (await queue.stats()).dead_letters == 1
    assert _metric("agentmesh_task_dead_letter_depth", domain="refunds") == 1
    assert "tool schema mismatch" in letters[0].reason
    assert await _stream_state(client, queue) == (0, 0)

    results = await queue.redrive([letters[0].entry_id])
    assert [r.outcome for r in results] == ["redriven"]
    assert await queue.dead_letters() == []
    reopened = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert reopened.state == task_pb2.TASK_STATE_SUBMITTED and not reopened.HasField("end_time")
    assert await client.ttl(task_key(queue, task.task_id)) == -1  # no longer expiring
    again = await claim(queue, "w4")
    done = await run_attempt(again, steps_executor(1))
    assert done.state == task_pb2.TASK_STATE_COMPLETED
    assert (await queue.redrive(["1-0"]))[0].outcome == "gone"


async def test_a_corrupt_queue_entry_goes_to_the_dead_letters(queue: TaskQueue, client: AnyRedis) -> None:
    await client.xadd(keys.queue("refunds", 0), {"e": b"not ours"})
    assert await queue.read("c1", 0, count=5) == []
    letters = await queue.dead_letters()
    assert len(letters) == 1 and "not an agentmesh record" in letters[0].reason
    assert (await queue.redrive())[0].outcome == "skipped"


async def test_an_unreadable_task_record_parks_its_entry(queue: TaskQueue, client: AnyRedis) -> None:
    task = await submit(queue)
    await client.hset(task_key(queue, task.task_id), "rec", b"\x00 not a record")
    assert await queue.start(await read_one(queue), "c1") is None
    letters = await queue.dead_letters()
    assert [d.task_id for d in letters] == [task.task_id] and "not an agentmesh record" in letters[0].reason
    assert await _stream_state(client, queue) == (0, 0)
    await client.zadd(keys.outbox("refunds", queue.shard_of(task.task_id)), {task.task_id: 1})
    assert (await TaskSweeper(queue, grace_s=0).sweep()).dropped == 1  # the sweep goes on


@pytest.mark.parametrize("how", ["claim", "start"])
@pytest.mark.parametrize("damage", ["a string", "another layout", "vanished"])
async def test_an_entry_whose_task_is_foreign_or_gone_is_settled_without_touching_the_key(
    queue: TaskQueue, client: AnyRedis, damage: str, how: str
) -> None:
    """Both ways of beginning an attempt (CLAIM: read and begin in one script; START: an entry
    already read) check the task key before writing: foreign data or a record of another layout
    parks the entry in the dead letters and leaves the key as it was; a vanished task's entry is
    only acknowledged (nothing to report)."""
    task = await submit(queue)
    key = task_key(queue, task.task_id)
    if damage == "a string":
        await client.delete(key)
        await client.set(key, "someone else's data")
    elif damage == "another layout":
        await client.hset(key, Field.LAYOUT, "99")
    else:
        await client.delete(key)
    before = await client.dump(key)
    if how == "claim":
        assert await queue.claim("c1", queue.shard_of(task.task_id)) is None
    else:
        assert await queue.start(await read_one(queue), "c1") is None
    letters = await queue.dead_letters()
    if damage == "vanished":
        assert letters == []
    else:
        assert [d.task_id for d in letters] == [task.task_id] and "corrupt" in letters[0].reason
    assert await client.dump(key) == before
    assert await _stream_state(client, queue) == (0, 0)


@pytest.mark.parametrize("named", ["no task id", "a task of another shard"])
async def test_a_claimed_entry_that_names_no_task_of_its_shard_goes_to_the_dead_letters(
    queue: TaskQueue, client: AnyRedis, named: str
) -> None:
    """CLAIM checks the task id of the entry it read (a task id, of this shard) before beginning
    anything: an entry naming something else is parked where an operator sees it, not dropped."""
    other_shard = next(t for t in iter(lambda: ids.random_id(shards=2), None) if ids.shard_of(t) == 1)
    task_id = "not-a-task-id" if named == "no task id" else other_shard
    await client.xadd(keys.queue("refunds", 0), {"t": task_id, "e": entry_record({})})
    assert await queue.claim("c1", 0) is None
    letters = await queue.dead_letters()
    assert len(letters) == 1 and "names no task" in letters[0].reason
    assert await _stream_state(client, queue) == (0, 0)


async def test_a_consumer_claims_task_after_task(single_queue: TaskQueue) -> None:
    """The claim memo answers only a re-sent claim (same start id): the consumer's next claim
    takes the next entry, while the first attempt still runs and after it ended."""
    queue = TaskQueue(single_queue.redis, domain="claims", config=TaskConfig(shards=1))
    await queue.ensure_groups()
    tasks = [await submit(queue, request_id=f"r{n}") for n in range(3)]
    first = await queue.claim("c1", 0)
    assert first is not None and first.task_id == tasks[0].task_id
    second = await queue.claim("c1", 0)  # the first attempt still holds its task
    assert second is not None and second.task_id == tasks[1].task_id
    await first.finish(Completed("done"))
    await second.finish(Completed("done"))
    third = await queue.claim("c1", 0)
    assert third is not None and third.task_id == tasks[2].task_id
    assert await queue.claim("c1", 0) is None


@pytest.mark.parametrize("ended", ["completed", "vanished"])
async def test_recovering_an_inline_run_whose_task_ended_drops_it(
    queue: TaskQueue, client: AnyRedis, ended: str
) -> None:
    """The sweeper's look at an outbox entry whose task is no longer queued or working (it ended,
    or expired): the entry leaves the outbox and nothing is queued."""
    task = await submit(queue)
    attempt = await claim(queue)
    await attempt.finish(Completed("done"))
    if ended == "vanished":
        await client.delete(task_key(queue, task.task_id))
    outbox = keys.outbox("refunds", queue.shard_of(task.task_id))
    await client.zadd(outbox, {task.task_id: 1})
    assert await TaskSweeper(queue, grace_s=0)._recover_inline(task.task_id, {}) == "dropped"
    assert await client.zscore(outbox, task.task_id) is None
    assert await _stream_state(client, queue) == (0, 0)


async def test_handing_back_an_entry_no_longer_pending_adds_nothing(
    queue: TaskQueue, client: AnyRedis
) -> None:
    """REQUEUE hands back only an entry still pending: once its task's attempt acknowledged it,
    a late hand-back adds no copy."""
    await submit(queue)
    entry = await read_one(queue, "c1")
    attempt = await queue.start(entry, "c1")
    assert attempt is not None
    await attempt.finish(Completed("done"))
    assert await queue.requeue(entry) is False
    assert await _stream_state(client, queue) == (0, 0)


async def test_an_entry_is_not_lost_when_the_dead_letters_hold_foreign_data(
    single_queue: TaskQueue, redis_client: aioredis.Redis
) -> None:
    """DEAD_LETTER checks the dead-letter key before acknowledging the entry: with foreign data
    there, parking an unreadable entry fails and the entry stays pending (an operator sees both)."""
    queue = TaskQueue(single_queue.redis, domain="parked", config=TaskConfig(shards=1))
    await queue.ensure_groups()
    await redis_client.set(keys.dead_letters("parked", 0), "someone else's data")
    await redis_client.xadd(keys.queue("parked", 0), {"e": b"not ours"})
    with pytest.raises(DataLoss):
        await queue.read("c1", 0, count=5)
    assert await redis_client.xlen(keys.queue("parked", 0)) == 1
    assert (await redis_client.xpending(keys.queue("parked", 0), queue.group))["pending"] == 1
    assert await redis_client.get(keys.dead_letters("parked", 0)) == b"someone else's data"


# -- cancel -----------------------------------------------------------------------------------


async def test_cancel_a_queued_task(queue: TaskQueue, client: AnyRedis) -> None:
    task = await submit(queue)
    canceled = await queue.store.cancel(task.task_id, tenant=TENANT, owner=OWNER, reason="wrong order")
    assert canceled.state == task_pb2.TASK_STATE_CANCELED and canceled.status_message == "wrong order"
    assert await queue.start(await read_one(queue), "c1") is None  # the stale entry is settled
    assert await _stream_state(client, queue) == (0, 0)
    with pytest.raises(FailedPrecondition) as caught:
        await queue.store.cancel(task.task_id, tenant=TENANT, owner=OWNER)
    assert caught.value.reason == "INVALID_STATE" and caught.value.metadata["state"] == "CANCELED"


async def test_a_running_task_notices_cancel_within_one_step(queue: TaskQueue) -> None:
    task = await submit(queue)
    attempt = await claim(queue)
    executed: list[int] = []

    async def execute(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        for index in range(checkpoint.next_index, 100):
            executed.append(index)
            if index == 1:
                await queue.store.cancel(task.task_id, tenant=TENANT, owner=OWNER, reason="stop it")
            if await checkpoint.save(task_pb2.Step(index=index)):
                return Canceled()
        return Completed("ran to the end")

    done = await run_attempt(attempt, execute)
    assert executed == [0, 1]
    assert done.state == task_pb2.TASK_STATE_CANCELED and done.status_message == "stop it"
    assert (await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)).state == done.state


async def test_cancel_of_someone_elses_task_is_not_found(queue: TaskQueue) -> None:
    task = await submit(queue)
    with pytest.raises(NotFound) as caught:
        await queue.store.cancel(task.task_id, tenant=TENANT, owner="mallory")
    assert caught.value.reason == "TASK_NOT_FOUND"


async def test_a_pause_stores_the_question_and_ends_the_attempt(queue: TaskQueue) -> None:
    """InputRequired: the task waits for its pending action with the attempt's usage; the status
    message is the outcome's, else the action's, else "waiting for input"; the attempt is over."""
    pending = task_pb2.PendingAction(action_id="act-1", kind=task_pb2.PENDING_ACTION_KIND_INPUT)
    for request_id, outcome, message in [
        ("r-1", InputRequired(pending, message="which order?"), "which order?"),
        ("r-2", InputRequired(task_pb2.PendingAction(action_id="a", message="approve?")), "approve?"),
        ("r-3", InputRequired(pending, usage=task_pb2.Usage(iterations=3)), "waiting for input"),
    ]:
        task = await submit(queue, request_id=request_id)
        attempt = await claim(queue)
        await attempt.checkpointer.save(task_pb2.Step(index=0))
        paused = await attempt.finish(outcome)
        assert attempt.finished and attempt.task is paused
        assert [s.index for s in paused.steps] == [0]
        stored = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
        assert stored.state == task_pb2.TASK_STATE_INPUT_REQUIRED
        assert (stored.status_message, stored.stop_reason) == (message, outcome.stop_reason)
        assert stored.pending_action == outcome.pending_action
        assert stored.usage.iterations == (3 if outcome.usage else 0)
        snapshot = await queue.store.snapshot(task.task_id)
        assert snapshot is not None and not snapshot.running and not snapshot.lease_alive
        events = await queue.events.read(task.task_id, tenant=TENANT, owner=OWNER)
        assert events[-1].status_update.state == task_pb2.TASK_STATE_INPUT_REQUIRED
        assert events[-1].event_id == paused.last_event_id


async def test_a_failed_attempt_records_why_and_frees_the_task(queue: TaskQueue) -> None:
    for request_id, error, recorded in [
        ("r-1", "model endpoint reset", "attempt 1 failed: model endpoint reset"),
        ("r-2", ConnectionError("reset by peer"), "attempt 1 failed: ConnectionError: reset by peer"),
        ("r-3", "x" * 2000, ("attempt 1 failed: " + "x" * 2000)[:1000]),  # bounded
    ]:
        task = await submit(queue, request_id=request_id)
        attempt = await claim(queue)
        await attempt.fail(error)
        assert attempt.finished
        snapshot = await queue.store.snapshot(task.task_id)
        assert snapshot is not None and snapshot.fails == 1 and snapshot.error == recorded
        assert not snapshot.lease_alive and not snapshot.running  # free for the retry
        stored = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
        assert stored.status_message == recorded


async def test_a_failed_outcome_stores_its_reason_and_error(queue: TaskQueue) -> None:
    """Failed: the message is the outcome's, else the error's, else "failed"; the error is kept."""
    error = task_pb2.TaskError(reason="TOOL_FAILED", message="the tool broke")
    for request_id, outcome, message in [
        ("r-1", Failed(task_pb2.STOP_REASON_TOOL_ERROR, error, message="gave up"), "gave up"),
        ("r-2", Failed(task_pb2.STOP_REASON_TOOL_ERROR, error), "the tool broke"),
        (
            "r-3",
            Failed(
                task_pb2.STOP_REASON_MAX_ITERATIONS, task_pb2.TaskError(), usage=task_pb2.Usage(iterations=12)
            ),
            "failed",
        ),
    ]:
        task = await submit(queue, request_id=request_id)
        attempt = await claim(queue)
        done = await attempt.finish(outcome)
        assert attempt.finished
        stored = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
        assert stored.usage.iterations == (12 if outcome.usage else 0)
        for view in (done, stored):
            assert (view.state, view.stop_reason, view.status_message) == (
                task_pb2.TASK_STATE_FAILED,
                outcome.stop_reason,
                message,
            )
            assert view.error == outcome.error and view.update_time.seconds > 0


async def test_an_executor_that_stops_on_its_own_ends_the_task_canceled(queue: TaskQueue) -> None:
    task = await submit(queue)
    attempt = await claim(queue)
    done = await attempt.finish(Canceled())  # no reason given, no cancel requested
    assert attempt.finished and (done.state, done.status_message) == (
        task_pb2.TASK_STATE_CANCELED,
        "canceled",
    )
    stored = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert (stored.state, stored.stop_reason) == (task_pb2.TASK_STATE_CANCELED, task_pb2.STOP_REASON_CANCELED)


async def test_a_cancel_seen_when_an_attempt_starts_ends_the_task_without_running_it(
    queue: TaskQueue,
) -> None:
    task = await submit(queue)
    first = await claim(queue, "a")
    await queue.store.cancel(task.task_id, tenant=TENANT, owner=OWNER, reason="stop it")
    await first.hand_back()  # e.g. the worker drained before it saw the cancel
    second = await claim(queue, "b")
    assert second.cancel
    ran: list[int] = []

    async def execute(task: task_pb2.Task, checkpoint: Checkpointer) -> TaskOutcome:
        ran.append(checkpoint.attempt)
        return Completed("should not run")

    done = await run_attempt(second, execute)
    assert ran == [] and done.state == task_pb2.TASK_STATE_CANCELED and done.status_message == "stop it"


# -- hand back --------------------------------------------------------------------------------


async def test_hand_back_lets_another_worker_resume_at_once(queue: TaskQueue) -> None:
    with TracerProvider().get_tracer("test").start_as_current_span("caller"):
        task = await submit(queue)
    attempt = await claim(queue, "draining")
    await attempt.checkpointer.save(task_pb2.Step(index=0, summary="before drain"))
    await attempt.hand_back()
    assert attempt.finished  # the worker's drain does not hand it back a second time
    stored = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert stored.status_message == "handed back by a stopping worker"
    assert stored.stop_reason == task_pb2.STOP_REASON_UNSPECIFIED  # a drain is no reason to stop
    entry = await read_one(queue, "other")  # a fresh entry, no idle timeout to wait for
    assert entry.carrier["traceparent"].split("-")[1] == task.trace_id  # still in the caller's trace
    resumed = await queue.start(entry, "other")
    assert resumed is not None
    assert resumed.number == 2 and [s.summary for s in resumed.checkpointer.steps] == ["before drain"]
    snapshot = await queue.store.snapshot(task.task_id)
    assert snapshot is not None and snapshot.fails == 0  # a hand-back is not a failure
    await resumed.finish(Completed("ok"))


# -- one step each: creation + enqueue, re-sent scripts ---------------------------------------


async def test_creation_and_its_queue_entry_are_one_step(queue: TaskQueue, client: AnyRedis) -> None:
    """The record, its event, its owner-index entry and its queue entry are written by one script:
    when one of them cannot be written, none is."""
    request = new_task(agent_service_pb2.SubmitTaskRequest(instruction="x", request_id="blocked"))
    task_id = ids.for_request(TENANT, OWNER, "refunds", "blocked", shards=queue.config.shards)
    stream = keys.queue("refunds", queue.shard_of(task_id))
    await client.delete(stream)
    await client.set(stream, "foreign data where the shard's stream belongs")
    with pytest.raises(DataLoss, match="queue key holds data"):
        await queue.submit(request, tenant=TENANT, owner=OWNER)
    assert await queue.store.snapshot(task_id) is None
    assert not await client.exists(events_key(queue, task_id))
    assert (await queue.store.list_tasks(tenant=TENANT, owner=OWNER)).tasks == []
    await client.delete(stream)
    await queue.ensure_groups()
    task = await queue.submit(request, tenant=TENANT, owner=OWNER)  # the retry creates it, queued
    assert task.task_id == task_id and (await read_one(queue)).task_id == task_id


async def test_a_creation_re_sent_after_a_lost_reply_applies_once(queue: TaskQueue, client: AnyRedis) -> None:
    sent: list[tuple[list[str], list[object]]] = []
    script = queue.store._commit

    async def recording(keys: list[str], args: list[object]) -> object:
        sent.append((keys, args))
        return await script(keys=keys, args=args)

    queue.store._commit = recording  # type: ignore[method-assign]
    task = await submit(queue)
    again = await script(keys=sent[0][0], args=sent[0][1])  # what redis-py does after a lost reply
    assert again[0] == b"ok"
    assert await _stream_state(client, queue) == (1, 0)
    assert await event_kinds(queue, task.task_id) == ["SUBMITTED"]


async def test_a_claim_re_sent_after_a_lost_reply_returns_the_same_task(
    queue: TaskQueue, client: AnyRedis
) -> None:
    for n in range(2):
        await submit(queue, request_id=f"r{n}")
    sent: list[tuple[list[str], list[object]]] = []
    script = queue.delivery._claim

    async def recording(keys: list[str], args: list[object]) -> object:
        sent.append((keys, args))
        return await script(keys=keys, args=args)

    queue.delivery._claim = recording  # type: ignore[method-assign]
    attempt = None
    for shard in queue.shards():
        attempt = attempt or await queue.claim("c1", shard)
    assert attempt is not None
    sent = [call for call in sent if call[0][0] == keys.queue("refunds", queue.shard_of(attempt.task_id))]
    first = await script(keys=sent[-1][0], args=sent[-1][1])
    again = await script(keys=sent[-1][0], args=sent[-1][1])
    assert first[0] == again[0] == b"started" and first[1] == again[1] and first[2] == again[2]
    assert _s(first[2]) == attempt.task_id
    assert await event_kinds(queue, attempt.task_id) == ["SUBMITTED", "WORKING"]
    assert (await _stream_state(client, queue))[1] == 1  # one entry delivered, not two
    await attempt.finish(Completed("ok"))


async def test_the_sweeper_drops_outbox_members_that_are_no_tasks(queue: TaskQueue, client: AnyRedis) -> None:
    ghost = ids.random_id(shards=queue.config.shards)
    shard = queue.shard_of(ghost)
    await client.zadd(keys.outbox("refunds", shard), {ghost: 1})
    report = await TaskSweeper(queue, grace_s=0).sweep()
    assert report.dropped == 1 and await client.zcard(keys.outbox("refunds", shard)) == 0


# -- statistics and traces --------------------------------------------------------------------


async def test_stats_report_depth_pending_and_lag(queue: TaskQueue) -> None:
    for n in range(3):
        await submit(queue, request_id=f"r{n}")
    await asyncio.sleep(0.05)
    stats = await queue.stats()
    assert stats.depth == 3 and stats.pending == 0 and stats.lag_s > 0
    assert _metric("agentmesh_task_queue_depth", domain="refunds") == 3
    assert _metric("agentmesh_task_queue_lag_seconds", domain="refunds") == stats.lag_s
    attempt = await claim(queue)
    stats = await queue.stats()
    assert stats.depth == 2 and stats.pending == 1
    await attempt.finish(Completed("ok"))


async def test_trace_context_travels_with_the_task(queue: TaskQueue) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("caller") as span:
        task = await submit(queue)
    caller = span.get_span_context()
    assert task.trace_id == f"{caller.trace_id:032x}"
    entry = await read_one(queue)
    assert entry.carrier["traceparent"].split("-")[1] == task.trace_id
    attempt = await queue.start(entry, "c1")
    assert attempt is not None
    assert trace.get_current_span(attempt.trace_context).get_span_context().trace_id == caller.trace_id
    # The entry names the caller's span as the parent (not merely some context: extract never
    # returns None, so the old `is not None` could not fail).
    carried = trace.get_current_span(propagate.extract(entry.carrier)).get_span_context()
    assert (carried.trace_id, carried.span_id, carried.is_remote) == (caller.trace_id, caller.span_id, True)
    await attempt.finish(Completed("ok"))


async def test_field_names_are_stable(queue: TaskQueue, client: AnyRedis) -> None:
    """The hash layout is on disk: scripts and readers must agree on these names."""
    task = await submit(queue)
    stored = await client.hgetall(task_key(queue, task.task_id))
    for name in (Field.LAYOUT, Field.RECORD, Field.STATE, Field.REV, Field.FINGERPRINT, Field.TRACE):
        assert name.encode() in stored
    attempt = await claim(queue)
    await attempt.checkpointer.save(task_pb2.Step(index=0))
    stored = await client.hgetall(task_key(queue, task.task_id))
    for name in (Field.LEASE, Field.LEASE_UNTIL, Field.RUNNING, step_field(0)):
        assert name.encode() in stored
    await attempt.finish(Completed("ok"))


async def test_an_unreadable_entry_parked_by_two_consumers_is_one_dead_letter(
    queue: TaskQueue, client: AnyRedis
) -> None:
    """DEAD_LETTER moves an entry only while it is pending: when a consumer stalls on an
    unreadable entry, another takes it over (XCLAIM, as the reclaim does) and parks it, the first
    one's late park finds it acknowledged and adds no second dead letter."""
    await queue.ensure_groups()
    stream = keys.queue(queue.domain, 0)
    entry_id = _s(await client.xadd(stream, {"t": "not-a-task-id", "e": b"\xff garbage"}))
    read = await client.xreadgroup(queue.group, "c1", {stream: ">"}, count=1)
    assert _s(read[0][1][0][0]) == entry_id
    taken = await client.xclaim(stream, queue.group, "c2", 0, [entry_id])
    assert [_s(e[0]) for e in taken] == [entry_id]
    await queue.letters.park_unreadable(0, entry_id, b"\xff garbage")  # c2
    await queue.letters.park_unreadable(0, entry_id, b"\xff garbage")  # c1, late
    letters = await queue.dead_letters()
    assert len(letters) == 1, [(d.entry_id, d.reason) for d in letters]
    assert await _stream_state(client, queue) == (0, 0)


async def test_recovering_a_run_no_longer_in_the_outbox_queues_nothing(
    queue: TaskQueue, client: AnyRedis
) -> None:
    """RECOVER acts only on a run still registered in the outbox: one that finished or was handed
    over meanwhile (another sweeper got there first) is 'gone', and no second queue entry appears."""
    task = await submit(queue)  # queued, never registered as an inline run
    before = await _stream_state(client, queue)
    assert await TaskSweeper(queue, grace_s=0)._recover_inline(task.task_id, {}) == "gone"
    assert await _stream_state(client, queue) == before
