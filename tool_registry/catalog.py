"""The registry's reads through this replica's cache: versions, specs, schemas, agent cards.

`ToolCatalog` reads the store through a `SpecCache` that the replica's `ChangeFeed` keeps
current (tool_registry/feed.py): a read is stored only if no change of its name arrived while it
ran, and a change written by any replica evicts its tool within one XREAD round trip; a write
of this replica evicts at once (read-your-writes). Schemas are immutable per version. The FULL
view of a spec carries its descriptor set and the JSON Schemas the model sees, exported once per
(tool, version, content) and, at registration, once per descriptor set and method.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from agentmesh.kit.errors import NotFound, echo
from agentmesh.v1 import agent_service_pb2, errors_pb2, tool_pb2
from tool_registry import names
from tool_registry.descriptors import ToolSchema, load_tool_schema
from tool_registry.feed import ChangeFeed, SpecCache
from tool_registry.registration import Candidate
from tool_registry.store import RegistryStore

SchemaExporter = Callable[[ToolSchema], tuple[str, str]]


def tool_not_found(name: str, detail: str = "") -> NotFound:
    return NotFound(
        f"tool {echo(name)} not found{detail}",
        reason=errors_pb2.ERROR_REASON_TOOL_NOT_FOUND,
        metadata={"tool": name},
    )


def basic_view(spec: tool_pb2.ToolSpec) -> tool_pb2.ToolSpec:
    """A spec without its schemas (TOOL_VIEW_BASIC)."""
    view = tool_pb2.ToolSpec()
    view.CopyFrom(spec)
    for name in ("file_descriptor_set", "input_schema_json", "output_schema_json"):
        view.ClearField(name)
    return view


class ToolCatalog:
    """Cached reads of one registry replica (see the module docstring)."""

    def __init__(
        self, store: RegistryStore, *, schema_exporter: SchemaExporter | None = None, cache: bool = True
    ) -> None:
        self.store = store
        self.schema_exporter = schema_exporter
        self.cache: SpecCache[Any] = SpecCache()
        self.feed = ChangeFeed(store, self.cache if cache else None)
        self._exported: dict[tuple[str, str, str], tuple[str, str]] = {}
        # Exports by (SHA-256 of the descriptor set as sent, method): the JSON Schemas are a pure
        # function of the two, and many tools of one deployment share one set; exporting (the
        # protovalidate zero-value check above all) was most of a RegisterTool's CPU.
        self._exports_by_schema: dict[tuple[bytes, str], tuple[str, str]] = {}

    def evict(self, name: str, written: Sequence[tool_pb2.ToolSpec]) -> None:
        """Read-your-writes on this replica: the cache forgets a name this replica just changed."""
        if written:
            self.cache.evict(name, max(spec.revision for spec in written))

    async def versions(
        self, name: str, prefetched: dict[str, dict[str, bool]] | None = None
    ) -> dict[str, bool]:
        await self.feed.start()
        if prefetched is not None and name in prefetched:
            return dict(prefetched[name])
        cached = self.cache.get((name, "versions"))
        if cached is not None:
            return dict(cached)
        began = self.cache.position
        versions = await self.store.versions(name)
        self.cache.put((name, "versions"), versions, began)
        return versions

    async def prefetch_versions(self, tool_names: Sequence[str], into: dict[str, dict[str, bool]]) -> None:
        """Read the versions of several tools in one round trip (ListTools), for this request only."""
        missing = [n for n in tool_names if self.cache.get((n, "versions")) is None]
        began = self.cache.position
        for name, versions in zip(missing, await self.store.versions_many(missing), strict=True):
            into[name] = versions
            self.cache.put((name, "versions"), versions, began)

    async def spec(self, name: str, version: str) -> tool_pb2.ToolSpec | None:
        cached = self.cache.get((name, "spec", version))
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        began = self.cache.position
        spec = await self.store.get_tool(name, version)
        if spec is not None:
            self.cache.put((name, "spec", version), spec, began)
        return spec

    async def specs(self, pairs: Sequence[tuple[str, str]]) -> list[tool_pb2.ToolSpec | None]:
        found: dict[tuple[str, str], tool_pb2.ToolSpec | None] = {}
        missing = []
        for pair in pairs:
            cached = self.cache.get((pair[0], "spec", pair[1]))
            if cached is None:
                missing.append(pair)
            else:
                found[pair] = cached
        if missing:
            began = self.cache.position
            for pair, spec in zip(missing, await self.store.get_tools(missing), strict=True):
                found[pair] = spec
                if spec is not None:
                    self.cache.put((pair[0], "spec", pair[1]), spec, began)
        return [found[pair] for pair in pairs]

    async def schema_bytes(self, name: str, version: str) -> bytes:
        # Schemas are immutable per version: cache without invalidation concerns.
        cached = self.cache.get((name, "schema", version))
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        began = self.cache.position
        data = await self.store.get_schema(name, version)
        if data is None:
            raise tool_not_found(name, f" (version {version} has no stored schema)")
        self.cache.put((name, "schema", version), data, began)
        return data

    async def full(self, spec: tool_pb2.ToolSpec) -> tool_pb2.ToolSpec:
        """The FULL view of `spec`: with its descriptor set and the exported JSON Schemas."""
        full = tool_pb2.ToolSpec()
        full.CopyFrom(spec)
        if spec.kind != tool_pb2.TOOL_KIND_AGENT:
            full.file_descriptor_set = await self.schema_bytes(spec.name, spec.version)
        if self.schema_exporter is not None:
            key = (spec.name, spec.version, spec.content_digest)
            exported = self._exported.get(key)
            if exported is None:
                exported = self.schema_exporter(load_tool_schema(full.file_descriptor_set, full.method))
                if len(self._exported) > 10_000:
                    self._exported.clear()
                self._exported[key] = exported
            full.input_schema_json, full.output_schema_json = exported
        return full

    def export(self, candidate: Candidate) -> None:
        """Refuse at registration a schema the model cannot be given (google.protobuf.Any in the
        request, protovalidate rules that do not compile) instead of failing every later read."""
        if self.schema_exporter is None:
            return
        spec = candidate.spec
        schema_key = (hashlib.sha256(candidate.schema_bytes).digest(), spec.method)
        exported = self._exports_by_schema.get(schema_key)
        if exported is None:
            exported = self.schema_exporter(candidate.schema)  # raises for a schema it refuses: not kept
            if len(self._exports_by_schema) >= 256:
                self._exports_by_schema.pop(next(iter(self._exports_by_schema)))
            self._exports_by_schema[schema_key] = exported
        self._exported[(spec.name, spec.version, spec.content_digest)] = exported

    async def agent(self, domain: str) -> agent_service_pb2.AgentCard | None:
        await self.feed.start()
        tool_name = names.agent_tool_name(domain)
        cached = self.cache.get((tool_name, "card"))
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        began = self.cache.position
        card = await self.store.get_agent(domain)
        if card is not None:
            self.cache.put((tool_name, "card"), card, began)
        return card

    async def load(self, name: str, version: str) -> ToolSchema:
        """A registered version's schema (what a candidate is checked against)."""
        spec = await self.spec(name, version)
        if spec is None:
            raise tool_not_found(name, f" (version {version})")
        return load_tool_schema(await self.schema_bytes(name, version), spec.method)
