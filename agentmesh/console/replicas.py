"""Per-replica figures (in flight, queue lag, breakers) read from each replica's `/metrics`.

The local mesh and any deployment where the console reaches the agents' HTTP listener
(the card's `http_url`) get live numbers; where it cannot, the page says they are
unavailable rather than showing zeros.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

FETCH_TIMEOUT_S = 1.5
MAX_METRICS_BYTES = 4 * 1024 * 1024


@dataclass
class ReplicaFigures:
    url: str
    available: bool
    problem: str = ""
    in_flight: float = 0.0
    runs_in_flight: float = 0.0
    queue_depth: float = 0.0
    queue_lag_s: float = 0.0
    dead_letters: float = 0.0
    # tool name -> breaker state (0 closed, 1 half-open, 2 open, as the kit exports it)
    breakers: dict[str, float] = field(default_factory=dict)


def parse_figures(url: str, text: str) -> ReplicaFigures:
    figures = ReplicaFigures(url=url, available=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "agentmesh_rpc_in_flight":
                figures.in_flight += value
            elif name == "agentmesh_agent_runs_in_flight":
                figures.runs_in_flight += value
            elif name == "agentmesh_task_queue_depth":
                figures.queue_depth += value
            elif name == "agentmesh_task_queue_lag_seconds":
                figures.queue_lag_s = max(figures.queue_lag_s, value)
            elif name == "agentmesh_task_dead_letter_depth":
                figures.dead_letters += value
            elif name == "agentmesh_tool_breaker_state" and "tool" in labels:
                figures.breakers[labels["tool"]] = max(figures.breakers.get(labels["tool"], 0.0), value)
    return figures


async def fetch_figures(session: aiohttp.ClientSession, http_url: str) -> ReplicaFigures:
    if not http_url.startswith(("http://", "https://")):
        return ReplicaFigures(url=http_url, available=False, problem="the card names no HTTP listener")
    url = http_url.rstrip("/") + "/metrics"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)) as response:
            if response.status != 200:
                return ReplicaFigures(url=url, available=False, problem=f"HTTP {response.status}")
            body = await response.content.read(MAX_METRICS_BYTES)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return ReplicaFigures(url=url, available=False, problem=type(exc).__name__)
    try:
        return await asyncio.to_thread(parse_figures, url, body.decode("utf-8", "replace"))
    except ValueError as exc:
        return ReplicaFigures(url=url, available=False, problem=f"unreadable metrics: {exc}")


BREAKER_STATES = {0.0: "closed", 1.0: "half-open", 2.0: "open"}
