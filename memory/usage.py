"""Usage counters, cost attribution and budgets.

    usage = UsageStore.from_settings(redis, settings)
    who = Attribution(tenant, user, domain="refunds", session_id="s-1", task_id=task_id)
    cost = prices.cost("gpt-4o", 812, 96)       # priced once, by the task's state machine
    status = await usage.record(who, StepUsage.model_call(812, 96, cost), budgets=budgets)
    if status.exhausted:
        stop(status.exhausted.stop_reason, status.exhausted.message)

One usage model (docs/decisions.md "One usage model"): a model turn is priced
once, by the agent's state machine with the one `PriceTable` (memory/prices.py);
the step carries its cost here, and this store only adds it up. The task's own
caps (iterations, tokens, tool calls, cost: `Limits`) are enforced once, by the
state machine (agents/limits.py) before every call; this store enforces what
no single task can see: the user's daily token and cost budgets.

Every step's usage (model tokens and cost, iterations, tool calls, wall time)
is added to counters for the task, the session in that domain, the user in
that domain, the user over all domains, the user's UTC day, and the tenant's
domain total. All but the last share the user's hash tag `{u:<tenant>:<user>}`,
so one Lua script adds them atomically and returns the task's and the day's
totals; the budget verdict comes back with the same round trip. The tenant's
domain total (`{c:<tenant>:<domain>}`, a second slot) is updated by a second script sent
in the same pipeline (concurrently on a Cluster).

Counters are integers (HINCRBY): cost is kept in nano-USD so sums never drift.
Each hash carries `v` (format version); counters expire `retention_s` after
their last update (day counters after two days). Tokens of models without a
price come as `unpriced_tokens` and are counted beside the cost.

Prometheus gets only bounded labels (tokens and cost per domain, tool calls
per domain and tool); per-session and per-user figures are read here:
`get_usage` answers AgentService.GetUsage, `for_*` serve the CLI.
"""

from __future__ import annotations

import asyncio
import calendar
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from google.protobuf import duration_pb2
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from agentmesh.kit import metrics
from agentmesh.kit.config import Settings
from agentmesh.kit.errors import DataLoss, ResourceExhausted
from agentmesh.kit.validation import DOMAIN_SLUG, Violations
from agentmesh.v1 import errors_pb2, task_pb2
from memory import keys
from memory.connection import AnyRedis, redis_errors
from memory.identity import check_owner
from memory.prices import NANO, Cost

FORMAT_VERSION = 1
READABLE_VERSIONS = frozenset({1})
DEFAULT_RETENTION_S = 90 * 24 * 3600.0
DAY_RETENTION_S = 2 * 24 * 3600.0
DAY_RETENTION_MS = int(DAY_RETENTION_S * 1000)
FIELDS = (
    "iterations",
    "prompt_tokens",
    "completion_tokens",
    "tool_calls",
    "cost_nusd",
    "unpriced_tokens",
    "wall_ms",
)

# KEYS[1]: task, KEYS[2]: user's day, KEYS[3..]: aggregates (user+domain, user, [session+domain]).
# ARGV: domain, session, retention ms, day retention ms, then one increment per FIELDS entry.
_RECORD = """
local fields = {'iterations', 'prompt_tokens', 'completion_tokens', 'tool_calls', 'cost_nusd',
                'unpriced_tokens', 'wall_ms'}
local new_task = redis.call('HSETNX', KEYS[1], 'v', '1')
if new_task == 1 then redis.call('HSET', KEYS[1], 'domain', ARGV[1], 'session', ARGV[2]) end
for i = 1, #KEYS do
  if i > 1 then redis.call('HSETNX', KEYS[i], 'v', '1') end
  for f = 1, #fields do
    local delta = tonumber(ARGV[4 + f])
    if delta ~= 0 then redis.call('HINCRBY', KEYS[i], fields[f], delta) end
  end
  if i > 1 and new_task == 1 then redis.call('HINCRBY', KEYS[i], 'tasks', 1) end
  if i == 2 then redis.call('PEXPIRE', KEYS[i], ARGV[4]) else redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
end
return {new_task, redis.call('HMGET', KEYS[1], unpack(fields)), redis.call('HMGET', KEYS[2], unpack(fields))}
"""


# KEYS[1]: the tenant's domain total. ARGV: retention ms, new task (0/1), one increment per FIELDS entry.
_RECORD_DOMAIN = """
local fields = {'iterations', 'prompt_tokens', 'completion_tokens', 'tool_calls', 'cost_nusd',
                'unpriced_tokens', 'wall_ms'}
redis.call('HSETNX', KEYS[1], 'v', '1')
for f = 1, #fields do
  local delta = tonumber(ARGV[2 + f])
  if delta ~= 0 then redis.call('HINCRBY', KEYS[1], fields[f], delta) end
end
if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[1], 'tasks', 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


@dataclass(frozen=True, slots=True)
class Attribution:
    """Whom a step's usage is charged to."""

    tenant: str
    user: str
    domain: str
    task_id: str
    session_id: str = ""


@dataclass(frozen=True, slots=True)
class StepUsage:
    """What one step consumed, already priced. Build with `model_call` / `tool_call`, or directly."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    iterations: int = 0
    tool_calls: int = 0
    tool: str = ""
    wall_s: float = 0.0
    cost_nusd: int = 0
    unpriced_tokens: int = 0

    @classmethod
    def model_call(
        cls,
        prompt_tokens: int,
        completion_tokens: int,
        cost: Cost,
        *,
        iterations: int = 1,
        wall_s: float = 0.0,
    ) -> StepUsage:
        """One model turn (one iteration) with the token counts the model reported and their cost
        (a model without a price: its tokens count as unpriced)."""
        return cls(
            prompt_tokens,
            completion_tokens,
            iterations=iterations,
            wall_s=wall_s,
            cost_nusd=cost.nano_usd,
            unpriced_tokens=0 if cost.priced else prompt_tokens + completion_tokens,
        )

    @classmethod
    def tool_call(cls, tool: str, *, attempts: int = 1, wall_s: float = 0.0) -> StepUsage:
        """Calls that reached a tool (retries included, as Usage.tool_calls counts them)."""
        return cls(tool_calls=attempts, tool=tool, wall_s=wall_s)


@dataclass(frozen=True, slots=True)
class Counters:
    """Raw counters of one scope (cost in nano-USD)."""

    iterations: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: int = 0
    cost_nusd: int = 0
    unpriced_tokens: int = 0
    wall_ms: int = 0
    tasks: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost_usd(self) -> float:
        return self.cost_nusd / NANO

    def __add__(self, other: Counters) -> Counters:
        return Counters(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))

    def to_proto(self) -> task_pb2.Usage:
        return task_pb2.Usage(
            iterations=self.iterations,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.total_tokens,
            tool_calls=self.tool_calls,
            cost_usd=self.cost_usd,
            wall_time=duration_pb2.Duration(
                seconds=self.wall_ms // 1000, nanos=(self.wall_ms % 1000) * 1_000_000
            ),
        )


def _values(counters: Counters) -> tuple[int, ...]:
    return (
        counters.iterations,
        counters.prompt_tokens,
        counters.completion_tokens,
        counters.tool_calls,
        counters.cost_nusd,
        counters.unpriced_tokens,
        counters.wall_ms,
        counters.tasks,
    )


def _int(value: Any) -> int:
    return int(value) if value not in (None, b"", "") else 0


def counters_from_hash(raw: Mapping[Any, Any], what: str) -> Counters:
    """Counters from a usage hash; DataLoss when it is not ours or from an unknown format."""
    if not raw:
        return Counters()
    data = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in raw.items()}
    version = data.get("v")
    try:
        readable = version is not None and int(version) in READABLE_VERSIONS
        if not readable:
            raise ValueError(f"format version {version!r}")
        return Counters(*(_int(data.get(name)) for name in (*FIELDS, "tasks")))
    except ValueError as exc:
        raise DataLoss(f"{what}: usage counters unreadable ({exc}); upgrade this replica") from exc


def _from_fields(values: Sequence[Any]) -> Counters:
    return Counters(*(_int(v) for v in values))


# --- budgets -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Budgets:
    """Caps checked when usage is recorded: the user's daily caps over all tasks and domains (0 = none).

    A task's own Limits are not here: the state machine enforces them (agents/limits.py)."""

    user_daily_tokens: int = 0
    user_daily_cost_usd: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Budgets:
        return cls(settings.user_daily_token_budget, settings.user_daily_cost_budget_usd)


@dataclass(frozen=True, slots=True)
class BudgetExhausted:
    """Which budget ran out.

    `scope`: user_daily; `budget`: tokens | cost;
    `stop_reason`: the StopReason to end the task with.
    """

    scope: str
    budget: str
    limit: float
    used: float
    stop_reason: int
    retry_after: float | None = None

    @property
    def message(self) -> str:
        return f"{self.scope} {self.budget} budget exhausted: used {self.used:g} of {self.limit:g}"

    def error(self) -> ResourceExhausted:
        """RESOURCE_EXHAUSTED (BUDGET_EXHAUSTED); daily budgets carry RetryInfo until the next UTC day."""
        return ResourceExhausted(
            self.message,
            reason=errors_pb2.ERROR_REASON_BUDGET_EXHAUSTED,
            metadata={"scope": self.scope, "budget": self.budget, "limit": f"{self.limit:g}"},
            retry_after=self.retry_after,
        )


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """Totals after a record (or at a check) and the first exhausted budget, if any."""

    task: Counters
    user_today: Counters
    exhausted: BudgetExhausted | None = None


def seconds_to_utc_midnight(now: float) -> float:
    day = time.gmtime(now)
    midnight = calendar.timegm((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0)) + 86400
    return max(0.0, midnight - now)


def check_budgets(
    task: Counters, today: Counters, budgets: Budgets, now: float | None = None
) -> BudgetStatus:
    """The first exhausted daily budget (tokens, then cost); it retries after the next UTC midnight."""
    caps = (
        ("tokens", budgets.user_daily_tokens, today.total_tokens, task_pb2.STOP_REASON_TOKEN_CAP),
        ("cost", budgets.user_daily_cost_usd, today.cost_usd, task_pb2.STOP_REASON_COST_CAP),
    )
    for budget, cap, used, reason in caps:
        if cap and used >= cap:
            wait = seconds_to_utc_midnight(now or time.time())
            exhausted = BudgetExhausted("user_daily", budget, float(cap), float(used), reason, wait)
            return BudgetStatus(task, today, exhausted)
    return BudgetStatus(task, today)


def utc_day(now: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(now))


# --- reports -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Usage of one scope, as the API and CLI show it."""

    counters: Counters = field(default_factory=Counters)

    @property
    def usage(self) -> task_pb2.Usage:
        return self.counters.to_proto()

    @property
    def tasks(self) -> int:
        return self.counters.tasks

    @property
    def unpriced_tokens(self) -> int:
        return self.counters.unpriced_tokens


class UsageStore:
    def __init__(
        self,
        redis: AnyRedis,
        *,
        retention_s: float = DEFAULT_RETENTION_S,
    ) -> None:
        if retention_s <= 0:
            raise ValueError("retention_s must be positive")
        self._redis = redis
        self.retention_ms = int(retention_s * 1000)
        self._record = redis.register_script(_RECORD)
        self._record_domain = redis.register_script(_RECORD_DOMAIN)

    @classmethod
    def from_settings(cls, redis: AnyRedis, settings: Settings) -> UsageStore:
        return cls(redis, retention_s=settings.usage_retention_s)

    async def record(
        self, who: Attribution, step: StepUsage, *, budgets: Budgets | None = None
    ) -> BudgetStatus:
        """Add one step's usage everywhere it is attributed; returns the totals and the budget verdict.

        One atomic script for the user's counters and one for the tenant's domain total (another
        slot), sent together: one round trip (two concurrent calls on a Cluster), and one more
        at the task's first record (it counts the task in the domain total).
        """
        violations = Violations()
        check_owner(
            violations,
            tenant=who.tenant,
            user=who.user,
            task_id=who.task_id,
            domain=who.domain,
            session_id=who.session_id or None,
        )
        for name in (
            "prompt_tokens",
            "completion_tokens",
            "iterations",
            "tool_calls",
            "cost_nusd",
            "unpriced_tokens",
        ):
            violations.in_range(getattr(step, name), name, low=0)
        violations.in_range(step.wall_s, "wall_s", low=0)
        violations.raise_if_any("invalid usage record")
        deltas = [
            step.iterations,
            step.prompt_tokens,
            step.completion_tokens,
            step.tool_calls,
            step.cost_nusd,
            step.unpriced_tokens,
            round(step.wall_s * 1000),
        ]
        now = time.time()
        tenant, user = who.tenant, who.user
        record_keys = [
            keys.usage_task(tenant, user, who.task_id),
            keys.usage_user_day(tenant, user, utc_day(now)),
            keys.usage_user(tenant, user, who.domain),
            keys.usage_user(tenant, user),
        ]
        if who.session_id:
            record_keys.append(keys.usage_session(tenant, user, who.session_id, who.domain))
        domain_key = keys.usage_domain(tenant, who.domain)
        with redis_errors("recording usage"):
            answer, _ = await self._together(
                (
                    self._record,
                    record_keys,
                    [who.domain, who.session_id, self.retention_ms, DAY_RETENTION_MS, *deltas],
                ),
                (self._record_domain, [domain_key], [self.retention_ms, 0, *deltas]),
            )
            new_task, task_fields, day_fields = answer
            if int(new_task):  # the task's first record: count it in the domain total too
                await self._record_domain(keys=[domain_key], args=[self.retention_ms, 1, *[0] * len(FIELDS)])
        self._observe(who.domain, step)
        task, today = _from_fields(task_fields), _from_fields(day_fields)
        status = check_budgets(task, today, budgets or Budgets(), now)
        if status.exhausted:
            metrics.BUDGET_EXHAUSTED.labels(
                who.domain, f"{status.exhausted.scope}.{status.exhausted.budget}"
            ).inc()
        return status

    async def _together(self, *calls: tuple[AsyncScript, list[str], list[Any]]) -> list[Any]:
        """Scripts whose keys lie in different slots, in one pipeline (one round trip) on a single
        server or a Sentinel master; concurrently on a Cluster (its pipeline neither loads scripts
        nor keeps replies apart per slot). A script the server does not know yet (restarted, failed
        over) did not run: it alone is loaded and sent again, so nothing is counted twice."""
        if not isinstance(self._redis, aioredis.Redis):
            return list(await asyncio.gather(*(script(keys=k, args=a) for script, k, a in calls)))
        async with self._redis.pipeline(transaction=False) as pipe:
            for script, k, a in calls:
                pipe.evalsha(script.sha, len(k), *k, *a)
            replies = await pipe.execute(raise_on_error=False)
        answers = []
        for (script, k, a), reply in zip(calls, replies, strict=True):
            if isinstance(reply, NoScriptError):
                reply = await script(keys=k, args=a)  # loads it, then runs it
            elif isinstance(reply, Exception):
                raise reply
            answers.append(reply)
        return answers

    @staticmethod
    def _observe(domain: str, step: StepUsage) -> None:
        if step.prompt_tokens:
            metrics.MODEL_TOKENS.labels(domain, "prompt").inc(step.prompt_tokens)
        if step.completion_tokens:
            metrics.MODEL_TOKENS.labels(domain, "completion").inc(step.completion_tokens)
        if step.cost_nusd:
            metrics.MODEL_COST_USD.labels(domain).inc(step.cost_nusd / NANO)
        if step.unpriced_tokens:
            metrics.UNPRICED_TOKENS.labels(domain).inc(step.unpriced_tokens)
        if step.tool_calls:
            metrics.TOOL_CALLS_COUNTED.labels(domain, step.tool).inc(step.tool_calls)

    async def status(self, who: Attribution, budgets: Budgets) -> BudgetStatus:
        """The budget verdict without recording anything (admission, or before a model call)."""
        now = time.time()
        with redis_errors("reading usage"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(keys.usage_task(who.tenant, who.user, who.task_id))
                pipe.hgetall(keys.usage_user_day(who.tenant, who.user, utc_day(now)))
                task_raw, day_raw = await pipe.execute()
        task = counters_from_hash(task_raw, f"usage of task {who.task_id!r}")
        today = counters_from_hash(day_raw, "usage of the user today")
        return check_budgets(task, today, budgets, now)

    async def _read(self, key: str, what: str) -> Counters:
        with redis_errors(f"reading {what}"):
            raw = await self._redis.hgetall(key)
        return counters_from_hash(raw, what)

    async def for_task(self, tenant: str, user: str, task_id: str) -> UsageReport:
        _require(tenant=tenant, user=user, task_id=task_id)
        return UsageReport(
            await self._read(keys.usage_task(tenant, user, task_id), f"usage of task {task_id!r}")
        )

    async def for_session(self, tenant: str, user: str, session_id: str, domain: str) -> UsageReport:
        _require(tenant=tenant, user=user, session_id=session_id, domain=domain)
        key = keys.usage_session(tenant, user, session_id, domain)
        return UsageReport(await self._read(key, f"usage of session {session_id!r}"))

    async def for_user(self, tenant: str, user: str, domain: str | None = None) -> UsageReport:
        """A user's usage in one domain, or over all domains (domain=None)."""
        _require(tenant=tenant, user=user, domain=domain)
        return UsageReport(await self._read(keys.usage_user(tenant, user, domain), "usage of the user"))

    async def for_user_today(self, tenant: str, user: str) -> UsageReport:
        _require(tenant=tenant, user=user)
        key = keys.usage_user_day(tenant, user, utc_day(time.time()))
        return UsageReport(await self._read(key, "usage of the user today"))

    async def for_domain(self, domain: str, tenant: str | None = None) -> UsageReport:
        """A domain's usage for one tenant, or summed over all tenants (None: a SCAN, for operators)."""
        violations = Violations()
        if violations.required(domain, "domain"):
            violations.matches(domain, DOMAIN_SLUG, "domain", "domain slug")
        if tenant is not None:
            violations.required(tenant, "tenant")
        violations.raise_if_any("invalid usage query")
        if tenant is not None:
            key = keys.usage_domain(tenant, domain)
            return UsageReport(await self._read(key, f"usage of domain {domain!r}"))
        total = Counters()
        with redis_errors(f"reading usage of domain {domain!r}"):
            async for key in self._redis.scan_iter(match=keys.usage_domain_pattern(domain), count=1000):
                total = total + counters_from_hash(await self._redis.hgetall(key), f"usage {key!r}")
        return UsageReport(total)

    async def get_usage(self, tenant: str, user: str, domain: str, session_id: str = "") -> UsageReport:
        """What AgentService.GetUsage answers: the caller's usage in this domain, for one session or
        all of them.

        Unknown sessions (or another user's) read as zero: nothing is revealed.
        """
        if session_id:
            return await self.for_session(tenant, user, session_id, domain)
        return await self.for_user(tenant, user, domain)


def _require(**owner: Any) -> None:
    violations = Violations()
    check_owner(violations, **owner)
    violations.raise_if_any("invalid usage query")
