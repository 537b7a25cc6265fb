"""Checks on the owner of memory: tenant, user, session and task ids.

Tenant and user come from the caller's verified token (`tid`, `sub`): any
non-empty text up to `MAX_ID_BYTES` (keys escape it). Session ids follow the
public API (`RunRequest.session_id`: `OPAQUE_ID`). Every store checks its
arguments here and raises one INVALID_ARGUMENT naming each bad field.
"""

from __future__ import annotations

from agentmesh.kit.validation import DOMAIN_SLUG, OPAQUE_ID, Violations

MAX_ID_BYTES = 256


def check_owner(
    violations: Violations,
    *,
    tenant: str,
    user: str,
    session_id: str | None = None,
    task_id: str | None = None,
    domain: str | None = None,
) -> None:
    for field, value in (("tenant", tenant), ("user", user)):
        if violations.required(value, field):
            violations.max_length(value, MAX_ID_BYTES, field)
    for field, optional in (("session_id", session_id), ("task_id", task_id)):
        if optional is not None and violations.required(optional, field):
            violations.matches(optional, OPAQUE_ID, field, "id")
    if domain is not None and violations.required(domain, "domain"):
        violations.matches(domain, DOMAIN_SLUG, "domain", "domain slug")


def require_owner(
    *,
    tenant: str,
    user: str,
    session_id: str | None = None,
    task_id: str | None = None,
    domain: str | None = None,
) -> None:
    violations = Violations()
    check_owner(violations, tenant=tenant, user=user, session_id=session_id, task_id=task_id, domain=domain)
    violations.raise_if_any("invalid memory owner")
