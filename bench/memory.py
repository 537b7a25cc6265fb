"""Memory layer benchmark: idempotency, rate limits, usage records and context packets.

    python -m bench.memory [--seconds 2] [--json]

Everything is measured in one run against one valkey-server (a separate
process, loopback), next to a bare baseline doing the smallest comparable
Redis operation, so the ratios hold on any machine:

- idempotency check (`IdempotencyStore.begin`: one Lua script) vs a raw SET NX;
- limiter check (`RateLimiter.check`: one Lua script over 3 buckets; and a check
  spanning two slots) vs a raw INCR;
- usage record (`UsageStore.record`: one script + one pipeline) vs a raw HINCRBY;
- context packet for a 200-turn session (`SessionStore.packet`: one pipelined
  read + decode + pack) p50/p99, and the pure packing alone.

Throughput at 1 and 32 operations in flight (one client process, asyncio).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agentmesh.config import RateSpec
from agentmesh.embedded_redis import EmbeddedRedis
from agentmesh.v1 import tool_options_pb2 as opts
from memory.connection import AnyRedis, create_redis
from memory.context import ToolCall, Turn, build_packet
from memory.facts import FactStore
from memory.idempotency import Claimed, IdempotencyStore
from memory.rate_limits import Limit, RateLimiter
from memory.sessions import SessionStore
from memory.usage import Attribution, StepUsage, UsageStore

Op = Callable[[int], Awaitable[Any]]
WARMUP_S = 0.3


async def throughput(op: Op, seconds: float, in_flight: int) -> float:
    """Operations per second with `in_flight` concurrent loops; `op` gets a unique counter."""
    counter = itertools.count()
    deadline = time.perf_counter() + WARMUP_S
    while time.perf_counter() < deadline:
        await op(next(counter))
    done = 0

    async def loop(stop: float) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await op(next(counter))
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(started + seconds) for _ in range(in_flight)))
    return done / (time.perf_counter() - started)


async def latencies(op: Callable[[], Awaitable[Any]], count: int) -> tuple[float, float]:
    """(p50, p99) in milliseconds over `count` sequential calls (after a short warm-up)."""
    for _ in range(20):
        await op()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await op()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def session_turns(count: int) -> list[Turn]:
    """A realistic 200-turn support session: questions, tool calls with results, answers."""
    rng = random.Random(7)
    words = ["order", "refund", "shipment", "customer", "address", "invoice", "carrier", "status", "payment"]

    def text(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    turns: list[Turn] = []
    index = 0
    while len(turns) < count:
        turns.append(Turn.user(text(rng.randint(10, 60))))
        if rng.random() < 0.6:
            call = ToolCall(f"c{index}", "orders_get", json.dumps({"order_id": f"A-{index}"}))
            turns.append(Turn.assistant(tool_calls=[call]))
            turns.append(
                Turn.tool(call.call_id, call.name, text(rng.randint(20, 120)), is_error=rng.random() < 0.1)
            )
        turns.append(Turn.assistant(text(rng.randint(20, 100))))
        index += 1
    return turns[:count]


async def measure(url: str, seconds: float) -> dict[str, Any]:
    redis: AnyRedis = create_redis(url)
    results: dict[str, Any] = {"seconds_per_point": seconds}

    # --- idempotency vs SET NX ---
    store = IdempotencyStore(redis, scope="bench", window_s=600, lease_s=600)
    claim = await store.begin("replayed", b"payload")
    assert isinstance(claim, Claimed)
    await store.complete(claim, b"result")
    idem: dict[str, Any] = {}
    for in_flight in (1, 32):
        raw = await throughput(
            lambda i, n=in_flight: redis.set(f"raw:{n}:{i}", b"1", nx=True, px=600_000), seconds, in_flight
        )
        claim_rate = await throughput(
            lambda i, n=in_flight: store.begin(f"k{n}:{i}", b"payload"), seconds, in_flight
        )
        replay_rate = await throughput(lambda i: store.begin("replayed", b"payload"), seconds, in_flight)
        idem[str(in_flight)] = {
            "set_nx": raw,
            "begin_claim": claim_rate,
            "begin_replay": replay_rate,
            "claim_ratio": claim_rate / raw,
            "replay_ratio": replay_rate / raw,
        }
    results["idempotency"] = idem
    await redis.flushall()

    # --- rate limits vs INCR ---
    limiter = RateLimiter(redis)
    huge = RateSpec(1e9, 1_000_000_000)
    one_slot = [
        Limit.tenant("acme", huge),
        Limit.user("acme", "u1", huge),
        Limit.domain("refunds", huge, tenant="acme"),
    ]
    two_slots = [
        Limit.user("acme", "u1", huge),
        Limit.tool_calls("payments_refund", huge, scope=opts.RATE_LIMIT_SCOPE_GLOBAL),
    ]
    limits: dict[str, Any] = {}
    for in_flight in (1, 32):
        raw = await throughput(lambda i: redis.incr("raw:counter"), seconds, in_flight)
        single = await throughput(lambda i: limiter.check(one_slot[1:2]), seconds, in_flight)
        three = await throughput(lambda i: limiter.check(one_slot), seconds, in_flight)
        cross = await throughput(lambda i: limiter.check(two_slots), seconds, in_flight)
        limits[str(in_flight)] = {
            "incr": raw,
            "check_1_bucket": single,
            "check_3_buckets": three,
            "check_2_slots": cross,
            "ratio_3_buckets": three / raw,
            "ratio_2_slots": cross / raw,
        }
    results["rate_limits"] = limits
    await redis.flushall()

    # --- usage record vs HINCRBY ---
    usage = UsageStore(redis)
    usage_rates: dict[str, Any] = {}
    for in_flight in (1, 32):
        raw = await throughput(lambda i: redis.hincrby("raw:hash", "n", 1), seconds, in_flight)
        record = await throughput(
            lambda i, n=in_flight: usage.record(
                # a task of 10 steps: every 10th record starts a task (one more round trip)
                Attribution("acme", f"u{i // 10 % 50}", "refunds", f"t{n}:{i // 10}", "s-1"),
                StepUsage.model_call("gpt-4o", 800, 120),
            ),
            seconds,
            in_flight,
        )
        usage_rates[str(in_flight)] = {"hincrby": raw, "record": record, "ratio": record / raw}
    results["usage"] = usage_rates
    await redis.flushall()

    # --- context packet, 200-turn session ---
    sessions = SessionStore(redis, max_turns=1000)
    turns = session_turns(200)
    for start in range(0, len(turns), 50):
        await sessions.append("acme", "u1", "s-200", *turns[start : start + 50])
    facts = FactStore(redis)
    for n in range(10):
        await facts.put("acme", "u1", f"fact_{n}", f"value number {n} for the customer")
    stored = await sessions.turns("acme", "u1", "s-200")
    packets: dict[str, Any] = {"turns": len(stored), "stored_tokens": sum(t.tokens for t in stored)}
    for budget in (4096, 16384):
        p50, p99 = await latencies(lambda b=budget: sessions.packet("acme", "u1", "s-200", budget=b), 300)

        async def pure(b: int = budget) -> None:
            build_packet(stored, budget=b)

        pure50, pure99 = await latencies(pure, 300)
        sample = await sessions.packet("acme", "u1", "s-200", budget=budget)
        packets[str(budget)] = {
            "packet_p50_ms": p50,
            "packet_p99_ms": p99,
            "pack_only_p50_ms": pure50,
            "pack_only_p99_ms": pure99,
            "turns_included": sample.turns_included,
            "packet_tokens": sample.tokens,
        }
    get_p50, get_p99 = await latencies(lambda: redis.get("raw:absent"), 300)
    packets["raw_get_p50_ms"], packets["raw_get_p99_ms"] = get_p50, get_p99
    results["context_packet"] = packets
    await redis.flushall()
    await redis.aclose()
    return results


def _row(name: str, in_flight: str, rate: float, baseline: str, base_rate: float) -> str:
    return f"| {name} | {in_flight} | {rate:,.0f} | {baseline} {base_rate:,.0f} | {rate / base_rate:.2f} |"


def report(results: dict[str, Any]) -> str:
    lines = [f"(each point {results['seconds_per_point']:g} s; ops/s; ratio = operation / baseline)", ""]
    lines += ["| operation | in flight | ops/s | baseline ops/s | ratio |", "|---|---|---|---|---|"]
    for n, row in results["idempotency"].items():
        lines.append(_row("idempotency begin (claim)", n, row["begin_claim"], "SET NX", row["set_nx"]))
        lines.append(_row("idempotency begin (replay)", n, row["begin_replay"], "SET NX", row["set_nx"]))
    for n, row in results["rate_limits"].items():
        lines.append(_row("limiter check, 1 bucket", n, row["check_1_bucket"], "INCR", row["incr"]))
        lines.append(
            _row("limiter check, 3 buckets (1 slot)", n, row["check_3_buckets"], "INCR", row["incr"])
        )
        lines.append(_row("limiter check, 2 slots", n, row["check_2_slots"], "INCR", row["incr"]))
    for n, row in results["usage"].items():
        lines.append(_row("usage record (5 scopes + domain)", n, row["record"], "HINCRBY", row["hincrby"]))
    packets = results["context_packet"]
    lines += [
        "",
        f"Context packet, {packets['turns']}-turn session ({packets['stored_tokens']:,} stored tokens), "
        f"10 facts; raw GET p50 {packets['raw_get_p50_ms']:.3f} ms / p99 {packets['raw_get_p99_ms']:.3f} ms:",
        "",
        "| budget | turns in packet | packet() p50 | p99 | packing only p50 | p99 |",
        "|---|---|---|---|---|---|",
    ]
    for budget in ("4096", "16384"):
        row = packets[budget]
        lines.append(
            f"| {budget} | {row['turns_included']} | {row['packet_p50_ms']:.2f} ms "
            f"| {row['packet_p99_ms']:.2f} ms | {row['pack_only_p50_ms']:.2f} ms "
            f"| {row['pack_only_p99_ms']:.2f} ms |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per point")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv if argv is not None else [])
    with EmbeddedRedis() as server:
        results = asyncio.run(measure(server.url, args.seconds))
    print(json.dumps(results, indent=2) if args.json else report(results), flush=True)
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
