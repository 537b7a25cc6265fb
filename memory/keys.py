"""The Redis key scheme: the only place key names are made.

Layout rules (ARCHITECTURE.md, "Redis keys"):

- Every key starts with `am:`; anything else in the database is foreign and
  never touched.
- Keys that must be updated atomically together share a hash tag, so MULTI/EXEC
  and Lua work on Redis Cluster: a task's keys share `{t:<task_id>}`; each queue
  shard is `{q:<domain>:<shard>}`; a session's keys share
  `{s:<tenant>:<user>:<session>}`; a user's facts share `{u:<tenant>:<user>}`;
  the registry lives in one slot, `{reg}` (its data is small and its writes
  must be atomic with the change log).
- Caller-chosen parts (tenant, user, session id, request id, idempotency key,
  domain) are escaped so they can never forge a separator or a hash tag.
- Everything not meant to live forever gets a TTL from the module that writes
  it; the TTL constants live with those modules.
"""

from __future__ import annotations

from urllib.parse import quote

PREFIX = "am"

# Characters that pass through unescaped. ':' '{' '}' '%' and everything else
# are percent-encoded, so a component can never end a hash tag or a segment.
_SAFE = "-._~@+="


def part(value: str) -> str:
    """Escape one caller-chosen component (tenant, user, id)."""
    if not value:
        raise ValueError("key components must not be empty")
    return quote(value, safe=_SAFE)


def tag(*parts: str) -> str:
    """A hash tag `{a:b:c}` from already-escaped parts."""
    return "{" + ":".join(parts) + "}"


def is_ours(key: str | bytes) -> bool:
    raw = key.decode() if isinstance(key, bytes) else key
    return raw.startswith(f"{PREFIX}:")


# --- tasks -------------------------------------------------------------------


def task_tag(task_id: str) -> str:
    return tag("t", part(task_id))


def task(task_id: str) -> str:
    """Hash: the task record (versioned, see memory.codec)."""
    return f"{PREFIX}:{task_tag(task_id)}:task"


def task_steps(task_id: str) -> str:
    """Hash: step index -> checkpointed Step."""
    return f"{PREFIX}:{task_tag(task_id)}:steps"


def task_events(task_id: str) -> str:
    """Stream: the task's events (WatchTask reads and resumes here)."""
    return f"{PREFIX}:{task_tag(task_id)}:events"


def task_lease(task_id: str) -> str:
    """String `<attempt>:<start id>` with a TTL: an attempt is alive while this exists."""
    return f"{PREFIX}:{task_tag(task_id)}:lease"


def owner_tag(tenant: str, owner: str) -> str:
    return tag("o", part(tenant), part(owner))


def owner_tasks(tenant: str, owner: str, domain: str) -> str:
    """Sorted set: the owner's tasks in one domain, members `<created ms>:<task id>` (ListTasks)."""
    return f"{PREFIX}:{owner_tag(tenant, owner)}:tasks:{part(domain)}"


def awaiting_approval(tenant: str, domain: str) -> str:
    """Sorted set: tasks of a domain waiting for approval in a tenant (approvers' view)."""
    return f"{PREFIX}:{tag('a', part(tenant), part(domain))}:awaiting"


def pending_expiry(domain: str) -> str:
    """Sorted set: paused tasks of a domain by the expiry of their pending action (the sweeper fails them)."""
    return f"{PREFIX}:{tag('x', part(domain))}:expiry"


# --- queues ------------------------------------------------------------------


def queue_tag(domain: str, shard: int) -> str:
    return tag("q", part(domain), str(shard))


def queue(domain: str, shard: int) -> str:
    """Stream: one shard of a domain's task queue (consumer group per domain)."""
    return f"{PREFIX}:{queue_tag(domain, shard)}:stream"


def outbox(domain: str, shard: int) -> str:
    """Sorted set: tickets of tasks that must get an entry in this shard (the outbox the sweeper scans).

    It shares the shard's slot, so "remove the ticket and add the entry" is one atomic script.
    """
    return f"{PREFIX}:{queue_tag(domain, shard)}:outbox"


def dead_letters(domain: str, shard: int) -> str:
    """Stream: entries of this shard that failed too often, with the reason (same slot as the shard,
    so moving an entry there is atomic)."""
    return f"{PREFIX}:{queue_tag(domain, shard)}:dead"


# --- sessions and user memory -----------------------------------------------


def session_tag(tenant: str, user: str, session_id: str) -> str:
    return tag("s", part(tenant), part(user), part(session_id))


def session_turns(tenant: str, user: str, session_id: str) -> str:
    """List: the session's turns (newest last)."""
    return f"{PREFIX}:{session_tag(tenant, user, session_id)}:turns"


def session_meta(tenant: str, user: str, session_id: str) -> str:
    """Hash: running summary, pinned facts, counters."""
    return f"{PREFIX}:{session_tag(tenant, user, session_id)}:meta"


def user_tag(tenant: str, user: str) -> str:
    return tag("u", part(tenant), part(user))


def user_sessions(tenant: str, user: str) -> str:
    """Set: the user's session ids (for `memory forget`)."""
    return f"{PREFIX}:{user_tag(tenant, user)}:sessions"


def user_facts(tenant: str, user: str) -> str:
    """Hash: long-term facts of a user."""
    return f"{PREFIX}:{user_tag(tenant, user)}:facts"


# --- idempotency, limits, usage ---------------------------------------------


def idempotency(scope: str, key: str) -> str:
    """String/hash: the stored outcome of the first call with this key in `scope`."""
    return f"{PREFIX}:{tag('i', part(scope), part(key))}"


def rate_bucket(kind: str, *parts: str) -> str:
    """Hash: a token bucket, e.g. rate_bucket('tool', tenant, 'payments_refund')."""
    return f"{PREFIX}:{tag('r', part(kind), *(part(p) for p in parts))}"


def usage(kind: str, *parts: str) -> str:
    """Hash: usage counters (tokens, calls, cost) for a task/session/user/domain."""
    return f"{PREFIX}:{tag('c', part(kind), *(part(p) for p in parts))}"


# --- registry ----------------------------------------------------------------

REGISTRY_TAG = tag("reg")


def registry(name: str) -> str:
    """Registry keys all live in one slot: `am:{reg}:<name>`."""
    return f"{PREFIX}:{REGISTRY_TAG}:{name}"
