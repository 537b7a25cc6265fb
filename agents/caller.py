"""Who is calling: the verified principal of the RPC, resolved in one place.

The server edge (agentmesh.kit.auth, in the interceptor) verifies the bearer
token of every call and publishes its `Principal`; `resolve_caller` turns it
into the agent's `Caller` (tenant `tid`, user `sub`, scopes, delegation depth,
the acting agent of a delegation token). Headers are identity only in
`AGENTMESH_INSECURE_NO_AUTH` mode, where the edge builds an unauthenticated
principal from them. A task keeps what its runs need of the caller in
reserved labels (depth, scopes, actor) — never a token — so a worker that
resumes it later acts for the same caller with the same authority.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from agentmesh.kit import metadata as md
from agentmesh.kit.auth import Principal
from agentmesh.kit.auth.principal import AGENT_PREFIX
from agentmesh.kit.errors import Unauthenticated
from agentmesh.v1 import task_pb2

# Task labels carrying the caller's delegation depth, scopes and acting agent, so a worker
# that resumes the task acts for the same caller. Labels under `agentmesh.` are reserved.
RESERVED_LABEL_PREFIX = "agentmesh."
DEPTH_LABEL = "agentmesh.delegation_depth"
SCOPES_LABEL = "agentmesh.scopes"
ACTOR_LABEL = "agentmesh.actor"
AUTH_LABEL = "agentmesh.authenticated"
_SCOPE = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    user: str
    delegation_depth: int = 0
    scopes: frozenset[str] = frozenset()
    # `agent:<domain>` when another agent calls on the user's behalf (delegation token).
    actor: str | None = None
    # False only in insecure mode (identity from headers): no scope checks, no tokens.
    authenticated: bool = True
    # Who approved the call this run resumes with (the verified `sub` recorded with the decision).
    approver: str = ""

    def principal(self) -> Principal:
        """The principal tokens minted on this caller's behalf speak for."""
        return Principal(
            subject=self.user,
            tenant=self.tenant,
            scopes=self.scopes,
            depth=self.delegation_depth,
            actor=self.actor,
            authenticated=self.authenticated,
        )

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def labels(self) -> dict[str, str]:
        """The reserved task labels that keep this caller's authority with its task."""
        labels = {SCOPES_LABEL: " ".join(sorted(self.scopes))} if self.scopes else {}
        if self.delegation_depth:
            labels[DEPTH_LABEL] = str(self.delegation_depth)
        if self.actor:
            labels[ACTOR_LABEL] = self.actor
        if not self.authenticated:
            labels[AUTH_LABEL] = "false"
        return labels

    def delegation_metadata(self) -> list[tuple[str, str]]:
        """Insecure mode only: the identity headers of a call to another agent on this caller's behalf
        (with auth on, the delegation token carries all of it)."""
        return [
            (md.TENANT, self.tenant),
            (md.USER, self.user),
            (md.DELEGATION_DEPTH, str(self.delegation_depth + 1)),
        ]


def caller_of_task(task: task_pb2.Task) -> Caller:
    """The caller a task runs for: its owner, with the depth, scopes and actor it was created with."""
    depth_text = task.labels.get(DEPTH_LABEL, "0")
    scopes = _scopes(task.labels.get(SCOPES_LABEL, "").split())
    return Caller(
        tenant=task.tenant,
        user=task.owner,
        delegation_depth=int(depth_text) if depth_text.isdigit() else 0,
        scopes=scopes,
        actor=task.labels.get(ACTOR_LABEL) or None,
        authenticated=task.labels.get(AUTH_LABEL) != "false",
    )


def _scopes(values: Iterable[str]) -> frozenset[str]:
    return frozenset(value for value in values if _SCOPE.fullmatch(value))


def resolve_caller(principal: Principal | None) -> Caller:
    """The caller of the RPC being handled, from its verified principal (`current_principal()`)."""
    if principal is None:
        raise Unauthenticated("this call has no verified caller", metadata={"cause": "missing"})
    if principal.actor is not None and not principal.actor.startswith(AGENT_PREFIX):
        raise Unauthenticated("the token's actor is not an agent of the mesh", metadata={"cause": "claims"})
    if principal.depth and principal.actor is None and principal.authenticated:
        raise Unauthenticated(
            "a delegated token must name its acting agent (act)", metadata={"cause": "claims"}
        )
    return Caller(
        tenant=principal.tenant,
        user=principal.subject,
        delegation_depth=principal.depth,
        scopes=principal.scopes,
        actor=principal.actor,
        authenticated=principal.authenticated,
    )
