"""Listing tasks (pure): index members and page sizes.

Task indexes (an owner's tasks, a tenant's tasks awaiting approval) are sorted
sets whose members are `<created ms, 13 digits>:<task id>` with score 0, so a
lexicographic range walks them newest first and a member is its own cursor.

The cursor of a page token is such a member; the token itself is the one page-token
codec, agentmesh/kit/pages.py.
"""

from __future__ import annotations

from agentmesh.kit.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def index_member(create_ms: int, task_id: str) -> str:
    return f"{create_ms:013d}:{task_id}"


def member_task_id(member: str | bytes) -> str:
    text = member.decode() if isinstance(member, bytes) else member
    return text.partition(":")[2]


def page_size(requested: int) -> int:
    """0 -> the default (50); above 500 -> 500; negative -> INVALID_ARGUMENT."""
    if requested < 0:
        raise InvalidArgument(
            "page_size must not be negative",
            violations=[FieldViolation("page_size", f"is {requested}; must be 0 or more", "OUT_OF_RANGE")],
        )
    return DEFAULT_PAGE_SIZE if requested == 0 else min(requested, MAX_PAGE_SIZE)
