"""Queue statistics: depth, pending, lag, dead letters and outbox over a domain's shards.

Read by the worker's housekeeping (exported as metrics; the Helm chart's KEDA trigger reads the
consumer group's lag), `agentmesh tasks stats` and the benchmarks. A read: nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.exceptions as rexc

from agentmesh.kit import metrics
from memory import keys
from memory.codec import as_text
from memory.connection import AnyRedis, redis_errors
from memory.tasks.entries import stream_id_key
from memory.tasks.records import now_ms


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: int  # entries not yet delivered to any worker
    pending: int  # delivered, not yet acknowledged (running, or held by a dead worker)
    lag_s: float  # age of the oldest undelivered entry
    dead_letters: int
    outbox: int  # inline runs (Run) registered for recovery


async def queue_stats(redis: AnyRedis, *, domain: str, group: str, shards: int) -> QueueStats:
    """Depth, pending, lag and dead letters over all shards; also exported as metrics."""
    depth = pending = dead = outbox = 0
    lag_s = 0.0
    now = now_ms()
    for shard in range(shards):
        stream = keys.queue(domain, shard)
        with redis_errors("reading queue statistics"):
            try:
                groups = await redis.xinfo_groups(stream)
            except rexc.ResponseError:  # no stream yet
                groups = []
            pipe = redis.pipeline(transaction=False)
            pipe.xlen(keys.dead_letters(domain, shard))
            pipe.zcard(keys.outbox(domain, shard))
            dead_n, outbox_n = await pipe.execute()
        dead += int(dead_n)
        outbox += int(outbox_n)
        for info in groups:
            if as_text(info.get("name", b"")) != group:
                continue
            pending += int(info.get("pending") or 0)
            shard_lag = info.get("lag")
            last = as_text(info.get("last-delivered-id") or "0-0")
            with redis_errors("reading queue statistics"):
                oldest: Any = await redis.xrange(stream, f"({last}", "+", count=1)
                if shard_lag is None:
                    backlog: Any = await redis.xrange(stream, f"({last}", "+", count=10_000)
                    shard_lag = len(backlog)
            depth += int(shard_lag)
            if oldest:
                lag_s = max(lag_s, (now - stream_id_key(as_text(oldest[0][0]))[0]) / 1000)
    metrics.TASK_QUEUE_DEPTH.labels(domain=domain).set(depth)
    metrics.TASK_QUEUE_PENDING.labels(domain=domain).set(pending)
    metrics.TASK_QUEUE_LAG.labels(domain=domain).set(lag_s)
    metrics.TASK_DEAD_LETTER_DEPTH.labels(domain=domain).set(dead)
    return QueueStats(depth=depth, pending=pending, lag_s=lag_s, dead_letters=dead, outbox=outbox)
