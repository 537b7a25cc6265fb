from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.cluster import key_slot

from memory import keys


def test_a_task_lives_in_its_queue_shards_slot() -> None:
    """Creation + enqueue, claim and finish + acknowledge are single-slot scripts."""
    task_id = "0b6f4a8e-1c1e-4b8e-9d8e-2f1f3c4d5e03"
    for shard in range(8):
        all_keys = [
            *keys.task_keys("refunds", shard, task_id),
            keys.task("refunds", shard, task_id),
            keys.task_events("refunds", shard, task_id),
            keys.queue("refunds", shard),
            keys.outbox("refunds", shard),
            keys.dead_letters("refunds", shard),
            keys.owner_tasks("refunds", shard, "acme", "u1"),
            keys.claim_memo("refunds", shard, "worker-1"),
        ]
        assert len({key_slot(k.encode()) for k in all_keys}) == 1
        assert all(k.startswith(keys.task_prefix("refunds", shard)) for k in all_keys[:4])
    assert keys.task_keys("refunds", 3, task_id) == [
        keys.task("refunds", 3, task_id),
        keys.task_events("refunds", 3, task_id),
    ]


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
        keys.task("refunds", 0, "")


def test_is_ours() -> None:
    assert keys.is_ours(keys.task("refunds", 0, "x")) and keys.is_ours(b"am:{reg}:tools")
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
        keys.task("refunds", 0, "t"),
        keys.task_events("refunds", 0, "t"),
        keys.task("refunds", 1, "t"),
        keys.task("fulfillment", 0, "t"),
        keys.owner_tasks("refunds", 0, "acme", "u1"),
        keys.owner_tasks("refunds", 1, "acme", "u1"),
        keys.awaiting_approval("acme", "refunds"),
        keys.pending_expiry("refunds"),
        keys.queue("refunds", 0),
        keys.outbox("refunds", 0),
        keys.dead_letters("refunds", 0),
        keys.claim_memo("refunds", 0, "w"),
    ]
    assert len(set(made)) == len(made)
    assert all(keys.is_ours(k) for k in made)


def test_owner_index_is_per_domain_shard_tenant_and_owner() -> None:
    index = keys.owner_tasks
    assert index("refunds", 0, "acme", "u1") != index("fulfillment", 0, "acme", "u1")
    assert index("refunds", 0, "acme", "u1") != index("refunds", 0, "other", "u1")
    assert index("refunds", 0, "a:b", "c") != index("refunds", 0, "a", "b:c")


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
