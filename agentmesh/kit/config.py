"""The one configuration loader: typed settings from the environment.

Every service in the mesh (registry, agents, tools, the scripted model) reads
its configuration here, from the variables of the configuration contract in
docs/decisions.md; the Helm chart sets the same names. `docs/configuration.md` is
generated from the field declarations below (`agentmesh config docs`), so the
reference table cannot drift from the code.
"""

from __future__ import annotations

import enum
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from agentmesh.kit.streams import DEFAULT_MAX_STREAMS, DEFAULT_MAX_STREAMS_PER_CALLER


class Role(enum.StrEnum):
    """What a process serves; the container entrypoint dispatches on it."""

    REGISTRY = "registry"
    AGENT = "agent"
    TOOL = "tool"
    MODEL = "model"
    CONSOLE = "console"


class LogFormat(enum.StrEnum):
    JSON = "json"
    TEXT = "text"


# The one port table (DESIGN.md, "Local ports"): the local mesh (agentmesh/localmesh/plan.py), the
# example tools run on their own (examples/_common.py) and each role's default all read it. The
# HTTP side listener is the gRPC port + 1000, plaintext health under mTLS is + 2000.
REGISTRY_PORT = 50051
# Fixed ports of the named domains; any other domain takes the next free one after them.
AGENT_PORTS: dict[str, int] = {
    "refunds": 50061,
    "fulfillment": 50062,
    "conformance": 50063,
    "training": 50064,
}
TOOL_PORTS: dict[str, int] = {
    "crm": 50071,
    "payments": 50072,
    "email": 50073,
    "inventory": 50074,
    "shipping": 50075,
    "dummy": 50076,
}
MODEL_PORT = 50099  # the scripted model's HTTP port
CONSOLE_PORT = 50080  # the operator console's HTTP port
REDIS_PORT = 6390  # the local mesh's embedded valkey
DEFAULT_REGISTRY = f"localhost:{REGISTRY_PORT}"  # where clients look when nothing else says
DEFAULT_GRPC_PORTS: dict[Role, int] = {
    Role.REGISTRY: REGISTRY_PORT,
    Role.AGENT: min(AGENT_PORTS.values()),
    Role.TOOL: min(TOOL_PORTS.values()),
    Role.MODEL: MODEL_PORT,
    Role.CONSOLE: CONSOLE_PORT,
}
HTTP_PORT_OFFSET = 1000
HEALTH_PORT_OFFSET = 2000


class ConfigError(ValueError):
    """The environment holds an invalid value; the message names the variable."""


_RATE = re.compile(
    r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?:/\s*(?P<unit>s|sec|m|min|h|hour))?\s*(?::\s*(?P<burst>\d+))?\s*$"
)
_PER_SECOND = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


@dataclass(frozen=True, slots=True)
class RateSpec:
    """A token-bucket rate: `per_second` sustained, `burst` at once after a quiet period.

    Written `RATE[/UNIT][:BURST]`: `5` (5 per second), `600/min`, `100/h:20`.
    Without a burst: max(1, ceil(rate per second)).
    """

    per_second: float
    burst: int

    @classmethod
    def parse(cls, text: str) -> RateSpec:
        match = _RATE.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a rate: write RATE[/s, /min or /h][:BURST], e.g. 600/min:20")
        per_second = float(match["n"]) / _PER_SECOND[match["unit"]]
        if per_second <= 0:
            raise ValueError("a rate must be positive (leave the variable unset for no limit)")
        burst = int(match["burst"]) if match["burst"] else max(1, math.ceil(per_second))
        if burst < 1:
            raise ValueError("burst must be at least 1")
        return cls(per_second, burst)

    def __str__(self) -> str:
        return f"{self.per_second:g}/s:{self.burst}"


def _rate(value: Any) -> Any:
    return RateSpec.parse(value) if isinstance(value, str) else value


Rate = Annotated[RateSpec, BeforeValidator(_rate), PlainSerializer(str, return_type=str)]

DAY_S = 24 * 3600.0


def _env(name: str, description: str, default: Any = None, **kwargs: Any) -> Any:
    return Field(default, alias=name, description=description, **kwargs)


class Settings(BaseModel):
    """Process configuration. Field aliases are the environment variable names."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore", validate_default=True)

    role: Role = _env(
        "AGENTMESH_ROLE", "What this process serves: registry, agent, tool, model or console.", Role.AGENT
    )
    domain_spec: Path | None = _env(
        "AGENTMESH_DOMAIN_SPEC", "Path to the agent's domain spec (YAML). Required for role=agent."
    )
    tool: str | None = _env(
        "AGENTMESH_TOOL",
        "For role=tool: which tool service to serve, e.g. `payments` (an example service) or a "
        "`module:function` entrypoint.",
    )
    model_script: Path | None = _env(
        "AGENTMESH_MODEL_SCRIPT",
        "For role=model: the script (YAML) the scripted model server follows. Default: the packaged demo "
        "script (agents/scripts/demo.yaml). The model serves HTTP on AGENTMESH_HTTP_PORT, else "
        "AGENTMESH_GRPC_PORT, else 50099.",
    )
    console_dev_tokens: Path | None = _env(
        "AGENTMESH_CONSOLE_DEV_TOKENS",
        "For role=console: a JSON file `{label: token}` of dev identities the sign-in page offers "
        "(`agentmesh up` writes it). The console serves HTTP on AGENTMESH_HTTP_PORT, else "
        "AGENTMESH_GRPC_PORT, else 50080.",
    )
    console_secure_cookies: bool = _env(
        "AGENTMESH_CONSOLE_SECURE_COOKIES",
        "For role=console: mark the session cookie Secure even when the console itself is reached "
        "over plain HTTP (set it behind a TLS-terminating ingress).",
        False,
    )
    price_table: Path | None = _env(
        "AGENTMESH_PRICE_TABLE",
        "YAML price table for cost attribution (USD per 1M prompt/completion tokens per model). "
        "Default: built-in table, unknown models cost 0.",
    )
    grpc_port: int | None = _env(
        "AGENTMESH_GRPC_PORT",
        "gRPC listen port. Default by role: registry 50051, agent 50061, tool 50071, model 50099, "
        "console 50080 (HTTP). "
        "0 picks a free port.",
        ge=0,
        le=65535,
    )
    http_port: int | None = _env(
        "AGENTMESH_HTTP_PORT",
        "HTTP side listener (/metrics, /healthz, agent card, JWKS). Default: gRPC port + 1000 "
        "(a free port when the gRPC port is 0).",
        ge=0,
        le=65535,
    )
    health_port: int | None = _env(
        "AGENTMESH_HEALTH_PORT",
        "Plaintext gRPC health port used when mTLS is on, so probes need no certificate. "
        "Default: gRPC port + 2000.",
        ge=0,
        le=65535,
    )
    bind_host: str = _env(
        "AGENTMESH_BIND_HOST", "Address to bind listeners to ('[::]' for all interfaces).", "[::]"
    )
    advertise_addr: str | None = _env(
        "AGENTMESH_ADVERTISE_ADDR",
        "host:port other services use to reach this one (in Kubernetes the Service DNS name, "
        "never a pod IP). Default: localhost:<grpc port>.",
    )
    registry: str | None = _env(
        "AGENTMESH_REGISTRY", "Tool Registry gRPC target, e.g. localhost:50051 or dns:///registry:50051."
    )
    redis_url: str = _env(
        "REDIS_URL",
        "Redis connection URL: redis://, rediss://, unix://, redis+cluster://[:pw@]host:port[,…], "
        "redis+sentinel://[:pw@]host:26379[,…]/<master>/<db>[?sentinel_password=…] (the URL's password "
        "is the master's), and rediss+cluster:// / rediss+sentinel:// for TLS (`ssl_ca_certs`, "
        "`ssl_cert_reqs` query parameters). Refused credentials fail at once, not after the reconnect "
        "budget.",
        f"redis://localhost:{REDIS_PORT}/0",
    )
    jwks: str | None = _env("AGENTMESH_JWKS", "Trusted issuers' JWKS: a file path or an https:// URL.")
    signing_key: Path | None = _env(
        "AGENTMESH_SIGNING_KEY", "Path to the mesh issuer's private key (PEM, ES256 or EdDSA)."
    )
    jwt_issuers: str = _env(
        "AGENTMESH_JWT_ISSUERS",
        "Issuers (`iss`) trusted besides the mesh issuer, comma-separated: your IdP's, whose keys are in "
        "AGENTMESH_JWKS. Tokens of any other issuer are refused.",
        "",
    )
    service_token: str | None = _env(
        "AGENTMESH_SERVICE_TOKEN", "Service token this process presents to the registry.", repr=False
    )
    tls_cert: Path | None = _env("AGENTMESH_TLS_CERT", "Server/client certificate (PEM) for mTLS.")
    tls_key: Path | None = _env("AGENTMESH_TLS_KEY", "Private key (PEM) for AGENTMESH_TLS_CERT.")
    tls_ca: Path | None = _env("AGENTMESH_TLS_CA", "CA bundle (PEM) that peers' certificates must chain to.")
    model_base_url: str | None = _env(
        "MODEL_BASE_URL", "OpenAI-compatible API base URL, e.g. http://localhost:50099/v1."
    )
    model_name: str | None = _env("MODEL_NAME", "Model name sent to the model API.")
    model_api_key: str | None = _env("MODEL_API_KEY", "API key for the model API.", repr=False)
    insecure_no_auth: bool = _env(
        "AGENTMESH_INSECURE_NO_AUTH", "Disable caller authentication (local development only; warns).", False
    )
    service_name: str | None = _env(
        "AGENTMESH_SERVICE_NAME", "Name in logs, metrics and traces. Default: the role (agents: the domain)."
    )
    trace_dir: str | None = _env(
        "AGENTMESH_TRACE_DIR",
        "Directory for span files (OTLP JSON lines, one file per process) for runs without a "
        "collector; `agentmesh up` sets it to <state dir>/traces and `agentmesh trace TASK_ID` "
        "reads it. Works beside the standard OTEL_* exporters.",
    )
    log_level: str = _env("AGENTMESH_LOG_LEVEL", "Log level: DEBUG, INFO, WARNING, ERROR.", "INFO")
    log_format: LogFormat = _env(
        "AGENTMESH_LOG_FORMAT", "Log format: json (one object per line) or text.", "json"
    )
    drain_delay_s: float = _env(
        "AGENTMESH_DRAIN_DELAY",
        "Seconds between turning health NOT_SERVING and refusing new calls on shutdown, so load "
        "balancers notice first.",
        0.0,
        ge=0,
    )
    drain_grace_s: float = _env(
        "AGENTMESH_DRAIN_GRACE",
        "Seconds in-flight calls get to finish on shutdown before they are canceled.",
        10.0,
        ge=0,
    )
    max_message_bytes: int = _env(
        "AGENTMESH_MAX_MESSAGE_BYTES",
        "Largest gRPC message accepted or sent (bytes). Bigger messages get RESOURCE_EXHAUSTED.",
        8 * 1024 * 1024,
        ge=1024,
    )
    max_in_flight: int = _env(
        "AGENTMESH_MAX_IN_FLIGHT",
        "Concurrent calls one replica accepts for its main service; beyond it callers get "
        "RESOURCE_EXHAUSTED with RetryInfo. 0 = unbounded.",
        64,
        ge=0,
    )
    max_streams: int = _env(
        "AGENTMESH_MAX_STREAMS",
        "Server streams (WatchTask, WatchTools) one replica holds open at once; beyond it callers get "
        "RESOURCE_EXHAUSTED with RetryInfo. Keep it below AGENTMESH_REDIS_MAX_CONNECTIONS: an open stream "
        "may hold a Redis connection. 0 = unbounded.",
        DEFAULT_MAX_STREAMS,
        ge=0,
    )
    max_streams_per_caller: int = _env(
        "AGENTMESH_MAX_STREAMS_PER_CALLER",
        "Server streams one caller (a user of a tenant; for the registry a service or peer host) holds open "
        "on one replica; beyond it RESOURCE_EXHAUSTED with RetryInfo. 0 = unbounded.",
        DEFAULT_MAX_STREAMS_PER_CALLER,
        ge=0,
    )
    watch_progress_s: float = _env(
        "AGENTMESH_WATCH_PROGRESS_S",
        "Seconds an idle WatchTools stream waits before the registry sends a PROGRESS change (its current "
        "revision). It tells the watcher where to resume, and the write frees the replica's stream slot when "
        "the caller is gone but its cancellation never arrived.",
        30.0,
        gt=0,
    )
    redis_max_connections: int = _env(
        "AGENTMESH_REDIS_MAX_CONNECTIONS",
        "Redis connections one process opens at most (per node on a Cluster). A command that finds none "
        "free waits up to 5 s for one, then fails UNAVAILABLE.",
        512,
        ge=8,
    )
    worker_concurrency: int = _env(
        "AGENTMESH_WORKER_CONCURRENCY", "Durable tasks one agent replica runs at once.", 4, ge=1
    )
    queue_shards: int = _env(
        "AGENTMESH_QUEUE_SHARDS",
        "Redis streams per agent domain for its task queue; each task lives in its shard's Redis Cluster "
        "slot, chosen at creation and written in its id. Raising it is safe for stored tasks; before "
        "lowering it, drain the queue (entries in removed shards are not read). A SubmitTask retried "
        "across a change with the same request_id may create a second task.",
        4,
        ge=1,
        le=256,
    )
    task_retention_s: float = _env(
        "AGENTMESH_TASK_RETENTION",
        "Seconds a finished task (record, steps, events) is kept after it ends; also how long its "
        "request_id replays it.",
        7 * DAY_S,
        gt=0,
    )
    run_retention_s: float = _env(
        "AGENTMESH_RUN_RETENTION",
        "Seconds a finished Run task is kept (a Run that pauses or outlives its deadline gets "
        "AGENTMESH_TASK_RETENTION).",
        3600.0,
        gt=0,
    )
    claim_idle_timeout_s: float = _env(
        "AGENTMESH_CLAIM_IDLE_TIMEOUT",
        "Seconds without a heartbeat after which a task's worker counts as lost and another worker "
        "resumes the task from its last checkpoint (also the lease and the outbox sweep period).",
        30.0,
        ge=1,
    )
    max_attempts: int = _env(
        "AGENTMESH_MAX_ATTEMPTS",
        "Failed attempts (executor errors, lost workers) after which a task is dead-lettered.",
        3,
        ge=1,
    )
    session_idle_ttl_s: float = _env(
        "AGENTMESH_SESSION_IDLE_TTL",
        "Seconds a conversation session is kept after its last turn; every append renews it.",
        7 * DAY_S,
        gt=0,
    )
    session_max_turns: int = _env(
        "AGENTMESH_SESSION_MAX_TURNS",
        "Hard cap on stored turns per session (compaction normally keeps far fewer); beyond it the "
        "oldest turns are dropped and counted.",
        1000,
        ge=10,
    )
    fact_ttl_s: float = _env(
        "AGENTMESH_FACT_TTL",
        "Default lifetime in seconds of a user's long-term fact (a writer may choose another). "
        "0 = facts never expire.",
        90 * DAY_S,
        ge=0,
    )
    usage_retention_s: float = _env(
        "AGENTMESH_USAGE_RETENTION",
        "Seconds usage counters (per task, session, user, domain) are kept after their last update.",
        90 * DAY_S,
        gt=0,
    )
    idempotency_window_s: float = _env(
        "AGENTMESH_IDEMPOTENCY_WINDOW",
        "Seconds a completed idempotency key (a tool call's idempotency-key) replays its result; "
        "afterwards the key may run again. (A task's request_id replays as long as the task is kept.)",
        DAY_S,
        gt=0,
    )
    rate_limit_tenant: Rate | None = _env(
        "AGENTMESH_RATE_LIMIT_TENANT",
        "Admission rate per tenant, shared by all replicas: `RATE[/UNIT][:BURST]` with UNIT s, min "
        "or h, e.g. `50/s:100`. Unset = unlimited.",
    )
    rate_limit_user: Rate | None = _env(
        "AGENTMESH_RATE_LIMIT_USER",
        "Admission rate per (tenant, user), e.g. `30/min:10`. Unset = unlimited.",
    )
    rate_limit_domain: Rate | None = _env(
        "AGENTMESH_RATE_LIMIT_DOMAIN",
        "Admission rate of this agent domain over all tenants (its total capacity), e.g. `20/s`. "
        "Unset = unlimited.",
    )
    user_daily_token_budget: int = _env(
        "AGENTMESH_USER_DAILY_TOKENS",
        "Model tokens one user may use per UTC day over all domains. 0 = unlimited.",
        0,
        ge=0,
    )
    user_daily_cost_budget_usd: float = _env(
        "AGENTMESH_USER_DAILY_COST_USD",
        "Model cost (USD, from the price table) one user may incur per UTC day. 0 = unlimited.",
        0.0,
        ge=0,
    )
    discovery_namespaces: str = _env(
        "AGENTMESH_DISCOVERY_NAMESPACES",
        "Registry only: Kubernetes namespaces (comma-separated, `*` for all) whose Services labelled "
        "`agentmesh.io/tool=true` have their tools registered through gRPC reflection. "
        "Empty = discovery off.",
        "",
    )
    discovery_kube_api: str | None = _env(
        "AGENTMESH_DISCOVERY_KUBE_API",
        "Kubernetes API URL for discovery. Default: the in-cluster configuration, else the kubeconfig.",
    )
    discovery_cluster_domain: str = _env(
        "AGENTMESH_DISCOVERY_CLUSTER_DOMAIN",
        "Cluster domain of the Service DNS names discovery binds tools to "
        "(`<svc>.<ns>.svc.<domain>:<port>`).",
        "cluster.local",
    )
    max_connection_age_s: float = _env(
        "AGENTMESH_MAX_CONNECTION_AGE",
        "Seconds after which the server asks clients to reconnect, so new replicas get traffic. 0 = never.",
        300.0,
        ge=0,
    )

    # The command line and the local mesh (agentmesh/cli/, agentmesh/localmesh/) ----------------
    cli_token: str | None = _env(
        "AGENTMESH_TOKEN",
        "CLI: bearer token the `agentmesh` commands send (after --token, before the profile's).",
        repr=False,
    )
    profile: Path | None = _env(
        "AGENTMESH_PROFILE",
        "CLI: the profile file (TOML) `agentmesh up` writes and `agentmesh profile` edits. Default: "
        "XDG_CONFIG_HOME/agentmesh/profile.toml.",
    )
    xdg_config_home: Path | None = _env(
        "XDG_CONFIG_HOME", "CLI: the base directory of the default profile (XDG). Default: ~/.config."
    )
    state_dir: Path = _env(
        "AGENTMESH_STATE_DIR",
        "`agentmesh up`/`down`/`status`/`trace`: the local mesh's state directory (logs, keys, spans).",
        Path(".agentmesh"),
    )
    port_offset: int = _env(
        "AGENTMESH_PORT_OFFSET",
        "`agentmesh up`: add this to every port of the local mesh (registry 50051, agents 5006x, tools "
        "5007x, model 50099, valkey 6390), e.g. to run a second mesh beside the first.",
        0,
        ge=0,
    )
    valkey_server: Path | None = _env(
        "VALKEY_SERVER",
        "The valkey-server binary of the embedded Redis (`agentmesh up`, tests). Default: the bundled one.",
    )
    # The example tools (examples/; examples/README.md) --------------------------------------
    inventory_stock: str = _env(
        "INVENTORY_STOCK", "Example inventory: `SKU=COUNT,...` instead of the seeded stock.", ""
    )
    payments_approval_limit_cents: int | None = _env(
        "PAYMENTS_APPROVAL_LIMIT_CENTS",
        "Example payments: refunds above this many cents need approval. Default: 10000.",
        ge=0,
    )
    dummy_latency_ms: float = _env(
        "DUMMY_LATENCY_MS", "Example dummy: every call waits this long first.", 0.0, ge=0
    )
    dummy_unavailable_rate: float = _env(
        "DUMMY_UNAVAILABLE_RATE", "Example dummy: share of calls answered UNAVAILABLE.", 0.0, ge=0
    )
    dummy_exhausted_rate: float = _env(
        "DUMMY_EXHAUSTED_RATE", "Example dummy: share of calls answered RESOURCE_EXHAUSTED.", 0.0, ge=0
    )
    dummy_hang_rate: float = _env(
        "DUMMY_HANG_RATE", "Example dummy: share of calls that hang past the deadline.", 0.0, ge=0
    )
    dummy_succeed_then_hang_rate: float = _env(
        "DUMMY_SUCCEED_THEN_HANG_RATE",
        "Example dummy: share of calls that do the work, then hang past the deadline.",
        0.0,
        ge=0,
    )
    dummy_retry_after_ms: float = _env(
        "DUMMY_RETRY_AFTER_MS", "Example dummy: the RetryInfo delay of its RESOURCE_EXHAUSTED.", 0.0, ge=0
    )
    dummy_seed: int = _env("DUMMY_SEED", "Example dummy: seed for reproducible rates (0 = random).", 0)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _tls_pairs(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("AGENTMESH_TLS_CERT and AGENTMESH_TLS_KEY must be set together")
        return self

    # Derived values ---------------------------------------------------------

    @property
    def effective_grpc_port(self) -> int:
        return DEFAULT_GRPC_PORTS[self.role] if self.grpc_port is None else self.grpc_port

    @property
    def effective_http_port(self) -> int:
        if self.http_port is not None:
            return self.http_port
        grpc_port = self.effective_grpc_port
        return 0 if grpc_port == 0 else grpc_port + HTTP_PORT_OFFSET

    @property
    def effective_health_port(self) -> int:
        if self.health_port is not None:
            return self.health_port
        grpc_port = self.effective_grpc_port
        return 0 if grpc_port == 0 else grpc_port + HEALTH_PORT_OFFSET

    @property
    def trusted_issuers(self) -> tuple[str, ...]:
        return tuple(part.strip() for part in self.jwt_issuers.split(",") if part.strip())

    @property
    def discovery_namespace_list(self) -> list[str]:
        """Namespaces discovery watches; [""] means every namespace."""
        names = [part.strip() for part in self.discovery_namespaces.split(",") if part.strip()]
        return [""] if "*" in names else names

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Load settings from `environ` (default: os.environ); keyword overrides win.

        Empty variables count as unset. Raises ConfigError naming each bad variable.
        """
        env = os.environ if environ is None else environ
        data: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            alias = field.alias or name
            value = env.get(alias)
            if value is not None and value.strip() != "":
                data[alias] = value.strip()
        for name, value in overrides.items():
            alias = cls.model_fields[name].alias or name
            data[alias] = value
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        given = error.get("input")
        shown = "" if isinstance(given, dict) or given is None else f" (got {given!r})"
        lines.append(f"  {where}: {error['msg']}{shown}")
    return "\n".join(lines)


def reference_markdown() -> str:
    """The configuration reference table (docs/configuration.md)."""
    rows = [
        "# Configuration reference",
        "",
        "Generated from `agentmesh/kit/config.py` by `agentmesh config docs`; do not edit by hand.",
        "Every service reads these environment variables through one loader; the Helm chart sets the",
        "same names. Empty values count as unset. The standard `OTEL_*` variables configure tracing",
        '(see ARCHITECTURE.md, "Cross-cutting concerns").',
        "",
        "Read elsewhere, on purpose: `OTEL_*` (by the OpenTelemetry SDK, agentmesh/kit/tracing.py),",
        "`KUBERNETES_SERVICE_HOST`/`_PORT` (in-cluster detection of the auth bootstrap hook, set by",
        "Kubernetes), `BENCH_*` (the benchmark harness, bench/). Child processes inherit the environment.",
        "",
        "| Variable | Default | Description |",
        "|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default = field.default
        if default is None:
            shown = "—"
        elif isinstance(default, enum.Enum):
            shown = f"`{default.value}`"
        else:
            shown = f"`{default}`"
        rows.append(f"| `{field.alias or name}` | {shown} | {field.description} |")
    return "\n".join(rows) + "\n"
