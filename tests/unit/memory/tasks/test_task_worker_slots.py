"""memory.tasks.worker.Slots: urgent waiters (recovery) before ordinary ones (new work)."""

from __future__ import annotations

import asyncio

from memory.tasks.worker import Slots


async def test_a_freed_slot_goes_to_the_urgent_waiter_first() -> None:
    slots = Slots(1)
    await slots.acquire()
    order: list[str] = []

    async def take(name: str, urgent: bool) -> None:
        await slots.acquire(urgent=urgent)
        order.append(name)

    reader = asyncio.create_task(take("new work", urgent=False))
    await asyncio.sleep(0)  # the reader queues first
    recovery = asyncio.create_task(take("recovery", urgent=True))
    await asyncio.sleep(0)
    assert slots.urgent_waiting == 1 and slots.free == 0
    slots.release()
    await asyncio.sleep(0)
    assert order == ["recovery"]
    slots.release()
    await asyncio.gather(reader, recovery)
    assert order == ["recovery", "new work"] and slots.free == 0


async def test_a_waiter_cancelled_after_its_grant_passes_the_slot_on() -> None:
    slots = Slots(1)
    await slots.acquire()
    first = asyncio.create_task(slots.acquire(urgent=True))
    second = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # granted to `first` ...
    first.cancel()  # ... which is cancelled before it runs
    await asyncio.sleep(0)
    await asyncio.wait_for(second, 1)  # the slot moved on instead of leaking
    assert first.cancelled() and slots.free == 0 and slots.urgent_waiting == 0


async def test_ordinary_acquires_wait_while_recovery_waits() -> None:
    slots = Slots(2)
    await slots.acquire()
    await slots.acquire()
    urgent = asyncio.create_task(slots.acquire(urgent=True))
    await asyncio.sleep(0)
    slots.release()
    ordinary = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    assert urgent.done() and not ordinary.done()
    slots.release()
    await asyncio.wait_for(ordinary, 1)
