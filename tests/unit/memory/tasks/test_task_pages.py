from __future__ import annotations

import pytest

from agentmesh.kit.errors import InvalidArgument
from memory.tasks import pages


def test_members_sort_by_creation_time_then_id() -> None:
    members = [
        pages.index_member(1_700_000_000_500, "b"),
        pages.index_member(999, "z"),
        pages.index_member(1_700_000_000_500, "a"),
        pages.index_member(1_700_000_001_000, "c"),
    ]
    assert [pages.member_task_id(m) for m in sorted(members, reverse=True)] == ["c", "b", "a", "z"]
    assert pages.member_task_id(b"0000000000999:id:with:colons") == "id:with:colons"


@pytest.mark.parametrize(("requested", "size"), [(0, 50), (1, 1), (500, 500), (501, 500), (10_000, 500)])
def test_page_size(requested: int, size: int) -> None:
    assert pages.page_size(requested) == size


def test_negative_page_size_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as caught:
        pages.page_size(-1)
    assert caught.value.violations[0].field == "page_size"
