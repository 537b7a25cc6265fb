"""Who is calling: tenant, user and delegation depth, resolved in one place.

Until JWT verification lands, the caller names itself in request metadata
(`x-agentmesh-tenant`, `x-agentmesh-user`, defaults `default` / `anonymous`)
and delegation depth travels as `x-agentmesh-delegation-depth`. Everything
that needs the caller goes through `resolve_caller`, so the security layer
replaces this one function (token claims: `tid`, `sub`, `scope`, the depth
claim of delegation tokens) and nothing else changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agentmesh.kit import metadata as md
from agentmesh.kit.errors import FieldViolation, InvalidArgument
from agentmesh.kit.validation import OPAQUE_ID
from agentmesh.v1 import task_pb2

DEFAULT_TENANT = "default"
DEFAULT_USER = "anonymous"
MAX_DEPTH_VALUE = 64
# Task label carrying the delegation depth a task was created at, so a worker that resumes
# it delegates onwards at the right depth. Labels under `agentmesh.` are reserved.
RESERVED_LABEL_PREFIX = "agentmesh."
DEPTH_LABEL = "agentmesh.delegation_depth"


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    user: str
    delegation_depth: int = 0
    scopes: frozenset[str] = frozenset()

    def delegation_metadata(self) -> list[tuple[str, str]]:
        """Metadata for a call this agent makes on the caller's behalf to another agent."""
        return [
            (md.TENANT, self.tenant),
            (md.USER, self.user),
            (md.DELEGATION_DEPTH, str(self.delegation_depth + 1)),
        ]


def caller_of_task(task: task_pb2.Task) -> Caller:
    """The caller a task runs for: its owner, and the delegation depth it was created at."""
    depth_text = task.labels.get(DEPTH_LABEL, "0")
    depth = int(depth_text) if depth_text.isdigit() else 0
    return Caller(tenant=task.tenant, user=task.owner, delegation_depth=depth)


def resolve_caller(metadata: Iterable[tuple[str, str | bytes]] | None) -> Caller:
    values: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, str):
            values[key.lower()] = value
    problems: list[FieldViolation] = []
    tenant = values.get(md.TENANT, "").strip() or DEFAULT_TENANT
    user = values.get(md.USER, "").strip() or DEFAULT_USER
    for key, value in ((md.TENANT, tenant), (md.USER, user)):
        if not OPAQUE_ID.fullmatch(value):
            problems.append(FieldViolation(key, f"{value[:80]!r} must match {OPAQUE_ID.pattern}", "PATTERN"))
    depth_text = values.get(md.DELEGATION_DEPTH, "0").strip() or "0"
    depth = 0
    if not depth_text.isdigit() or int(depth_text) > MAX_DEPTH_VALUE:
        problems.append(
            FieldViolation(md.DELEGATION_DEPTH, f"{depth_text[:20]!r} is not a depth (0-{MAX_DEPTH_VALUE})")
        )
    else:
        depth = int(depth_text)
    if problems:
        raise InvalidArgument(
            f"invalid caller metadata: {', '.join(p.field for p in problems)}", violations=problems
        )
    return Caller(tenant=tenant, user=user, delegation_depth=depth)
