"""TaskStore against a real server (and the cluster for the listings): visibility, listings,
approvals, expiry, retention, faults."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from agentmesh.kit.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from agentmesh.v1 import task_pb2
from memory import connection, keys
from memory.connection import AnyRedis, create_redis
from memory.tasks import ids
from memory.tasks.execution import Completed, InputRequired, LeaseLost, run_attempt
from memory.tasks.queue import TaskQueue
from memory.tasks.records import Field, Patch, timestamp
from memory.tasks.store import TaskConfig
from memory.tasks.sweeper import TaskSweeper
from tests.support.task_helpers import OWNER, TENANT, claim, events_key, steps_executor, submit, task_key
from tests.support.waiting import until

pytestmark = pytest.mark.integration

APPROVAL = task_pb2.PendingAction(
    action_id="act-1",
    kind=task_pb2.PENDING_ACTION_KIND_APPROVAL,
    tool_name="payments_refund",
    arguments_json='{"amount": 5000}',
    message="refund above 1000 EUR needs approval",
    required_scope="refunds:approve",
)


async def _paused(
    queue: TaskQueue, request_id: str = "req-1", pending: task_pb2.PendingAction = APPROVAL
) -> str:
    task = await submit(queue, request_id=request_id)
    attempt = await claim(queue)
    await attempt.checkpointer.save(task_pb2.Step(index=0, summary="looked up the order"))
    paused = await attempt.finish(InputRequired(pending))
    assert paused.state == task_pb2.TASK_STATE_INPUT_REQUIRED
    return task.task_id


# -- visibility -------------------------------------------------------------------------------


async def test_only_the_owner_sees_a_task(queue: TaskQueue) -> None:
    task = await submit(queue)
    assert (await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)).task_id == task.task_id
    for tenant, owner in [(TENANT, "mallory"), ("other-tenant", OWNER)]:
        with pytest.raises(NotFound) as caught:
            await queue.store.get(task.task_id, tenant=tenant, owner=owner)
        assert caught.value.reason == "TASK_NOT_FOUND"
        assert caught.value.message == f"task {task.task_id!r} not found"  # same answer as for no task
    with pytest.raises(NotFound):
        await queue.store.get("no-such-task", tenant=TENANT, owner=OWNER)
    other_domain = TaskQueue(queue.redis, domain="fulfillment", config=queue.config)
    with pytest.raises(NotFound):
        await other_domain.store.get(task.task_id, tenant=TENANT, owner=OWNER)


async def test_views(queue: TaskQueue) -> None:
    task = await submit(queue)
    await run_attempt(await claim(queue), steps_executor(2))
    full = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    basic = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER, view=task_pb2.TASK_VIEW_BASIC)
    assert len(full.steps) == 2 and len(basic.steps) == 0
    assert basic.final_answer == full.final_answer


# -- listings ---------------------------------------------------------------------------------


async def test_list_pages_newest_first(queue: TaskQueue) -> None:
    ids = []
    for n in range(7):
        ids.append((await submit(queue, request_id=f"r{n}")).task_id)
        await asyncio.sleep(0.002)  # distinct creation milliseconds
    await submit(queue, request_id="theirs", owner="bob")
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await queue.store.list_tasks(tenant=TENANT, owner=OWNER, page_size=3, page_token=token)
        seen += [t.task_id for t in page.tasks]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids)) and pages == 3


async def test_list_filters_by_state_and_session(queue: TaskQueue) -> None:
    done = await submit(queue, request_id="a", session_id="s1")
    await run_attempt(await claim(queue), steps_executor(1))
    queued = await submit(queue, request_id="b", session_id="s1")
    other_session = await submit(queue, request_id="c", session_id="s2")
    by_state = await queue.store.list_tasks(
        tenant=TENANT, owner=OWNER, states=[task_pb2.TASK_STATE_SUBMITTED]
    )
    assert {t.task_id for t in by_state.tasks} == {queued.task_id, other_session.task_id}
    by_session = await queue.store.list_tasks(tenant=TENANT, owner=OWNER, session_id="s1")
    assert [t.task_id for t in by_session.tasks] == [queued.task_id, done.task_id]
    both = await queue.store.list_tasks(
        tenant=TENANT, owner=OWNER, session_id="s1", states=[task_pb2.TASK_STATE_COMPLETED]
    )
    assert [t.task_id for t in both.tasks] == [done.task_id]
    assert all(not t.steps for t in by_session.tasks)  # BASIC by default
    full = await queue.store.list_tasks(
        tenant=TENANT, owner=OWNER, session_id="s1", view=task_pb2.TASK_VIEW_FULL
    )
    assert [len(t.steps) for t in full.tasks] == [0, 1]


async def test_page_tokens_are_checked(queue: TaskQueue) -> None:
    for n in range(3):
        await submit(queue, request_id=f"r{n}")
    page = await queue.store.list_tasks(tenant=TENANT, owner=OWNER, page_size=1)
    assert page.next_page_token
    with pytest.raises(InvalidArgument) as caught:
        await queue.store.list_tasks(tenant=TENANT, owner=OWNER, page_token="garbage")
    assert caught.value.violations[0].field == "page_token"
    with pytest.raises(InvalidArgument, match="different request"):
        await queue.store.list_tasks(
            tenant=TENANT, owner=OWNER, page_token=page.next_page_token, states=[task_pb2.TASK_STATE_WORKING]
        )
    with pytest.raises(InvalidArgument):
        await queue.store.list_tasks(tenant=TENANT, owner=OWNER, page_size=-1)


async def test_expired_tasks_drop_out_of_the_listing(queue: TaskQueue, client: AnyRedis) -> None:
    gone = await submit(queue, request_id="gone")
    kept = await submit(queue, request_id="kept")
    await client.delete(task_key(queue, gone.task_id))  # what the retention TTL does
    page = await queue.store.list_tasks(tenant=TENANT, owner=OWNER)
    assert [t.task_id for t in page.tasks] == [kept.task_id]
    indexed = [await client.zcard(keys.owner_tasks("refunds", s, TENANT, OWNER)) for s in queue.shards()]
    assert sum(indexed) == 1  # cleaned up lazily


async def test_an_owner_index_expires_and_is_renewed_only_past_half_its_time(
    single_queue: TaskQueue, redis_client: aioredis.Redis
) -> None:
    """The owner's index of a shard lives `index_ttl_s` after its last renewal (an owner who stops
    submitting leaves no index behind); a creation renews it only when less than half is left."""
    queue = TaskQueue(single_queue.redis, domain="indexed", config=TaskConfig(shards=1))  # one index
    await submit(queue, request_id="a")
    index = keys.owner_tasks(queue.domain, 0, TENANT, OWNER)
    full = int(queue.config.index_ttl_s * 1000)
    assert full // 2 < await redis_client.pttl(index) <= full
    await redis_client.pexpire(index, full // 2 + 60_000)  # more than half left: no renewal
    await submit(queue, request_id="b")
    assert await redis_client.pttl(index) <= full // 2 + 60_000
    await redis_client.pexpire(index, full // 2 - 60_000)  # less than half left: renewed
    await submit(queue, request_id="c")
    assert full // 2 < await redis_client.pttl(index) <= full


async def test_a_sparse_filter_returns_short_pages_with_a_token(single_queue: TaskQueue) -> None:
    queue = single_queue
    target = await submit(queue, request_id="needle", session_id="rare")
    for n in range(260):
        await submit(queue, request_id=f"hay{n}")
    found: list[str] = []
    token = ""
    for _ in range(10):
        page = await queue.store.list_tasks(
            tenant=TENANT, owner=OWNER, session_id="rare", page_size=5, page_token=token
        )
        found += [t.task_id for t in page.tasks]
        token = page.next_page_token
        if not token:
            break
    assert found == [target.task_id]


# -- approvals --------------------------------------------------------------------------------


async def test_approvers_see_tasks_awaiting_approval(queue: TaskQueue) -> None:
    task_id = await _paused(queue)
    await submit(queue, request_id="not-waiting")
    page = await queue.store.list_awaiting_approval(tenant=TENANT)
    assert [t.task_id for t in page.tasks] == [task_id]
    assert page.tasks[0].pending_action.tool_name == "payments_refund"
    seen = await queue.store.get_awaiting_approval(task_id, tenant=TENANT)
    assert seen.owner == OWNER and [s.summary for s in seen.steps] == ["looked up the order"]
    assert (await queue.store.list_awaiting_approval(tenant="other")).tasks == []
    with pytest.raises(NotFound):
        await queue.store.get_awaiting_approval(task_id, tenant="other")


async def test_approver_resume_records_the_decision_and_requeues(queue: TaskQueue) -> None:
    task_id = await _paused(queue)
    request = task_pb2.PendingActionAnswer(
        task_id=task_id,
        action_id="act-1",
        decision=task_pb2.PendingActionAnswer.Decision(approve=True, reason="customer is known"),
        request_id="resume-1",
    )
    resumed = await queue.resume_as_approver(request, tenant=TENANT, approver="carol")
    assert resumed.state == task_pb2.TASK_STATE_WORKING and "approved by carol" in resumed.status_message
    assert not resumed.HasField("pending_action")
    assert (await queue.store.list_awaiting_approval(tenant=TENANT)).tasks == []
    assert (
        await queue.resume_as_approver(request, tenant=TENANT, approver="carol")
    ).task_id == task_id  # replay
    with pytest.raises(NotFound):  # no longer awaiting approval: an approver sees nothing
        await queue.store.get_awaiting_approval(task_id, tenant=TENANT)
    events = await queue.events.read(task_id, tenant=TENANT, owner=OWNER)
    approvals = [e.approval for e in events if e.HasField("approval")]
    assert [(a.action_id, a.approved, a.approver) for a in approvals] == [("act-1", True, "carol")]

    attempt = await claim(queue)
    resumption = attempt.checkpointer.resumption
    assert resumption is not None and resumption.approver == "carol"
    assert resumption.action.tool_name == "payments_refund" and resumption.answer.decision.approve
    assert [s.index for s in attempt.checkpointer.steps] == [0]
    await attempt.checkpointer.save(task_pb2.Step(index=1, summary="refunded"))
    assert attempt.checkpointer.resumption is None
    done = await attempt.finish(Completed("refunded 5000 EUR"))
    assert done.state == task_pb2.TASK_STATE_COMPLETED


async def test_owner_resume_with_input(queue: TaskQueue) -> None:
    question = task_pb2.PendingAction(
        action_id="q-1", kind=task_pb2.PENDING_ACTION_KIND_INPUT, message="which order?"
    )
    task_id = await _paused(queue, pending=question)
    assert (await queue.store.list_awaiting_approval(tenant=TENANT)).tasks == []  # input is not an approval
    with pytest.raises(InvalidArgument, match="input"):
        await queue.resume(
            task_pb2.PendingActionAnswer(
                task_id=task_id, action_id="q-1", decision=task_pb2.PendingActionAnswer.Decision(approve=True)
            ),
            tenant=TENANT,
            owner=OWNER,
        )
    with pytest.raises(FailedPrecondition) as caught:
        await queue.resume(
            task_pb2.PendingActionAnswer(
                task_id=task_id,
                action_id="q-0",
                input=task_pb2.PendingActionAnswer.Input(parts=[task_pb2.Part(text="ORD-1")]),
            ),
            tenant=TENANT,
            owner=OWNER,
        )
    assert caught.value.reason == "STALE_ACTION"
    answer = task_pb2.PendingActionAnswer(
        task_id=task_id,
        action_id="q-1",
        input=task_pb2.PendingActionAnswer.Input(parts=[task_pb2.Part(text="ORD-1")]),
    )
    resumed = await queue.resume(answer, tenant=TENANT, owner=OWNER)
    assert resumed.state == task_pb2.TASK_STATE_WORKING
    with pytest.raises(FailedPrecondition) as again:  # no request id: a second answer is refused
        await queue.resume(answer, tenant=TENANT, owner=OWNER)
    assert again.value.reason == "INVALID_STATE"
    attempt = await claim(queue)
    assert attempt.checkpointer.resumption is not None
    assert attempt.checkpointer.resumption.answer.input.parts[0].text == "ORD-1"
    await attempt.finish(Completed("ok"))


async def test_resume_is_checked(queue: TaskQueue) -> None:
    task = await submit(queue)
    with pytest.raises(InvalidArgument) as caught:
        await queue.resume(task_pb2.PendingActionAnswer(task_id=task.task_id), tenant=TENANT, owner=OWNER)
    assert {v.field for v in caught.value.violations} == {"action_id", "decision"}
    decision = task_pb2.PendingActionAnswer.Decision(approve=True)
    request = task_pb2.PendingActionAnswer(task_id=task.task_id, action_id="a", decision=decision)
    with pytest.raises(FailedPrecondition) as state:
        await queue.resume(request, tenant=TENANT, owner=OWNER)
    assert state.value.reason == "INVALID_STATE" and state.value.metadata["state"] == "SUBMITTED"
    with pytest.raises(NotFound):
        await queue.resume(request, tenant=TENANT, owner="mallory")


async def test_expired_pending_actions_fail_the_task(queue: TaskQueue) -> None:
    pending = task_pb2.PendingAction()
    pending.CopyFrom(APPROVAL)
    pending.expire_time.CopyFrom(timestamp(int(time.time() * 1000) - 1))  # expired: no waiting for it
    task_id = await _paused(queue, pending=pending)
    request = task_pb2.PendingActionAnswer(
        task_id=task_id, action_id="act-1", decision=task_pb2.PendingActionAnswer.Decision(approve=True)
    )
    with pytest.raises(FailedPrecondition) as caught:
        await queue.resume(request, tenant=TENANT, owner=OWNER)
    assert caught.value.reason == "STALE_ACTION"
    task = await queue.store.get(task_id, tenant=TENANT, owner=OWNER)
    assert task.state == task_pb2.TASK_STATE_FAILED and task.stop_reason == task_pb2.STOP_REASON_EXPIRED


async def test_the_sweeper_expires_pending_actions(queue: TaskQueue) -> None:
    pending = task_pb2.PendingAction()
    pending.CopyFrom(APPROVAL)
    expires = int(time.time() * 1000) + 60_000
    pending.expire_time.CopyFrom(timestamp(expires))
    task_id = await _paused(queue, pending=pending)
    clock = expires - 1  # a controllable clock: the sweep sees the expiry pass without waiting for it
    sweeper = TaskSweeper(queue, grace_s=0, clock=lambda: clock)
    assert (await sweeper.sweep()).expired == 0
    clock = expires
    assert (await sweeper.sweep()).expired == 1
    task = await queue.store.get(task_id, tenant=TENANT, owner=OWNER)
    assert task.stop_reason == task_pb2.STOP_REASON_EXPIRED and "expired" in task.status_message
    assert (await queue.store.list_awaiting_approval(tenant=TENANT)).tasks == []


# -- retention --------------------------------------------------------------------------------


async def test_terminal_tasks_expire_after_the_retention(single_queue: TaskQueue, redis_url: str) -> None:
    client = create_redis(redis_url)
    queue = TaskQueue(client, domain="refunds", config=TaskConfig(shards=1, retention_s=0.3))
    await queue.ensure_groups()
    task = await submit(queue)
    await run_attempt(await claim(queue), steps_executor(1))
    await asyncio.sleep(0.5)
    with pytest.raises(NotFound):
        await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    for key in (task_key(queue, task.task_id), events_key(queue, task.task_id)):
        assert not await client.exists(key)
    await client.aclose()


# -- faults -----------------------------------------------------------------------------------


async def test_foreign_data_under_a_task_key_is_data_loss(
    single_queue: TaskQueue, redis_client: aioredis.Redis
) -> None:
    foreign, string = (ids.random_id(shards=single_queue.config.shards) for _ in range(2))
    await redis_client.hset(task_key(single_queue, foreign), mapping={"name": "someone else's hash"})
    with pytest.raises(DataLoss, match="layout"):
        await single_queue.store.get(foreign, tenant=TENANT, owner=OWNER)
    await redis_client.set(task_key(single_queue, string), "a string")
    with pytest.raises(DataLoss, match="foreign data"):
        await single_queue.store.get(string, tenant=TENANT, owner=OWNER)
    with pytest.raises(NotFound):  # not a task id: no key is even looked at
        await single_queue.store.get("t-foreign", tenant=TENANT, owner=OWNER)
    task = await submit(single_queue)
    await redis_client.hset(task_key(single_queue, task.task_id), "rec", b"\x00garbage")
    with pytest.raises(DataLoss, match="not an agentmesh record"):
        await single_queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)


async def test_no_half_written_task_when_a_write_is_refused(
    single_queue: TaskQueue, redis_client: aioredis.Redis
) -> None:
    """Scripts are not rolled back on error: foreign data is refused before anything is written."""
    task = await submit(single_queue)
    attempt = await claim(single_queue)
    record = task_key(single_queue, task.task_id)
    before = await redis_client.hgetall(record)
    await redis_client.delete(events_key(single_queue, task.task_id))
    await redis_client.set(events_key(single_queue, task.task_id), "not a stream")
    with pytest.raises(DataLoss, match="events key holds data this release cannot read"):
        await attempt.checkpointer.save(task_pb2.Step(index=0))
    assert await redis_client.hgetall(record) == before  # no step, no lease renewal, nothing


@pytest.mark.parametrize("which", ["outbox", "dead letters", "owner index"])
async def test_foreign_data_under_a_queue_key_is_refused_before_the_first_write(
    single_queue: TaskQueue, redis_client: aioredis.Redis, which: str
) -> None:
    """The same for the keys a change writes after the task: the outbox, the dead letters, the
    owner's index. Their types are checked first, so the refused change leaves the task, its
    events and the queue as they were."""
    task = await submit(single_queue)
    snapshot = await single_queue.store.snapshot(task.task_id)
    assert snapshot is not None
    shard = single_queue.shard_of(task.task_id)
    domain = single_queue.domain
    foreign_key, op = {
        "outbox": (keys.outbox(domain, shard), {"outbox": "add"}),
        "dead letters": (keys.dead_letters(domain, shard), {"dead_letter": b"a dead letter"}),
        "owner index": (keys.owner_tasks(domain, shard, TENANT, OWNER), {"index": (TENANT, OWNER, "m")}),
    }[which]
    await redis_client.delete(foreign_key)
    await redis_client.set(foreign_key, "someone else's data")
    record = await redis_client.hgetall(task_key(single_queue, task.task_id))
    events = await redis_client.xlen(events_key(single_queue, task.task_id))
    patch = Patch(
        guard="rev",
        guard_value=str(snapshot.rev),
        fields={Field.UPDATED: 1},
        events=[task_pb2.TaskEvent(task_id=task.task_id)],
        **op,  # type: ignore[arg-type]
    )
    with pytest.raises(DataLoss, match=f"its {which} key holds data"):
        await single_queue.store.commit(task.task_id, patch)
    assert await redis_client.hgetall(task_key(single_queue, task.task_id)) == record
    assert await redis_client.xlen(events_key(single_queue, task.task_id)) == events
    assert await redis_client.get(foreign_key) == b"someone else's data"


async def test_a_record_of_another_layout_is_never_written_over(
    single_queue: TaskQueue, redis_client: aioredis.Redis
) -> None:
    """A newer release's record (another layout) refuses the fenced write of an old attempt: the
    script checks the layout before its first write, so nothing of the record changes."""
    task = await submit(single_queue)
    attempt = await claim(single_queue)
    record = task_key(single_queue, task.task_id)
    await redis_client.hset(record, Field.LAYOUT, "99")
    before = await redis_client.hgetall(record)
    with pytest.raises(DataLoss):
        await attempt.checkpointer.save(task_pb2.Step(index=0))
    assert await redis_client.hgetall(record) == before


async def test_redis_down_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentmesh.kit.net import free_port

    monkeypatch.setattr(connection, "RETRIES", 1)
    client = create_redis(f"redis://127.0.0.1:{free_port()}/0")
    queue = TaskQueue(client, domain="refunds")
    with pytest.raises(Unavailable) as caught:
        await queue.store.get(ids.random_id(shards=4), tenant=TENANT, owner=OWNER)
    assert caught.value.reason == "DEPENDENCY_UNAVAILABLE" and caught.value.retry_after
    with pytest.raises(Unavailable):
        await submit(queue)
    await client.aclose()


async def test_an_attempt_that_finished_announces_nothing(
    single_queue: TaskQueue, redis_client: aioredis.Redis
) -> None:
    """`started` is fenced like every write of an attempt: once it no longer owns the task,
    watchers see no step announced by it."""
    task = await submit(single_queue)
    attempt = await claim(single_queue)
    await attempt.finish(Completed("done"))
    events = events_key(single_queue, task.task_id)
    before = await redis_client.xlen(events)
    with pytest.raises(LeaseLost):
        await attempt.checkpointer.started(task_pb2.Step(index=0))
    assert await redis_client.xlen(events) == before


async def test_a_failed_heartbeat_is_not_fatal_the_next_one_still_renews_the_lease(queue: TaskQueue) -> None:
    """A heartbeat that fails (Redis still unavailable after the write's retries) only costs that
    beat: the next one is scheduled all the same and renews the lease, and the attempt goes on."""
    task = await submit(queue)
    attempt = await claim(queue, "worker-a")
    heartbeat = attempt.heartbeat
    tries: list[str] = []

    async def first_one_fails() -> bool:
        if not tries:
            tries.append("failed")
            raise Unavailable("redis is down")
        canceled = await heartbeat()
        tries.append("renewed")
        return canceled

    attempt.heartbeat = first_one_fails  # type: ignore[method-assign]
    attempt.start_heartbeats()
    await until(lambda: "renewed" in tries, what="a heartbeat after the failed one", timeout=5)
    assert tries[:2] == ["failed", "renewed"]
    await attempt.stop_heartbeats()
    done = await attempt.finish(Completed("done"))
    assert done.state == task_pb2.TASK_STATE_COMPLETED and done.task_id == task.task_id


async def test_an_attempt_that_ends_cancels_its_heartbeat_in_flight_before_returning(
    queue: TaskQueue,
) -> None:
    """Nothing of an attempt keeps running after its outcome is recorded: a heartbeat on its way to
    Redis is canceled, and `finish` returns only once that beat has stopped."""
    await submit(queue)
    attempt = await claim(queue)
    beating, never = asyncio.Event(), asyncio.Event()
    canceled: list[bool] = []

    async def stuck() -> bool:
        beating.set()
        try:
            await never.wait()
        except asyncio.CancelledError:
            canceled.append(True)
            raise
        return False

    attempt.heartbeat = stuck  # type: ignore[method-assign]
    attempt.start_heartbeats()
    await asyncio.wait_for(beating.wait(), timeout=15)  # the first beat is in flight
    done = await attempt.finish(Completed("done"))
    assert done.state == task_pb2.TASK_STATE_COMPLETED
    assert canceled == [True]


async def test_a_pause_asked_for_after_a_cancel_ends_the_task_canceled_with_its_usage(
    queue: TaskQueue,
) -> None:
    """An executor that asks for input once a cancel was requested is not paused: the task ends
    canceled with the cancel's reason, and the usage the executor reported is kept (spent all the
    same)."""
    task = await submit(queue)
    attempt = await claim(queue)
    await queue.store.cancel(task.task_id, tenant=TENANT, owner=OWNER, reason="stop it")
    assert await attempt.checkpointer.started(task_pb2.Step(index=0))  # the attempt learns of it
    done = await attempt.finish(InputRequired(APPROVAL, usage=task_pb2.Usage(total_tokens=42)))
    stored = await queue.store.get(task.task_id, tenant=TENANT, owner=OWNER)
    assert done.state == stored.state == task_pb2.TASK_STATE_CANCELED
    assert stored.status_message == "stop it" and not stored.HasField("pending_action")
    assert done.usage.total_tokens == stored.usage.total_tokens == 42


async def test_a_change_based_on_an_old_revision_is_refused(
    single_queue: TaskQueue, redis_client: aioredis.Redis
) -> None:
    """The `rev` guard: two API-side changes read the same revision; the second one is stale."""
    task = await submit(single_queue)
    snapshot = await single_queue.store.snapshot(task.task_id)
    assert snapshot is not None
    first = await single_queue.store.commit(
        task.task_id, Patch(guard="rev", guard_value=str(snapshot.rev), fields={Field.UPDATED: 1})
    )
    assert first.ok
    record = await redis_client.hgetall(task_key(single_queue, task.task_id))
    second = await single_queue.store.commit(
        task.task_id, Patch(guard="rev", guard_value=str(snapshot.rev), fields={Field.UPDATED: 2})
    )
    assert second.status == "stale"
    assert await redis_client.hgetall(task_key(single_queue, task.task_id)) == record
