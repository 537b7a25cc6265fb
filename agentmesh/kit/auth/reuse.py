"""Tool tokens reused while they are fresh: one mint and one signature check per tool and caller.

A tool token without an `approval` claim says only "this user, these scopes, this
tool, via this agent"; minting a new one for every call costs a signature on the
agent and an uncached verification on the tool. `ReusedToolTokens` hands out the
same token for the same (tool, tenant, user, scopes, actor, depth) until
`reuse_fraction` of its lifetime (at most 5 minutes) has passed, so the tool's
verifier cache answers the repeats. Approved calls never come from here: their
token binds one task step and one request (`TokenIssuer.tool_token(approval=...)`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable

from agentmesh.kit.auth.principal import Principal
from agentmesh.kit.auth.tokens import MAX_TOOL_TOKEN_TTL_S, TokenIssuer

_Key = tuple[str, str, str, frozenset[str], str, int]


class ReusedToolTokens:
    def __init__(
        self,
        issuer: TokenIssuer,
        *,
        ttl_s: float = MAX_TOOL_TOKEN_TTL_S,
        reuse_fraction: float = 0.5,
        max_entries: int = 10_000,
    ) -> None:
        self.issuer = issuer
        self.ttl_s = min(ttl_s, MAX_TOOL_TOKEN_TTL_S)
        self._reuse_s = self.ttl_s * reuse_fraction
        self._max_entries = max_entries
        self._tokens: OrderedDict[_Key, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def token(self, *, tool: str, principal: Principal, scopes: Iterable[str], actor: str) -> str:
        granted = frozenset(scopes)
        key = (tool, principal.tenant, principal.subject, granted, actor, principal.depth)
        now = time.monotonic()
        with self._lock:
            found = self._tokens.get(key)
            if found is not None and now - found[0] < self._reuse_s:
                self._tokens.move_to_end(key)
                return found[1]
        token = self.issuer.tool_token(
            tool=tool, principal=principal, scopes=granted, actor=actor, ttl_s=self.ttl_s
        )
        with self._lock:
            self._tokens[key] = (now, token)
            self._tokens.move_to_end(key)
            while len(self._tokens) > self._max_entries:
                self._tokens.popitem(last=False)
        return token
