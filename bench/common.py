"""Shared benchmark helpers: latency statistics, closed-loop load, server processes."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentmesh.kit.net import free_port
from agentmesh.localmesh.proc import ServiceProcess

ROOT = Path(__file__).resolve().parent.parent

SAMPLES: dict[str, Sequence[float]] = {}
"""Latencies (ms) of every closed loop in this process, by "module: label @in_flight", for the plot."""
CURRENT = ["bench"]
"""The bench module running now (set by `python -m bench`)."""


@dataclass(frozen=True)
class LoadResult:
    label: str
    in_flight: int
    calls: int
    seconds: float
    latencies_ms: Sequence[float]

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)

    def line(self) -> str:
        return (
            f"{self.label:<34} in_flight={self.in_flight:<3} {self.rate:>9.0f}/s  "
            f"p50={self.p50:.3f} ms  p99={self.p99:.3f} ms"
        )


async def closed_loop(
    label: str,
    call: Callable[[], Awaitable[object]],
    *,
    in_flight: int,
    duration_s: float,
    warmup_s: float = 0.5,
) -> LoadResult:
    """`in_flight` workers each calling `call` back to back for `duration_s` (after a warm-up)."""
    latencies: list[float] = []
    measuring = False
    stop_at = 0.0

    async def worker() -> None:
        while True:
            started = time.perf_counter()
            if measuring and started >= stop_at:
                return
            await call()
            if measuring:
                latencies.append((time.perf_counter() - started) * 1000)

    warm_end = time.perf_counter() + warmup_s
    warm = [asyncio.create_task(_until(call, warm_end)) for _ in range(in_flight)]
    await asyncio.gather(*warm)
    measuring = True
    begin = time.perf_counter()
    stop_at = begin + duration_s
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    result = LoadResult(label, in_flight, len(latencies), time.perf_counter() - begin, latencies)
    SAMPLES[f"{CURRENT[0]}: {label} @{in_flight}"] = latencies
    return result


async def _until(call: Callable[[], Awaitable[object]], deadline: float) -> None:
    while time.perf_counter() < deadline:
        await call()


def start_server(name: str, module: str, *args: str, env: dict[str, str] | None = None) -> ServiceProcess:
    """A benchmark server in its own process (client and server never share a process)."""
    port = free_port()
    process = ServiceProcess(
        name=name,
        argv=[sys.executable, "-m", module, "--port", str(port), *args],
        grpc_port=port,
        env={"AGENTMESH_LOG_LEVEL": "WARNING", **(env or {})},
        cwd=ROOT,
        log_path=ROOT / "bench" / "out" / f"{name}.log",
    )
    process.start()
    process.wait_serving_sync(timeout=60)
    return process


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x" if baseline else "n/a"


QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
"""`python -m bench --quick` (or BENCH_QUICK=1): shorter rounds, fewer repeats — a check that
everything runs and a rough figure, not a result to record."""


def scaled(full: float, quick: float) -> float:
    return quick if QUICK else full


def scaled_int(full: int, quick: int) -> int:
    return quick if QUICK else full


def byte_compile() -> None:
    """Byte-compile the project's packages, as the image's `pip install .` does: services started
    from this checkout then load .pyc files instead of compiling every module at each start
    (PYTHONDONTWRITEBYTECODE, set on these machines and in the image, stops them writing any)."""
    import compileall

    for package in ("agentmesh", "agents", "memory", "tool_registry", "examples"):
        compileall.compile_dir(ROOT / package, quiet=1)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a live process has used: unlike wall time to SERVING, it does
    not grow with the machine's load (on the shared 2-core machine the wall time mostly waits)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
