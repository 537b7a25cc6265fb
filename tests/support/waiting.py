"""The one bounded wait of the tests: poll a condition until it holds, within a deadline that names it.

    await until(lambda: feed.subscribers() == 50, what="50 WatchTools subscribers", timeout=10)

Every wait has a deadline and says what it waited for when the deadline passes (never a bare
sleep standing in for "long enough", never an unbounded loop).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def until(
    check: Callable[[], Awaitable[T] | T], *, what: str = "", timeout: float = 30.0, interval: float = 0.02
) -> T:
    """The first truthy value of `check()` (sync or async); AssertionError naming `what` at the deadline
    (by default the waiting line of the caller's caller, e.g. `await _until(lambda: _all_done(...))`)."""
    if not what:
        frames = inspect.stack(context=1)[1:3]
        what = " / ".join((f.code_context or ["?"])[0].strip() for f in frames)
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}; last seen: {last!r}")
        await asyncio.sleep(interval)
