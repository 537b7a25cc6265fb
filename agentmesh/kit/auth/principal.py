"""Who is calling, as verified from a token: the one identity every handler reads."""

from __future__ import annotations

import contextvars
import hashlib
from dataclasses import dataclass
from typing import Any

SERVICE_PREFIX = "service:"
AGENT_PREFIX = "agent:"


@dataclass(frozen=True, slots=True)
class Approval:
    """The `approval` claim of a tool token: one approved call, bound to its arguments."""

    action_id: str
    task_id: str
    step: int
    arguments_sha256: str
    approver: str

    def claim(self) -> dict[str, Any]:
        return {
            "action": self.action_id,
            "task": self.task_id,
            "step": self.step,
            "args": self.arguments_sha256,
            "by": self.approver,
        }

    @classmethod
    def from_claim(cls, claim: Any) -> Approval | None:
        if not isinstance(claim, dict):
            return None
        try:
            return cls(
                action_id=str(claim["action"]),
                task_id=str(claim["task"]),
                step=int(claim["step"]),
                arguments_sha256=str(claim["args"]),
                approver=str(claim.get("by", "")),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller: the claims of its token, never a header.

    `subject` is the user (`sub`) or `service:<name>`; `actor` is the agent acting
    on the subject's behalf (`act.sub` of a delegation token), `depth` how many
    agents deep the delegation chain is.
    """

    subject: str
    tenant: str
    scopes: frozenset[str] = frozenset()
    issuer: str = ""
    audience: tuple[str, ...] = ()
    token_id: str = ""
    expires_at: float = 0.0
    actor: str | None = None
    depth: int = 0
    approval: Approval | None = None
    task_id: str | None = None
    step: int | None = None
    authenticated: bool = True

    @property
    def is_service(self) -> bool:
        return self.subject.startswith(SERVICE_PREFIX)

    @property
    def service_name(self) -> str | None:
        return self.subject.removeprefix(SERVICE_PREFIX) if self.is_service else None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "agentmesh_principal", default=None
)


def current_principal() -> Principal | None:
    """The principal of the RPC being handled (set by the server edge), or None outside one."""
    return _current.get()


def set_current_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _current.set(principal)


def reset_current_principal(token: contextvars.Token[Principal | None]) -> None:
    _current.reset(token)


def arguments_digest(request: Any) -> str:
    """SHA-256 (hex) of a request message's deterministic wire bytes: what an approval is bound to.

    The agent computes it on the request it sends, the tool SDK on the request it received;
    both serialize the same fields deterministically, so they agree exactly when the
    arguments are the same.
    """
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
