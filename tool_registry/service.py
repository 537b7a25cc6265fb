"""ToolRegistryService: the thin gRPC layer over RegistryStore.

Handlers validate with `Violations`, call pure logic (registration, semver,
compat) and the store, and raise typed errors.

Authorization (DESIGN.md, "Identity" and "Visibility"): the edge verifies
every caller's token and the scopes of `RULES` (writes need `registry:write`,
reads any valid token); `_writer` turns the verified principal into the
store's `Writer`, whose ownership check runs inside each write's transaction:
a tool name or agent domain belongs to whoever first wrote it, and only
`registry:admin` writes (or transfers) another's. Every write records its
writer's subject in `registered_by`.

Reads go through the replica's `ToolCatalog` (tool_registry/catalog.py: the cache that
one ChangeFeed per replica keeps current, `cache=True`); WatchTools streams are the feed's
(`ChangeFeed.changes`, tool_registry/feed.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence

import grpc

from agentmesh.kit.auth import MESH_AUDIENCE, MethodRule, current_principal, require_scopes
from agentmesh.kit.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    echo,
)
from agentmesh.kit.pages import decode_page_token, encode_page_token, filter_fingerprint
from agentmesh.kit.streams import StreamSlots
from agentmesh.kit.validation import DOMAIN_SLUG, TOOL_NAME, Violations
from agentmesh.v1 import (
    agent_service_pb2,
    errors_pb2,
    tool_pb2,
    tool_registry_service_pb2,
    tool_registry_service_pb2_grpc,
)
from tool_registry import names, semver
from tool_registry.agent_tool import AGENT_TOOL_VERSION, agent_tool
from tool_registry.catalog import SchemaExporter, ToolCatalog, basic_view, tool_not_found
from tool_registry.compat import Incompatibility, check_compatibility
from tool_registry.content import differences
from tool_registry.descriptors import parse_descriptor_set
from tool_registry.registration import Candidate, prepare
from tool_registry.store import RegistryStore, VersionTaken, Writer, agent_owner_field, tool_owner_field

log = logging.getLogger(__name__)

rs = tool_registry_service_pb2
WRITE_SCOPE = "registry:write"
ADMIN_SCOPE = "registry:admin"
# Tokens the registry accepts: for the whole mesh, or for the registry alone.
AUDIENCES = (MESH_AUDIENCE, "registry")
_PREFIX = "agentmesh.v1.ToolRegistryService/"
# Scopes per method (the edge checks them before the handler runs); unlisted: any valid token.
RULES: dict[str, MethodRule] = {
    f"{_PREFIX}RegisterTool": MethodRule(scopes=(WRITE_SCOPE,)),
    f"{_PREFIX}BindToolEndpoint": MethodRule(scopes=(WRITE_SCOPE,)),
    f"{_PREFIX}DeprecateTool": MethodRule(scopes=(WRITE_SCOPE,)),
    f"{_PREFIX}RegisterAgent": MethodRule(scopes=(WRITE_SCOPE,)),
}
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_WATCH_NAMES = 1000
# An idle WatchTools stream sends PROGRESS this often (AGENTMESH_WATCH_PROGRESS_S).
DEFAULT_PROGRESS_S = 30.0
MAX_MESSAGE_BYTES = 1024


def _breaking(
    violations: Sequence[Incompatibility], name: str, compared: str, accepted: str
) -> FailedPrecondition:
    """The refusal of a breaking change; `accepted` is the version it would be accepted as."""
    listed = "; ".join(f"{v.path}: {v.rule}" for v in violations[:5])
    more = "" if len(violations) <= 5 else f" and {len(violations) - 5} more"
    return FailedPrecondition(
        f"{name}: not compatible with {compared} ({listed}{more}); fix these or publish it as {accepted}",
        reason=errors_pb2.ERROR_REASON_BREAKING_CHANGE,
        metadata={"tool": name, "compared_version": compared, "accepted_version": accepted},
        violations=[FieldViolation(v.path, v.message, v.rule) for v in violations],
    )


def _tool_required() -> InvalidArgument:
    return InvalidArgument("tool is required", violations=[FieldViolation("tool", "is required", "REQUIRED")])


def to_proto(violations: Sequence[Incompatibility]) -> list[tool_pb2.CompatibilityViolation]:
    return [tool_pb2.CompatibilityViolation(path=v.path, rule=v.rule, message=v.message) for v in violations]


class ToolRegistryServicer(tool_registry_service_pb2_grpc.ToolRegistryServiceServicer):
    def __init__(
        self,
        store: RegistryStore,
        *,
        schema_exporter: SchemaExporter | None = None,
        draining: asyncio.Event | None = None,
        cache: bool = True,
        streams: StreamSlots | None = None,
        progress_s: float = DEFAULT_PROGRESS_S,
    ) -> None:
        self.store = store
        self.streams = streams or StreamSlots()
        self.progress_s = progress_s
        self.draining = draining or asyncio.Event()
        self.catalog = ToolCatalog(store, schema_exporter=schema_exporter, cache=cache)
        self.cache = self.catalog.cache
        self.feed = self.catalog.feed

    async def close(self) -> None:
        await self.feed.close()

    async def _writer(self, owner_field: str, what: str, *, transfer_to: str = "") -> Writer | None:
        """The store's Writer for the verified caller; refuses a write to another's name early.

        None when the servicer runs without an authenticator (no principal: embedded use and
        tests of the store logic). An unauthenticated principal (AGENTMESH_INSECURE_NO_AUTH)
        writes as an admin: that mode is for local development only. The store checks the
        owner again inside the write's transaction, so a race cannot get around it.
        """
        principal = current_principal()
        if principal is None:
            return None
        admin = not principal.authenticated or principal.has_scope(ADMIN_SCOPE)
        if transfer_to:
            require_scopes(principal, (ADMIN_SCOPE,))
        writer = Writer(principal.subject, admin=admin, transfer_to=transfer_to)
        writer.check(await self.store.owner(owner_field), what)
        return writer

    # -- RegisterTool ------------------------------------------------------------

    async def RegisterTool(
        self, request: rs.RegisterToolRequest, context: grpc.aio.ServicerContext
    ) -> rs.RegisterToolResponse:
        if not request.HasField("tool"):
            raise InvalidArgument(
                "tool is required", violations=[FieldViolation("tool", "is required", "REQUIRED")]
            )
        candidate = prepare(request.tool)
        spec = candidate.spec
        writer = await self._writer(tool_owner_field(spec.name), f"tool {spec.name!r}")
        for _ in range(3):  # a concurrent registration of the same version: decide again
            published = await self.store.versions(spec.name)
            existing = None
            if spec.version in published:
                existing = await self.store.get_tool(spec.name, spec.version)
            if existing is not None:
                return await self._register_existing(existing, candidate, request.validate_only, writer)
            await self._check_neighbours(candidate, published)
            self.catalog.export(candidate)
            if request.validate_only:
                return rs.RegisterToolResponse(
                    tool=spec, outcome=rs.REGISTRATION_OUTCOME_VALIDATED, warnings=candidate.warnings
                )
            try:
                stored = await self.store.create_tool(spec, candidate.schema_bytes, writer=writer)
                self.cache.evict(spec.name, stored.revision)
            except VersionTaken:
                continue
            log.info(
                "tool registered",
                extra={"tool": spec.name, "version": spec.version, "registered_by": stored.registered_by},
            )
            return rs.RegisterToolResponse(
                tool=stored, outcome=rs.REGISTRATION_OUTCOME_CREATED, warnings=candidate.warnings
            )
        raise AlreadyExists(f"{spec.name} {spec.version} is being registered concurrently; retry")

    async def _register_existing(
        self, existing: tool_pb2.ToolSpec, candidate: Candidate, validate_only: bool, writer: Writer | None
    ) -> rs.RegisterToolResponse:
        spec = candidate.spec
        if existing.content_digest != spec.content_digest:
            existing_fds = parse_descriptor_set(await self.catalog.schema_bytes(spec.name, spec.version))
            differing = differences(existing, existing_fds, spec, candidate.schema.file_set) or ["content"]
            raise AlreadyExists(
                f"{spec.name} {spec.version} is already registered with a different "
                f"{', '.join(differing)}; versions are immutable: publish a new version",
                reason=errors_pb2.ERROR_REASON_TOOL_VERSION_EXISTS,
                metadata={"tool": spec.name, "version": spec.version, "differs": ",".join(differing)},
            )
        if not spec.endpoint or spec.endpoint == existing.endpoint:
            outcome = (
                rs.REGISTRATION_OUTCOME_VALIDATED if validate_only else rs.REGISTRATION_OUTCOME_UNCHANGED
            )
            return rs.RegisterToolResponse(tool=existing, outcome=outcome, warnings=candidate.warnings)
        if validate_only:
            rebound = basic_view(existing)
            rebound.endpoint = spec.endpoint
            return rs.RegisterToolResponse(
                tool=rebound, outcome=rs.REGISTRATION_OUTCOME_VALIDATED, warnings=candidate.warnings
            )
        (stored,) = await self._set_endpoint(spec.name, spec.version, spec.endpoint, writer)
        return rs.RegisterToolResponse(
            tool=stored, outcome=rs.REGISTRATION_OUTCOME_REBOUND, warnings=candidate.warnings
        )

    async def _check_neighbours(self, candidate: Candidate, versions: dict[str, bool]) -> None:
        """Compatibility with the nearest versions of the same major, below and above (`versions`:
        the tool's published versions, just read by the caller)."""
        spec = candidate.spec
        mine = semver.parse_version(spec.version)
        published = [v for v in versions if semver.is_valid_version(v)]
        same_major = [v for v in published if semver.parse_version(v).major == mine.major]
        # A new major above every published one has no neighbours, so it is always accepted.
        accepted = f"{max(semver.parse_version(v).major for v in [*published, spec.version]) + 1}.0.0"
        lower = [v for v in same_major if semver.parse_version(v) < mine]
        higher = [v for v in same_major if semver.parse_version(v) > mine]
        if lower:
            previous = max(lower, key=semver.sort_key)
            violations = check_compatibility(await self.catalog.load(spec.name, previous), candidate.schema)
            if violations:
                raise _breaking(violations, spec.name, previous, accepted)
        if higher:
            following = min(higher, key=semver.sort_key)
            violations = check_compatibility(candidate.schema, await self.catalog.load(spec.name, following))
            if violations:
                raise _breaking(violations, spec.name, following, accepted)

    async def _set_endpoint(
        self, name: str, version: str, endpoint: str, writer: Writer | None
    ) -> list[tool_pb2.ToolSpec]:
        def mutate(spec: tool_pb2.ToolSpec) -> tool_pb2.ChangeKind.ValueType | None:
            if spec.endpoint == endpoint:
                return None
            spec.endpoint = endpoint
            return tool_pb2.CHANGE_KIND_ENDPOINT_CHANGED

        updated = await self.store.update_tools(name, [version], mutate, writer=writer)
        self.catalog.evict(name, updated)
        return updated

    # -- GetTool -------------------------------------------------------------------

    async def GetTool(
        self, request: rs.GetToolRequest, context: grpc.aio.ServicerContext
    ) -> tool_pb2.ToolSpec:
        violations = Violations()
        if violations.required(request.name, "name"):
            violations.matches(request.name, TOOL_NAME, "name", "tool name")
        query = None
        try:
            query = semver.parse_query(request.version)
        except semver.VersionError as exc:
            violations.add("version", str(exc), "PATTERN")
        violations.raise_if_any("invalid GetTool request")
        assert query is not None
        full = request.view != tool_pb2.TOOL_VIEW_BASIC
        if names.is_agent_tool(request.name):
            return await self._get_agent_tool(request.name, query, full)
        versions = await self.catalog.versions(request.name)
        if not versions:
            raise tool_not_found(request.name)
        version = semver.select(query, versions)
        if version is None:
            shown = ", ".join(semver.sorted_versions(versions)[-10:])
            raise tool_not_found(
                request.name, f" in a version matching {echo(request.version)} (registered: {shown})"
            )
        spec = await self.catalog.spec(request.name, version)
        if spec is None:  # deleted between the two reads is impossible: versions are never removed
            raise tool_not_found(request.name, f" (version {version})")
        return await self.catalog.full(spec) if full else spec

    async def _get_agent_tool(self, name: str, query: semver.VersionQuery, full: bool) -> tool_pb2.ToolSpec:
        domain = names.agent_domain(name)
        card = await self.catalog.agent(domain) if DOMAIN_SLUG.fullmatch(domain) else None
        if card is None:
            raise tool_not_found(name, f" (no agent {echo(domain)} in the directory)")
        if semver.select(query, {AGENT_TOOL_VERSION: False}) is None:
            raise tool_not_found(
                name, f" in a version matching {echo(query.text)} (agent tools are {AGENT_TOOL_VERSION})"
            )
        spec = agent_tool(card, with_schema=full)
        return await self.catalog.full(spec) if full else spec

    # -- ListTools -----------------------------------------------------------------

    async def ListTools(
        self, request: rs.ListToolsRequest, context: grpc.aio.ServicerContext
    ) -> rs.ListToolsResponse:
        violations = Violations()
        violations.in_range(request.page_size, "page_size", low=0, high=MAX_PAGE_SIZE)
        violations.max_length(request.name_prefix, 64, "name_prefix")
        if request.tag:
            violations.matches(request.tag, names.TAG, "tag", "tag")
        violations.raise_if_any("invalid ListTools request")
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        fingerprint = filter_fingerprint(
            request.name_prefix,
            request.tag,
            request.side_effect,
            int(request.deprecated),
            int(request.all_versions),
            int(request.include_agents),
        )
        after: tuple[str, str] | None = None
        if request.page_token:
            # The cursor is the last tool's name and version (a name never holds a NUL).
            name, _, version = decode_page_token(request.page_token, "tools", fingerprint).partition("\0")
            after = (name, version)
        await self.feed.start()
        revision = max(self.feed.position, await self.store.head())
        full = request.view == tool_pb2.TOOL_VIEW_FULL
        mode = request.deprecated or rs.DEPRECATION_FILTER_EXCLUDE

        tool_names = await self.store.tool_names(request.name_prefix)
        agent_names: dict[str, str] = {}
        if request.include_agents:
            for domain in await self.store.agent_domains():
                tool_name = names.agent_tool_name(domain)
                if tool_name.startswith(request.name_prefix):
                    agent_names[tool_name] = domain
        ordered = sorted(set(tool_names) | set(agent_names))
        if after is not None:
            ordered = [n for n in ordered if n >= after[0]]

        out: list[tool_pb2.ToolSpec] = []
        next_token = ""
        prefetched: dict[str, dict[str, bool]] = {}
        for index, name in enumerate(ordered):
            if index % page_size == 0:
                chunk = [n for n in ordered[index : index + page_size] if n not in agent_names]
                await self.catalog.prefetch_versions(chunk, prefetched)
            if name in agent_names:
                candidates = await self._list_agent(agent_names[name], mode)
            else:
                candidates = await self._list_versions(name, mode, request.all_versions, prefetched)
            for spec in candidates:
                if after is not None and (spec.name, semver.sort_key(spec.version)) <= (
                    after[0],
                    semver.sort_key(after[1]),
                ):
                    continue
                if request.tag and request.tag not in spec.tags:
                    continue
                if request.side_effect and spec.side_effect != request.side_effect:
                    continue
                if len(out) == page_size:
                    last = out[-1]
                    next_token = encode_page_token("tools", fingerprint, f"{last.name}\0{last.version}")
                    break
                out.append(await self.catalog.full(spec) if full else basic_view(spec))
            if next_token:
                break
        return rs.ListToolsResponse(tools=out, next_page_token=next_token, revision=revision)

    async def _list_versions(
        self, name: str, mode: int, all_versions: bool, prefetched: dict[str, dict[str, bool]]
    ) -> list[tool_pb2.ToolSpec]:
        versions = await self.catalog.versions(name, prefetched)
        if mode == rs.DEPRECATION_FILTER_EXCLUDE:
            versions = {v: d for v, d in versions.items() if not d}
        elif mode == rs.DEPRECATION_FILTER_ONLY:
            versions = {v: d for v, d in versions.items() if d}
        if not versions:
            return []
        chosen = semver.sorted_versions(versions) if all_versions else [semver.select("latest", versions)]
        pairs = [(name, v) for v in chosen if v is not None]
        return [spec for spec in await self.catalog.specs(pairs) if spec is not None]

    async def _list_agent(self, domain: str, mode: int) -> list[tool_pb2.ToolSpec]:
        if mode == rs.DEPRECATION_FILTER_ONLY:
            return []  # agent tools are never deprecated
        card = await self.catalog.agent(domain)
        return [] if card is None else [agent_tool(card)]

    # -- WatchTools ------------------------------------------------------------------

    async def WatchTools(
        self, request: rs.WatchToolsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tool_pb2.ToolChange]:
        violations = Violations()
        violations.in_range(request.after_revision, "after_revision", low=0)
        violations.max_items(request.names, MAX_WATCH_NAMES, "names")
        for index, name in enumerate(request.names):
            violations.matches(name, TOOL_NAME, f"names[{index}]", "tool name")
        violations.raise_if_any("invalid WatchTools request")
        wanted = set(request.names)
        with self.streams.hold(_stream_caller(context)):
            changes_after = self.feed.changes(wanted, request.after_revision, self.draining, self.progress_s)
            async with contextlib.aclosing(changes_after) as changes:
                async for change in changes:
                    yield change

    # -- DeprecateTool ---------------------------------------------------------------

    async def DeprecateTool(
        self, request: rs.DeprecateToolRequest, context: grpc.aio.ServicerContext
    ) -> tool_pb2.ToolSpec:
        violations = Violations()
        if violations.required(request.name, "name"):
            violations.matches(request.name, TOOL_NAME, "name", "tool name")
        if request.version and not semver.is_valid_version(request.version):
            violations.add(
                "version", f"{request.version[:80]!r} is not an exact version like 1.2.0", "PATTERN"
            )
        if violations.required(request.message.strip(), "message"):
            violations.max_length(request.message, MAX_MESSAGE_BYTES, "message")
        violations.raise_if_any("invalid DeprecateTool request")
        if names.is_agent_tool(request.name):
            raise FailedPrecondition(
                f"{request.name} is an agent's virtual tool; it follows its agent card and cannot be "
                "deprecated",
                reason=errors_pb2.ERROR_REASON_INVALID_STATE,
            )
        writer = await self._writer(tool_owner_field(request.name), f"tool {request.name!r}")
        versions = await self.store.versions(request.name)
        if not versions:
            raise tool_not_found(request.name)
        if request.version:
            target = semver.select(request.version, versions)
            if target is None:
                raise tool_not_found(request.name, f" in version {request.version}")
            targets = [target]
        else:
            targets = semver.sorted_versions(versions)

        def mutate(spec: tool_pb2.ToolSpec) -> tool_pb2.ChangeKind.ValueType | None:
            if spec.deprecated and spec.deprecation_message == request.message:
                return None
            spec.deprecated = True
            spec.deprecation_message = request.message
            return tool_pb2.CHANGE_KIND_TOOL_DEPRECATED

        updated = await self.store.update_tools(request.name, targets, mutate, writer=writer)
        self.catalog.evict(request.name, updated)
        return max(updated, key=lambda s: semver.sort_key(s.version))

    # -- CheckCompatibility ------------------------------------------------------------

    async def CheckCompatibility(
        self, request: rs.CheckCompatibilityRequest, context: grpc.aio.ServicerContext
    ) -> rs.CheckCompatibilityResponse:
        if not request.HasField("tool"):
            raise InvalidArgument(
                "tool is required", violations=[FieldViolation("tool", "is required", "REQUIRED")]
            )
        if request.against_version and not semver.is_valid_version(request.against_version):
            raise InvalidArgument(
                "invalid against_version",
                violations=[
                    FieldViolation(
                        "against_version", f"{request.against_version[:80]!r} is not a version like 1.2.0"
                    )
                ],
            )
        candidate = prepare(request.tool)
        versions = await self.store.versions(candidate.spec.name)
        if request.against_version:
            against = semver.select(request.against_version, versions)
            if against is None:
                raise tool_not_found(candidate.spec.name, f" in version {request.against_version}")
        else:
            major = semver.major(candidate.spec.version)
            same_major = {
                v: d for v, d in versions.items() if semver.is_valid_version(v) and semver.major(v) == major
            }
            against = max(same_major, key=semver.sort_key) if same_major else None
        if against is None:
            return rs.CheckCompatibilityResponse(compatible=True)
        violations = check_compatibility(
            await self.catalog.load(candidate.spec.name, against), candidate.schema
        )
        return rs.CheckCompatibilityResponse(
            compatible=not violations, violations=to_proto(violations), compared_version=against
        )

    # -- BindToolEndpoint ----------------------------------------------------------------

    async def BindToolEndpoint(
        self, request: rs.BindToolEndpointRequest, context: grpc.aio.ServicerContext
    ) -> tool_pb2.ToolSpec:
        violations = Violations()
        if violations.required(request.name, "name"):
            violations.matches(request.name, TOOL_NAME, "name", "tool name")
        if violations.required(request.version, "version") and not semver.is_valid_version(request.version):
            violations.add(
                "version", f"{request.version[:80]!r} is not an exact version like 1.2.0", "PATTERN"
            )
        if request.endpoint:
            violations.matches(request.endpoint, names.ENDPOINT, "endpoint", "gRPC target")
        violations.max_length(request.transfer_to, 256, "transfer_to")
        violations.raise_if_any("invalid BindToolEndpoint request")
        if names.is_agent_tool(request.name):
            raise FailedPrecondition(
                f"{request.name} is an agent's virtual tool; its endpoint comes from RegisterAgent",
                reason=errors_pb2.ERROR_REASON_INVALID_STATE,
            )
        writer = await self._writer(
            tool_owner_field(request.name), f"tool {request.name!r}", transfer_to=request.transfer_to
        )
        version = str(semver.parse_version(request.version))
        if version not in await self.store.versions(request.name):
            raise tool_not_found(request.name, f" in version {version}")
        (spec,) = await self._set_endpoint(request.name, version, request.endpoint, writer)
        return spec

    # -- agents ---------------------------------------------------------------------

    async def RegisterAgent(
        self, request: rs.RegisterAgentRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.AgentCard:
        card = request.card
        violations = Violations()
        if violations.required(card.domain, "card.domain"):
            violations.matches(card.domain, DOMAIN_SLUG, "card.domain", "domain slug")
        if violations.required(card.description, "card.description"):
            violations.max_length(card.description, 16 * 1024, "card.description")
        if violations.required(card.endpoint, "card.endpoint"):
            violations.matches(card.endpoint, names.ENDPOINT, "card.endpoint", "gRPC target")
        for index, scope in enumerate(card.required_scopes):
            violations.matches(scope, names.SCOPE, f"card.required_scopes[{index}]", "scope")
        violations.max_length(card.SerializeToString(), 256 * 1024, "card")
        violations.raise_if_any("invalid agent card")
        writer = await self._writer(agent_owner_field(card.domain), f"agent {card.domain!r}")
        stored = await self.store.put_agent(card, agent_tool, writer=writer)
        self.cache.evict(names.agent_tool_name(card.domain), stored.revision)
        log.info(
            "agent registered",
            extra={"domain": card.domain, "revision": stored.revision, "registered_by": stored.registered_by},
        )
        return stored

    async def GetAgent(
        self, request: rs.GetAgentRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.AgentCard:
        violations = Violations()
        if violations.required(request.domain, "domain"):
            violations.matches(request.domain, DOMAIN_SLUG, "domain", "domain slug")
        violations.raise_if_any("invalid GetAgent request")
        card = await self.catalog.agent(request.domain)
        if card is None:
            raise NotFound(
                f"agent {echo(request.domain)} not found",
                reason=errors_pb2.ERROR_REASON_AGENT_NOT_FOUND,
                metadata={"domain": request.domain},
            )
        return card

    async def ListAgents(
        self, request: rs.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> rs.ListAgentsResponse:
        violations = Violations()
        violations.in_range(request.page_size, "page_size", low=0, high=MAX_PAGE_SIZE)
        violations.raise_if_any("invalid ListAgents request")
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        domains = await self.store.agent_domains()
        if request.page_token:
            after = decode_page_token(request.page_token, "agents", "")
            domains = [d for d in domains if d > after]
        page, rest = domains[:page_size], domains[page_size:]
        cards = [c for c in await self.store.get_agents(page) if c is not None]
        token = encode_page_token("agents", "", page[-1]) if rest and page else ""
        return rs.ListAgentsResponse(agents=cards, next_page_token=token)


def register(servicer: ToolRegistryServicer) -> Callable[[grpc.aio.Server], None]:
    """For ServiceHost.add_service."""
    return lambda server: tool_registry_service_pb2_grpc.add_ToolRegistryServiceServicer_to_server(
        servicer, server
    )


SERVICE = tool_registry_service_pb2.DESCRIPTOR.services_by_name["ToolRegistryService"]


def _stream_caller(context: grpc.aio.ServicerContext) -> str:
    """Whom a WatchTools stream counts against: the verified service or user, else the peer's host."""
    principal = current_principal()
    if principal is not None:
        return f"{principal.tenant}/{principal.subject}"
    peer = context.peer() or ""
    return peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer
