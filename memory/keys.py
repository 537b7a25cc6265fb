"""The Redis key scheme: the only place key names are made.

Layout rules (docs/decisions.md, "Redis keys"):

- Every key starts with `am:`; anything else in the database is foreign and
  never touched.
- Keys that must be updated atomically together share a hash tag, so MULTI/EXEC
  and Lua work on Redis Cluster: each queue shard `{q:<domain>:<shard>}` holds
  its stream and the keys of the tasks that live in it; a session's keys share
  `{s:<tenant>:<user>:<session>}`; a user's facts, session index and usage
  counters share `{u:<tenant>:<user>}`; a tenant's rate-limit buckets share
  `{r:<tenant>}`; the registry lives in one slot, `{reg}` (its data is small and its writes
  must be atomic with the change log).
- Caller-chosen parts (tenant, user, session id, request id, idempotency key,
  domain) are escaped so they can never forge a separator or a hash tag.
- Everything not meant to live forever gets a TTL from the module that writes
  it; the TTL constants live with those modules.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import quote, unquote

PREFIX = "am"

# Characters that pass through unescaped. ':' '{' '}' '%' and everything else
# are percent-encoded, so a component can never end a hash tag or a segment.
_SAFE = "-._~@+="
_UNESCAPED = re.compile(r"[A-Za-z0-9._~@+=-]+")  # what quote() leaves as it is (the common case)


def part(value: str) -> str:
    """Escape one caller-chosen component (tenant, user, id)."""
    if not value:
        raise ValueError("key components must not be empty")
    if _UNESCAPED.fullmatch(value):
        return value
    return quote(value, safe=_SAFE)


def tag(*parts: str) -> str:
    """A hash tag `{a:b:c}` from already-escaped parts."""
    return "{" + ":".join(parts) + "}"


def is_ours(key: str | bytes) -> bool:
    raw = key.decode() if isinstance(key, bytes) else key
    return raw.startswith(f"{PREFIX}:")


# --- tasks and their queue shards ---------------------------------------------------------
#
# A task lives in the slot of its queue shard: every key of task <id> is
# `am:{q:<domain>:<shard>}:t:<id>:<kind>`, next to the shard's stream, its
# outbox, its dead letters and the owner indexes of that shard. So creating
# and enqueueing a task, claiming it, and finishing it together with the
# acknowledgement of its entry are each ONE script on one slot. The shard is
# part of the task id (memory/tasks/ids.py), so a task's keys never move.

TASK_KEY_KINDS = ("task", "events")


def queue_tag(domain: str, shard: int) -> str:
    return tag("q", part(domain), str(shard))


@functools.lru_cache(maxsize=4096)  # (domain, shard) pairs are few; these run on every task operation
def task_prefix(domain: str, shard: int) -> str:
    """What every task key of a shard starts with; scripts that learn a task id from a queue
    entry append `<id>:<kind>` (kinds: TASK_KEY_KINDS) to it."""
    return f"{PREFIX}:{queue_tag(domain, shard)}:t:"


def task_keys(domain: str, shard: int, task_id: str) -> list[str]:
    """The task's keys in TASK_KEY_KINDS order: record hash (with its steps and lease), events."""
    base = f"{task_prefix(domain, shard)}{part(task_id)}:"
    return [base + kind for kind in TASK_KEY_KINDS]


def task(domain: str, shard: int, task_id: str) -> str:
    """Hash: the task record (versioned, see memory.codec), its checkpointed steps and its lease
    (memory/tasks/scripts.py describes the fields)."""
    return f"{task_prefix(domain, shard)}{part(task_id)}:task"


def task_events(domain: str, shard: int, task_id: str) -> str:
    """Stream: the task's events (WatchTask reads and resumes here)."""
    return f"{task_prefix(domain, shard)}{part(task_id)}:events"


def owner_tasks(domain: str, shard: int, tenant: str, owner: str) -> str:
    """Sorted set: the owner's tasks of one domain that live in this shard, members
    `<created ms>:<task id>` (ListTasks merges the shards). Written by the creation script."""
    return f"{PREFIX}:{queue_tag(domain, shard)}:o:{part(tenant)}:{part(owner)}"


def awaiting_approval(tenant: str, domain: str) -> str:
    """Sorted set: tasks of a domain waiting for approval in a tenant (approvers' view)."""
    return f"{PREFIX}:{tag('a', part(tenant), part(domain))}:awaiting"


def pending_expiry(domain: str) -> str:
    """Sorted set: paused tasks of a domain by the expiry of their pending action (the sweeper fails them)."""
    return f"{PREFIX}:{tag('x', part(domain))}:expiry"


@functools.lru_cache(maxsize=4096)
def queue(domain: str, shard: int) -> str:
    """Stream: one shard of a domain's task queue (consumer group per domain)."""
    return f"{PREFIX}:{queue_tag(domain, shard)}:stream"


@functools.lru_cache(maxsize=4096)
def outbox(domain: str, shard: int) -> str:
    """Sorted set: ids of tasks running inline (Run) that must be queued if their process dies,
    scored by when the sweeper should look at them next."""
    return f"{PREFIX}:{queue_tag(domain, shard)}:outbox"


@functools.lru_cache(maxsize=4096)
def dead_letters(domain: str, shard: int) -> str:
    """Stream: entries of this shard that failed too often, with the reason."""
    return f"{PREFIX}:{queue_tag(domain, shard)}:dead"


@functools.lru_cache(maxsize=4096)
def claim_memo(domain: str, shard: int, consumer: str) -> str:
    """String: the last claim of one consumer in this shard (`<start id> <entry id> <task id>`,
    with a TTL), so a claim re-sent after a lost reply returns the same task."""
    return f"{PREFIX}:{queue_tag(domain, shard)}:claim:{part(consumer)}"


# --- sessions and user memory -----------------------------------------------
#
# A session's keys share `{s:<tenant>:<user>:<session>}` (append, compaction and
# delete are single-slot scripts). Everything else of a user shares
# `{u:<tenant>:<user>}`: the session index, facts and usage counters, so that
# recording one step's usage (task + session + user + day counters) together
# with its budget check is one atomic script. `forget` finds a user's data by
# these tag prefixes: escaped components never contain ':' or glob characters,
# so `am:{s:<tenant>:<user>:*` matches that user's sessions and nobody else's.


def session_tag(tenant: str, user: str, session_id: str) -> str:
    return tag("s", part(tenant), part(user), part(session_id))


def session_turns(tenant: str, user: str, session_id: str) -> str:
    """List: the session's turns (versioned records, oldest first)."""
    return f"{PREFIX}:{session_tag(tenant, user, session_id)}:turns"


def session_meta(tenant: str, user: str, session_id: str) -> str:
    """Hash: running summary (versioned record) and counters (generation, folded, dropped)."""
    return f"{PREFIX}:{session_tag(tenant, user, session_id)}:meta"


def session_compaction_lease(tenant: str, user: str, session_id: str) -> str:
    """String: held while one replica compacts the session (the others skip)."""
    return f"{PREFIX}:{session_tag(tenant, user, session_id)}:compacting"


def session_pattern(tenant: str, user: str) -> str:
    """SCAN pattern for every session key of one user."""
    return f"{PREFIX}:{{s:{part(tenant)}:{part(user)}:*"


def user_tag(tenant: str, user: str) -> str:
    return tag("u", part(tenant), part(user))


def user_pattern(tenant: str, user: str) -> str:
    """SCAN pattern for every `{u:<tenant>:<user>}` key (facts, session index, usage)."""
    return f"{PREFIX}:{user_tag(tenant, user)}*"


def user_sessions(tenant: str, user: str) -> str:
    """Sorted set: the user's session ids scored by last activity (ms), for listing and `forget`."""
    return f"{PREFIX}:{user_tag(tenant, user)}:sessions"


def user_facts(tenant: str, user: str) -> str:
    """Hash: fact key -> versioned FACT record (a user's long-term memory)."""
    return f"{PREFIX}:{user_tag(tenant, user)}:facts"


def user_fact_expiry(tenant: str, user: str) -> str:
    """Sorted set: fact key scored by its expiry (ms; +inf = never), for pruning."""
    return f"{PREFIX}:{user_tag(tenant, user)}:facts:exp"


# --- idempotency -------------------------------------------------------------


def idempotency(scope: str, key: str) -> str:
    """Hash: the state and stored outcome of the first call with this key in `scope`."""
    return f"{PREFIX}:{tag('i', part(scope), part(key))}"


# --- rate limits ---------------------------------------------------------------
#
# Every bucket of one tenant lives under `{r:<tenant>}`, so the admission check
# (tenant + user + tenant-domain buckets, tenant- or user-scoped tool buckets)
# is ONE atomic script on one slot. Buckets shared by all tenants (a tool's
# RATE_LIMIT_SCOPE_GLOBAL, a domain's global capacity) each get their own slot
# `{rg:<kind>:<name>}`; a check mixing both is consumed slot by slot and
# refunded when a later slot refuses (memory/rate_limits.py).


def rate_tag(tenant: str) -> str:
    return tag("r", part(tenant))


def rate_tenant(tenant: str) -> str:
    """Hash (token bucket): everything one tenant does."""
    return f"{PREFIX}:{rate_tag(tenant)}:tenant"


def rate_user(tenant: str, user: str) -> str:
    """Hash (token bucket): one user of a tenant."""
    return f"{PREFIX}:{rate_tag(tenant)}:user:{part(user)}"


def rate_domain(tenant: str, domain: str) -> str:
    """Hash (token bucket): one tenant's calls to one agent domain."""
    return f"{PREFIX}:{rate_tag(tenant)}:domain:{part(domain)}"


def rate_tool(tenant: str, tool: str, user: str | None = None) -> str:
    """Hash (token bucket): a tool's calls by one tenant (scope TENANT) or one user (scope USER)."""
    base = f"{PREFIX}:{rate_tag(tenant)}:tool:{part(tool)}"
    return base if user is None else f"{base}:user:{part(user)}"


def rate_tool_user_pattern(tenant: str, user: str) -> str:
    """SCAN pattern for one user's tool buckets (tool names never contain ':')."""
    return f"{PREFIX}:{rate_tag(tenant)}:tool:*:user:{part(user)}"


def rate_global(kind: str, name: str) -> str:
    """Hash (token bucket) shared by all tenants, e.g. rate_global('tool', 'payments_refund')."""
    return f"{PREFIX}:{tag('rg', part(kind), part(name))}"


# --- usage and cost ------------------------------------------------------------


def usage_task(tenant: str, user: str, task_id: str) -> str:
    """Hash: one task's usage counters (budgets per task)."""
    return f"{PREFIX}:{user_tag(tenant, user)}:usage:task:{part(task_id)}"


def usage_session(tenant: str, user: str, session_id: str, domain: str) -> str:
    """Hash: one session's usage in one domain (GetUsage with a session id)."""
    return f"{PREFIX}:{user_tag(tenant, user)}:usage:session:{part(session_id)}:{part(domain)}"


def usage_session_pattern(session_id: str, domain: str, tenant: str | None = None) -> str:
    """SCAN pattern for one session's usage in a domain, whoever's it is (operators' `agentmesh usage`)."""
    owner = f"{part(tenant)}:*" if tenant is not None else "*"
    return f"{PREFIX}:{{u:{owner}}}:usage:session:{part(session_id)}:{part(domain)}"


def parse_user_tag(key: str) -> tuple[str, str] | None:
    """(tenant, user) from a `{u:<tenant>:<user>}` key, unescaped; None for other keys."""
    start = key.find("{u:")
    end = key.find("}", start)
    if start < 0 or end < 0:
        return None
    tenant, _, user = key[start + 3 : end].partition(":")
    return unquote(tenant), unquote(user)


def usage_user(tenant: str, user: str, domain: str | None = None) -> str:
    """Hash: a user's usage in one domain (GetUsage without a session id), or over all domains."""
    base = f"{PREFIX}:{user_tag(tenant, user)}:usage"
    return base if domain is None else f"{base}:domain:{part(domain)}"


def usage_user_day(tenant: str, user: str, day: str) -> str:
    """Hash: a user's usage on one UTC day (`YYYYMMDD`), for daily budgets."""
    return f"{PREFIX}:{user_tag(tenant, user)}:usage:day:{part(day)}"


def usage_domain(tenant: str, domain: str) -> str:
    """Hash: a tenant's usage of one domain over all its users (kept when a user is forgotten)."""
    return f"{PREFIX}:{tag('c', part(tenant), part(domain))}:usage"


def usage_domain_pattern(domain: str) -> str:
    """SCAN pattern for one domain's per-tenant usage hashes."""
    return f"{PREFIX}:{{c:*:{part(domain)}}}:usage"


# --- leases ------------------------------------------------------------------


def leader_lease(name: str) -> str:
    """One leader among replicas (e.g. the registry's Kubernetes discovery): `am:{lease:<name>}`."""
    return f"{PREFIX}:{tag('lease', part(name))}"


# --- registry ----------------------------------------------------------------

REGISTRY_TAG = tag("reg")


def registry(name: str) -> str:
    """Registry keys all live in one slot: `am:{reg}:<name>`."""
    return f"{PREFIX}:{REGISTRY_TAG}:{name}"
