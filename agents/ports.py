"""What the agent service needs from the rest of the mesh, as narrow interfaces.

The servicer (`agents.service`) is written against these; `agents.wiring`
builds them from the real parts (the task store, the memory layer, the tool
resolver and invoker, the rate limiter). Each is the smallest surface the
agent needs, so a change on the other side touches one adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from agentmesh.v1 import agent_service_pb2, task_pb2
from agents.caller import Caller
from agents.machine import Outcome, ToolOffer
from agents.model.types import ChatMessage
from agents.runner import StepJournal, ToolGateway
from agents.spec import ToolRef


@dataclass(frozen=True, slots=True)
class NewTask:
    """A task record for a Run (short retention) or a submitted task."""

    domain: str
    caller: Caller
    request: agent_service_pb2.RunRequest
    limits: task_pb2.Limits


class TaskLedger(Protocol):
    """The task layer as the agent uses it."""

    async def open(self, new: NewTask) -> tuple[task_pb2.Task, bool]:
        """Create the task in WORKING (or return the existing one for a repeated request id).

        Returns (task, created): `created` is False when the request id was
        seen before; the task is then returned as it is now.
        """
        ...

    def journal(self, task: task_pb2.Task) -> StepJournal:
        """Where the runner checkpoints this task's steps."""
        ...

    async def close(self, task: task_pb2.Task, outcome: Outcome, usage: task_pb2.Usage) -> task_pb2.Task:
        """Record the outcome (terminal, or INPUT_REQUIRED with its pending action)."""
        ...

    async def get(self, task_id: str, caller: Caller) -> task_pb2.Task:
        """The caller's task with its steps; NOT_FOUND if missing or not theirs."""
        ...


class SessionMemory(Protocol):
    async def context(self, caller: Caller, domain: str, session_id: str) -> Sequence[ChatMessage]:
        """The bounded context packet for the next task of this session."""
        ...

    async def remember(
        self, caller: Caller, domain: str, session_id: str, user_turn: str, answer: str, task: task_pb2.Task
    ) -> None:
        """Append the task's user turn and answer (and what the tools did) to the session."""
        ...

    async def forget(self, caller: Caller, session_id: str) -> bool:
        """Delete one session; False if it did not exist."""
        ...


class UsageLedger(Protocol):
    async def record(self, caller: Caller, domain: str, session_id: str, usage: task_pb2.Usage) -> None:
        """Add one task's usage to the task, session, user and domain counters."""
        ...

    async def read(self, caller: Caller, domain: str, session_id: str) -> tuple[task_pb2.Usage, int]:
        """(usage, tasks counted) for one session, or for all of the caller's sessions."""
        ...


class Admission(Protocol):
    async def admit(self, caller: Caller, domain: str) -> None:
        """Raise ResourceExhausted (RATE_LIMITED, RetryInfo) when a tenant/user/domain limit is hit."""
        ...


class ToolBox(ToolGateway, Protocol):
    async def offers(self, refs: Sequence[ToolRef], caller: Caller) -> list[ToolOffer]:
        """The tools the model may see: resolved from the registry, unresolvable ones left out."""
        ...
