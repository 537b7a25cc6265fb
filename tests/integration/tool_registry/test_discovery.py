"""Kubernetes discovery against a mock Kubernetes API, a real registry and real tool servers.

The Kubernetes side is kmock's emulator (list/watch for the official client;
it ignores label selectors, resourceVersion and timeouts, so our own label
check is exercised for real) and, for the resourceVersion / 410 Gone /
bookmark rules, a hand-written API answering exactly what the test scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest
from aiohttp import web
from kubernetes import client as k8s

from agentmesh.kit import metrics
from agentmesh.kit.auth import TokenIssuer, generate_issuer_key
from agentmesh.kit.channels import create_channel
from agentmesh.kit.net import free_port, free_port_with_partner
from agentmesh.kit.testing import local_settings
from agentmesh.localmesh.proc import ServiceProcess
from agentmesh.v1 import tool_pb2
from agentmesh.v1 import tool_registry_service_pb2 as rs
from agentmesh.v1 import tool_registry_service_pb2_grpc as rs_grpc
from examples import crm
from memory.connection import create_redis
from tests.integration.tool_registry.tools_support import served
from tests.support.registry import Registry, registry_at, snapshot
from tool_registry.discovery import ToolDiscovery
from tool_registry.invoke import CallContext, CallOutcome, ToolInvoker
from tool_registry.resolver import ToolResolver

pytestmark = pytest.mark.integration

NS = "tools"
CRM_TOOLS = {"crm_get_customer", "crm_get_order", "crm_list_orders", "crm_get_ticket"}


def service(name: str, *, labelled: bool = True, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"agentmesh.io/tool": "true"} if labelled else {"app": name},
            "annotations": annotations or {},
        },
        "spec": {"ports": [{"name": "grpc", "port": 50071}]},
    }


def api_at(url: str) -> k8s.CoreV1Api:
    configuration = k8s.Configuration()
    configuration.host = url
    return k8s.CoreV1Api(k8s.ApiClient(configuration))


@contextlib.asynccontextmanager
async def emulator() -> AsyncIterator[tuple[kmock.KubernetesEmulator, k8s.CoreV1Api]]:
    async with kmock.KubernetesEmulator() as mock, kmock.Server(mock) as server:
        yield mock, api_at(str(server.url).rstrip("/"))


@contextlib.asynccontextmanager
async def discovering(
    registry: Registry, api: k8s.CoreV1Api, redis_url: str, **options: Any
) -> AsyncIterator[ToolDiscovery]:
    settings = local_settings(discovery_namespaces=NS)
    redis = create_redis(redis_url)
    discovery = ToolDiscovery(settings, registry.stub, redis, metadata=[], api=api, **options)
    discovery.reconciler.retry_initial_s = 0.2
    task = asyncio.create_task(discovery.run())
    try:
        yield discovery
    finally:
        await discovery.stop()
        await asyncio.wait_for(task, 15)
        await redis.aclose()


async def create(api: k8s.CoreV1Api, body: dict[str, Any]) -> None:
    await asyncio.to_thread(api.create_namespaced_service, NS, body)


async def get_tool(registry: Registry, name: str) -> Any:
    return await registry.stub.GetTool(rs.GetToolRequest(name=name))


async def registry_keys(registry: Registry) -> dict[bytes, bytes | None]:
    """The registry's own keys (the discovery lease lives beside them)."""
    return {
        key: value for key, value in (await snapshot(registry.redis)).items() if key.startswith(b"am:{reg}")
    }


def registered(discovery: ToolDiscovery, key: str) -> bool:
    return any(s["service"] == key and s["status"] == "registered" for s in discovery.status()["services"])


async def test_a_labelled_service_registers_its_tools_and_deletion_unbinds_them(redis_url: str) -> None:
    async with (
        registry_at(redis_url) as registry,
        served(crm.build(), redis_url) as tool,
        emulator() as (_mock, api),
        discovering(registry, api, redis_url) as discovery,
    ):
        await create(api, service("crm", annotations={"agentmesh.io/endpoint": tool.endpoint}))
        # An unlabelled Service at the same address: the emulator ignores the label selector,
        # so only our own check keeps it out.
        await create(
            api, service("stranger", labelled=False, annotations={"agentmesh.io/endpoint": tool.endpoint})
        )
        await discovery.reconciler.wait_for(lambda: registered(discovery, f"{NS}/crm"), 20)
        assert discovery.status()["active"] is True
        assert [s["service"] for s in discovery.status()["services"]] == [f"{NS}/crm"]
        assert {t.split("@")[0] for t in discovery.status()["services"][0]["tools"]} == CRM_TOOLS
        assert (await get_tool(registry, "crm_get_order")).endpoint == tool.endpoint

        # Callable through the resolver, like any registered tool.
        target = f"127.0.0.1:{registry.host.grpc_port}"
        async with create_channel(target, control_plane=True) as channel, ToolResolver(channel) as resolver:
            resolved = await resolver.resolve("crm_get_order", "^1")
            result = await ToolInvoker().invoke(
                resolved, {"order_id": "ORD-12345"}, CallContext(deadline=time.time() + 5)
            )
        assert result.outcome is CallOutcome.OK and result.response["order_id"] == "ORD-12345"

        # What status() lists while each unbind is in flight: a Service it no longer lists must
        # have its tools retired already (a waiter on status() read the registry too early).
        listed_during_unbind: list[list[str]] = []
        real = discovery.reconciler.registry

        class Watched:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            async def BindToolEndpoint(self, request: Any, **options: Any) -> Any:
                listed_during_unbind.append([s["service"] for s in discovery.status()["services"]])
                return await real.BindToolEndpoint(request, **options)

        discovery.reconciler.registry = Watched()
        await asyncio.to_thread(api.delete_namespaced_service, "crm", NS)
        await discovery.reconciler.wait_for(lambda: not discovery.status()["services"], 20)
        assert listed_during_unbind and all(f"{NS}/crm" in listed for listed in listed_during_unbind)
        spec = await get_tool(registry, "crm_get_order")
        assert spec.endpoint == "" and not spec.deprecated  # unbound, not deprecated (the default)


async def test_retire_deprecate_deprecates_on_deletion(redis_url: str) -> None:
    annotations_ = {"agentmesh.io/retire": "deprecate"}
    async with (
        registry_at(redis_url) as registry,
        served(crm.build(), redis_url) as tool,
        emulator() as (_mock, api),
        discovering(registry, api, redis_url) as discovery,
    ):
        await create(
            api, service("crm", annotations={"agentmesh.io/endpoint": tool.endpoint, **annotations_})
        )
        await discovery.reconciler.wait_for(lambda: registered(discovery, f"{NS}/crm"), 20)
        await asyncio.to_thread(api.delete_namespaced_service, "crm", NS)
        await discovery.reconciler.wait_for(lambda: not discovery.status()["services"], 20)
        spec = await get_tool(registry, "crm_get_customer")
        assert spec.deprecated and "deleted" in spec.deprecation_message and spec.endpoint == ""


async def test_a_service_whose_reflection_fails_is_reported_retried_and_then_registered(
    redis_url: str,
) -> None:
    port = free_port()
    async with (
        registry_at(redis_url) as registry,
        emulator() as (mock, api),
        discovering(registry, api, redis_url) as discovery,
    ):
        await create(api, service("late", annotations={"agentmesh.io/endpoint": f"127.0.0.1:{port}"}))
        await discovery.reconciler.wait_for(
            lambda: any(s["status"] == "failed" for s in discovery.status()["services"]), 20
        )
        failed = discovery.status()["services"][0]
        assert "reflection" in failed["message"] and not failed["tools"]
        before = await snapshot(registry.redis)
        assert not any(b"crm_" in key for key in before)  # nothing half-registered
        # Reported on the Service as a Kubernetes Event.
        events = [obj for key, obj in mock.objects.items() if "event" in str(key[0]).lower()]
        assert any("ToolDiscoveryReflectionFailed" in json.dumps(e.raw) for e in events), events
        # The tool comes up on that port later: a retry registers it, nothing else is needed.
        async with served(crm.build(), redis_url, grpc_port=port):
            await discovery.reconciler.wait_for(lambda: registered(discovery, f"{NS}/late"), 30)
        assert (await get_tool(registry, "crm_get_ticket")).endpoint == f"127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({"agentmesh.io/port": "http"}, "names no port"),
        ({"agentmesh.io/endpoint": "not an endpoint"}, "is not host:port"),
        ({"agentmesh.io/retire": "explode"}, "must be one of"),
        ({"agentmesh.io/methods": "crm v1/!"}, "is not a pkg.Svc/Method prefix"),
    ],
)
async def test_malformed_annotations_are_reported_and_nothing_is_registered(
    redis_url: str, annotations: dict[str, str], expected: str
) -> None:
    async with (
        registry_at(redis_url) as registry,
        emulator() as (_mock, api),
        discovering(registry, api, redis_url) as discovery,
    ):
        await create(api, service("bad", annotations=annotations))
        await discovery.reconciler.wait_for(lambda: bool(discovery.status()["services"]), 20)
        state = discovery.status()["services"][0]
        assert state["status"] == "failed" and expected in state["message"], state
        assert (await registry.stub.ListTools(rs.ListToolsRequest())).tools == []


async def test_a_service_without_tool_methods_is_reported(redis_url: str) -> None:
    async with (
        registry_at(redis_url) as registry,
        served(crm.build(), redis_url) as tool,
        emulator() as (_mock, api),
        discovering(registry, api, redis_url) as discovery,
    ):
        filtered = {"agentmesh.io/endpoint": tool.endpoint, "agentmesh.io/methods": "payments.v1."}
        await create(api, service("nothing", annotations=filtered))
        await discovery.reconciler.wait_for(lambda: bool(discovery.status()["services"]), 20)
        state = discovery.status()["services"][0]
        assert state["status"] == "failed" and "no method" in state["message"]
        assert (await registry.stub.ListTools(rs.ListToolsRequest())).tools == []


async def test_exactly_one_of_two_registries_runs_discovery(redis_url: str) -> None:
    async with (
        registry_at(redis_url) as registry,
        served(crm.build(), redis_url) as tool,
        emulator() as (_mock, api),
        discovering(registry, api, redis_url, lease_ttl_s=1.0) as first,
        discovering(registry, api, redis_url, lease_ttl_s=1.0) as second,
    ):
        await create(api, service("crm", annotations={"agentmesh.io/endpoint": tool.endpoint}))
        await first.reconciler.wait_for(lambda: first.active or second.active, 10)
        leader, standby = (first, second) if first.active else (second, first)
        await leader.reconciler.wait_for(lambda: registered(leader, f"{NS}/crm"), 20)
        for _ in range(10):  # several lease periods: the standby never starts
            await asyncio.sleep(0.2)
            assert not standby.active and leader.active
        await leader.stop()
        await standby.reconciler.wait_for(lambda: registered(standby, f"{NS}/crm"), 20)
        assert standby.active and not leader.active


# -- the list/watch rules, against a scripted API ------------------------------------------


class ScriptedApi:
    """Answers list and watch requests from a script, and records what was asked."""

    def __init__(self, tool_endpoint: str) -> None:
        self.endpoint = tool_endpoint
        self.requests: list[dict[str, str]] = []
        self.watches = 0
        self.release = asyncio.Event()

    def item(self, name: str, version: str) -> dict[str, Any]:
        obj = service(name, annotations={"agentmesh.io/endpoint": self.endpoint})
        obj["metadata"]["resourceVersion"] = version
        return obj

    async def handle(self, request: web.Request) -> web.StreamResponse:
        params = dict(request.query)
        self.requests.append(params)
        if params.get("watch") != "true":
            if len([r for r in self.requests if r.get("watch") != "true"]) == 1:
                return web.json_response(
                    {"items": [self.item("a", "90")], "metadata": {"resourceVersion": "100"}}
                )
            items = [self.item("a", "90"), self.item("b", "150")]
            return web.json_response({"items": items, "metadata": {"resourceVersion": "200"}})
        self.watches += 1
        response = web.StreamResponse()
        await response.prepare(request)

        async def send(event: dict[str, Any]) -> None:
            await response.write((json.dumps(event) + "\n").encode())

        if self.watches == 1:  # from the first list: one change, then the version expires
            await send({"type": "ADDED", "object": self.item("b", "150")})
            await send(
                {
                    "type": "ERROR",
                    "object": {
                        "kind": "Status",
                        "code": 410,
                        "reason": "Expired",
                        "message": "too old resource version",
                    },
                }
            )
        elif self.watches == 2:  # after the relist: a bookmark moves the version, then the stream ends
            await send(
                {"type": "BOOKMARK", "object": {"kind": "Service", "metadata": {"resourceVersion": "300"}}}
            )
        else:
            await self.release.wait()
        return response


async def test_a_410_relists_without_duplicates_and_bookmarks_move_the_resource_version(
    redis_url: str,
) -> None:
    async with registry_at(redis_url) as registry, served(crm.build(), redis_url) as tool:
        scripted = ScriptedApi(tool.endpoint)
        app = web.Application()
        app.router.add_get(f"/api/v1/namespaces/{NS}/services", scripted.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        relists = metrics.DISCOVERY_RELISTS.labels(NS)
        relisted_before = relists._value.get()
        try:
            async with discovering(registry, api_at(f"http://127.0.0.1:{port}"), redis_url) as discovery:
                # a (first list) and b (the watch) are registered; the 410 relists (a, b), which
                # changes nothing; the bookmark's version is where the next watch resumes.
                both = {f"{NS}/a", f"{NS}/b"}
                await discovery.reconciler.wait_for(
                    lambda: (
                        {s["service"] for s in discovery.status()["services"] if s["status"] == "registered"}
                        == both
                    ),
                    30,
                )
                deadline = time.monotonic() + 30
                while scripted.watches < 3:
                    assert time.monotonic() < deadline, f"no third watch: {scripted.requests}"
                    await asyncio.sleep(0.05)
                keys = [s["service"] for s in discovery.status()["services"]]
                assert keys == [f"{NS}/a", f"{NS}/b"]
                assert all(s["status"] == "registered" for s in discovery.status()["services"])
                lists = [r for r in scripted.requests if r.get("watch") != "true"]
                watches = [r for r in scripted.requests if r.get("watch") == "true"]
                assert len(lists) == 2, scripted.requests
                assert relists._value.get() == relisted_before + 1  # counted as a 410, not as a failure
                assert [w.get("resourceVersion") for w in watches[:3]] == ["100", "200", "300"]
                assert all(w.get("labelSelector") == "agentmesh.io/tool=true" for w in watches)
                assert all(w.get("allowWatchBookmarks") == "true" for w in watches), watches
                # The relist re-applied a and b: nothing was written again.
                tools = (await registry.stub.ListTools(rs.ListToolsRequest())).tools
                assert sorted(t.name for t in tools) == sorted(CRM_TOOLS)
                scripted.release.set()
        finally:
            scripted.release.set()
            await runner.cleanup()


async def test_a_refused_tool_leaves_the_whole_service_unregistered(redis_url: str) -> None:
    async with (
        registry_at(redis_url) as registry,
        served(crm.build(), redis_url) as tool,
        emulator() as (_mock, api),
    ):
        # crm_get_order 1.0.0 already exists with other content: the registry refuses that one
        # method, so none of the Service's four tools may be stored.
        taken = tool_pb2.ToolSpec(
            file_descriptor_set=tool.app.file_set_bytes, method="crm.v1.Crm/GetOrder", description="another"
        )
        await registry.stub.RegisterTool(rs.RegisterToolRequest(tool=taken))
        before = await registry_keys(registry)
        async with discovering(registry, api, redis_url) as discovery:
            await create(api, service("crm", annotations={"agentmesh.io/endpoint": tool.endpoint}))
            await discovery.reconciler.wait_for(lambda: bool(discovery.status()["services"]), 20)
            state = discovery.status()["services"][0]
            assert state["status"] == "failed" and "crm_get_order" in state["message"], state
            assert await registry_keys(registry) == before


async def test_the_registry_process_runs_discovery_from_its_configuration(
    redis_url: str, service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    key_file = tmp_path / "signing.pem"  # auth on: discovery writes with its own service token
    key = generate_issuer_key()
    key_file.write_bytes(key.pem())
    reader = (("authorization", f"Bearer {TokenIssuer([key]).user_token(user='ops', tenant='acme')}"),)
    async with served(crm.build(), redis_url) as tool, emulator() as (_mock, api):
        await create(api, service("crm", annotations={"agentmesh.io/endpoint": tool.endpoint}))
        port = free_port_with_partner(1000)
        registry = service_process(
            "registry",
            [str(Path(sys.executable).parent / "agentmesh"), "serve", "registry"],
            port,
            env={
                "REDIS_URL": redis_url,
                "AGENTMESH_GRPC_PORT": str(port),
                "AGENTMESH_LOG_FORMAT": "text",
                "AGENTMESH_SIGNING_KEY": str(key_file),
                "AGENTMESH_DISCOVERY_NAMESPACES": NS,
                "AGENTMESH_DISCOVERY_KUBE_API": api.api_client.configuration.host,
            },
        )
        await registry.wait_serving(60)
        status_url = f"http://127.0.0.1:{port + 1000}/discovery"
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as session:
            while True:
                async with session.get(status_url) as response:
                    status = await response.json()
                if (
                    status.get("active")
                    and status["services"]
                    and status["services"][0]["status"] == "registered"
                ):
                    break
                assert time.monotonic() < deadline, f"discovery never registered the Service: {status}"
                await asyncio.sleep(0.2)
            async with session.get(f"http://127.0.0.1:{port + 1000}/metrics") as response:
                text = await response.text()
        assert status["namespaces"] == [NS]
        assert "agentmesh_discovery_active 1.0" in text
        assert 'agentmesh_discovery_services{status="registered"} 1.0' in text
        async with create_channel(registry.target) as channel:
            stub = rs_grpc.ToolRegistryServiceStub(channel)
            spec = await stub.GetTool(rs.GetToolRequest(name="crm_list_orders"), metadata=reader)
        assert (spec.endpoint, spec.registered_by) == (tool.endpoint, "service:discovery")
        # SIGTERM: the drain stops discovery (its watch thread included) and the process exits.
        assert await asyncio.to_thread(registry.stop, 20) == 0
