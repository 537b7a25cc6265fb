"""Names in the registry: tool names, the reserved `agent_` prefix, tags, scopes.

The patterns themselves live in `agentmesh.kit.validation` (DESIGN.md, "Names");
this module adds what only the registry needs.
"""

from __future__ import annotations

import re

from agentmesh.kit.validation import DOMAIN_SLUG, TOOL_NAME

AGENT_PREFIX = "agent_"
# ToolOptions.tags: discovery labels.
TAG = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
# OAuth-style scopes, e.g. `payments:refund`, `registry:write`.
SCOPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")
# A gRPC target: host:port, dns:///name:port, unix:/path, [v6]:port.
ENDPOINT = re.compile(r"^[A-Za-z0-9_.:/\[\]%@+=-]{1,255}$")

__all__ = [
    "AGENT_PREFIX",
    "DOMAIN_SLUG",
    "ENDPOINT",
    "SCOPE",
    "TAG",
    "TOOL_NAME",
    "agent_domain",
    "agent_tool_name",
    "is_agent_tool",
]


def agent_tool_name(domain: str) -> str:
    """The virtual tool of an agent domain: `order-fulfillment` -> `agent_order_fulfillment`."""
    if not DOMAIN_SLUG.fullmatch(domain):
        raise ValueError(f"{domain!r} is not a domain slug ({DOMAIN_SLUG.pattern})")
    return AGENT_PREFIX + domain.replace("-", "_")


def is_agent_tool(name: str) -> bool:
    return name.startswith(AGENT_PREFIX)


def agent_domain(tool_name: str) -> str:
    """The domain behind a virtual agent tool name (`_` back to `-`).

    Slugs cannot contain `_`, so the mapping is one-to-one.
    """
    if not is_agent_tool(tool_name):
        raise ValueError(f"{tool_name!r} is not an agent tool name")
    return tool_name.removeprefix(AGENT_PREFIX).replace("_", "-")
