"""Task ids (pure): a UUID whose last byte names the task's queue shard."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memory.tasks import ids

_names = st.text(min_size=1, max_size=30)


@given(_names, _names, st.integers(min_value=1, max_value=ids.MAX_SHARDS))
def test_request_ids_name_one_task_per_shard_count(request_id: str, owner: str, shards: int) -> None:
    one = ids.for_request("acme", owner, "refunds", request_id, shards=shards)
    assert one == ids.for_request("acme", owner, "refunds", request_id, shards=shards)
    parsed = uuid.UUID(one)
    assert str(parsed) == one and parsed.version == 5 and parsed.variant == uuid.RFC_4122
    shard = ids.shard_of(one)
    assert shard is not None and 0 <= shard < shards


def test_request_ids_are_uuid5_of_the_request_but_for_the_shard_byte() -> None:
    name = "".join(f"{len(p)}:{p}" for p in ("acme", "u1", "refunds", "req-1"))
    expected = uuid.uuid5(uuid.UUID("8f0e4a4e-6a43-4c1c-9a53-3f6f3d0c2b71"), name)
    made = ids.for_request("acme", "u1", "refunds", "req-1", shards=7)
    assert made[:34] == str(expected)[:34]
    assert ids.shard_of(made) == int.from_bytes(expected.bytes[:4], "big") % 7


def test_distinct_requests_give_distinct_ids() -> None:
    base = ids.for_request("acme", "u1", "refunds", "req-1", shards=4)
    assert base != ids.for_request("acme", "u2", "refunds", "req-1", shards=4)
    assert base != ids.for_request("acme", "u1", "fulfillment", "req-1", shards=4)
    assert base != ids.for_request("acme", "u1", "refunds", "req-2", shards=4)
    assert ids.for_request("a:b", "c", "d", "e", shards=4) != ids.for_request("a", "b:c", "d", "e", shards=4)


def test_shards_spread_evenly_and_random_ids_are_uuid4() -> None:
    counts = [0] * 8
    for n in range(4000):
        shard = ids.shard_of(ids.for_request("acme", "u1", "refunds", f"r{n}", shards=8))
        assert shard is not None
        counts[shard] += 1
    assert min(counts) > 350  # 500 expected per shard
    fresh = ids.random_id(shards=3)
    assert uuid.UUID(fresh).version == 4 and ids.shard_of(fresh) in {0, 1, 2}
    assert fresh != ids.random_id(shards=3)


@pytest.mark.parametrize(
    "value",
    ["", "ghost", "0B6F4A8E-1C1E-4B8E-9D8E-2F1F3C4D5E03", "0b6f4a8e1c1e4b8e9d8e2f1f3c4d5e03", "x" * 36],
)
def test_other_strings_name_no_shard(value: str) -> None:
    assert ids.shard_of(value) is None


def test_the_shard_count_is_bounded() -> None:
    with pytest.raises(ValueError, match=r"1\.\.256"):
        ids.random_id(shards=0)
    with pytest.raises(ValueError, match=r"1\.\.256"):
        ids.for_request("a", "b", "c", "d", shards=257)
    last = ids.random_id(shards=256)
    assert ids.shard_of(last) is not None
