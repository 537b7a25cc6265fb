"""Forget a user: delete everything the memory layer holds about one (tenant, user).

    found = await find_user_data(redis, "acme", "u-1")     # what would go (for a confirmation)
    report = await forget_user(redis, "acme", "u-1")       # delete it; report what went

What goes: every session (turns, summary, counters), the session index, all
long-term facts, every usage counter of the user (per task, session, domain,
day, total) and the user's rate-limit buckets. What stays: the tenant's domain
totals (`{c:<tenant>:<domain>}`: aggregates, not about one person) and task
records, which belong to the task layer and expire with its retention (that
layer can add its own eraser to `forget_user(..., erasers=[…])`).

Finding: the session index, plus SCANs of the user's key patterns (escaped
components contain no ':' or glob characters, so the patterns match this
user only), so a session missing from the index is found too. Deleting: the
found keys are unlinked, then the patterns are scanned again until a pass
finds nothing, which also catches a session a running task wrote meanwhile.
A task still running for the user can write again afterwards: forget users
who have no running tasks (or cancel them first).

SCAN walks the whole keyspace (on a cluster: every primary); this is an
operator command, not a request path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from memory import keys
from memory.connection import AnyRedis, redis_errors
from memory.identity import require_owner

UserDataEraser = Callable[[AnyRedis, str, str], Awaitable[Mapping[str, int]]]
MAX_PASSES = 3
SCAN_COUNT = 1000


@dataclass
class UserData:
    """The keys holding one user's data, by kind."""

    sessions: set[str] = field(default_factory=set)
    session_keys: set[str] = field(default_factory=set)
    fact_keys: set[str] = field(default_factory=set)
    facts: int = 0
    usage_keys: set[str] = field(default_factory=set)
    rate_keys: set[str] = field(default_factory=set)
    other_keys: set[str] = field(default_factory=set)

    @property
    def keys(self) -> set[str]:
        return self.session_keys | self.fact_keys | self.usage_keys | self.rate_keys | self.other_keys

    def __bool__(self) -> bool:
        return bool(self.keys)

    def merge(self, other: UserData) -> None:
        self.sessions |= other.sessions
        self.session_keys |= other.session_keys
        self.fact_keys |= other.fact_keys
        self.facts += other.facts
        self.usage_keys |= other.usage_keys
        self.rate_keys |= other.rate_keys
        self.other_keys |= other.other_keys

    def counts(self) -> dict[str, int]:
        return {
            "sessions": len(self.sessions),
            "facts": self.facts,
            "usage_counters": len(self.usage_keys),
            "rate_limit_buckets": len(self.rate_keys),
            "other_keys": len(self.other_keys),
            "keys": len(self.keys),
        }


@dataclass
class ForgetReport:
    tenant: str
    user: str
    deleted: dict[str, int] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "user": self.user, "deleted": self.deleted, "keys": self.keys}


def _text(key: Any) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)


async def find_user_data(redis: AnyRedis, tenant: str, user: str) -> UserData:
    """Everything of (tenant, user) the memory layer stores (nothing is deleted)."""
    require_owner(tenant=tenant, user=user)
    found = UserData()
    with redis_errors(f"finding the data of user {user!r}"):
        for raw in await redis.zrange(keys.user_sessions(tenant, user), 0, -1):
            session_id = _text(raw)
            found.sessions.add(session_id)
            for key in (
                keys.session_turns(tenant, user, session_id),
                keys.session_meta(tenant, user, session_id),
                keys.session_compaction_lease(tenant, user, session_id),
            ):
                if await redis.exists(key):
                    found.session_keys.add(key)
        session_prefix = keys.session_pattern(tenant, user)[:-1]
        async for raw in redis.scan_iter(match=keys.session_pattern(tenant, user), count=SCAN_COUNT):
            key = _text(raw)
            found.session_keys.add(key)
            found.sessions.add(unquote(key[len(session_prefix) :].split("}", 1)[0]))
        facts_key = keys.user_facts(tenant, user)
        async for raw in redis.scan_iter(match=keys.user_pattern(tenant, user), count=SCAN_COUNT):
            key = _text(raw)
            if key in (facts_key, keys.user_fact_expiry(tenant, user)):
                found.fact_keys.add(key)
            elif key.startswith(keys.usage_user(tenant, user)):
                found.usage_keys.add(key)
            else:
                found.other_keys.add(key)  # the session index
        if facts_key in found.fact_keys:
            found.facts = int(await redis.hlen(facts_key))
        if await redis.exists(keys.rate_user(tenant, user)):
            found.rate_keys.add(keys.rate_user(tenant, user))
        async for raw in redis.scan_iter(match=keys.rate_tool_user_pattern(tenant, user), count=SCAN_COUNT):
            found.rate_keys.add(_text(raw))
    return found


async def forget_user(
    redis: AnyRedis, tenant: str, user: str, *, erasers: Sequence[UserDataEraser] = ()
) -> ForgetReport:
    """Delete all of (tenant, user)'s memory (see the module doc); returns what was deleted."""
    gone = UserData()
    for _ in range(MAX_PASSES):
        found = await find_user_data(redis, tenant, user)
        if not found:
            break
        doomed = sorted(found.keys)
        with redis_errors(f"deleting the data of user {user!r}"):
            for start in range(0, len(doomed), 500):
                await redis.unlink(*doomed[start : start + 500])
        gone.merge(found)
    totals = gone.counts()
    for eraser in erasers:
        for kind, count in (await eraser(redis, tenant, user)).items():
            totals[kind] = totals.get(kind, 0) + count
    return ForgetReport(tenant, user, totals, sorted(gone.keys))
