"""One tail of the change log per replica: live WatchTools fan-out and cache invalidation.

`ChangeFeed.run` follows the registry's change stream with XREAD BLOCK (no
polling) and hands each change to every local subscriber and to the
`SpecCache`. Watchers therefore cost one queue each, not one Redis
connection each, and every replica sees every change no matter which replica
(or process) wrote it.

`ChangeFeed.changes` is a WatchTools stream: it catches up from the log, then
follows the feed. A subscriber whose queue overflows is cut off (`overflowed`);
its watcher catches up from the store and subscribes again. While the tail cannot read
(Redis down), the cache is bypassed; once it reads again it continues from
its last revision, and if the log was trimmed past that point it clears the
cache instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from agentmesh.kit.errors import AgentmeshError
from agentmesh.kit.retry import Reconnect
from agentmesh.v1 import tool_pb2
from tool_registry.store import RegistryStore

log = logging.getLogger(__name__)

BLOCK_MS = 5_000
CATCH_UP_BATCH = 500
SUBSCRIBER_QUEUE = 1_000
T = TypeVar("T")


@dataclass(eq=False)
class Subscription:
    queue: asyncio.Queue[tool_pb2.ToolChange] = field(
        default_factory=lambda: asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
    )
    overflowed: bool = False


class SpecCache(Generic[T]):
    """Per-replica cache of registry reads, invalidated by the change feed.

    Entries are keyed by tool name (and more); a read may be stored only if no
    change of that name arrived since the read began (`position` taken before
    reading), so a slow read can never re-insert stale data after its
    invalidation.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: dict[tuple[str, ...], T] = {}
        self._changed_at: dict[str, int] = {}
        self.position = 0  # last revision applied
        self.enabled = False  # only while the feed is in sync
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, ...]) -> T | None:
        if not self.enabled:
            return None
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: tuple[str, ...], value: T, read_began_at: int) -> None:
        if not self.enabled or self._changed_at.get(key[0], 0) > read_began_at:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = value

    def invalidate(self, name: str, revision: int) -> None:
        self._changed_at[name] = revision
        for key in [k for k in self._entries if k[0] == name]:
            del self._entries[key]
        self.position = max(self.position, revision)

    def evict(self, name: str, revision: int) -> None:
        """This replica wrote `name` at `revision`: drop it now (read-your-writes), before the feed
        brings the change; `position` stays (changes of other names may still be on the way)."""
        self._changed_at[name] = max(self._changed_at.get(name, 0), revision)
        for key in [k for k in self._entries if k[0] == name]:
            del self._entries[key]

    def clear(self, revision: int) -> None:
        self._entries.clear()
        self._changed_at = {}
        self.position = revision


class ChangeFeed:
    def __init__(self, store: RegistryStore, cache: SpecCache[object] | None = None) -> None:
        self.store = store
        self.cache = cache
        self._subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self.position = 0
        self.listeners: list[Callable[[tool_pb2.ToolChange], None]] = []

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="registry-change-feed")
        await self._started.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def run(self) -> None:
        reconnect = Reconnect()
        synced = False
        while True:
            try:
                if not synced:
                    self.position = await self._resync_position()
                    synced = True
                    self._started.set()
                changes = await self.store.wait_changes(self.position, BLOCK_MS)
                reconnect.reset()
                for change in changes:
                    self._publish(change)
            except asyncio.CancelledError:
                raise
            except AgentmeshError as exc:
                # Redis unavailable: stop trusting the cache and retry; on success the
                # log is re-checked for continuity before the cache is used again.
                if self.cache is not None:
                    self.cache.enabled = False
                synced = False
                self._started.set()  # callers read the store directly meanwhile
                log.warning("registry change feed interrupted: %s", exc)
                await reconnect.wait()

    async def _resync_position(self) -> int:
        """Where to continue: our position if the log still reaches it, else the head (cache cleared)."""
        batch = await self.store.changes_after(self.position, count=1)
        continuous = 0 < batch.first_retained <= self.position + 1 or batch.head == self.position
        if self.position > 0 and continuous and self.position <= batch.head:
            if self.cache is not None:
                self.cache.enabled = True
            return self.position
        if self.cache is not None:
            self.cache.clear(batch.head)
            self.cache.enabled = True
        return batch.head

    async def changes(
        self, wanted: set[str], position: int, draining: asyncio.Event, progress_s: float
    ) -> AsyncGenerator[tool_pb2.ToolChange, None]:
        """The changes after revision `position` of the tools named in `wanted` (empty: all) —
        WatchTools: caught up from the log, then live from this feed, RESYNC_REQUIRED where the log
        was trimmed past a position; an overflowed subscription catches up again; PROGRESS with the
        current position after `progress_s` idle. Ends when `draining` is set (the client resumes
        on another replica)."""
        await self.start()
        drained = asyncio.ensure_future(draining.wait())
        try:
            while not draining.is_set():
                subscription = self.subscribe()
                try:
                    # Catch up from the log (the subscription buffers what arrives meanwhile).
                    while True:
                        batch = await self.store.changes_after(position, CATCH_UP_BATCH)
                        if position > batch.head or (
                            batch.head > position
                            and (batch.first_retained == 0 or batch.first_retained > position + 1)
                        ):
                            position = batch.head
                            yield tool_pb2.ToolChange(
                                revision=batch.head, kind=tool_pb2.CHANGE_KIND_RESYNC_REQUIRED
                            )
                            continue
                        for change in batch.changes:
                            position = change.revision
                            if not wanted or change.tool_name in wanted:
                                yield change
                        if len(batch.changes) < CATCH_UP_BATCH:
                            break
                    # Live.
                    while not subscription.overflowed:
                        getter = asyncio.ensure_future(subscription.queue.get())
                        try:
                            done, _ = await asyncio.wait(
                                {getter, drained}, timeout=progress_s, return_when=asyncio.FIRST_COMPLETED
                            )
                        finally:
                            # Also when the caller goes away (the stream is canceled mid-wait): a
                            # getter left pending is destroyed later ("Task was destroyed but it is
                            # pending!", once per closed stream).
                            getter.cancel()
                        if getter not in done and drained in done:
                            return  # draining: the client resumes on another replica
                        if getter not in done:
                            # Idle: say where the watcher may resume. The write also ends a stream
                            # whose caller left without its cancellation reaching this replica
                            # (grpcio loses some when many streams of a connection end at once).
                            yield tool_pb2.ToolChange(revision=position, kind=tool_pb2.CHANGE_KIND_PROGRESS)
                            continue
                        change = getter.result()
                        if change.revision <= position:
                            continue
                        position = change.revision
                        if not wanted or change.tool_name in wanted:
                            yield change
                finally:
                    self.unsubscribe(subscription)
        finally:
            drained.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drained

    def _publish(self, change: tool_pb2.ToolChange) -> None:
        self.position = max(self.position, change.revision)
        if self.cache is not None:
            self.cache.invalidate(change.tool_name, change.revision)
        for listener in self.listeners:
            listener(change)
        for subscription in list(self._subscribers):
            if subscription.overflowed:
                continue
            try:
                subscription.queue.put_nowait(change)
            except asyncio.QueueFull:
                subscription.overflowed = True
