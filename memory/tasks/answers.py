"""Answers: ResumeTask — the owner's input or an approver's decision on a paused task.

A task waiting in INPUT_REQUIRED is answered once: the answer is checked against its pending
action (the action id, input or decision, its expiry), recorded with the task (a repeated
ResumeTask with the same request id and answer is a replay), and the task goes back to WORKING
and is queued again — the answer and the new queue entry in one script. An approver (the caller
checked its `<domain>:approve` scope) sees only the tasks of its tenant and domain that await
an approval, and is recorded with the decision.
"""

from __future__ import annotations

from collections.abc import Callable

from agentmesh.kit.errors import FailedPrecondition, FieldViolation, InvalidArgument, echo
from agentmesh.v1 import errors_pb2, task_pb2
from memory.tasks import states
from memory.tasks.entries import entry_record
from memory.tasks.events import approval_event, status_event
from memory.tasks.records import (
    APPROVAL_KINDS,
    Field,
    Patch,
    Resumption,
    TaskSnapshot,
    millis_of,
    now_ms,
    resumption_fields,
    set_millis,
)
from memory.tasks.store import CAS_RETRIES, TaskStore, not_found, refuse_state
from memory.tasks.trace_context import current_carrier


class TaskAnswers:
    """Answers the paused tasks of one domain (see the module docstring)."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self.domain = store.domain
        self.config = store.config

    async def resume(self, answer: task_pb2.PendingActionAnswer, *, tenant: str, owner: str) -> task_pb2.Task:
        """Answer the owner's paused task (INPUT_REQUIRED -> WORKING, queued again)."""
        return await self._resume(answer, approver="", visible=lambda t: self.store.visible(t, tenant, owner))

    async def resume_as_approver(
        self, answer: task_pb2.PendingActionAnswer, *, tenant: str, approver: str
    ) -> task_pb2.Task:
        """Answer a task awaiting approval in this domain and tenant (the caller checked the
        approver's `<domain>:approve` scope); the approver is recorded with the decision."""

        def visible(task: task_pb2.Task) -> bool:
            return task.tenant == tenant and task.domain == self.domain

        return await self._resume(answer, approver=approver, visible=visible)

    async def _resume(
        self,
        answer: task_pb2.PendingActionAnswer,
        *,
        approver: str,
        visible: Callable[[task_pb2.Task], bool],
    ) -> task_pb2.Task:
        _check_resume_request(answer)
        task_id = answer.task_id
        for _ in range(CAS_RETRIES):
            snapshot = await self.store.snapshot(task_id)
            if snapshot is None or not visible(snapshot.task):
                raise not_found(task_id)
            task = snapshot.task
            if _replayed_resume(snapshot, answer, approver):
                return task
            if approver and not (
                task.state == states.INPUT_REQUIRED and task.pending_action.kind in APPROVAL_KINDS
            ):
                raise not_found(task_id)  # approvers see only tasks that await an approval
            if task.state != states.INPUT_REQUIRED:
                raise refuse_state(task, "only a task waiting for input or approval can be resumed")
            pending = task.pending_action
            _check_answer(task, answer)
            if pending.HasField("expire_time") and millis_of(pending.expire_time) <= now_ms():
                await self.store.expire_pending(task_id)
                raise _stale(task, f"pending action {pending.action_id} expired")
            resumed = _resumed(task, answer, approver or task.owner)
            events: list[task_pb2.TaskEvent] = []
            if answer.HasField("decision"):
                events.append(
                    approval_event(
                        task_pb2.ApprovalRecord(
                            action_id=pending.action_id,
                            approved=answer.decision.approve,
                            approver=approver or task.owner,
                            reason=answer.decision.reason,
                        )
                    )
                )
            events.append(status_event(resumed))
            fields = {
                Field.RETENTION: max(snapshot.retention_ms, self.config.retention_ms),
                **resumption_fields(Resumption(action=pending, answer=answer, approver=approver)),
            }
            # The answer and the new queue entry in one script: a resumed task is always queued.
            result = await self.store.commit(
                task_id,
                Patch(
                    guard="rev",
                    guard_value=str(snapshot.rev),
                    task=resumed,
                    fields=fields,
                    events=events,
                    enqueue=entry_record(current_carrier() or snapshot.carrier),
                ),
            )
            if result.status == "stale":
                continue
            if not result.ok:
                raise not_found(task_id)
            resumed.last_event_id = result.last_event_id
            await self.store.forget_pause(task)
            return resumed
        raise FailedPrecondition(
            f"task {task_id} changed concurrently too often; retry",
            reason=errors_pb2.ERROR_REASON_INVALID_STATE,
            metadata={"task_id": task_id},
        )


def _check_resume_request(answer: task_pb2.PendingActionAnswer) -> None:
    violations = []
    if not answer.task_id:
        violations.append(FieldViolation("task_id", "is required", "REQUIRED"))
    if not answer.action_id:
        violations.append(FieldViolation("action_id", "is required", "REQUIRED"))
    if answer.WhichOneof("answer") is None:
        violations.append(FieldViolation("decision", "an answer (decision or input) is required", "REQUIRED"))
    if violations:
        raise InvalidArgument("invalid answer to a pending action", violations=violations)


def _check_answer(task: task_pb2.Task, answer: task_pb2.PendingActionAnswer) -> None:
    pending = task.pending_action
    if answer.action_id != pending.action_id:
        raise _stale(task, f"action {echo(answer.action_id)} is not the pending action")
    if pending.kind == task_pb2.PENDING_ACTION_KIND_INPUT:
        if not answer.HasField("input") or not answer.input.parts:
            raise InvalidArgument(
                "this task waits for input: send `input` with at least one part",
                violations=[FieldViolation("input", "required for a pending input request", "REQUIRED")],
            )
    elif not answer.HasField("decision"):
        raise InvalidArgument(
            "this task waits for a decision: send `decision`",
            violations=[FieldViolation("decision", "required for a pending approval", "REQUIRED")],
        )


def _stale(task: task_pb2.Task, why: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"task {task.task_id}: {why}",
        reason=errors_pb2.ERROR_REASON_STALE_ACTION,
        metadata={"task_id": task.task_id, "pending_action_id": task.pending_action.action_id},
    )


def _replayed_resume(snapshot: TaskSnapshot, answer: task_pb2.PendingActionAnswer, approver: str) -> bool:
    """A repeated ResumeTask (same request id, same answer) after it was applied."""
    done = snapshot.resumption
    return bool(
        answer.request_id
        and done is not None
        and done.approver == approver
        and done.answer.SerializeToString(deterministic=True) == answer.SerializeToString(deterministic=True)
    )


def _resumed(task: task_pb2.Task, answer: task_pb2.PendingActionAnswer, answered_by: str) -> task_pb2.Task:
    states.check_transition(task.task_id, task.state, states.WORKING)
    resumed = task_pb2.Task()
    resumed.CopyFrom(task)
    resumed.ClearField("steps")
    resumed.ClearField("pending_action")
    resumed.state = states.WORKING
    resumed.stop_reason = task_pb2.STOP_REASON_UNSPECIFIED
    if answer.HasField("decision"):
        verdict = "approved" if answer.decision.approve else "rejected"
        resumed.status_message = f"{verdict} by {answered_by}; queued to continue"
    else:
        resumed.status_message = "input received; queued to continue"
    set_millis(resumed.update_time, now_ms())
    return resumed
