"""List, then watch, the labelled Services of one namespace — with the Kubernetes API's rules.

`ServiceWatch.run` (blocking; run it in a thread: the official client is
synchronous) lists Services with the label selector, hands the complete set
to `on_snapshot`, then watches from the list's resourceVersion and hands each
change to `on_event`:

- BOOKMARK events only move the resourceVersion forward (nothing changed);
- a watch that ends (server timeout, dropped connection) resumes from the last
  resourceVersion seen; any other failure backs off (jittered, growing) and
  relists;
- 410 Gone — as an HTTP status or as an ERROR event — means the
  resourceVersion is too old: relist, and the snapshot lets the consumer drop
  what disappeared meanwhile (so nothing is applied twice or missed);
- the label is also checked in our code (`annotations.is_labelled`): a server
  or proxy that ignores the selector cannot make us register a stranger.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import Watch

from agentmesh.kit import metrics
from agentmesh.kit.retry import Backoff, Reconnect
from tool_registry.discovery.annotations import LABEL, is_labelled

log = logging.getLogger(__name__)

GONE = 410


@dataclass(frozen=True, slots=True)
class WatchConfig:
    namespace: str  # "" = every namespace (needs cluster-wide RBAC)
    watch_timeout_s: int = 300
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0


class ServiceWatch:
    def __init__(
        self,
        api: CoreV1Api,
        config: WatchConfig,
        *,
        on_snapshot: Callable[[str, list[dict[str, Any]]], None],
        on_event: Callable[[str, str, dict[str, Any]], None],
    ) -> None:
        self.api = api
        self.config = config
        self.on_snapshot = on_snapshot
        self.on_event = on_event
        self.resource_version: str | None = None
        self.lists = 0
        self.watches = 0
        self._stop = threading.Event()
        self._watch: Watch | None = None

    def stop(self) -> None:
        self._stop.set()
        watch = self._watch
        if watch is not None:
            watch.stop()  # type: ignore[no-untyped-call]

    def run(self) -> None:
        reconnect = Reconnect(
            Backoff(initial_s=self.config.initial_backoff_s, max_s=self.config.max_backoff_s)
        )
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                self._watch_once()
                reconnect.reset()
            except ApiException as exc:
                if exc.status == GONE:
                    log.info("resourceVersion %s expired (410 Gone): relisting", self.resource_version)
                    metrics.DISCOVERY_RELISTS.labels(self.config.namespace or "*").inc()
                    self.resource_version = None
                    continue
                self._back_off(
                    reconnect.next_delay(), f"the Kubernetes API answered {exc.status} {exc.reason}"
                )
            except Exception as exc:  # connection refused, reset, timeouts: the API may come back
                self._back_off(reconnect.next_delay(), f"{type(exc).__name__}: {exc}")

    def _back_off(self, delay: float, why: str) -> None:
        log.warning("service watch failed (%s); retrying in %.1fs", why, delay)
        metrics.DISCOVERY_ERRORS.labels("watch").inc()
        # After a failure the stream position is unknown: relist so nothing is missed.
        self.resource_version = None
        self._stop.wait(delay)

    def _call(self, **kwargs: Any) -> Any:
        selector = f"{LABEL}=true"
        if self.config.namespace:
            return self.api.list_namespaced_service(self.config.namespace, label_selector=selector, **kwargs)
        return self.api.list_service_for_all_namespaces(label_selector=selector, **kwargs)

    def _list(self) -> None:
        response = self._call(_preload_content=False, _request_timeout=30)
        try:
            body = json.loads(response.data)
        finally:
            response.release_conn()
        items = [item for item in body.get("items") or [] if is_labelled(item)]
        self.resource_version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        self.lists += 1
        self.on_snapshot(self.resource_version, items)

    def _watch_once(self) -> None:
        self._watch = Watch()  # type: ignore[no-untyped-call]
        self.watches += 1
        timeout = self.config.watch_timeout_s
        try:
            for event in self._watch.stream(  # type: ignore[no-untyped-call]
                self._call,
                resource_version=self.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout,
                _request_timeout=timeout + 30,
            ):
                if self._stop.is_set():
                    return
                # raw_object: the event's object as the API sent it (a dict; `object` is a model).
                kind, obj = event.get("type"), event.get("raw_object") or {}
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if kind == "BOOKMARK":
                    if version:
                        self.resource_version = str(version)
                    continue
                if kind not in ("ADDED", "MODIFIED", "DELETED"):
                    continue
                if version:
                    self.resource_version = str(version)
                if kind == "DELETED" or is_labelled(obj):
                    self.on_event(self.resource_version or "", kind, obj)
                else:  # the label was removed: for us that Service is gone
                    self.on_event(self.resource_version or "", "DELETED", obj)
        finally:
            self._watch = None
