"""RegistryStore: tools, agent cards and the change log in Redis.

Every key lives in the `{reg}` slot (memory.keys.registry), so a write and
its change-log entry commit together in one MULTI/EXEC, also on Redis Cluster:

| key (am:{reg}:…)        | type   | holds |
|---|---|---|
| `rev`                   | string | the registry revision: +1 per change |
| `changes`               | stream | ToolChange records, id `<revision>-0`, ~`change_log_length` kept |
| `names`                 | zset   | tool names (score 0, lexicographic order for listing) |
| `versions:<name>`       | hash   | version -> "1" if deprecated else "0" |
| `tool:<name>:<version>` | string | the ToolSpec without its descriptor set (TOOL_SPEC v1) |
| `schema:<name>:<version>` | string | the descriptor set, as a ToolSpec holding only that (TOOL_SPEC v1) |
| `agents`                | zset   | agent domains |
| `agent:<domain>`        | string | the AgentCard (AGENT_CARD v1) |
| `owners`                | hash   | `tool:<name>` / `agent:<domain>` -> the principal that owns it |

Ownership (DESIGN.md, "Visibility"): a tool name or an agent domain belongs
to the principal that first wrote it; a write by anyone else is refused inside
the same transaction (nothing written), unless the writer holds
`registry:admin`. Every write records its writer in `registered_by`.

`create_tool` (RegisterTool, the frequent write) is one script that checks and
writes together and takes the revision with INCR. The other writers WATCH `rev`
(every write bumps it) and the keys they read, then MULTI/EXEC: concurrent
writers on any replica serialize, the loser retries.
A refused write changes nothing. Revisions are strictly increasing and each
one has exactly one change-log entry, so WatchTools can resume from any
revision still in the log and knows when one is not (RESYNC_REQUIRED).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.exceptions as rexc
from google.protobuf import timestamp_pb2

from agentmesh.kit.errors import PermissionDenied, Unavailable
from agentmesh.kit.retry import Backoff
from agentmesh.v1 import agent_service_pb2, errors_pb2, tool_pb2
from memory import codec, keys
from memory.connection import AnyRedis, redis_errors

SPEC_VERSION = 1
CARD_VERSION = 1
CHANGE_VERSION = 1
READS = frozenset({1})
DEFAULT_CHANGE_LOG_LENGTH = 10_000
_MAX_WRITE_ATTEMPTS = 200  # with jittered backoff: several seconds of contention before UNAVAILABLE
_WRITE_BACKOFF = Backoff(initial_s=0.001, max_s=0.05)

ToolKey = tuple[str, str]


# create_tool in one step. KEYS: rev, changes, names, versions:<name>, tool:<name>:<version>,
# schema:<name>:<version>, owners. ARGV: name, version, deprecated "0"/"1", the encoded spec and
# change record (both without their revision), the encoded schema record, the owner field, has a
# writer "0"/"1", its subject, admin "0"/"1", transfer_to, the change log length.
# The revision is INCR'd here and appended to the spec (field 22) and to the change (field 1, and
# its `tool`, field 6, field 22): concatenated protobuf messages merge, so the records decode as if
# the client had set it. Refusals come before the first write: {"taken", spec} / {"denied", owner}.
_CREATE = """
local existing = redis.call('GET', KEYS[5])
if existing then return {'taken', existing} end
local owner = false
if ARGV[8] == '1' then
  owner = redis.call('HGET', KEYS[7], ARGV[7])
  if owner and owner ~= '' and owner ~= ARGV[9] and ARGV[10] ~= '1' then return {'denied', owner} end
end
local function varint(n)
  local out = {}
  while n >= 128 do
    out[#out + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  out[#out + 1] = string.char(n)
  return table.concat(out)
end
local rev = redis.call('INCR', KEYS[1])
local spec_rev = '\\176\\001' .. varint(rev)
if ARGV[8] == '1' then
  if ARGV[11] ~= '' then
    redis.call('HSET', KEYS[7], ARGV[7], ARGV[11])
  elseif not owner or owner == '' then
    redis.call('HSET', KEYS[7], ARGV[7], ARGV[9])
  end
end
redis.call('SET', KEYS[5], ARGV[4] .. spec_rev)
redis.call('SET', KEYS[6], ARGV[5])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
local change = ARGV[6] .. '\\008' .. varint(rev) .. '\\050' .. string.char(#spec_rev) .. spec_rev
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[12], rev .. '-0', 'c', change)
return {'ok', rev}
"""


def _part(value: str) -> str:
    return keys.part(value)


def rev_key() -> str:
    return keys.registry("rev")


def changes_key() -> str:
    return keys.registry("changes")


def names_key() -> str:
    return keys.registry("names")


def versions_key(name: str) -> str:
    return keys.registry(f"versions:{_part(name)}")


def tool_key(name: str, version: str) -> str:
    return keys.registry(f"tool:{_part(name)}:{_part(version)}")


def schema_key(name: str, version: str) -> str:
    return keys.registry(f"schema:{_part(name)}:{_part(version)}")


def agents_key() -> str:
    return keys.registry("agents")


def agent_key(domain: str) -> str:
    return keys.registry(f"agent:{_part(domain)}")


def owners_key() -> str:
    return keys.registry("owners")


def tool_owner_field(name: str) -> str:
    return f"tool:{name}"


def agent_owner_field(domain: str) -> str:
    return f"agent:{domain}"


@dataclass(frozen=True)
class Writer:
    """Who writes: the verified subject, whether it may override owners, and a transfer target."""

    subject: str
    admin: bool = False
    transfer_to: str = ""

    def check(self, owner: str | None, what: str) -> None:
        """PERMISSION_DENIED unless `what` is unowned, ours, or we are an admin."""
        if self.admin or not owner or owner == self.subject:
            return
        raise PermissionDenied(
            f"{what} belongs to {owner}; only its owner or a caller with 'registry:admin' may change it",
            reason=errors_pb2.ERROR_REASON_MISSING_SCOPE,
            metadata={"owner": owner, "scope": "registry:admin"},
        )

    def new_owner(self, owner: str | None) -> str | None:
        """The owner to store after this write, or None to leave it as it is."""
        if self.transfer_to:
            return self.transfer_to
        return None if owner else self.subject


def now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    return stamp


class VersionTaken(Exception):
    """create_tool found the version already stored; `existing` is what is there."""

    def __init__(self, existing: tool_pb2.ToolSpec) -> None:
        super().__init__(f"{existing.name} {existing.version} exists")
        self.existing = existing


@dataclass(frozen=True)
class ChangeBatch:
    """Changes read from the log, and where the log stands."""

    changes: list[tool_pb2.ToolChange]
    first_retained: int  # 0 when the log is empty
    head: int


def _raw(data: Any) -> bytes | None:
    """Redis replies as bytes (the registry client never decodes responses)."""
    if data is None or isinstance(data, bytes):
        return data
    return str(data).encode()


def _decode_spec(data: Any, what: str) -> tool_pb2.ToolSpec:
    return codec.decode_message(_raw(data), codec.RecordKind.TOOL_SPEC, READS, tool_pb2.ToolSpec, what)


def _decode_card(data: Any, what: str) -> agent_service_pb2.AgentCard:
    return codec.decode_message(
        _raw(data), codec.RecordKind.AGENT_CARD, READS, agent_service_pb2.AgentCard, what
    )


def _decode_change(data: Any, what: str) -> tool_pb2.ToolChange:
    return codec.decode_message(
        _raw(data), codec.RecordKind.REGISTRY_CHANGE, READS, tool_pb2.ToolChange, what
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _revision_of(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


class RegistryStore:
    def __init__(self, redis: AnyRedis, *, change_log_length: int = DEFAULT_CHANGE_LOG_LENGTH) -> None:
        self.redis = redis
        self.change_log_length = change_log_length
        self._create = redis.register_script(_CREATE)

    # -- reads ---------------------------------------------------------------

    async def head(self) -> int:
        with redis_errors("reading the registry revision"):
            value = await self.redis.get(rev_key())
        return int(value or 0)

    async def tool_names(self, prefix: str = "") -> list[str]:
        low = f"[{prefix}" if prefix else "-"
        high = f"[{prefix}\xff" if prefix else "+"
        with redis_errors("listing tool names"):
            raw = await self.redis.zrangebylex(names_key(), low, high)
        return [_text(n) for n in raw]

    async def versions(self, name: str) -> dict[str, bool]:
        """version -> deprecated, for one tool (empty when unknown)."""
        with redis_errors(f"reading versions of {name}"):
            raw = await self.redis.hgetall(versions_key(name))
        return {(k.decode() if isinstance(k, bytes) else k): (v in (b"1", "1")) for k, v in raw.items()}

    async def versions_many(self, names: Sequence[str]) -> list[dict[str, bool]]:
        """`versions` of several tools in one round trip."""
        if not names:
            return []
        with redis_errors("reading tool versions"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(versions_key(name))
                replies = await pipe.execute()
        return [{_text(k): _text(v) == "1" for k, v in raw.items()} for raw in replies]

    async def get_tool(self, name: str, version: str) -> tool_pb2.ToolSpec | None:
        """The stored spec without its descriptor set, or None."""
        with redis_errors(f"reading tool {name} {version}"):
            data = await self.redis.get(tool_key(name, version))
        return None if data is None else _decode_spec(data, f"tool {name} {version}")

    async def get_tools(self, pairs: Sequence[ToolKey]) -> list[tool_pb2.ToolSpec | None]:
        if not pairs:
            return []
        with redis_errors("reading tools"):
            raw = await self.redis.mget([tool_key(n, v) for n, v in pairs])
        return [
            None if data is None else _decode_spec(data, f"tool {n} {v}")
            for (n, v), data in zip(pairs, raw, strict=True)
        ]

    async def get_schema(self, name: str, version: str) -> bytes | None:
        """The serialized FileDescriptorSet of a version, or None."""
        with redis_errors(f"reading the schema of {name} {version}"):
            data = await self.redis.get(schema_key(name, version))
        if data is None:
            return None
        return _decode_spec(data, f"schema of {name} {version}").file_descriptor_set

    async def get_agent(self, domain: str) -> agent_service_pb2.AgentCard | None:
        with redis_errors(f"reading agent {domain}"):
            data = await self.redis.get(agent_key(domain))
        if data is None:
            return None
        return _decode_card(data, f"agent card {domain}")

    async def agent_domains(self) -> list[str]:
        with redis_errors("listing agents"):
            raw = await self.redis.zrange(agents_key(), 0, -1)
        return [_text(d) for d in raw]

    async def get_agents(self, domains: Sequence[str]) -> list[agent_service_pb2.AgentCard | None]:
        if not domains:
            return []
        with redis_errors("reading agents"):
            raw = await self.redis.mget([agent_key(d) for d in domains])
        return [
            None if data is None else _decode_card(data, f"agent card {d}")
            for d, data in zip(domains, raw, strict=True)
        ]

    # -- change log ------------------------------------------------------------

    async def changes_after(self, revision: int, count: int = 500) -> ChangeBatch:
        """Up to `count` changes with a revision above `revision`, oldest first."""
        with redis_errors("reading the registry change log"):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(rev_key())
                pipe.xrange(changes_key(), "-", "+", count=1)
                pipe.xrange(changes_key(), f"({revision}-0", "+", count=count)
                head_raw, first, entries = await pipe.execute()
        first_retained = _revision_of(first[0][0]) if first else 0
        return ChangeBatch(self._entries(entries), first_retained, int(head_raw or 0))

    async def wait_changes(self, revision: int, block_ms: int, count: int = 500) -> list[tool_pb2.ToolChange]:
        """Changes above `revision`, waiting up to `block_ms` for the first (XREAD BLOCK)."""
        with redis_errors("waiting for registry changes"):
            reply: Any = await self.redis.xread({changes_key(): f"{revision}-0"}, count=count, block=block_ms)
        if not reply:
            return []
        entries: list[Any] = reply[0][1] if isinstance(reply, list) else next(iter(dict(reply).values()))[0]
        return self._entries(entries)

    def _entries(self, entries: list[Any]) -> list[tool_pb2.ToolChange]:
        changes = []
        for entry_id, fields in entries:
            data = fields.get(b"c", fields.get("c"))
            change = _decode_change(data, f"registry change {entry_id!r}")
            change.revision = _revision_of(entry_id)
            changes.append(change)
        return changes

    # -- writes ----------------------------------------------------------------

    async def _transact(self, watch: Sequence[str], body: Callable[[Any, int], Any], what: str) -> Any:
        """Run `body(pipe, next_revision)` under WATCH rev + `watch`; it queues writes after pipe.multi().

        `body` is a coroutine function; it may raise to refuse (nothing is written)
        and returns the value to hand back. Retried when another writer won the race.
        """
        for attempt in range(_MAX_WRITE_ATTEMPTS):
            with redis_errors(what):
                pipeline: Any = self.redis.pipeline(transaction=True)
                async with pipeline as pipe:
                    try:
                        await pipe.watch(rev_key(), *watch)
                        head = int(await pipe.get(rev_key()) or 0)
                        result = await body(pipe, head + 1)
                        # Writes queued after multi() (the single-node and the cluster pipeline
                        # both count only queued commands; reads under WATCH ran at once).
                        if len(pipe):
                            await pipe.execute()
                        else:
                            await pipe.unwatch()
                        return result
                    except rexc.WatchError:
                        pass
            # Another writer won: back off with full jitter so concurrent writers spread out.
            await asyncio.sleep(_WRITE_BACKOFF.delay(attempt + 1))
        raise Unavailable(f"registry write contention while {what}; retry", retry_after=0.5)

    def _log(self, pipe: Any, revision: int, change: tool_pb2.ToolChange) -> None:
        record = tool_pb2.ToolChange()
        record.CopyFrom(change)
        record.revision = revision
        pipe.set(rev_key(), revision)
        pipe.xadd(
            changes_key(),
            {"c": codec.encode_message(codec.RecordKind.REGISTRY_CHANGE, CHANGE_VERSION, record)},
            id=f"{revision}-0",
            maxlen=self.change_log_length,
            approximate=True,
        )

    @staticmethod
    def _basic(spec: tool_pb2.ToolSpec) -> tool_pb2.ToolSpec:
        basic = tool_pb2.ToolSpec()
        basic.CopyFrom(spec)
        for name in ("file_descriptor_set", "input_schema_json", "output_schema_json"):
            basic.ClearField(name)
        return basic

    async def owner(self, owner_field: str) -> str | None:
        """Who owns a tool name (`tool_owner_field`) or an agent domain (`agent_owner_field`)."""
        with redis_errors("reading an owner"):
            value = await self.redis.hget(owners_key(), owner_field)
        return _text(value) if value is not None else None

    async def _owned(self, pipe: Any, writer: Writer | None, owner_field: str, what: str) -> str | None:
        """Check `writer` against the stored owner (under WATCH); the owner to write after multi()."""
        if writer is None:
            return None
        raw = await pipe.hget(owners_key(), owner_field)
        owner = _text(raw) if raw is not None else None
        writer.check(owner, what)
        return writer.new_owner(owner)

    async def create_tool(
        self, spec: tool_pb2.ToolSpec, schema: bytes, *, writer: Writer | None = None
    ) -> tool_pb2.ToolSpec:
        """Store a new version; VersionTaken if it exists, PermissionDenied if the name is another's.

        One script, one round trip (`_CREATE`): the existence and ownership checks and every
        write commit together, and the revision is taken inside it (INCR), so concurrent
        registrations serialize in Redis instead of retrying a WATCH on `rev`.
        """
        name, version = spec.name, spec.version
        stored = self._basic(spec)
        stamp = now()
        stored.create_time.CopyFrom(stamp)
        stored.update_time.CopyFrom(stamp)
        if writer is not None:
            stored.registered_by = writer.subject
        # Encoded without the revision (unknown until the script runs); the script appends it.
        change = tool_pb2.ToolChange(
            kind=tool_pb2.CHANGE_KIND_TOOL_REGISTERED,
            tool_name=name,
            version=version,
            tool=stored,
            change_time=stamp,
        )
        what = f"tool {name!r}"
        with redis_errors(f"registering {name} {version}"):
            answer = await self._create(
                keys=[
                    rev_key(),
                    changes_key(),
                    names_key(),
                    versions_key(name),
                    tool_key(name, version),
                    schema_key(name, version),
                    owners_key(),
                ],
                args=[
                    name,
                    version,
                    "1" if stored.deprecated else "0",
                    codec.encode_message(codec.RecordKind.TOOL_SPEC, SPEC_VERSION, stored),
                    codec.encode_message(
                        codec.RecordKind.TOOL_SPEC,
                        SPEC_VERSION,
                        tool_pb2.ToolSpec(file_descriptor_set=schema),
                    ),
                    codec.encode_message(codec.RecordKind.REGISTRY_CHANGE, CHANGE_VERSION, change),
                    tool_owner_field(name),
                    "1" if writer is not None else "0",
                    writer.subject if writer is not None else "",
                    "1" if writer is not None and writer.admin else "0",
                    writer.transfer_to if writer is not None else "",
                    self.change_log_length,
                ],
            )
        outcome = _text(answer[0])
        if outcome == "taken":
            raise VersionTaken(_decode_spec(answer[1], f"tool {name} {version}"))
        if outcome == "denied":
            assert writer is not None
            writer.check(_text(answer[1]), what)  # raises PERMISSION_DENIED, as the transaction did
        stored.revision = int(answer[1])
        return stored

    async def update_tools(
        self,
        name: str,
        versions: Sequence[str],
        mutate: Callable[[tool_pb2.ToolSpec], tool_pb2.ChangeKind.ValueType | None],
        *,
        writer: Writer | None = None,
    ) -> list[tool_pb2.ToolSpec]:
        """Apply `mutate` to stored versions atomically; one change per version it changed.

        `mutate` edits the spec in place and returns the change kind, or None
        when it left the spec as it was (no write, no event). Versions that do
        not exist are skipped (the caller checked existence).
        """

        async def body(pipe: Any, revision: int) -> list[tool_pb2.ToolSpec]:
            new_owner = await self._owned(pipe, writer, tool_owner_field(name), f"tool {name!r}")
            raw = [await pipe.get(tool_key(name, v)) for v in versions]
            results: list[tool_pb2.ToolSpec] = []
            writes: list[tuple[tool_pb2.ToolSpec, tool_pb2.ChangeKind.ValueType]] = []
            for version, data in zip(versions, raw, strict=True):
                if data is None:
                    continue
                spec = _decode_spec(data, f"tool {name} {version}")
                kind = mutate(spec)
                if kind is not None:
                    writes.append((spec, kind))
                results.append(spec)
            if not writes and not (writer is not None and writer.transfer_to and new_owner):
                return results
            pipe.multi()
            if new_owner is not None and results:
                pipe.hset(owners_key(), tool_owner_field(name), new_owner)
            stamp = now()
            for offset, (spec, kind) in enumerate(writes):
                spec.revision = revision + offset
                spec.update_time.CopyFrom(stamp)
                if writer is not None:
                    spec.registered_by = writer.subject
                pipe.set(
                    tool_key(name, spec.version),
                    codec.encode_message(codec.RecordKind.TOOL_SPEC, SPEC_VERSION, spec),
                )
                pipe.hset(versions_key(name), spec.version, "1" if spec.deprecated else "0")
                self._log(
                    pipe,
                    revision + offset,
                    tool_pb2.ToolChange(
                        kind=kind, tool_name=name, version=spec.version, tool=spec, change_time=stamp
                    ),
                )
            return results

        result: list[tool_pb2.ToolSpec] = await self._transact(
            [*(tool_key(name, v) for v in versions), owners_key()], body, f"updating {name}"
        )
        return result

    async def put_agent(
        self,
        card: agent_service_pb2.AgentCard,
        virtual_tool: Callable[[agent_service_pb2.AgentCard], tool_pb2.ToolSpec],
        *,
        writer: Writer | None = None,
    ) -> agent_service_pb2.AgentCard:
        """Store or replace a card (its owner or an admin), with a CHANGE_KIND_AGENT_REGISTERED event."""

        async def body(pipe: Any, revision: int) -> agent_service_pb2.AgentCard:
            field = agent_owner_field(card.domain)
            new_owner = await self._owned(pipe, writer, field, f"agent {card.domain!r}")
            stored = agent_service_pb2.AgentCard()
            stored.CopyFrom(card)
            stored.revision = revision
            stored.update_time.CopyFrom(now())
            stored.registered_by = writer.subject if writer is not None else ""
            tool = self._basic(virtual_tool(stored))
            pipe.multi()
            if new_owner is not None:
                pipe.hset(owners_key(), field, new_owner)
            pipe.set(
                agent_key(card.domain),
                codec.encode_message(codec.RecordKind.AGENT_CARD, CARD_VERSION, stored),
            )
            pipe.zadd(agents_key(), {card.domain: 0})
            self._log(
                pipe,
                revision,
                tool_pb2.ToolChange(
                    kind=tool_pb2.CHANGE_KIND_AGENT_REGISTERED,
                    tool_name=tool.name,
                    version=tool.version,
                    agent_domain=card.domain,
                    tool=tool,
                    change_time=stored.update_time,
                ),
            )
            return stored

        result: agent_service_pb2.AgentCard = await self._transact(
            [agent_key(card.domain), owners_key()], body, f"registering agent {card.domain}"
        )
        return result
