"""The client channel factory.

Every outbound gRPC channel in the mesh comes from `create_channel`:
keepalive, message-size limits, `round_robin` across all addresses for
`dns:///` targets (headless Services), TLS from the settings, tracing
interceptors when tracing is on, and a retry service config **only** for
idempotent control-plane calls (registry reads, health). Tool calls get no
transparent retry policy: the runtime decides retries from the tool's
side-effect class (DESIGN.md, "Side effects and retries").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc

from agentmesh.kit import tracing
from agentmesh.kit.config import Settings

KEEPALIVE_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]

# Retried on UNAVAILABLE only: these calls are reads or idempotent writes.
CONTROL_PLANE_RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def service_config(target: str, *, control_plane: bool) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if target.startswith("dns:"):
        config["loadBalancingConfig"] = [{"round_robin": {}}]
    if control_plane:
        config["methodConfig"] = [{"name": [{}], "retryPolicy": CONTROL_PLANE_RETRY_POLICY}]
    return config


def channel_options(
    target: str, *, control_plane: bool, max_message_bytes: int = 8 * 1024 * 1024
) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        *KEEPALIVE_OPTIONS,
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 1),
    ]
    config = service_config(target, control_plane=control_plane)
    if config:
        options.append(("grpc.service_config", json.dumps(config)))
    return options


def _read(path: Path | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _credentials(settings: Settings | None) -> grpc.ChannelCredentials | None:
    """mTLS with AGENTMESH_TLS_CERT/_KEY (+ _CA); TLS without a client certificate with _CA alone."""
    if settings is None or not (settings.tls_enabled or settings.tls_ca):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(settings.tls_ca),
        private_key=_read(settings.tls_key),
        certificate_chain=_read(settings.tls_cert),
    )


def create_channel(
    target: str,
    *,
    settings: Settings | None = None,
    control_plane: bool = False,
    interceptors: tuple[grpc.aio.ClientInterceptor, ...] = (),
    extra_options: list[tuple[str, Any]] | None = None,
) -> grpc.aio.Channel:
    """An aio channel to `target` (`host:port`, `dns:///name:port`, `unix:...`)."""
    max_bytes = settings.max_message_bytes if settings is not None else 8 * 1024 * 1024
    options = channel_options(target, control_plane=control_plane, max_message_bytes=max_bytes)
    options += extra_options or []
    all_interceptors = (*tracing.client_interceptors(), *interceptors)
    credentials = _credentials(settings)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=all_interceptors or None)
    return grpc.aio.secure_channel(
        target, credentials, options=options, interceptors=all_interceptors or None
    )
