"""Token-bucket rate limits in Redis, shared by every replica.

    limiter = RateLimiter(redis)
    # RPC admission: refuse with RESOURCE_EXHAUSTED + RetryInfo
    await limiter.admit(admission_limits(settings, tenant=t, user=u, domain="refunds"))
    # inside a task: wait for the tool's bucket, within the task's deadline
    await limiter.acquire(tool_limits("payments_refund", policy, tenant=t, user=u), deadline=task_deadline)

Several limits are checked together and the most restrictive wins: the call
passes only if every bucket holds enough tokens, and then takes them from all
of them; otherwise it takes nothing and the `Decision` names the limit that
needs the longest wait. Time comes from the Redis server (`TIME`), so replicas'
clocks do not matter.

Atomicity and Redis Cluster: one Lua script handles all buckets of one hash
slot. Every bucket of one tenant lives under `{r:<tenant>}` (tenant, user,
tenant-domain, tenant- and user-scoped tool buckets), so the usual check is
ONE script call. Limits shared by all tenants (a tool's
RATE_LIMIT_SCOPE_GLOBAL, a domain's total capacity) each live in their own slot
`{rg:<kind>:<name>}`: a check that mixes slots takes tokens slot by slot in the
order given (tenant first, so an abusive tenant is refused before it touches
the shared buckets), and gives them back if a later slot refuses. Between the
two steps another caller may see the shared bucket a little emptier than it
ends up: the error is on the side of refusing, never of admitting too much.

A bucket is a hash {t: tokens, ts: ms}; it expires once it would be full again
(a missing bucket is a full one), so idle tenants and users leave nothing behind.
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from agentmesh.kit import metrics
from agentmesh.kit.config import RateSpec, Settings
from agentmesh.kit.errors import ResourceExhausted
from agentmesh.v1 import errors_pb2, tool_options_pb2
from memory import keys
from memory.connection import AnyRedis, redis_errors

# KEYS: buckets. ARGV[1]: cost (negative = give back), then per bucket: rate (tokens/s), burst.
# Returns {allowed, index of the refusing (or tightest) bucket, wait ms, tokens left there}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cost = tonumber(ARGV[1])
local tokens, stamps = {}, {}
local worst, worst_wait, tightest, tightest_left = 0, -1, 1, math.huge
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local state = redis.call('HMGET', KEYS[i], 't', 'ts')
  local level, stamp = tonumber(state[1]), tonumber(state[2])
  if not level or not stamp then level, stamp = burst, now end
  if now > stamp then
    level = math.min(burst, level + (now - stamp) * rate / 1000)
    stamp = now
  end
  tokens[i], stamps[i] = level, stamp
  if cost > 0 and level < cost then
    local wait = (cost - level) * 1000 / rate
    if wait > worst_wait then worst, worst_wait = i, wait end
  elseif level - cost < tightest_left then
    tightest, tightest_left = i, level - cost
  end
end
if worst > 0 then
  return {0, worst, tostring(worst_wait), tostring(tokens[worst])}
end
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local level = math.min(burst, tokens[i] - cost)
  redis.call('HSET', KEYS[i], 't', tostring(level), 'ts', stamps[i])
  redis.call('PEXPIRE', KEYS[i], math.ceil((burst - level) * 1000 / rate) + 1000)
end
return {1, tightest, '0', tostring(tightest_left)}
"""


class LimitScope(enum.StrEnum):
    """Who a bucket limits (also the `scope` metric label)."""

    TENANT = "tenant"
    USER = "user"
    DOMAIN = "domain"
    TOOL = "tool"


@dataclass(frozen=True, slots=True)
class Limit:
    """One token bucket: `per_second` sustained, `burst` at once. Build with the class methods."""

    name: str
    scope: LimitScope
    key: str
    per_second: float
    burst: int
    tool: str = ""

    def __post_init__(self) -> None:
        if not (self.per_second > 0 and math.isfinite(self.per_second)) or self.burst < 1:
            raise ValueError(f"limit {self.name}: rate must be positive and burst >= 1")

    @classmethod
    def tenant(cls, tenant: str, rate: RateSpec) -> Limit:
        return cls("tenant", LimitScope.TENANT, keys.rate_tenant(tenant), rate.per_second, rate.burst)

    @classmethod
    def user(cls, tenant: str, user: str, rate: RateSpec) -> Limit:
        return cls("user", LimitScope.USER, keys.rate_user(tenant, user), rate.per_second, rate.burst)

    @classmethod
    def domain(cls, domain: str, rate: RateSpec, *, tenant: str | None = None) -> Limit:
        """A domain's capacity: over all tenants (tenant=None, its own slot) or for one tenant."""
        key = keys.rate_global("domain", domain) if tenant is None else keys.rate_domain(tenant, domain)
        return cls(f"domain:{domain}", LimitScope.DOMAIN, key, rate.per_second, rate.burst)

    @classmethod
    def tool_calls(
        cls,
        tool: str,
        rate: RateSpec,
        *,
        scope: int = tool_options_pb2.RATE_LIMIT_SCOPE_GLOBAL,
        tenant: str = "",
        user: str = "",
    ) -> Limit:
        """A tool's bucket as its RateLimitPolicy scope says: global, per tenant or per (tenant, user)."""
        if scope == tool_options_pb2.RATE_LIMIT_SCOPE_TENANT:
            key = keys.rate_tool(tenant, tool)
        elif scope == tool_options_pb2.RATE_LIMIT_SCOPE_USER:
            key = keys.rate_tool(tenant, tool, user)
        else:
            key = keys.rate_global("tool", tool)
        return cls(f"tool:{tool}", LimitScope.TOOL, key, rate.per_second, rate.burst, tool=tool)


def hash_slot_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: the first non-empty {…}, else the whole key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def admission_limits(settings: Settings, *, tenant: str, user: str, domain: str) -> list[Limit]:
    """The limits AGENTMESH_RATE_LIMIT_TENANT / _USER / _DOMAIN put on one call (tenant slot first)."""
    limits = []
    if settings.rate_limit_tenant:
        limits.append(Limit.tenant(tenant, settings.rate_limit_tenant))
    if settings.rate_limit_user:
        limits.append(Limit.user(tenant, user, settings.rate_limit_user))
    if settings.rate_limit_domain:
        limits.append(Limit.domain(domain, settings.rate_limit_domain))
    return limits


def tool_limits(
    tool: str, policy: tool_options_pb2.RateLimitPolicy | None, *, tenant: str, user: str
) -> list[Limit]:
    """The bucket a tool's RateLimitPolicy (from its schema) asks for; none when it has no limit."""
    if policy is None or policy.requests_per_second <= 0:
        return []
    burst = policy.burst or max(1, math.ceil(policy.requests_per_second))
    rate = RateSpec(policy.requests_per_second, burst)
    return [Limit.tool_calls(tool, rate, scope=policy.scope, tenant=tenant, user=user)]


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one check.

    `allowed`: the tokens were taken. Otherwise nothing was taken, `limit` is
    the limit needing the longest wait and `retry_after` (seconds) that wait;
    it is a lower bound when others compete for the same bucket. `remaining`:
    tokens left in the tightest bucket after this call (refused: in `limit`).
    """

    allowed: bool
    retry_after: float = 0.0
    limit: Limit | None = None
    remaining: float = math.inf

    def error(self, detail: str = "") -> ResourceExhausted:
        """RESOURCE_EXHAUSTED (RATE_LIMITED) with RetryInfo, for the RPC edge or a stopping task."""
        name = self.limit.name if self.limit else "rate limit"
        scope = self.limit.scope.value if self.limit else ""
        return ResourceExhausted(
            f"rate limit {name!r} ({scope}) exceeded; retry in {self.retry_after:.3f}s{detail}",
            reason=errors_pb2.ERROR_REASON_RATE_LIMITED,
            metadata={"limit": name, "scope": scope},
            retry_after=self.retry_after,
        )

    def raise_if_denied(self) -> None:
        if not self.allowed:
            raise self.error()


ALLOWED = Decision(True)


class RateLimiter:
    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis
        self._take = redis.register_script(_TAKE)

    async def check(self, limits: Sequence[Limit], *, cost: float = 1.0) -> Decision:
        """Take `cost` tokens from every bucket, or from none; no limits = allowed without a round trip."""
        unique = list({limit.key: limit for limit in reversed(limits)}.values())[::-1]
        if not unique:
            return ALLOWED
        if not cost > 0:
            raise ValueError("cost must be positive")
        for limit in unique:
            if cost > limit.burst:
                raise ValueError(f"cost {cost} can never pass limit {limit.name} (burst {limit.burst})")
        groups: dict[str, list[Limit]] = {}
        for limit in unique:
            groups.setdefault(hash_slot_tag(limit.key), []).append(limit)
        taken: list[list[Limit]] = []
        tightest = ALLOWED
        for group in groups.values():
            decision = await self._run(group, cost)
            if not decision.allowed:
                for done in taken:  # all-or-nothing across slots: give back what earlier slots gave
                    await self._run(done, -cost)
                bit = decision.limit
                metrics.RATE_LIMITED.labels(bit.scope.value if bit else "", bit.tool if bit else "").inc()
                return decision
            taken.append(group)
            if decision.remaining < tightest.remaining:
                tightest = decision
        return tightest

    async def _run(self, group: list[Limit], cost: float) -> Decision:
        args: list[float | int] = [cost]
        for limit in group:
            args += [limit.per_second, limit.burst]
        with redis_errors("checking rate limits"):
            allowed, index, wait_ms, left = await self._take(keys=[limit.key for limit in group], args=args)
        bit = group[int(index) - 1] if int(index) > 0 else None
        if int(allowed):
            return Decision(True, 0.0, bit, float(left))
        return Decision(False, math.ceil(float(wait_ms)) / 1000, bit, float(left))

    async def admit(self, limits: Sequence[Limit], *, cost: float = 1.0) -> Decision:
        """RPC admission: take the tokens or raise RESOURCE_EXHAUSTED with RetryInfo."""
        decision = await self.check(limits, cost=cost)
        decision.raise_if_denied()
        return decision

    async def acquire(self, limits: Sequence[Limit], *, deadline: float, cost: float = 1.0) -> Decision:
        """Wait for the tokens until `deadline` (epoch seconds, e.g. the task's deadline).

        Raises RESOURCE_EXHAUSTED (RATE_LIMITED, RetryInfo) as soon as the
        needed wait would pass the deadline, without sleeping in vain. Waiters
        sleep the hinted delay plus up to 10% jitter, so they do not stampede.
        """
        while True:
            decision = await self.check(limits, cost=cost)
            if decision.allowed:
                return decision
            if time.time() + decision.retry_after > deadline:
                raise decision.error("; the wait would pass the deadline")
            await asyncio.sleep(decision.retry_after * (1 + random.uniform(0, 0.1)))
