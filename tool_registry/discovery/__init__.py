"""Kubernetes tool discovery: label a Service, and its tools register themselves.

An optional part of the registry process (AGENTMESH_DISCOVERY_NAMESPACES): one
replica at a time (a lease in Redis) watches the Services labelled
`agentmesh.io/tool=true` in the configured namespaces, reads each one's tools
through gRPC reflection, registers them bound to the Service's DNS name, and
unbinds (or deprecates) them when the Service goes away. See annotations.py
for what a platform team writes, watch.py for the list/watch rules, and
reconciler.py for what is written to the registry and when.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from typing import Any

from agentmesh.kit import metrics
from agentmesh.kit.config import Settings
from agentmesh.v1 import tool_registry_service_pb2_grpc as rs_grpc
from memory.connection import AnyRedis
from tool_registry.discovery.lease import LeaderLease
from tool_registry.discovery.reconciler import Metadata, Reconciler
from tool_registry.discovery.watch import ServiceWatch, WatchConfig

log = logging.getLogger(__name__)

LEASE_NAME = "tool-discovery"
EVENT_SOURCE = "agentmesh-discovery"


def kubernetes_api(settings: Settings) -> Any:
    """CoreV1Api: AGENTMESH_DISCOVERY_KUBE_API if set, else in-cluster, else the kubeconfig."""
    from kubernetes import client, config  # imported here: only discovery needs the client

    if settings.discovery_kube_api:
        configuration = client.Configuration()
        configuration.host = settings.discovery_kube_api
        return client.CoreV1Api(client.ApiClient(configuration))
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.CoreV1Api()


def discovery_metadata(settings: Settings) -> Metadata:
    """How discovery authenticates to the registry: its own service token.

    AGENTMESH_SERVICE_TOKEN when set; otherwise, in a registry holding the mesh issuer's key, a
    token minted for `service:discovery` (scope `registry:write`): discovery owns what it registers.
    """
    if settings.service_token:
        return [("authorization", f"Bearer {settings.service_token}")]
    if settings.signing_key:
        from agentmesh.kit.auth import TokenIssuer, load_issuer_keys

        token = TokenIssuer(load_issuer_keys(settings.signing_key)).service_token("discovery")
        return [("authorization", f"Bearer {token}")]
    return []


class ToolDiscovery:
    """Runs the watches while this replica holds the lease, and reports what it did."""

    def __init__(
        self,
        settings: Settings,
        registry: rs_grpc.ToolRegistryServiceStub,
        redis: AnyRedis,
        *,
        metadata: Metadata,
        api: Any | None = None,
        lease_ttl_s: float = 15.0,
        resync_s: float = 300.0,
    ) -> None:
        self.settings = settings
        self.namespaces = settings.discovery_namespace_list
        self.api = api if api is not None else kubernetes_api(settings)
        self.reconciler = Reconciler(
            registry,
            metadata=metadata,
            cluster_domain=settings.discovery_cluster_domain,
            settings=settings,
            report=self._report,
        )
        self.lease = LeaderLease(redis, LEASE_NAME, ttl_s=lease_ttl_s)
        self.resync_s = resync_s
        self.active = False
        self.watches: list[ServiceWatch] = []
        self._stop = asyncio.Event()

    def status(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "namespaces": [ns or "*" for ns in self.namespaces],
            "services": self.reconciler.status(),
            "relists": sum(w.lists for w in self.watches),
        }

    async def run(self) -> None:
        await self.lease.hold(self._lead, self._stop)

    async def stop(self) -> None:
        self._stop.set()

    async def _lead(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def put(item: tuple[str, Any]) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        self.watches = [
            ServiceWatch(
                self.api,
                WatchConfig(namespace=namespace),
                on_snapshot=functools.partial(_snapshot_item, put, namespace),
                on_event=functools.partial(_event_item, put),
            )
            for namespace in self.namespaces
        ]
        threads = [
            threading.Thread(
                target=watch.run, name=f"discovery-{watch.config.namespace or 'all'}", daemon=True
            )
            for watch in self.watches
        ]
        self.active = True
        metrics.DISCOVERY_ACTIVE.set(1)
        for thread in threads:
            thread.start()
        resync = loop.call_later(self.resync_s, lambda: put(("resync", None)))
        try:
            while True:
                kind, payload = await queue.get()
                if kind == "snapshot":
                    namespace, items = payload
                    await self._snapshot(namespace, items)
                elif kind == "resync":
                    await self.reconciler.resync()
                    resync = loop.call_later(self.resync_s, lambda: put(("resync", None)))
                elif kind == "DELETED":
                    await self.reconciler.removed(payload)
                else:
                    await self.reconciler.applied(payload)
        finally:
            resync.cancel()
            for watch in self.watches:
                watch.stop()
            self.reconciler.close()
            self.active = False
            metrics.DISCOVERY_ACTIVE.set(0)
            await asyncio.gather(*(asyncio.to_thread(t.join, 5) for t in threads))

    async def _snapshot(self, namespace: str, items: list[dict[str, Any]]) -> None:
        # A namespace's relist replaces only what that namespace's watch knew.
        others = [
            state.obj
            for key, state in self.reconciler.services.items()
            if namespace and not key.startswith(f"{namespace}/")
        ]
        await self.reconciler.snapshot([*others, *items])

    async def _report(self, obj: dict[str, Any], reason: str, message: str) -> None:
        """An Event on the Service (best effort: needs `create events` in RBAC)."""
        meta = obj.get("metadata") or {}
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{meta.get('name', 'service')}.",
                "namespace": meta.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Service",
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "reason": f"ToolDiscovery{reason.title().replace('_', '')}Failed",
            "message": message[:1000],
            "type": "Warning",
            "source": {"component": EVENT_SOURCE},
        }
        await asyncio.to_thread(self.api.create_namespaced_event, meta.get("namespace") or "default", body)


def _snapshot_item(put: Any, namespace: str, _version: str, items: list[dict[str, Any]]) -> None:
    put(("snapshot", (namespace, items)))


def _event_item(put: Any, _version: str, kind: str, obj: dict[str, Any]) -> None:
    put((kind, obj))
