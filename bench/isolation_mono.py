"""The monolith baseline for bench.isolation: several agent domains in ONE process, one worker pool.

python -m bench.isolation_mono --workers N SPEC:PORT [SPEC:PORT ...]

Every domain is the product's own `AgentProcess` (same handler, runner, executor and
TaskWorker code as `agentmesh serve agent`), all in one event loop; their workers share
one pool of N slots (the worker's `Slots`, the same object handed to each), so the domains
together run at most N tasks, as one service with one shared worker pool would. Settings
come from the environment as for `agentmesh serve agent`; each domain gets its own port.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from agentmesh.kit.config import LogFormat, Role
from agentmesh.kit.logs import configure_logging
from agentmesh.kit.process import load_settings
from agentmesh.kit.signals import stop_signals
from agents.server import AgentProcess
from agents.spec import load_spec
from memory.tasks.worker import Slots


async def serve(domains: list[tuple[Path, int]], workers: int) -> None:
    base = load_settings(Role.AGENT)
    processes = [
        AgentProcess(
            base.model_copy(update={"grpc_port": port, "domain_spec": path, "worker_concurrency": workers}),
            load_spec(path),
        )
        for path, port in domains
    ]
    shared = Slots(workers)
    for process in processes:
        process.worker._slots = shared  # one pool for every domain (bench baseline only)
    for process in processes:
        await process.start()
    try:
        async with stop_signals() as stop:
            await stop.wait()
    finally:
        for process in processes:
            await process.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.isolation_mono")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("domains", nargs="+", help="SPEC.yaml:PORT")
    args = parser.parse_args()
    configure_logging("isolation-mono", "WARNING", LogFormat.TEXT)
    pairs = [(Path(d.rsplit(":", 1)[0]), int(d.rsplit(":", 1)[1])) for d in args.domains]
    asyncio.run(serve(pairs, args.workers))
