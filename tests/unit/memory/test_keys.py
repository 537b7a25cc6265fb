from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.cluster import key_slot

from memory import keys


def test_task_keys_share_one_slot() -> None:
    task_id = "0b6f4a8e-1c1e-4b8e-9d8e-2f1f3c4d5e6f"
    all_keys = [
        keys.task(task_id),
        keys.task_steps(task_id),
        keys.task_events(task_id),
        keys.task_lease(task_id),
    ]
    assert len({key_slot(k.encode()) for k in all_keys}) == 1
    assert all(k.startswith("am:{t:") for k in all_keys)


def test_session_keys_share_one_slot() -> None:
    pair = [keys.session_turns("acme", "u1", "s1"), keys.session_meta("acme", "u1", "s1")]
    assert len({key_slot(k.encode()) for k in pair}) == 1


def test_registry_keys_share_one_slot() -> None:
    assert len({key_slot(keys.registry(n).encode()) for n in ("tools", "changes", "agents", "rev")}) == 1


def test_queue_shards_spread_over_slots() -> None:
    slots = {key_slot(keys.queue("refunds", shard).encode()) for shard in range(8)}
    assert len(slots) > 4


@given(st.text(min_size=1, max_size=40))
def test_components_cannot_forge_tags_or_separators(value: str) -> None:
    escaped = keys.part(value)
    assert not set(escaped) & set(":{}")
    # A user id that looks like a hash tag still lands in its own, escaped segment.
    key = keys.user_facts("tenant", value)
    assert key.count("{") == 1 and key.count("}") == 1


def test_distinct_components_give_distinct_keys() -> None:
    assert keys.user_facts("a:b", "c") != keys.user_facts("a", "b:c")


def test_empty_components_are_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        keys.task("")


def test_is_ours() -> None:
    assert keys.is_ours(keys.task("x")) and keys.is_ours(b"am:{reg}:tools")
    assert not keys.is_ours("session:123")


def test_queue_shard_keys_share_one_slot() -> None:
    for shard in range(8):
        shard_keys = [
            keys.queue("refunds", shard),
            keys.outbox("refunds", shard),
            keys.dead_letters("refunds", shard),
        ]
        assert len({key_slot(k.encode()) for k in shard_keys}) == 1


def test_task_layer_keys_are_distinct_and_ours() -> None:
    made = [
        keys.task("t"),
        keys.task_steps("t"),
        keys.task_events("t"),
        keys.task_lease("t"),
        keys.owner_tasks("acme", "u1", "refunds"),
        keys.awaiting_approval("acme", "refunds"),
        keys.pending_expiry("refunds"),
        keys.queue("refunds", 0),
        keys.outbox("refunds", 0),
        keys.dead_letters("refunds", 0),
    ]
    assert len(set(made)) == len(made)
    assert all(keys.is_ours(k) for k in made)


def test_owner_index_is_per_tenant_owner_and_domain() -> None:
    assert keys.owner_tasks("acme", "u1", "refunds") != keys.owner_tasks("acme", "u1", "fulfillment")
    assert keys.owner_tasks("acme", "u1", "refunds") != keys.owner_tasks("other", "u1", "refunds")
    assert keys.owner_tasks("a:b", "c", "refunds") != keys.owner_tasks("a", "b:c", "refunds")


def test_user_keys_share_one_slot() -> None:
    user_keys = [
        keys.user_sessions("acme", "u1"),
        keys.user_facts("acme", "u1"),
        keys.user_fact_expiry("acme", "u1"),
        keys.usage_task("acme", "u1", "t-1"),
        keys.usage_session("acme", "u1", "s-1", "refunds"),
        keys.usage_user("acme", "u1", "refunds"),
        keys.usage_user("acme", "u1"),
        keys.usage_user_day("acme", "u1", "20260301"),
    ]
    assert len({key_slot(k.encode()) for k in user_keys}) == 1
    assert len(set(user_keys)) == len(user_keys)


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_user_patterns_match_only_that_user(user: str, other: str) -> None:
    """SCAN patterns (Redis glob) written with fnmatch's equivalent syntax for the test."""
    from fnmatch import fnmatchcase

    if user == other:
        return
    mine = [
        keys.session_turns("t", user, "s1"),
        keys.session_meta("t", user, "x:y"),
        keys.user_facts("t", user),
        keys.usage_session("t", user, "s1", "refunds"),
    ]
    theirs = [
        keys.session_turns("t", other, "s1"),
        keys.user_facts("t", other),
        keys.usage_user("t", other),
        keys.session_turns("t2", user, "s1"),
    ]
    patterns = [keys.session_pattern("t", user), keys.user_pattern("t", user)]
    # escaped components contain no glob characters, so fnmatch agrees with Redis here
    assert not set("*?[]\\") & set(keys.part(user))
    assert all(any(fnmatchcase(k, p) for p in patterns) for k in mine)
    assert not any(fnmatchcase(k, p) for k in theirs for p in patterns)
    tool_bucket = keys.rate_tool("t", "payments_refund", user)
    assert fnmatchcase(tool_bucket, keys.rate_tool_user_pattern("t", user))
    assert not fnmatchcase(
        keys.rate_tool("t", "payments_refund", other), keys.rate_tool_user_pattern("t", user)
    )
