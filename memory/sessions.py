"""Conversation memory per (tenant, user, session): turns, running summary, context packets.

    sessions = SessionStore(redis, idle_ttl_s=settings.session_idle_ttl_s)
    packet = await sessions.packet(tenant, user, session_id, budget=6000)      # before a model call
    await sessions.append(tenant, user, session_id, Turn.user(text))           # after each turn
    if packet.needs_compaction:
        await sessions.compact(tenant, user, session_id, summarizer, budget=6000)

Storage, all under the session's hash tag `{s:<tenant>:<user>:<session>}`:

- `turns`: a list of versioned SESSION_TURN records, oldest first;
- `meta`: a hash with the running summary (a versioned SESSION_META record) and
  plain counters: `gen` (bumped whenever turns are removed from the front, so
  a compaction computed on an older view is refused), `folded`, `dropped`,
  `compactions`, `created`/`updated` (ms);
- `compacting`: a short lease so only one replica summarises at a time.

Appending is one script (push, renew the idle TTL, enforce the hard cap of
`max_turns`: the oldest turns beyond it are dropped and counted in `dropped`).
The user's session index (`{u:…}:sessions`, scored by last activity) is
updated in the same round trip. Building a packet reads turns, meta and the
user's facts in one pipelined round trip. Compaction reads, calls the
summarizer (slow: a model call), then applies the result with one script that
checks nothing removed turns meanwhile and keeps turns appended meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from agentmesh.kit.config import Settings
from agentmesh.kit.errors import DataLoss
from agentmesh.kit.validation import Violations
from memory import codec, keys
from memory.codec import RecordKind
from memory.connection import AnyRedis, redis_errors
from memory.context import (
    DEFAULT_POLICY,
    MESSAGE_OVERHEAD,
    ContextPacket,
    ContextPolicy,
    TokenCounter,
    Turn,
    TurnRole,
    TurnToolCall,
    build_packet,
    count_turn,
    estimate_tokens,
    fit_suffix,
    plan_compaction,
    summary_limit,
)
from memory.facts import live_facts, packet_facts
from memory.identity import check_owner
from memory.summarizer import Summarizer

TURN_VERSION = 1
META_VERSION = 1
READABLE_TURN_VERSIONS = frozenset({1})
READABLE_META_VERSIONS = frozenset({1})
DEFAULT_IDLE_TTL_S = 7 * 24 * 3600.0
DEFAULT_MAX_TURNS = 1000
MAX_TURN_BYTES = 64 * 1024
MAX_TURNS_PER_APPEND = 64
COMPACTION_LEASE_S = 120.0

_APPEND = """
local n = redis.call('RPUSH', KEYS[1], unpack(ARGV, 4))
if redis.call('HSETNX', KEYS[2], 'created', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[2], 'v', '1', 'gen', '0')
end
redis.call('HSET', KEYS[2], 'updated', ARGV[1])
local cap = tonumber(ARGV[3])
if n > cap then
  redis.call('LTRIM', KEYS[1], n - cap, -1)
  redis.call('HINCRBY', KEYS[2], 'dropped', n - cap)
  redis.call('HINCRBY', KEYS[2], 'gen', 1)
  n = cap
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return n
"""

# KEYS: turns, meta. ARGV: gen, created, turns read, now, ttl, summary record, folded, kept records...
_APPLY_COMPACTION = """
local meta = redis.call('HMGET', KEYS[2], 'gen', 'created')
if not meta[2] or meta[2] ~= ARGV[2] or (meta[1] or '0') ~= ARGV[1] then return -1 end
local read = tonumber(ARGV[3])
local length = redis.call('LLEN', KEYS[1])
if length < read then return -1 end
local tail = {}
if length > read then tail = redis.call('LRANGE', KEYS[1], read, -1) end
redis.call('DEL', KEYS[1])
local function push(items, first)
  for i = first, #items, 500 do
    redis.call('RPUSH', KEYS[1], unpack(items, i, math.min(i + 499, #items)))
  end
end
push(ARGV, 8)
push(tail, 1)
redis.call('HSET', KEYS[2], 'summary', ARGV[6], 'updated', ARGV[4])
redis.call('HINCRBY', KEYS[2], 'gen', 1)
redis.call('HINCRBY', KEYS[2], 'folded', ARGV[7])
redis.call('HINCRBY', KEYS[2], 'compactions', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return redis.call('LLEN', KEYS[1])
"""

_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# --- records -------------------------------------------------------------------


def encode_turn(turn: Turn) -> bytes:
    body: dict[str, Any] = {"r": turn.role.value, "c": turn.content, "at": turn.at, "k": turn.tokens}
    if turn.tool_calls:
        body["tc"] = [[c.call_id, c.name, c.arguments] for c in turn.tool_calls]
    if turn.tool_call_id:
        body["ti"] = turn.tool_call_id
    if turn.name:
        body["n"] = turn.name
    if turn.is_error:
        body["e"] = 1
    if turn.task_id:
        body["t"] = turn.task_id
    if turn.step >= 0:
        body["s"] = turn.step
    if turn.compacted:
        body["x"] = 1
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return codec.encode(RecordKind.SESSION_TURN, TURN_VERSION, payload)


def decode_turn(data: object, what: str = "session turn") -> Turn:
    _, payload = codec.decode(codec.as_bytes(data), RecordKind.SESSION_TURN, READABLE_TURN_VERSIONS, what)
    try:
        body = json.loads(payload)
        return Turn(
            role=TurnRole(body["r"]),
            content=body.get("c", ""),
            tool_calls=tuple(TurnToolCall(*call) for call in body.get("tc", ())),
            tool_call_id=body.get("ti", ""),
            name=body.get("n", ""),
            is_error=bool(body.get("e", 0)),
            task_id=body.get("t", ""),
            step=int(body.get("s", -1)),
            at=float(body.get("at", 0.0)),
            tokens=int(body.get("k", 0)),
            compacted=bool(body.get("x", 0)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise DataLoss(f"{what}: SESSION_TURN record is corrupt ({exc})") from exc


def encode_summary(text: str, tokens: int, at: float) -> bytes:
    payload = json.dumps({"text": text, "k": tokens, "at": at}, separators=(",", ":"), ensure_ascii=False)
    return codec.encode(RecordKind.SESSION_META, META_VERSION, payload.encode())


def decode_summary(data: object, what: str = "session summary") -> str:
    if data is None:
        return ""
    _, payload = codec.decode(codec.as_bytes(data), RecordKind.SESSION_META, READABLE_META_VERSIONS, what)
    try:
        return str(json.loads(payload)["text"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataLoss(f"{what}: SESSION_META record is corrupt ({exc})") from exc


# --- results -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What is stored for a session (for `agentmesh memory session show` and listings)."""

    session_id: str
    turns: int
    summary: str
    created_at: float
    updated_at: float
    compactions: int = 0
    folded: int = 0
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class CompactionResult:
    folded_turns: int
    kept_turns: int
    tokens_before: int
    tokens_after: int
    summary: str
    summary_tokens: int


def _newest_that_can_fit(
    raw_turns: Sequence[Any], budget: int, recount: TokenCounter | None, session_id: str
) -> list[Turn]:
    """Decode turns newest first, only as far back as a packet of `budget` can reach.

    Packing is newest-first and contiguous after the latest user turn, so once
    that turn is seen and the turns decoded so far already exceed the budget,
    older turns cannot be in the packet: decoding them would be wasted work.
    `recount`: a token counter other than the one the turns were counted with.
    """
    turns: list[Turn] = []
    used = 0
    seen_user = False
    for item in reversed(raw_turns):
        turn = decode_turn(item, f"session {session_id!r} turn")
        if recount is not None:
            turn = count_turn(replace(turn, tokens=0), recount)
        turns.append(turn)
        used += turn.tokens
        seen_user = seen_user or turn.role is TurnRole.USER
        if seen_user and used > budget:
            break
    turns.reverse()
    return turns


def _ms(value: bytes | None) -> float:
    return int(value) / 1000 if value else 0.0


def _int(value: bytes | None) -> int:
    return int(value) if value else 0


class SessionStore:
    def __init__(
        self,
        redis: AnyRedis,
        *,
        idle_ttl_s: float = DEFAULT_IDLE_TTL_S,
        max_turns: int = DEFAULT_MAX_TURNS,
        token_counter: TokenCounter = estimate_tokens,
        policy: ContextPolicy = DEFAULT_POLICY,
    ) -> None:
        if idle_ttl_s <= 0 or max_turns < 1:
            raise ValueError("idle_ttl_s must be positive and max_turns >= 1")
        self._redis = redis
        self.idle_ttl_ms = int(idle_ttl_s * 1000)
        self.max_turns = max_turns
        self.count = token_counter
        self.policy = policy
        self._append = redis.register_script(_APPEND)
        self._apply = redis.register_script(_APPLY_COMPACTION)
        self._release = redis.register_script(_RELEASE_LEASE)

    @classmethod
    def from_settings(
        cls, redis: AnyRedis, settings: Settings, *, token_counter: TokenCounter = estimate_tokens
    ) -> SessionStore:
        """AGENTMESH_SESSION_IDLE_TTL and AGENTMESH_SESSION_MAX_TURNS applied."""
        return cls(
            redis,
            idle_ttl_s=settings.session_idle_ttl_s,
            max_turns=settings.session_max_turns,
            token_counter=token_counter,
        )

    # --- writes ----------------------------------------------------------------

    async def append(self, tenant: str, user: str, session_id: str, *turns: Turn) -> int:
        """Append turns (oldest first) and renew the session's idle TTL; returns the stored turn count.

        Turns get their timestamp (if unset) and token count here, so packing
        never re-tokenizes history.
        """
        violations = Violations()
        check_owner(violations, tenant=tenant, user=user, session_id=session_id)
        violations.required(turns, "turns")
        violations.max_items(turns, MAX_TURNS_PER_APPEND, "turns")
        for index, turn in enumerate(turns):
            violations.max_length(turn.content, MAX_TURN_BYTES, f"turns[{index}].content")
            if turn.role is TurnRole.TOOL and not turn.tool_call_id:
                violations.add(f"turns[{index}].tool_call_id", "is required for tool turns", "REQUIRED")
        violations.raise_if_any("invalid session append")
        now = time.time()
        records = [encode_turn(count_turn(replace(turn, at=turn.at or now), self.count)) for turn in turns]
        index_key = keys.user_sessions(tenant, user)
        turns_key = keys.session_turns(tenant, user, session_id)
        session_keys = [turns_key, keys.session_meta(tenant, user, session_id)]
        with redis_errors(f"appending to session {session_id!r}"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(index_key, {session_id: int(now * 1000)})
                pipe.zremrangebyscore(index_key, "-inf", int((now * 1000) - self.idle_ttl_ms))
                pipe.pexpire(index_key, self.idle_ttl_ms)
                count, _ = await asyncio.gather(
                    self._append(
                        keys=session_keys,
                        args=[int(now * 1000), self.idle_ttl_ms, self.max_turns, *records],
                    ),
                    pipe.execute(),
                )
        return int(count)

    async def delete(self, tenant: str, user: str, session_id: str) -> bool:
        """Forget one session (turns, summary, counters); False when there was nothing to forget.

        Usage counters are accounting, not conversation memory: they stay
        (`forget_user` removes them).
        """
        violations = Violations()
        check_owner(violations, tenant=tenant, user=user, session_id=session_id)
        violations.raise_if_any("invalid session")
        with redis_errors(f"deleting session {session_id!r}"):
            deleted, _ = await asyncio.gather(
                self._redis.delete(
                    keys.session_turns(tenant, user, session_id),
                    keys.session_meta(tenant, user, session_id),
                    keys.session_compaction_lease(tenant, user, session_id),
                ),
                self._redis.zrem(keys.user_sessions(tenant, user), session_id),
            )
        return int(deleted) > 0

    # --- reads -----------------------------------------------------------------

    async def turns(self, tenant: str, user: str, session_id: str) -> list[Turn]:
        violations = Violations()
        check_owner(violations, tenant=tenant, user=user, session_id=session_id)
        violations.raise_if_any("invalid session")
        with redis_errors(f"reading session {session_id!r}"):
            raw = await self._redis.lrange(keys.session_turns(tenant, user, session_id), 0, -1)
        return [decode_turn(item, f"session {session_id!r} turn {i}") for i, item in enumerate(raw)]

    async def info(self, tenant: str, user: str, session_id: str) -> SessionInfo | None:
        violations = Violations()
        check_owner(violations, tenant=tenant, user=user, session_id=session_id)
        violations.raise_if_any("invalid session")
        with redis_errors(f"reading session {session_id!r}"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.llen(keys.session_turns(tenant, user, session_id))
                pipe.hgetall(keys.session_meta(tenant, user, session_id))
                length, meta = await pipe.execute()
        if not meta:
            return None
        return SessionInfo(
            session_id=session_id,
            turns=int(length),
            summary=decode_summary(meta.get(b"summary"), f"session {session_id!r} summary"),
            created_at=_ms(meta.get(b"created")),
            updated_at=_ms(meta.get(b"updated")),
            compactions=_int(meta.get(b"compactions")),
            folded=_int(meta.get(b"folded")),
            dropped=_int(meta.get(b"dropped")),
        )

    async def list_sessions(self, tenant: str, user: str) -> list[tuple[str, float]]:
        """The user's live sessions as (session id, last activity epoch seconds), newest first."""
        violations = Violations()
        check_owner(violations, tenant=tenant, user=user)
        violations.raise_if_any("invalid owner")
        cutoff = int(time.time() * 1000) - self.idle_ttl_ms
        with redis_errors("listing sessions"):
            entries = await self._redis.zrevrangebyscore(
                keys.user_sessions(tenant, user), "+inf", cutoff, withscores=True
            )
        listed: list[Any] = list(entries)
        return [(bytes(name).decode(), float(score) / 1000) for name, score in listed]

    async def packet(
        self,
        tenant: str,
        user: str,
        session_id: str,
        *,
        budget: int,
        counter: TokenCounter | None = None,
    ) -> ContextPacket:
        """The context packet for the next model call, at most `budget` tokens (one round trip).

        An unknown session gives an empty packet (plus the user's pinned
        facts): a new conversation. `counter` overrides the store's token
        counter for this packet (e.g. the model's tokenizer).
        """
        violations = Violations()
        check_owner(violations, tenant=tenant, user=user, session_id=session_id)
        violations.in_range(budget, "budget", low=64)
        violations.raise_if_any("invalid packet request")
        # Each message costs at least MESSAGE_OVERHEAD tokens: older turns than this cannot fit.
        window = max(1, budget // MESSAGE_OVERHEAD)
        with redis_errors(f"reading session {session_id!r}"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.lrange(keys.session_turns(tenant, user, session_id), -window, -1)
                pipe.llen(keys.session_turns(tenant, user, session_id))
                pipe.hget(keys.session_meta(tenant, user, session_id), "summary")
                pipe.hgetall(keys.user_facts(tenant, user))
                raw_turns, length, summary_record, raw_facts = await pipe.execute()
        count = counter or self.count
        turns = _newest_that_can_fit(raw_turns, budget, None if count is self.count else count, session_id)
        packet = build_packet(
            turns,
            budget=budget,
            summary=decode_summary(summary_record, f"session {session_id!r} summary"),
            facts=packet_facts(live_facts(raw_facts, time.time(), "fact")),
            counter=count,
            policy=self.policy,
        )
        unread = int(length) - len(turns)
        if unread > 0:
            packet = replace(packet, turns_omitted=packet.turns_omitted + unread, needs_compaction=True)
        return packet

    # --- compaction ------------------------------------------------------------

    async def compact(
        self, tenant: str, user: str, session_id: str, summarizer: Summarizer, *, budget: int
    ) -> CompactionResult | None:
        """Fold old turns and verbose tool errors into the running summary.

        None when there was nothing to fold, another replica is compacting this
        session, or the session changed underneath (removed turns, deleted):
        the caller just goes on. The summary is bounded to the policy's
        summary share of `budget` (newest part kept).
        """
        violations = Violations()
        check_owner(violations, tenant=tenant, user=user, session_id=session_id)
        violations.in_range(budget, "budget", low=64)
        violations.raise_if_any("invalid compaction request")
        lease_key = keys.session_compaction_lease(tenant, user, session_id)
        token = uuid.uuid4().hex
        with redis_errors(f"compacting session {session_id!r}"):
            if not await self._redis.set(lease_key, token, nx=True, px=int(COMPACTION_LEASE_S * 1000)):
                return None
        try:
            return await self._compact(tenant, user, session_id, summarizer, budget)
        finally:
            # The lease expires on its own; a failed release must not hide the real outcome.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release(keys=[lease_key], args=[token]))

    async def _compact(
        self, tenant: str, user: str, session_id: str, summarizer: Summarizer, budget: int
    ) -> CompactionResult | None:
        turns_key = keys.session_turns(tenant, user, session_id)
        meta_key = keys.session_meta(tenant, user, session_id)
        with redis_errors(f"reading session {session_id!r}"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.lrange(turns_key, 0, -1)
                pipe.hmget(meta_key, ["gen", "created", "summary"])
                raw_turns, (gen, created, summary_record) = await pipe.execute()
        if created is None:
            return None
        turns = [decode_turn(item, f"session {session_id!r} turn") for item in raw_turns]
        plan = plan_compaction(turns, budget=budget, counter=self.count, policy=self.policy)
        if plan is None:
            return None
        previous = decode_summary(summary_record, f"session {session_id!r} summary")
        inputs = [Turn.summary(previous), *plan.fold] if previous else list(plan.fold)
        text = (await summarizer(inputs)).strip()
        text = fit_suffix(text, summary_limit(budget, self.count, self.policy), self.count, "…")
        summary_tokens = self.count(text)
        folded = len(turns) - len(plan.keep)
        now = time.time()
        with redis_errors(f"compacting session {session_id!r}"):
            stored = await self._apply(
                keys=[turns_key, meta_key],
                args=[
                    gen or b"0",
                    created,
                    len(raw_turns),
                    int(now * 1000),
                    self.idle_ttl_ms,
                    encode_summary(text, summary_tokens, now),
                    folded,
                    *(encode_turn(t) for t in plan.keep),
                ],
            )
        if int(stored) < 0:
            return None
        return CompactionResult(
            folded_turns=folded,
            kept_turns=len(plan.keep),
            tokens_before=plan.tokens_before,
            tokens_after=plan.tokens_after,
            summary=text,
            summary_tokens=summary_tokens,
        )
