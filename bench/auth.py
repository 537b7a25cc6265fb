"""What authentication and mTLS cost on a tool call (issue "Security", benchmark).

The training dummy's Echo (READ_ONLY, 64-byte message) on the tool SDK in its own
process, three times: auth off (AGENTMESH_INSECURE_NO_AUTH), auth on (the tool
verifies every call's tool token against the mesh JWKS file), auth on + mTLS. The
client (this process) calls through `ToolInvoker` as an agent does; with auth on it
mints one tool token per call (`CallContext.mint`, EdDSA: a signature on the client
and an uncached verification on the tool every call) or reuses one per tool and
caller while fresh (`ReusedToolTokens`: the tool's verifier cache answers).
Also: minting and verifying one token alone (EdDSA and ES256).

Target: auth on costs <= 10 % throughput at 1 and 32 in flight. Besides wall-clock
throughput and p50 (noisy on a shared machine), it reports the CPU both processes
spend per call: on a CPU-bound host capacity is inversely proportional to it.

    nice -n 10 python -m bench auth
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentmesh.kit import health
from agentmesh.kit.auth import (
    MESH_ISSUER,
    Principal,
    ReusedToolTokens,
    TokenIssuer,
    TokenVerifier,
    TrustedKeys,
    generate_issuer_key,
    jwks_document,
)
from agentmesh.kit.channels import create_channel
from agentmesh.kit.net import free_port_with_partner
from agentmesh.kit.testing import local_settings
from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agentmesh.localmesh.proc import ServiceProcess
from agentmesh.v1 import tool_pb2
from bench.common import LoadResult, closed_loop
from tests.support.certs import CertificateAuthority
from tool_registry.invoke import CallContext, CallOutcome, ResolvedTool, ToolInvoker
from tool_registry.registration import prepare
from tool_registry.sdk import ToolService

ROOT = Path(__file__).resolve().parents[1]
DURATION_S = float(os.environ.get("BENCH_DURATION", "3"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
ARGUMENTS = json.dumps({"message": "x" * 64})
USER = Principal(subject="alice", tenant="acme", scopes=frozenset({"dummy:read"}))


def _start(name: str, log_dir: Path, env: dict[str, str]) -> ServiceProcess:
    port = free_port_with_partner(2000)
    process = ServiceProcess(
        name=name,
        argv=[sys.executable, "-m", "examples.dummy"],
        grpc_port=port,
        env={
            "AGENTMESH_GRPC_PORT": str(port),
            "AGENTMESH_BIND_HOST": "127.0.0.1",
            "AGENTMESH_LOG_LEVEL": "WARNING",
            "AGENTMESH_MAX_IN_FLIGHT": "0",
            **env,
        },
        log_path=log_dir / f"{name}.log",
        cwd=ROOT,
    )
    process.start()
    deadline = time.monotonic() + 60
    # Under mTLS health answers on the plaintext port (gRPC port + 2000).
    probe = f"127.0.0.1:{port + 2000}" if "AGENTMESH_TLS_CERT" in env else process.target
    while health.check_sync(probe, timeout=0.5) != health.SERVING:
        if process.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start:\n{process.log_tail()}")
        time.sleep(0.05)
    return process


def _echo(app: ToolService, endpoint: str, channel: Any) -> ResolvedTool:
    schema = app.methods["Echo"].schema
    spec = prepare(
        tool_pb2.ToolSpec(
            file_descriptor_set=app.file_set_bytes, method=schema.method_name, endpoint=endpoint
        )
    ).spec
    return ResolvedTool(spec, schema, channel)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(
    label: str, process: ServiceProcess, in_flight: int, settings: Any, mint: Callable[..., str] | None
) -> tuple[LoadResult, float]:
    """The load result and the CPU both sides spent per call (µs): robust on a shared, busy machine."""
    from examples._common import load

    app = load("dummy")
    endpoint = process.target
    async with create_channel(endpoint, settings=settings) as channel:
        tool = _echo(app, endpoint, channel)
        invoker = ToolInvoker()
        calls = [0]

        async def one() -> object:
            result = await invoker.invoke(
                tool, ARGUMENTS, CallContext(task_id="bench", step=1, deadline=time.time() + 30, mint=mint)
            )
            assert result.outcome is CallOutcome.OK, result.observation
            calls[0] += 1
            return result

        assert process.pid is not None
        client0, server0 = time.process_time(), _cpu_s(process.pid)
        result = await closed_loop(label, one, in_flight=in_flight, duration_s=DURATION_S)
        cpu = time.process_time() - client0 + _cpu_s(process.pid) - server0
        return result, cpu / calls[0] * 1e6


def _cpu_us(work: Callable[[], object], count: int) -> float:
    """CPU time (not wall clock: the machine is shared) per call of `work`."""
    began = time.process_time()
    for _ in range(count):
        work()
    return (time.process_time() - began) / count * 1e6


def _verify_costs(verifier: TokenVerifier, tokens: list[str]) -> tuple[float, float]:
    """CPU per verification of a token never seen, and of one in the verifier's cache."""
    loop = asyncio.new_event_loop()
    try:
        fresh = iter(tokens)
        fresh_us = _cpu_us(
            lambda: loop.run_until_complete(verifier.verify(next(fresh), audiences=("dummy_echo",))),
            len(tokens),
        )
        cached_us = _cpu_us(
            lambda: loop.run_until_complete(verifier.verify(tokens[0], audiences=("dummy_echo",))),
            len(tokens),
        )
    finally:
        loop.close()
    return fresh_us, cached_us


def _token_costs() -> None:
    for algorithm in ("EdDSA", "ES256"):
        key = generate_issuer_key(algorithm)
        issuer = TokenIssuer([key])
        verifier = TokenVerifier(TrustedKeys(issuer_keys=[key]), issuers=(MESH_ISSUER,))

        def mint(issuer: TokenIssuer = issuer) -> str:
            return issuer.tool_token(tool="dummy_echo", principal=USER, scopes=USER.scopes, actor="bench")

        mint_us = _cpu_us(mint, 2000)
        fresh_us, cached_us = _verify_costs(verifier, [mint() for _ in range(2000)])
        print(
            f"  {algorithm} (CPU): mint one tool token {mint_us:.0f} us, verify a new one {fresh_us:.0f} us, "
            f"verify a cached one {cached_us:.0f} us (incl. an event-loop round)",
            flush=True,
        )


def main() -> None:
    _token_costs()
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
        root = Path(tmp)
        redis = EmbeddedRedis(data_dir=root / "valkey")
        redis.start()
        key = generate_issuer_key()
        (root / "jwks.json").write_text(json.dumps(jwks_document([key])))
        ca = CertificateAuthority()
        server_cert, server_key = ca.write(root / "server", "server", server=True)
        client_cert, client_key = ca.write(root / "client", "client", server=False)
        ca_file = root / "server" / "ca.crt"
        issuer = TokenIssuer([key])

        def mint(spec: tool_pb2.ToolSpec, request: Any) -> str:
            return issuer.tool_token(tool=spec.name, principal=USER, scopes=USER.scopes, actor="bench")

        reused = ReusedToolTokens(issuer)

        def reuse(spec: tool_pb2.ToolSpec, request: Any) -> str:
            return reused.token(tool=spec.name, principal=USER, scopes=USER.scopes, actor="bench")

        auth_env = {"AGENTMESH_JWKS": str(root / "jwks.json")}
        tls_env = {
            "AGENTMESH_TLS_CERT": str(server_cert),
            "AGENTMESH_TLS_KEY": str(server_key),
            "AGENTMESH_TLS_CA": str(ca_file),
        }
        setups = {
            "auth off": ({"AGENTMESH_INSECURE_NO_AUTH": "true"}, None, None),
            "auth on (mint per call)": (auth_env, None, mint),
            "auth on (token reused)": (auth_env, None, reuse),
            "auth on + mTLS": (
                {**auth_env, **tls_env},
                local_settings(tls_cert=client_cert, tls_key=client_key, tls_ca=ca_file),
                reuse,
            ),
        }
        processes: dict[str, ServiceProcess] = {}
        try:
            for index, (label, (env, _, _)) in enumerate(setups.items()):
                processes[label] = _start(f"dummy-{index}", root, {"REDIS_URL": redis.url, **env})
            for in_flight in (1, 32):
                results: dict[str, list[LoadResult]] = {label: [] for label in setups}
                cpus: dict[str, list[float]] = {label: [] for label in setups}
                for _ in range(ROUNDS):
                    for label, (_, settings, minter) in setups.items():
                        result, cpu_us = asyncio.run(
                            _measure(label, processes[label], in_flight, settings, minter)
                        )
                        print(f"{result.line()}  cpu={cpu_us:.0f} us/call", flush=True)
                        results[label].append(result)
                        cpus[label].append(cpu_us)
                off = results["auth off"]
                off_cpu = statistics.median(cpus["auth off"])
                for label in list(setups)[1:]:
                    rates = [r.rate / o.rate for r, o in zip(results[label], off, strict=True)]
                    p50s = [r.p50 / o.p50 for r, o in zip(results[label], off, strict=True)]
                    cpu = statistics.median(cpus[label])
                    print(
                        f"  in_flight={in_flight}: {label} / auth off: CPU per call {cpu:.0f} vs "
                        f"{off_cpu:.0f} us (capacity {off_cpu / cpu:.2f}x); measured throughput "
                        f"{statistics.median(rates):.2f}x, p50 {statistics.median(p50s):.2f}x",
                        flush=True,
                    )
        finally:
            for process in processes.values():
                process.stop()
            redis.cleanup()


if __name__ == "__main__":
    main()
