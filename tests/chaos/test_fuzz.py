"""Fuzz the mesh's public surfaces against real servers: a registry, an agent (with its worker, a
scripted model and Redis; its native API and its A2A binding), an SDK tool and their HTTP
listeners. Every answer is a documented status (never UNKNOWN, INTERNAL, DATA_LOSS or
UNIMPLEMENTED), an HTTP listener never answers 5xx, the tool-argument converter only ever refuses
with INVALID_ARGUMENT, and every service is still SERVING afterwards.

Authentication is on, as in production: most calls carry a valid token for their target (a user
token for the agent, a service token with `registry:write` for the registry, a tool token for the
tool's method), so the fuzz reaches the handlers instead of stopping at UNAUTHENTICATED; the rest
carry none or a forged one. A call with a valid token is never answered UNAUTHENTICATED.

500 cases in the CI subset; `make chaos` runs 10,000 (`-m chaos`, the `slow` one).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import descriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmesh.kit.auth import Principal, TokenIssuer, generate_issuer_key, mesh_auth
from agentmesh.kit.channels import create_channel
from agentmesh.kit.errors import InvalidArgument, from_rpc_error
from agentmesh.kit.health import check_on
from agentmesh.kit.testing import local_settings
from agentmesh.localmesh.embedded_redis import EmbeddedRedis
from agentmesh.v1 import agent_service_pb2, tool_registry_service_pb2
from agents.a2a.servicer import A2A_SERVICE
from agents.model.script import Script
from agents.scripted_model import ScriptedModelServer
from agents.server import AgentProcess
from agents.spec import load_spec
from examples import payments
from tests.integration.tool_registry.tools_support import served
from tests.support.auth import DEFAULT_SCOPES, issuer, key_path, token
from tests.support.fuzzing import FORBIDDEN, corrupted, json_values, request_bytes, texts
from tests.support.registry import registry_at
from tool_registry.arguments import ArgumentConverter
from tool_registry.jsonschema import export_tool_schemas
from tool_registry.protoc import compile_protos

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

ROOT = Path(__file__).resolve().parents[2]
AGENT = agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"]
REGISTRY = tool_registry_service_pb2.DESCRIPTOR.services_by_name["ToolRegistryService"]
AGENT_METHODS = ["Run", "SubmitTask", "ResumeTask", "WatchTask", "GetTask", "CancelTask", "ListTasks"]
REGISTRY_METHODS = ["RegisterTool", "CheckCompatibility", "GetTool", "ListTools", "WatchTools"]
A2A_METHODS = ["SendMessage", "GetTask"]
INSTANT = {"name": "instant", "rules": [{"then": {"answer": "done"}}]}
VALID_SET = compile_protos(
    [ROOT / "tests" / "fixtures" / "protos" / "shop" / "v1" / "inventory.proto"],
    [ROOT / "tests" / "fixtures" / "protos"],
).SerializeToString()


@dataclass
class Mesh:
    loop: asyncio.AbstractEventLoop
    agent: grpc.aio.Channel
    registry: grpc.aio.Channel
    tool: grpc.aio.Channel
    tool_service: descriptor.ServiceDescriptor
    converter: ArgumentConverter
    http_ports: list[int]
    health: list[tuple[grpc.aio.Channel, str]]
    tokens: dict[str, Callable[[], str]]  # mints a valid token per target ("tool:<method>" for the tool)
    outcomes: Counter[str] = field(default_factory=Counter)


@contextlib.asynccontextmanager
async def _mesh(redis_url: str, loop: asyncio.AbstractEventLoop) -> AsyncIterator[Mesh]:
    async with contextlib.AsyncExitStack() as stack:
        auth = mesh_auth(local_settings(signing_key=key_path()))
        registry = await stack.enter_async_context(
            registry_at(redis_url, auth=auth, schema_exporter=export_tool_schemas)
        )
        tool = await stack.enter_async_context(served(payments.build(), redis_url, signing_key=key_path()))
        model = await stack.enter_async_context(ScriptedModelServer(Script.model_validate(INSTANT)))
        agent = AgentProcess(
            local_settings(
                redis_url=redis_url,
                registry=f"127.0.0.1:{registry.host.grpc_port}",
                model_base_url=model.base_url,
                model_name="scripted",
                signing_key=key_path(),
                service_token=issuer().service_token("fulfillment"),
            ),
            load_spec(ROOT / "agents" / "domains" / "fulfillment.yaml"),
        )
        await agent.start()
        stack.push_async_callback(agent.stop, grace=0)
        agent_channel = create_channel(f"127.0.0.1:{agent.host.grpc_port}")
        registry_channel = create_channel(f"127.0.0.1:{registry.host.grpc_port}")
        stack.push_async_callback(agent_channel.close)
        stack.push_async_callback(registry_channel.close)
        method = tool.app.methods["CreateCharge"].schema
        caller = Principal(subject="anonymous", tenant="default", scopes=frozenset(DEFAULT_SCOPES))
        # Minted per call (tool tokens live minutes; 10,000 cases take longer on a loaded machine).
        tokens: dict[str, Callable[[], str]] = {
            "agent": token,
            "a2a": token,
            "registry": lambda: issuer().service_token("fuzzer", scopes=("registry:write",)),
            **{
                f"tool:{name}": functools.partial(_tool_token, m, caller)
                for name, m in tool.app.methods.items()
            },
        }
        yield Mesh(
            loop=loop,
            agent=agent_channel,
            registry=registry_channel,
            tool=tool.channel,
            tool_service=method.method.containing_service,
            converter=ArgumentConverter(method),
            http_ports=[p for p in (agent.host.http_port, registry.host.http_port) if p],
            tokens=tokens,
            health=[
                (agent_channel, "agentmesh.v1.AgentService"),
                (registry_channel, "agentmesh.v1.ToolRegistryService"),
            ],
        )


def _tool_token(method: Any, caller: Principal) -> str:
    return issuer().tool_token(
        tool=method.tool_name, principal=caller, scopes=method.required_scopes, actor="fuzzer"
    )


@pytest.fixture(scope="module")
def mesh(redis_server: EmbeddedRedis) -> Iterator[Mesh]:
    if not redis_server.running():
        redis_server.start()
    loop = asyncio.new_event_loop()
    context = _mesh(redis_server.url, loop)
    yield loop.run_until_complete(context.__aenter__())
    loop.run_until_complete(context.__aexit__(None, None, None))
    loop.close()


ascii_values = st.from_regex(r"[ -~]{0,40}", fullmatch=True)
metadata = st.lists(
    st.tuples(
        st.sampled_from(
            ["x-agentmesh-user", "x-agentmesh-tenant", "x-agentmesh-delegation-depth", "a2a-version"]
        ),
        st.one_of(st.just("1.0"), ascii_values),
    ),
    max_size=2,
    unique_by=lambda pair: pair[0],
)
FORGED = TokenIssuer([generate_issuer_key()]).user_token(
    user="mallory", tenant="default", scopes=DEFAULT_SCOPES
)
# Which credential a call carries: the valid one for its target most of the time.
credentials = st.sampled_from(["valid"] * 6 + ["none", "forged", "garbage"])


# A2A clients send `a2a-version: 1.0` (the fuzzed metadata may replace or drop it).
a2a_metadata = metadata.map(
    lambda pairs: pairs if any(k == "a2a-version" for k, _ in pairs) else [*pairs, ("a2a-version", "1.0")]
)


def _grpc_case(
    target: str, service: descriptor.ServiceDescriptor, names: list[str]
) -> st.SearchStrategy[Any]:
    return st.sampled_from(names).flatmap(
        lambda name: st.tuples(
            st.just(target),
            st.just(f"/{service.full_name}/{name}"),
            request_bytes(service.methods_by_name[name].input_type),
            st.just(service.methods_by_name[name].server_streaming),
            a2a_metadata if target == "a2a" else metadata,
            credentials,
        )
    )


register_sets = st.one_of(st.just(VALID_SET), corrupted(VALID_SET), st.binary(max_size=128))


def _register_case() -> st.SearchStrategy[Any]:
    spec = st.builds(
        lambda fds, method, name, version: tool_registry_service_pb2.RegisterToolRequest(
            tool={"file_descriptor_set": fds, "method": method, "name": name, "version": version}
        ).SerializeToString(),
        register_sets,
        st.sampled_from(
            ["shop.v1.Inventory/Reserve", "shop.v1.Inventory/Check", "shop.v1.Inventory/WatchStock", ""]
        ),
        st.one_of(st.just(""), st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), texts),
        st.one_of(st.just(""), st.sampled_from(["1.0.0", "2.0.0-rc.1", "01.0.0"]), texts),
    )
    return st.tuples(
        st.just("registry"),
        st.sampled_from(
            [
                "/agentmesh.v1.ToolRegistryService/RegisterTool",
                "/agentmesh.v1.ToolRegistryService/CheckCompatibility",
            ]
        ),
        spec,
        st.just(False),
        st.just([]),
        credentials,
    )


http_case = st.tuples(
    st.just("http"),
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD"]),
    st.one_of(
        st.sampled_from(["/metrics", "/healthz", "/readyz", "/.well-known/agent-card.json", "/registration"]),
        st.from_regex(r"/[ -~]{0,60}", fullmatch=True).map(
            lambda p: p.replace(" ", "%20").replace("#", "%23")
        ),
    ),
    st.binary(max_size=256),
    st.integers(0, 1),
)
# What the model sends: a JSON text (any value, or not JSON at all), its bytes, or a decoded object.
argument_case = st.tuples(
    st.just("arguments"),
    json_values.map(json.dumps)
    | st.dictionaries(texts, json_values, max_size=4)
    | st.text(max_size=200)
    | st.binary(max_size=100),
)


def cases(mesh: Mesh) -> st.SearchStrategy[Any]:
    return st.one_of(
        _grpc_case("agent", AGENT, AGENT_METHODS),
        _grpc_case("a2a", A2A_SERVICE, A2A_METHODS),
        _grpc_case("registry", REGISTRY, REGISTRY_METHODS),
        _register_case(),
        _grpc_case("tool", mesh.tool_service, [m.name for m in mesh.tool_service.methods]),
        http_case,
        argument_case,
    )


async def _call(mesh: Mesh, case: tuple[Any, ...]) -> str:
    kind = case[0]
    if kind == "arguments":
        try:
            mesh.converter.convert(case[1])
        except InvalidArgument:
            return "arguments:INVALID_ARGUMENT"
        return "arguments:OK"
    if kind == "http":
        _, verb, path, body, which = case
        port = mesh.http_ports[which % len(mesh.http_ports)]
        async with aiohttp.ClientSession() as session:
            try:
                async with session.request(verb, f"http://127.0.0.1:{port}{path}", data=body) as response:
                    return f"http:{response.status // 100}xx"
            except aiohttp.InvalidURL:
                return "http:invalid-url"  # refused by the client before anything was sent
    _, path, payload, streaming, md, credential = case
    channel = {"agent": mesh.agent, "a2a": mesh.agent, "registry": mesh.registry, "tool": mesh.tool}[kind]
    bearer = {
        "valid": mesh.tokens[f"tool:{path.rsplit('/', 1)[1]}" if kind == "tool" else kind](),
        "forged": FORGED,
        "garbage": "not-a-jwt",
    }.get(credential)
    md = [*md, ("authorization", f"Bearer {bearer}")] if bearer else md
    try:
        if streaming:
            call = channel.unary_stream(path, request_serializer=lambda b: b)(
                payload, metadata=md, timeout=1.0
            )
            async for _ in call:
                break
            call.cancel()
        else:
            await channel.unary_unary(path, request_serializer=lambda b: b)(payload, metadata=md, timeout=5.0)
    except grpc.aio.AioRpcError as exc:
        if credential == "valid" and exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            return f"{kind}:UNAUTHENTICATED-with-a-valid-token"
        if kind == "a2a" and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            # The A2A binding's documented answer to a missing or foreign `a2a-version` (and only that).
            reason = from_rpc_error(exc).reason
            return "a2a:VERSION_NOT_SUPPORTED" if reason == "VERSION_NOT_SUPPORTED" else "a2a:UNIMPLEMENTED"
        return f"{kind}:{exc.code().name}"
    return f"{kind}:OK"


def _fuzz(mesh: Mesh, examples: int) -> None:
    found: list[str] = []

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=cases(mesh))
    def one(case: tuple[Any, ...]) -> None:
        outcome = mesh.loop.run_until_complete(_call(mesh, case))
        mesh.outcomes[outcome] += 1
        code = outcome.split(":", 1)[1]
        if code in FORBIDDEN or code == "5xx" or code.endswith("-with-a-valid-token"):
            found.append(f"{outcome} for {case!r:.300}")

    one()
    assert found == [], f"{len(found)} forbidden answers, first: {found[:3]}"
    for channel, service in mesh.health:
        assert mesh.loop.run_until_complete(check_on(channel, service)) == "SERVING"
    # The fuzz reached past validation: some calls succeeded, others were refused with a status.
    print(sorted(mesh.outcomes.items()))
    assert mesh.outcomes["agent:OK"] and mesh.outcomes["agent:INVALID_ARGUMENT"], mesh.outcomes
    # ... on every surface, not only the agent's: the tokens let the calls through to the handlers.
    for kind in ("a2a", "registry", "tool"):
        handled = sum(
            n for o, n in mesh.outcomes.items() if o.startswith(f"{kind}:") and o != f"{kind}:UNAUTHENTICATED"
        )
        assert handled, f"no {kind} call got past authentication: {mesh.outcomes}"


def test_500_fuzzed_requests_get_documented_answers(mesh: Mesh) -> None:
    _fuzz(mesh, 500)


@pytest.mark.slow
def test_10000_fuzzed_requests_get_documented_answers(mesh: Mesh) -> None:
    _fuzz(mesh, 10_000)
