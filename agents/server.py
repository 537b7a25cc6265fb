"""The agent process: `agentmesh serve agent` (AGENTMESH_ROLE=agent), one domain per process.

    AGENTMESH_DOMAIN_SPEC=agents/domains/fulfillment.yaml MODEL_BASE_URL=http://localhost:50099/v1 \\
    AGENTMESH_REGISTRY=localhost:50051 REDIS_URL=redis://localhost:6390/0 agentmesh serve agent

Reads the domain spec named by AGENTMESH_DOMAIN_SPEC (a bad spec stops the
process with exit code 2 and every bad field named), serves AgentService
(gRPC, default port 50061) with health and reflection, the agent card as
JSON at `/.well-known/agentmesh-card.json` and the A2A card at `/.well-known/agent-card.json`
on the HTTP listener (gRPC port +
1000), runs a TaskWorker for the domain's durable tasks (hand-offs from Run,
SubmitTask, resumed approvals), and registers its card in the registry's
directory (retrying in the background until the registry answers) so other
agents can delegate through `agent_<slug>`. SIGTERM drains: health goes
NOT_SERVING, the worker hands running tasks back to the queue after the
drain grace, then the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from a2a.types import a2a_pb2_grpc

from agentmesh.kit.auth import MESH_AUDIENCE, mesh_auth
from agentmesh.kit.channels import create_channel
from agentmesh.kit.config import DEFAULT_REGISTRY, ConfigError, Role, Settings
from agentmesh.kit.logs import configure_logging
from agentmesh.kit.process import EXIT_CONFIG, load_settings, run_process
from agentmesh.kit.server import ServiceHost
from agentmesh.kit.signals import stop_signals
from agentmesh.kit.streams import StreamSlots
from agentmesh.v1 import agent_service_pb2, agent_service_pb2_grpc
from agents.a2a.card import a2a_card_json
from agents.a2a.servicer import A2A_SERVICE, A2AServicer, a2a_access_rules
from agents.admission import RunAdmission
from agents.card import build_card, card_json
from agents.directory import keep_registered
from agents.executor import TaskExecutor
from agents.handler import AgentHandler, access_rules
from agents.model.openai import OpenAICompatibleModel
from agents.service import SERVICE, AgentServicer
from agents.session_context import ModelSummarizer, SessionContext
from agents.spec import DomainSpec, SpecError, load_spec
from agents.tools import RegistryToolBox
from memory.connection import create_redis, describe
from memory.prices import PriceTable
from memory.rate_limits import RateLimiter
from memory.sessions import SessionStore
from memory.tasks.queue import TaskQueue
from memory.tasks.store import TaskConfig
from memory.tasks.worker import TaskWorker
from memory.usage import UsageStore
from tool_registry.resolver import ToolResolver

log = logging.getLogger(__name__)


def model_target(settings: Settings, spec: DomainSpec) -> tuple[str, str]:
    """(base URL, model name): MODEL_BASE_URL, and MODEL_NAME over the spec's model.name."""
    if not settings.model_base_url:
        raise ConfigError(
            "MODEL_BASE_URL is required for an agent (an OpenAI-compatible API, e.g. http://localhost:50099/v1)"
        )
    name = settings.model_name or spec.model.name
    if not name:
        raise ConfigError(f"no model name: set MODEL_NAME or model.name in the {spec.slug} domain spec")
    return settings.model_base_url, name


def build_model(settings: Settings, spec: DomainSpec) -> OpenAICompatibleModel:
    base_url, name = model_target(settings, spec)
    return OpenAICompatibleModel(
        base_url, name, api_key=settings.model_api_key, max_retries=spec.model.max_retries
    )


def _host_of(endpoint: str) -> str:
    host = endpoint.rsplit(":", 1)[0] if ":" in endpoint else endpoint
    return host.removeprefix("dns:///") or "localhost"


class AgentProcess:
    """Everything one agent process runs; `start` / `stop` for tests, `serve` for main()."""

    def __init__(self, settings: Settings, spec: DomainSpec) -> None:
        self.settings = settings
        self.spec = spec
        # Auth is on unless AGENTMESH_INSECURE_NO_AUTH: every caller verified at the edge (audience:
        # this domain or any agent), the scopes of `access_rules`; the issuer key mints tool and
        # delegation tokens (a ConfigError without one).
        self.auth = mesh_auth(settings, need_issuer=True)
        self.host = ServiceHost(
            settings,
            name=settings.service_name or spec.slug,
            authenticator=self.auth.authenticator(
                audiences=(spec.slug, MESH_AUDIENCE),
                rules={**access_rules(spec), **a2a_access_rules(tuple(spec.required_scopes))},
            ),
        )
        self.redis = create_redis(
            settings.redis_url,
            client_name=f"agentmesh-agent-{spec.slug}",
            max_connections=settings.redis_max_connections,
        )
        self.model = build_model(settings, spec)
        self.registry_target = settings.registry or DEFAULT_REGISTRY
        self.registry_channel = create_channel(self.registry_target, settings=settings, control_plane=True)
        # The agent's own identity towards the registry (AGENTMESH_SERVICE_TOKEN: service:<name>).
        self.service_metadata: list[tuple[str, str]] = (
            [("authorization", f"Bearer {settings.service_token}")] if settings.service_token else []
        )
        self.resolver = ToolResolver(
            self.registry_channel, settings=settings, metadata=lambda: self.service_metadata
        )
        self.tools = RegistryToolBox.create(
            self.resolver, spec, RateLimiter(self.redis), issuer=self.auth.issuer
        )
        self.usage = UsageStore.from_settings(self.redis, settings)
        self.sessions = SessionContext(
            SessionStore.from_settings(self.redis, settings), ModelSummarizer(self.model)
        )
        self.executor = TaskExecutor(
            spec,
            settings,
            model=self.model,
            tools=self.tools,
            sessions=self.sessions,
            usage=self.usage,
            prices=PriceTable.load(settings.price_table),
        )
        compensator = self.executor.compensator
        self.queue = TaskQueue(
            self.redis,
            domain=spec.slug,
            config=TaskConfig.from_settings(settings),
            settle_failed=compensator.settle_failed if compensator.declared else None,
        )
        self.worker = TaskWorker(self.queue, self.executor, concurrency=settings.worker_concurrency)
        self.card: agent_service_pb2.AgentCard | None = None
        self.handler = AgentHandler(
            spec,
            self._card,
            queue=self.queue,
            executor=self.executor,
            admission=RunAdmission(RateLimiter(self.redis), spec, settings),
            sessions=self.sessions,
            usage=self.usage,
            redis=self.redis,
            draining=self.host.draining,
        )
        self.servicer = AgentServicer(
            self.handler, streams=StreamSlots(settings.max_streams, settings.max_streams_per_caller)
        )
        self.registered = asyncio.Event()
        self._background: list[asyncio.Task[Any]] = []
        self.host.add_service(
            SERVICE,
            lambda server: agent_service_pb2_grpc.add_AgentServiceServicer_to_server(self.servicer, server),
        )
        # The A2A binding beside the native one, over the same handler (agents/a2a/).
        self.a2a = A2AServicer(self.handler)
        self.host.add_service(
            A2A_SERVICE,
            lambda server: a2a_pb2_grpc.add_A2AServiceServicer_to_server(  # type: ignore[no-untyped-call]
                self.a2a, server
            ),
        )
        # The A2A card is what A2A clients look for; the native card stays beside it (and GetAgentCard).
        self.host.add_http_route("/.well-known/agent-card.json", self._a2a_card_document)
        self.host.add_http_route("/.well-known/agentmesh-card.json", self._card_document)
        self.host.on_drain(self._drain)
        self.host.on_stop(self._close)

    def _card(self) -> agent_service_pb2.AgentCard:
        assert self.card is not None, "the card is built at start"
        return self.card

    async def _card_document(self) -> Any:
        return None if self.card is None else card_json(self.card)

    async def _a2a_card_document(self) -> Any:
        return None if self.card is None else a2a_card_json(self.card)

    async def start(self) -> None:
        await self.host.start()
        endpoint = self.settings.advertise_addr or f"localhost:{self.host.grpc_port}"
        self.card = build_card(
            self.spec,
            endpoint=endpoint,
            http_url=f"http://{_host_of(endpoint)}:{self.host.http_port}",
            model=self.model.model_name,
        )
        await self.resolver.start()
        self._background = [
            asyncio.create_task(
                keep_registered(self.registry_channel, self.card, self.registered, self.service_metadata),
                name="register",
            ),
            asyncio.create_task(self.worker.run(), name="worker"),
        ]
        log.info(
            "agent serving",
            extra={
                "domain": self.spec.slug,
                "endpoint": endpoint,
                "model": self.model.model_name,
                "model_base_url": self.model.base_url,
                "registry": self.registry_target,
                "redis": describe(self.settings.redis_url),
            },
        )

    async def _drain(self) -> None:
        await self.worker.drain(self.settings.drain_grace_s)

    async def _close(self) -> None:
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.sessions.close()
        await self.resolver.close()
        await self.registry_channel.close()
        await self.model.aclose()
        await self.redis.aclose()

    async def stop(self, grace: float | None = None) -> None:
        await self.host.stop(grace)

    async def serve(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then drain and stop."""
        await self.start()
        try:
            async with stop_signals() as stop:
                await stop.wait()
                log.info("signal received, shutting down")
        finally:
            await self.stop()


def main() -> None:
    settings = load_settings(Role.AGENT)
    configure_logging(settings.service_name or "agent", settings.log_level, settings.log_format)
    if settings.domain_spec is None:
        log.error(
            "AGENTMESH_DOMAIN_SPEC is required for an agent (the domain spec YAML, see docs/domain-spec.md)"
        )
        raise SystemExit(EXIT_CONFIG)
    try:
        spec = load_spec(settings.domain_spec)
    except SpecError as exc:
        log.error("%s", exc)
        raise SystemExit(EXIT_CONFIG) from None
    try:
        model_target(settings, spec)  # fail fast on a missing model setting, before anything starts
    except ConfigError as exc:
        log.error("%s", exc)
        raise SystemExit(EXIT_CONFIG) from None
    run_process(settings, f"agent-{spec.slug}", lambda: _serve(settings, spec))


async def _serve(settings: Settings, spec: DomainSpec) -> None:
    # Built inside the event loop: its gRPC channels and Redis clients belong to it.
    try:
        process = AgentProcess(settings, spec)
    except ConfigError as exc:
        log.error("%s", exc)
        raise SystemExit(EXIT_CONFIG) from None
    await process.serve()
