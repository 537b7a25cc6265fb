"""Session memory for the runner: context packets in, task turns out (over memory.sessions).

Before a task's first model call the runner asks for the session's bounded
context packet (running summary, pinned facts, newest turns) and puts it
between the system prompt and the instruction. When the task ends, its turns
go back into the session: the user's turn (the sanitized intent when the
domain has a sanitizer, never the raw text), the tool calls with their
already-compact observations, and the answer. When the session grows past its
budget, old turns are folded into the summary in the background by a
tool-less model call, falling back to the deterministic summarizer if the
model is unavailable, so the next packet stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from agents.caller import Caller
from agents.model.types import ChatMessage, ChatModel, ChatRequest, ChatRole, ModelError
from agents.model.wire import message_from_wire
from memory.context import Turn, TurnToolCall
from memory.sessions import SessionStore
from memory.summarizer import DeterministicSummarizer, summary_prompt

log = logging.getLogger(__name__)

# Share of the task's token cap a session's context packet may take, and its bounds.
CONTEXT_SHARE = 0.25
MIN_CONTEXT_TOKENS = 256
MAX_CONTEXT_TOKENS = 8192
SUMMARY_TIMEOUT_S = 30.0


def context_budget(token_cap: int) -> int:
    return max(MIN_CONTEXT_TOKENS, min(MAX_CONTEXT_TOKENS, int(token_cap * CONTEXT_SHARE)))


def to_turns(messages: Sequence[ChatMessage], task_id: str, first_step: int = 0) -> list[Turn]:
    turns: list[Turn] = []
    for offset, message in enumerate(messages):
        step = first_step + offset
        if message.role is ChatRole.USER:
            turns.append(Turn.user(message.content, task_id=task_id, step=step))
        elif message.role is ChatRole.ASSISTANT:
            calls = [TurnToolCall(c.call_id, c.name, c.raw_arguments or "{}") for c in message.tool_calls]
            turns.append(Turn.assistant(message.content, calls, task_id=task_id, step=step))
        elif message.role is ChatRole.TOOL:
            is_error = '"status":"OK"' not in message.content[:40]
            turns.append(
                Turn.tool(
                    message.tool_call_id,
                    message.name,
                    message.content,
                    is_error=is_error,
                    task_id=task_id,
                    step=step,
                )
            )
    return turns


class ModelSummarizer:
    """A tool-less model call folding old turns into the running summary (memory's Summarizer)."""

    def __init__(self, model: ChatModel, *, max_words: int = 200) -> None:
        self.model = model
        self.max_words = max_words
        self.fallback = DeterministicSummarizer()

    async def __call__(self, turns: Sequence[Turn], /) -> str:
        messages = [
            message_from_wire(m, i) for i, m in enumerate(summary_prompt(turns, max_words=self.max_words))
        ]
        try:
            turn = await self.model.complete(
                ChatRequest(messages, temperature=0.0, max_tokens=self.max_words * 2),
                timeout=SUMMARY_TIMEOUT_S,
            )
        except ModelError as exc:
            log.warning("summarizing with the model failed; using the deterministic summary: %s", exc.message)
            return await self.fallback(turns)
        return turn.content.strip() or await self.fallback(turns)


class SessionContext:
    def __init__(self, store: SessionStore, summarizer: ModelSummarizer | DeterministicSummarizer) -> None:
        self.store = store
        self.summarizer = summarizer
        self._compacting: set[asyncio.Task[None]] = set()

    async def context(self, caller: Caller, session_id: str, *, token_cap: int) -> list[ChatMessage]:
        packet = await self.store.packet(
            caller.tenant, caller.user, session_id, budget=context_budget(token_cap)
        )
        messages = [message_from_wire(raw, i) for i, raw in enumerate(packet.as_messages())]
        if packet.needs_compaction:
            self._compact_later(caller, session_id, token_cap)
        return messages

    async def remember(
        self,
        caller: Caller,
        session_id: str,
        messages: Sequence[ChatMessage],
        *,
        task_id: str,
        token_cap: int,
    ) -> None:
        turns = to_turns(messages, task_id)
        if not turns:
            return
        for start in range(0, len(turns), 64):  # the store takes bounded batches
            await self.store.append(caller.tenant, caller.user, session_id, *turns[start : start + 64])
        packet = await self.store.packet(
            caller.tenant, caller.user, session_id, budget=context_budget(token_cap)
        )
        if packet.needs_compaction:
            self._compact_later(caller, session_id, token_cap)

    async def forget(self, caller: Caller, session_id: str) -> bool:
        return await self.store.delete(caller.tenant, caller.user, session_id)

    def _compact_later(self, caller: Caller, session_id: str, token_cap: int) -> None:
        async def compact() -> None:
            try:
                await self.store.compact(
                    caller.tenant, caller.user, session_id, self.summarizer, budget=context_budget(token_cap)
                )
            except Exception:
                log.warning("session compaction failed", exc_info=True, extra={"session_id": session_id})

        task = asyncio.create_task(compact(), name=f"compact {session_id}")
        self._compacting.add(task)
        task.add_done_callback(self._compacting.discard)

    async def close(self) -> None:
        """Let running compactions finish (they are bounded by the summarizer's timeout)."""
        if self._compacting:
            await asyncio.wait(set(self._compacting), timeout=SUMMARY_TIMEOUT_S)
