"""The remembered canonical forms and comments give exactly what computing them afresh gives,
and any change to a set (one comment) is a different entry, so a digest never goes stale."""

from __future__ import annotations

from google.protobuf import descriptor_pb2

from tool_registry.content import canonical_schema, canonical_schema_bytes, schema_digest
from tool_registry.descriptors import comments_by_name, load_tool_schema


def _fresh(fds: descriptor_pb2.FileDescriptorSet) -> bytes:
    return canonical_schema(fds).SerializeToString(deterministic=True)


def _with_comment(fds: descriptor_pb2.FileDescriptorSet, text: str) -> descriptor_pb2.FileDescriptorSet:
    changed = descriptor_pb2.FileDescriptorSet()
    changed.CopyFrom(fds)
    touched = 0
    for file in changed.file:
        for location in file.source_code_info.location:
            if location.leading_comments.strip():
                location.leading_comments = text
                touched += 1
    assert touched, "the fixture set has no comment to change"
    return changed


def test_cached_canonical_form_equals_a_fresh_one(
    shop_set: descriptor_pb2.FileDescriptorSet, rich_set: descriptor_pb2.FileDescriptorSet
) -> None:
    for fds in (shop_set, rich_set, shop_set, rich_set):  # misses, then hits
        assert canonical_schema_bytes(fds) == _fresh(fds)


def test_a_changed_comment_changes_the_digest_after_the_original_was_cached(
    shop_set: descriptor_pb2.FileDescriptorSet,
) -> None:
    before = schema_digest(shop_set)
    changed = _with_comment(shop_set, " a different description ")
    assert canonical_schema_bytes(changed) == _fresh(changed)
    assert schema_digest(changed) != before
    assert schema_digest(shop_set) == before


def test_cached_comments_equal_fresh_ones(shop_set: descriptor_pb2.FileDescriptorSet) -> None:
    service = next(f for f in shop_set.file if f.service)
    method = f"{service.package}.{service.service[0].name}/{service.service[0].method[0].name}"
    for fds in (shop_set, _with_comment(shop_set, " changed "), shop_set):
        expected: dict[str, str] = {}
        for file in fds.file:
            expected.update(comments_by_name(file))
        assert load_tool_schema(fds, method).comments == expected
    assert "changed" not in load_tool_schema(shop_set, method).comments.values()
