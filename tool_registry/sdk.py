"""The tool SDK: a developer writes the `.proto` (with `agentmesh.v1.tool` options) and the bodies.

    app = ToolService.from_proto("examples/payments/payments.proto")

    @app.method("Refund")
    async def refund(request, context):          # request: a payments.v1.RefundRequest
        ...
        return {"refund_id": "rf_1"}              # or app.message("payments.v1.RefundResponse")(...)

    app.run()                                     # serve until SIGTERM, then drain

What it does for every method:

- serves it with generic handlers and dynamic message classes from the
  compiled descriptor set (no generated code), behind the kit's ServiceHost:
  error map, health, reflection from the same descriptors, metrics, drain;
- validates each request with protovalidate before the body runs
  (INVALID_ARGUMENT with BadRequest field violations);
- deduplicates calls that carry `idempotency-key` metadata through
  memory.idempotency.IdempotencyStore (scope: tool name + version; payload:
  the deterministic serialized request; the Redis client is made at the
  first keyed call, so a tool that gets none never loads redis-py): the first call runs, repeats replay
  the stored status and response (with `x-agentmesh-replayed` trailing
  metadata), a concurrent duplicate gets ABORTED + RetryInfo. Final outcomes
  are stored (OK and the errors that would repeat: INVALID_ARGUMENT, NOT_FOUND,
  ALREADY_EXISTS, FAILED_PRECONDITION other than APPROVAL_REQUIRED,
  OUT_OF_RANGE, UNIMPLEMENTED); anything else releases the key so a retry can
  run. The body of a keyed call runs to its end even when the caller's deadline
  cancels the RPC, so "succeeded, then timed out" is stored and replayed rather
  than run twice — every SDK tool is KEYED for free;
- registers itself with the registry (AGENTMESH_REGISTRY) with the advertised
  address (AGENTMESH_ADVERTISE_ADDR, else localhost:<port>), in the
  background: retried with backoff while the registry is unreachable, renewed
  when the WatchTools stream breaks (a registry restart) and periodically.
  Never a crash; the state is in logs, /registration on the HTTP listener and
  the agentmesh_tool_registered metric (tool_registry/self_registration.py).

Security (DESIGN.md, "Identity" and "Approvals"): every call's tool token is
verified at the edge against the mesh JWKS (AGENTMESH_JWKS: a file, or the
registry's `/.well-known/jwks.json`; or the signing key): `aud` must be the
called tool's name and its scopes must include the tool's `required_scopes`
(UNAUTHENTICATED / PERMISSION_DENIED naming the scope). An `approval` claim is
honoured only when it is bound to this call: mesh-issued, for the token's own
task and step, the SHA-256 of this very request (`arguments_digest`) and, for a
side-effecting tool, sent with the idempotency key of that task step (so a
replayed approved call is deduplicated, never run twice); any other approval is
refused with PERMISSION_DENIED. A tool with `requires_approval` runs only with
one (else FAILED_PRECONDITION, APPROVAL_REQUIRED); a body that decides an
approval is needed (e.g. a refund above a limit) reads `context.approval`.
With AGENTMESH_INSECURE_NO_AUTH (local development only) the caller names
itself in headers, as everywhere, and `x-agentmesh-approval` stands in for the
claim. `registry_metadata` is what the SDK sends to the registry (default:
AGENTMESH_SERVICE_TOKEN as a Bearer token); `authorize` is an optional extra
check of the verified context before validation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message
from google.rpc import status_pb2

from agentmesh.kit import metadata as md
from agentmesh.kit import metrics
from agentmesh.kit.auth import (
    MESH_ISSUER,
    Approval,
    MethodRule,
    Principal,
    arguments_digest,
    current_principal,
    mesh_auth,
)
from agentmesh.kit.config import Role, Settings
from agentmesh.kit.errors import (
    AgentmeshError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    from_status_proto,
    reason_name,
    to_status_proto,
)
from agentmesh.kit.process import load_settings, run_process
from agentmesh.kit.server import ServiceHost
from agentmesh.kit.signals import stop_signals
from agentmesh.v1 import (
    errors_pb2,
    tool_options_pb2,
)
from memory import codec
from memory.redis_url import parse_redis_url
from tool_registry.arguments import validate_request
from tool_registry.descriptor_files import load_or_compile
from tool_registry.descriptors import ToolSchema, build_pool, load_tool_schema
from tool_registry.self_registration import MetadataProvider, Registration, service_token_metadata

if TYPE_CHECKING:
    from memory.connection import AnyRedis
    from memory.idempotency import Claimed, IdempotencyStore

log = logging.getLogger(__name__)

RESULT_FORMAT = 1
# Outcomes worth storing under an idempotency key: a retry would get the same answer.
FINAL_CODES = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
APPROVAL_REQUIRED = reason_name(errors_pb2.ERROR_REASON_APPROVAL_REQUIRED)


@dataclass
class ToolContext:
    """What a method body gets besides the request."""

    tool: ToolSchema
    grpc: grpc.aio.ServicerContext
    metadata: dict[str, str]
    # The verified caller (None only when the SDK serves without authentication, in tests).
    principal: Principal | None = None
    # The approval bound to this very call (checked before the body runs), or None.
    approval: Approval | None = None

    @property
    def idempotency_key(self) -> str:
        return self.metadata.get(md.IDEMPOTENCY_KEY, "")

    @property
    def task_id(self) -> str:
        return self.metadata.get(md.TASK_ID, "")

    @property
    def step(self) -> str:
        return self.metadata.get(md.STEP, "")

    def time_remaining(self) -> float | None:
        remaining = self.grpc.time_remaining()
        return None if remaining is None else float(remaining)


Handler = Callable[[Any, ToolContext], Awaitable[Message | Mapping[str, Any]]]
Authorizer = Callable[[ToolContext], Awaitable[None]]


@dataclass
class _Method:
    schema: ToolSchema
    handler: Handler | None = None
    store: IdempotencyStore | None = None

    @property
    def tool_name(self) -> str:
        options = self.schema.options()
        return options.name if options is not None and options.name else self.schema.method_name

    @property
    def scope(self) -> str:
        options = self.schema.options()
        version = options.version if options is not None else ""
        return f"tool:{self.tool_name}:{version}"

    @property
    def required_scopes(self) -> tuple[str, ...]:
        options = self.schema.options()
        return tuple(options.required_scopes) if options is not None else ()

    @property
    def requires_approval(self) -> bool:
        options = self.schema.options()
        return bool(options is not None and options.requires_approval)

    @property
    def read_only(self) -> bool:
        options = self.schema.options()
        return options is not None and options.side_effect == tool_options_pb2.SIDE_EFFECT_READ_ONLY


class ToolService:
    """One gRPC service of a compiled descriptor set, served by the SDK."""

    def __init__(self, file_set: Any, *, service: str | None = None) -> None:
        self.file_set = file_set
        self.file_set_bytes: bytes = file_set.SerializeToString(deterministic=True)
        services = [
            (f"{f.package}.{s.name}" if f.package else s.name, s)
            for f in file_set.file
            for s in f.service
            if service is not None or any(m.options.HasExtension(tool_options_pb2.tool) for m in s.method)
        ]
        if service is not None:
            services = [item for item in services if item[0] == service]
        if len(services) != 1:
            found = ", ".join(name for name, _ in services) or "none"
            raise ValueError(f"expected exactly one service (pass service=...); found: {found}")
        self.service_name, service_proto = services[0]
        self.pool = build_pool(file_set)
        self.methods: dict[str, _Method] = {
            m.name: _Method(load_tool_schema(file_set, f"{self.service_name}/{m.name}"))
            for m in service_proto.method
        }
        self.authorize: Authorizer | None = None
        self.registry_metadata: MetadataProvider | None = None
        self.registration: Registration | None = None
        self.host: ServiceHost | None = None
        self._settings: Settings | None = None
        self._redis: AnyRedis | None = None  # the idempotency stores' client, made at first use
        self._owns_redis = False
        self._background: set[asyncio.Task[Any]] = set()

    @classmethod
    def from_proto(
        cls, path: str | Path, *, include_dirs: Sequence[str | Path] = (), service: str | None = None
    ) -> ToolService:
        """The service of `path`: its shipped descriptor set (`<name>.binpb`, see
        tool_registry/descriptor_files.py) while current, else `path` compiled in process
        (agentmesh and buf/validate protos on the include path)."""
        return cls(load_or_compile(path, include_dirs), service=service)

    # -- composition --------------------------------------------------------------------

    def method(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator: the body of method `name`."""
        if name not in self.methods:
            raise ValueError(f"{self.service_name} has no method {name!r}; it has {sorted(self.methods)}")

        def register(handler: Handler) -> Handler:
            self.methods[name].handler = handler
            return handler

        return register

    def message(self, full_name: str) -> type[Message]:
        """The dynamic class of any message in the set, e.g. `payments.v1.RefundResponse`."""
        for method in self.methods.values():
            try:
                return method.schema.message_class(method.schema.pool.FindMessageTypeByName(full_name))
            except KeyError:
                continue
        raise KeyError(f"no message {full_name!r} in the descriptor set")

    def tools(self) -> list[ToolSchema]:
        """The methods carrying an `agentmesh.v1.tool` option."""
        return [m.schema for m in self.methods.values() if m.schema.options() is not None]

    def rules(self) -> dict[str, MethodRule]:
        """Per method: a tool token for this tool (`aud` = its name) with its required scopes."""
        return {
            f"{self.service_name}/{name}": MethodRule(
                scopes=method.required_scopes, audiences=(method.tool_name,)
            )
            for name, method in self.methods.items()
        }

    # -- serving --------------------------------------------------------------------------

    def _generic_handler(self) -> grpc.GenericRpcHandler:
        handlers = {}
        for name, method in self.methods.items():
            if method.handler is None:
                continue
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                self._behaviour(method),
                request_deserializer=method.schema.request_class.FromString,
                response_serializer=_serialize,
            )
        missing = [name for name, m in self.methods.items() if m.handler is None]
        if missing:
            log.warning("methods without a body answer UNIMPLEMENTED", extra={"methods": missing})
        return grpc.method_handlers_generic_handler(self.service_name, handlers)

    def _behaviour(
        self, method: _Method
    ) -> Callable[[Message, grpc.aio.ServicerContext], Awaitable[Message]]:
        async def handle(request: Message, context: grpc.aio.ServicerContext) -> Message:
            principal = current_principal()
            metadata = dict(context.invocation_metadata() or ())
            ctx = ToolContext(method.schema, context, metadata, principal)
            ctx.approval = _bound_approval(method, request, principal, metadata)
            if method.requires_approval and ctx.approval is None:
                raise FailedPrecondition(
                    f"{method.tool_name} runs only with an approval bound to this call",
                    reason=errors_pb2.ERROR_REASON_APPROVAL_REQUIRED,
                    metadata={"tool": method.tool_name},
                )
            if self.authorize is not None:
                await self.authorize(ctx)
            violations = validate_request(request, method.schema)
            if violations:
                fields = ", ".join(v.field or "(request)" for v in violations[:5])
                raise InvalidArgument(f"invalid request: {fields}", violations=violations)
            if ctx.idempotency_key:
                return await self._deduplicated(method, request, ctx, self._store(method))
            return await _run(method, request, ctx)

        return handle

    async def _deduplicated(
        self, method: _Method, request: Message, ctx: ToolContext, store: IdempotencyStore
    ) -> Message:
        from memory.idempotency import Replay

        claim = await store.begin(ctx.idempotency_key, request.SerializeToString(deterministic=True))
        if isinstance(claim, Replay):
            metrics.TOOL_REPLAYS.labels(method.tool_name).inc()
            ctx.grpc.set_trailing_metadata(((md.REPLAYED, "1"),))
            return _replayed(method.schema, claim.result)
        # The body runs to its end even if the caller goes away: its outcome is what a retry
        # with the same key must get.
        work = asyncio.ensure_future(self._run_and_store(method, request, ctx, store, claim))
        self._background.add(work)
        work.add_done_callback(self._background.discard)
        return await asyncio.shield(work)

    async def _run_and_store(
        self, method: _Method, request: Message, ctx: ToolContext, store: IdempotencyStore, claim: Claimed
    ) -> Message:
        keeper = asyncio.ensure_future(_keep_alive(store, claim))
        try:
            response = await _run(method, request, ctx)
        except AgentmeshError as exc:
            keeper.cancel()
            if exc.code in FINAL_CODES and exc.reason != APPROVAL_REQUIRED:
                await store.complete(claim, _encode(to_status_proto(exc)))
            else:
                await _release(store, claim)
            raise
        except BaseException:
            keeper.cancel()
            await _release(store, claim)
            raise
        keeper.cancel()
        packed = any_pb2.Any()
        packed.Pack(response)
        await store.complete(claim, _encode(status_pb2.Status(code=0, details=[packed])))
        return response

    @contextlib.asynccontextmanager
    async def serving(
        self,
        settings: Settings | None = None,
        *,
        redis: AnyRedis | None = None,
        register: bool = True,
    ) -> AsyncIterator[ServiceHost]:
        """Start serving (tests and embedding); stops on exit. `redis`: the idempotency store's client."""
        host = await self.start(settings, redis=redis, register=register)
        try:
            yield host
        finally:
            await self.stop(grace=0)

    async def start(
        self, settings: Settings | None = None, *, redis: AnyRedis | None = None, register: bool = True
    ) -> ServiceHost:
        settings = settings or Settings.from_env(role=Role.TOOL)
        self._settings = settings
        self._redis, self._owns_redis = redis, False
        if redis is None:
            # The client is made at the first keyed call (`_store`); a bad REDIS_URL still stops
            # the start here, without loading redis-py.
            parse_redis_url(settings.redis_url)
        for method in self.methods.values():
            method.store = None
        auth = mesh_auth(settings)
        host = ServiceHost(
            settings,
            name=settings.service_name or self.service_name,
            reflection_pool=self.pool,
            # Insecure (development) mode: callers name themselves; the agent checked the scopes.
            authenticator=auth.authenticator(audiences=(), rules={} if auth.insecure else self.rules()),
        )
        generic = self._generic_handler()
        host.add_service(self.service_name, lambda server: server.add_generic_rpc_handlers((generic,)))
        host.add_http_route("/registration", self._registration_report)
        await host.start()
        self.host = host
        if register and settings.registry:
            advertised = settings.advertise_addr or f"localhost:{host.grpc_port}"
            self.registration = Registration(
                self.tools(),
                self.file_set_bytes,
                registry=settings.registry,
                endpoint=advertised,
                settings=settings,
                metadata=self.registry_metadata or service_token_metadata(settings),
            )
            self.registration.start()
        elif register:
            log.info("AGENTMESH_REGISTRY is not set: the tools are served but not registered")
        return host

    def _store(self, method: _Method) -> IdempotencyStore:
        """The idempotency store of `method`, made at its first keyed call with the Redis client
        shared by all methods (redis-py loads then: a tool whose calls carry no idempotency key,
        e.g. one that only serves reads, never loads it). Nothing is awaited in here, so
        concurrent first calls share one client."""
        if method.store is None:
            from memory.connection import create_redis
            from memory.idempotency import IdempotencyStore

            settings = self._settings or Settings.from_env(role=Role.TOOL)
            if self._redis is None:
                self._redis = create_redis(settings.redis_url, client_name="agentmesh-tool")
                self._owns_redis = True
            method.store = IdempotencyStore.from_settings(self._redis, settings, scope=method.scope)
        return method.store

    async def _registration_report(self) -> dict[str, Any]:
        if self.registration is None:
            return {"registry": None, "tools": {}}
        return await self.registration.report()

    async def stop(self, grace: float | None = None) -> None:
        if self.registration is not None:
            await self.registration.stop()
        if self.host is not None:
            await self.host.stop(grace)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._redis is not None and self._owns_redis:
            await self._redis.aclose()
            self._redis, self._owns_redis = None, False

    async def serve(self, settings: Settings | None = None) -> None:
        """Serve until SIGTERM/SIGINT, then drain (what `run` does inside asyncio.run)."""
        await self.start(settings)
        assert self.host is not None
        async with stop_signals() as stop:  # the drain runs inside: a second signal cannot cut it
            try:
                await stop.wait()
            finally:
                await self.stop()

    def run(self, settings: Settings | None = None) -> None:
        """The process entrypoint: logging, tracing, serve until a signal."""
        settings = settings or load_settings(Role.TOOL)
        run_process(settings, self.service_name, lambda: self.serve(settings))


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


async def _run(method: _Method, request: Message, ctx: ToolContext) -> Message:
    handler = method.handler
    assert handler is not None
    result = await handler(request, ctx)
    if isinstance(result, Message):
        return result
    response = method.schema.response_class()
    try:
        json_format.ParseDict(dict(result), response, descriptor_pool=method.schema.pool)
    except json_format.ParseError as exc:
        raise TypeError(f"{method.schema.method_name} returned a dict that is not a response: {exc}") from exc
    return response


def _encode(status: status_pb2.Status) -> bytes:
    return codec.encode_message(codec.RecordKind.IDEMPOTENT_RESULT, RESULT_FORMAT, status)


def _replayed(schema: ToolSchema, stored: bytes) -> Message:
    status = codec.decode_message(
        stored,
        codec.RecordKind.IDEMPOTENT_RESULT,
        {RESULT_FORMAT},
        status_pb2.Status,
        "idempotent tool result",
    )
    if status.code != 0:
        raise from_status_proto(status)
    response = schema.response_class()
    if status.details:
        response.ParseFromString(status.details[0].value)
    return response


async def _release(store: IdempotencyStore, claim: Claimed) -> None:
    with contextlib.suppress(Exception):  # the lease expires anyway; the original error matters more
        await asyncio.shield(store.release(claim))


async def _keep_alive(store: IdempotencyStore, claim: Claimed) -> None:
    with contextlib.suppress(Exception):
        while True:
            await asyncio.sleep(store.lease_ms / 3000)
            if not await store.extend(claim):
                return


def _bound_approval(
    method: _Method, request: Message, principal: Principal | None, metadata: Mapping[str, str]
) -> Approval | None:
    """The approval of this call if it is bound to it; PERMISSION_DENIED for any other approval."""
    if principal is None:
        return None
    if not principal.authenticated:
        # AGENTMESH_INSECURE_NO_AUTH only: the caller names itself, and its approval, in headers.
        action = metadata.get(md.APPROVAL, "")
        if not action:
            return None
        return Approval(
            action, metadata.get(md.TASK_ID, ""), -1, arguments_digest(request), principal.subject
        )
    approval = principal.approval
    if approval is None:
        return None
    problem = ""
    if principal.issuer != MESH_ISSUER:
        problem = "it was not issued by the mesh"
    elif principal.task_id is None or principal.step is None:
        problem = "the token names no task step"
    elif (approval.task_id, approval.step) != (principal.task_id, principal.step):
        problem = "it is for another task step"
    elif approval.arguments_sha256 != arguments_digest(request):
        problem = "it was granted for other arguments"
    elif (
        not method.read_only and metadata.get(md.IDEMPOTENCY_KEY, "") != f"{approval.task_id}:{approval.step}"
    ):
        problem = "the call does not carry the approved step's idempotency key"
    if problem:
        raise PermissionDenied(
            f"the approval in the tool token does not apply to this call: {problem}",
            reason=errors_pb2.ERROR_REASON_APPROVAL_REQUIRED,
            metadata={"tool": method.tool_name, "action": approval.action_id[:64]},
        )
    return approval
