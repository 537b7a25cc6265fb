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
from collections.abc import Awaitable, Callable
from typing import Any

from agentmesh.kit.config import RateSpec
from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agentmesh.v1 import tool_options_pb2 as opts
from bench.common import closed_loop, scaled
from memory.connection import AnyRedis, create_redis
from memory.context import Turn, TurnToolCall, build_packet
from memory.facts import FactStore
from memory.idempotency import Claimed, IdempotencyStore
from memory.prices import builtin_prices
from memory.rate_limits import Limit, RateLimiter
from memory.sessions import SessionStore
from memory.usage import Attribution, StepUsage, UsageStore

Op = Callable[[int], Awaitable[Any]]
ROUNDS = 4
WARMUP_S = 0.1


async def compare(baseline: Op, ops: dict[str, Op], seconds: float, in_flight: int) -> dict[str, Any]:
    """Throughput of `ops` against `baseline`, interleaved in ROUNDS rounds so drift hits all alike.

    Each op gets a unique counter (for fresh keys). Returns per op the median
    rate and the median of its per-round ratios to the baseline.
    """
    named: dict[str, Op] = {"baseline": baseline, **ops}
    counters = {name: itertools.count() for name in named}
    rates: dict[str, list[float]] = {name: [] for name in named}
    for _ in range(ROUNDS):
        for name, op in named.items():
            counter = counters[name]
            result = await closed_loop(
                name,
                lambda op=op, counter=counter: op(next(counter)),
                in_flight=in_flight,
                duration_s=seconds / ROUNDS,
                warmup_s=WARMUP_S,
            )
            rates[name].append(result.rate)
    summary: dict[str, Any] = {"baseline": statistics.median(rates["baseline"])}
    for name in ops:
        ratios = [rate / base for rate, base in zip(rates[name], rates["baseline"], strict=True)]
        summary[name] = {"rate": statistics.median(rates[name]), "ratio": statistics.median(ratios)}
    return summary


async def latency(
    ops: dict[str, Callable[[], Awaitable[Any]]], seconds: float
) -> dict[str, tuple[float, float]]:
    """(p50, p99) in ms of each op, one call at a time, interleaved in ROUNDS rounds."""
    samples: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(ROUNDS):
        for name, op in ops.items():
            result = await closed_loop(name, op, in_flight=1, duration_s=seconds / ROUNDS, warmup_s=WARMUP_S)
            samples[name].extend(result.latencies_ms)
    return {name: _percentiles(values) for name, values in samples.items()}


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


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
            call = TurnToolCall(f"c{index}", "orders_get", json.dumps({"order_id": f"A-{index}"}))
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
    results["idempotency"] = {
        str(n): await compare(
            lambda i, n=n: redis.set(f"raw:{n}:{i}", b"1", nx=True, px=600_000),
            {
                "begin (claim)": lambda i, n=n: store.begin(f"k{n}:{i}", b"payload"),
                "begin (replay)": lambda i: store.begin("replayed", b"payload"),
            },
            seconds,
            n,
        )
        for n in (1, 32)
    }
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
    results["rate_limits"] = {
        str(n): await compare(
            lambda i: redis.incr("raw:counter"),
            {
                "check, 1 bucket": lambda i: limiter.check(one_slot[1:2]),
                "check, 3 buckets in 1 slot": lambda i: limiter.check(one_slot),
                "check, 2 slots": lambda i: limiter.check(two_slots),
            },
            seconds,
            n,
        )
        for n in (1, 32)
    }
    await redis.flushall()

    # --- usage record vs HINCRBY ---
    usage = UsageStore(redis)
    turn = StepUsage.model_call(800, 120, builtin_prices().cost("gpt-4o", 800, 120))  # priced once
    results["usage"] = {
        str(n): await compare(
            lambda i: redis.hincrby("raw:hash", "n", 1),
            {
                # tasks of 10 steps: every 10th record starts a task (one more round trip)
                "record (5 scopes + domain)": lambda i, n=n: usage.record(
                    Attribution("acme", f"u{i // 10 % 50}", "refunds", f"t{n}:{i // 10}", "s-1"),
                    turn,
                ),
            },
            seconds,
            n,
        )
        for n in (1, 32)
    }
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

    async def pure(budget: int) -> None:
        build_packet(stored, budget=budget)

    timed = await latency(
        {
            "raw GET": lambda: redis.get("raw:absent"),
            "packet 4096": lambda: sessions.packet("acme", "u1", "s-200", budget=4096),
            "packet 16384": lambda: sessions.packet("acme", "u1", "s-200", budget=16384),
            "pack only 4096": lambda: pure(4096),
            "pack only 16384": lambda: pure(16384),
        },
        seconds * 2,
    )
    packets["raw_get_ms"] = timed["raw GET"]
    for budget in (4096, 16384):
        sample = await sessions.packet("acme", "u1", "s-200", budget=budget)
        packets[str(budget)] = {
            "packet_ms": timed[f"packet {budget}"],
            "pack_only_ms": timed[f"pack only {budget}"],
            "turns_included": sample.turns_included,
            "packet_tokens": sample.tokens,
        }
    results["context_packet"] = packets
    await redis.flushall()
    await redis.aclose()
    return results


def report(results: dict[str, Any]) -> str:
    lines = [
        f"({results['seconds_per_point']:g} s per point in {ROUNDS} interleaved rounds; ops/s are medians; "
        "ratio = median of the per-round ratios to the baseline)",
        "",
        "| operation | in flight | ops/s | baseline | baseline ops/s | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for section, baseline in (("idempotency", "SET NX"), ("rate_limits", "INCR"), ("usage", "HINCRBY")):
        for in_flight, rows in results[section].items():
            for name, row in rows.items():
                if name == "baseline":
                    continue
                lines.append(
                    f"| {section.replace('_', ' ')}: {name} | {in_flight} | {row['rate']:,.0f} | {baseline} "
                    f"| {rows['baseline']:,.0f} | {row['ratio']:.2f} |"
                )
    packets = results["context_packet"]
    get50, get99 = packets["raw_get_ms"]
    lines += [
        "",
        f"Context packet of a {packets['turns']}-turn session ({packets['stored_tokens']:,} stored tokens, "
        f"10 facts), one at a time; raw GET p50 {get50:.3f} ms, p99 {get99:.3f} ms:",
        "",
        "| budget | turns in packet | packet() p50 | p99 | packing only p50 | p99 |",
        "|---|---|---|---|---|---|",
    ]
    for budget in ("4096", "16384"):
        row = packets[budget]
        (p50, p99), (pure50, pure99) = row["packet_ms"], row["pack_only_ms"]
        lines.append(
            f"| {budget} | {row['turns_included']} | {p50:.2f} ms | {p99:.2f} ms "
            f"| {pure50:.2f} ms | {pure99:.2f} ms |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=scaled(2.0, 0.5), help="measuring time per point (split in rounds)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv if argv is not None else [])
    with EmbeddedRedis() as server:
        results = asyncio.run(measure(server.url, args.seconds))
    print(json.dumps(results, indent=2) if args.json else report(results), flush=True)
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
