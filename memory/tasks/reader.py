"""Reading a task's events for its owner: a page after an event id, or a live watch.

    async for event in events.watch(task_id, tenant=t, owner=o, after_event_id=last_seen):
        ...   # replays what came after `last_seen`, then live; ends after the terminal change

Visibility is the store's (`TaskStore.get`: NOT_FOUND for a task the caller does not own);
the entries are decoded by memory/tasks/events.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from agentmesh.v1 import task_pb2
from memory.connection import redis_errors
from memory.tasks.entries import stream_id_key
from memory.tasks.events import check_event_id, decode_event, is_terminal_event
from memory.tasks.states import is_terminal
from memory.tasks.store import TaskStore

_BATCH = 200


class TaskEvents:
    """Reads a task's events for its owner: a page after an id, or a live watch."""

    def __init__(self, store: TaskStore, *, block_s: float = 2.0) -> None:
        self._store = store
        self._redis = store.redis
        self.block_ms = max(1, int(block_s * 1000))

    async def read(
        self, task_id: str, *, tenant: str, owner: str, after_event_id: str = "", limit: int = _BATCH
    ) -> list[task_pb2.TaskEvent]:
        """Up to `limit` events after `after_event_id` (empty: from the first)."""
        check_event_id(after_event_id)
        await self._store.get(task_id, tenant=tenant, owner=owner, view=task_pb2.TASK_VIEW_BASIC)
        return await self._range(task_id, after_event_id, limit)

    def _stream(self, task_id: str) -> str:
        task_keys = self._store.task_keys(task_id)
        if task_keys is None:  # callers checked the task exists first
            raise ValueError(f"{task_id!r} is not a task id")
        return task_keys[1]

    async def _range(self, task_id: str, after: str, limit: int) -> list[task_pb2.TaskEvent]:
        start = f"({after}" if after else "-"
        with redis_errors(f"reading the events of task {task_id}"):
            entries: Any = await self._redis.xrange(self._stream(task_id), start, "+", count=limit)
        return [decode_event(task_id, entry_id, fields) for entry_id, fields in entries]

    async def watch(
        self,
        task_id: str,
        *,
        tenant: str,
        owner: str,
        after_event_id: str = "",
        stop: asyncio.Event | None = None,
    ) -> AsyncIterator[task_pb2.TaskEvent]:
        """Events after `after_event_id`, then live ones; ends after the terminal state change.

        Also ends when `stop` is set (the server drains: the client resumes on another
        replica from the last id it got) or when the task expires. Visibility is checked
        once, up front: NOT_FOUND for a task the caller does not own.
        """
        check_event_id(after_event_id)
        task = await self._store.get(task_id, tenant=tenant, owner=owner, view=task_pb2.TASK_VIEW_BASIC)
        last = after_event_id
        if is_terminal(task.state) and last and stream_id_key(last) >= stream_id_key(task.last_event_id):
            return
        stream = self._stream(task_id)
        while stop is None or not stop.is_set():
            events = await self._range(task_id, last, _BATCH)
            if not events:
                if await self._finished(task_id, None):
                    # It ended after the read above: its last events were written with the
                    # terminal state, so one more read delivers them.
                    events = await self._range(task_id, last, _BATCH)
                    if not events:
                        return
                else:
                    events = await self._block(stream, task_id, last, stop)
            for event in events:
                yield event
                last = event.event_id
                if is_terminal_event(event) and await self._finished(task_id, last):
                    return

    async def _block(
        self, stream: str, task_id: str, last: str, stop: asyncio.Event | None
    ) -> list[task_pb2.TaskEvent]:
        answer: Any
        read = self._redis.xread({stream: last or "0-0"}, count=_BATCH, block=self.block_ms)
        if stop is None:
            with redis_errors(f"watching task {task_id}"):
                answer = await read
        else:
            reader = asyncio.ensure_future(read)
            stopper = asyncio.ensure_future(stop.wait())
            try:
                done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
            if reader not in done:
                reader.cancel()
                return []
            with redis_errors(f"watching task {task_id}"):
                answer = reader.result()
        events: list[task_pb2.TaskEvent] = []
        for _name, entries in answer or []:
            events.extend(decode_event(task_id, entry_id, fields) for entry_id, fields in entries)
        return events

    async def _finished(self, task_id: str, last: str | None) -> bool:
        """True when the task is gone, or terminal and `last` is its newest event.

        `last=None`: the caller has seen every stored event, so terminal is enough
        (a redriven task is no longer terminal, and its watchers keep going).
        """
        snapshot = await self._store.snapshot(task_id)
        if snapshot is None:
            return True
        task = snapshot.task
        if not is_terminal(task.state):
            return False
        return last is None or stream_id_key(last) >= stream_id_key(task.last_event_id)
