"""Every Prometheus metric of the mesh, declared once.

Labels stay bounded (method, code, domain, tool, state): per-session and
per-user figures live in Redis counters and on spans, never here (DESIGN.md,
"Metrics"). Services expose these on their HTTP side listener at /metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

RPC_HANDLED = Counter(
    "agentmesh_rpc_handled",
    "gRPC calls completed by this server, by method and status code.",
    ["service", "method", "code"],
    registry=REGISTRY,
)
RPC_DURATION = Histogram(
    "agentmesh_rpc_duration_seconds",
    "Server-side gRPC call latency.",
    ["service", "method"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
RPC_IN_FLIGHT = Gauge(
    "agentmesh_rpc_in_flight",
    "gRPC calls currently being handled (the HPA's optional custom metric).",
    ["service"],
    registry=REGISTRY,
)
RPC_REJECTED_OVERLOAD = Counter(
    "agentmesh_rpc_rejected_overload",
    "Calls refused with RESOURCE_EXHAUSTED because the replica was at its in-flight bound.",
    ["service"],
    registry=REGISTRY,
)
UNEXPECTED_ERRORS = Counter(
    "agentmesh_unexpected_errors",
    "Exceptions that escaped a handler and were answered as INTERNAL.",
    ["service", "method"],
    registry=REGISTRY,
)
SERVING = Gauge(
    "agentmesh_serving",
    "1 while this process reports SERVING, 0 while draining or starting.",
    ["service"],
    registry=REGISTRY,
)

# -- tools at run time (tool_registry.invoke, .resolver, .sdk) -------------------------

TOOL_CALLS = Counter(
    "agentmesh_tool_calls",
    "Tool invocations by the runtime, by tool, outcome (ToolOutcome name) and final status code.",
    ["tool", "outcome", "code"],
    registry=REGISTRY,
)
TOOL_RETRIES = Counter(
    "agentmesh_tool_retries",
    "Tool call attempts retried, by tool and the status code that caused the retry.",
    ["tool", "code"],
    registry=REGISTRY,
)
TOOL_CALL_DURATION = Histogram(
    "agentmesh_tool_call_duration_seconds",
    "Tool invocation latency (validation, every attempt and backoff), by tool.",
    ["tool"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
TOOL_BREAKER_STATE = Gauge(
    "agentmesh_tool_breaker_state",
    "Circuit breaker of the tool's endpoint: 0 closed, 1 half-open, 2 open.",
    ["tool"],
    registry=REGISTRY,
)
TOOL_BREAKER_TRANSITIONS = Counter(
    "agentmesh_tool_breaker_transitions",
    "Circuit breaker state changes of the tool's endpoint, by the state entered.",
    ["tool", "state"],
    registry=REGISTRY,
)
REGISTRY_REACHABLE = Gauge(
    "agentmesh_registry_reachable",
    "1 while the tool resolver's watch on the registry is connected; 0 while it serves from cache.",
    registry=REGISTRY,
)
RESOLVER_CACHED_TOOLS = Gauge(
    "agentmesh_resolver_cached_tools",
    "Tool versions the resolver holds in its cache.",
    registry=REGISTRY,
)
TOOL_REPLAYS = Counter(
    "agentmesh_tool_idempotent_replays",
    "Calls a tool served by the SDK answered from its idempotency store (the side effect did not run again).",
    ["tool"],
    registry=REGISTRY,
)
TOOL_REGISTERED = Gauge(
    "agentmesh_tool_registered",
    "1 once the tool SDK registered the tool with the registry; 0 while it retries.",
    ["tool"],
    registry=REGISTRY,
)

# -- durable tasks (memory/tasks/queue.py, memory/tasks/worker.py) ---------------------------------

TASK_QUEUE_DEPTH = Gauge(
    "agentmesh_task_queue_depth",
    "Queued tasks not yet picked up by any worker (summed over the domain's shards).",
    ["domain"],
    registry=REGISTRY,
)
TASK_QUEUE_PENDING = Gauge(
    "agentmesh_task_queue_pending",
    "Queue entries delivered to a worker and not yet acknowledged (running, or held by a lost worker).",
    ["domain"],
    registry=REGISTRY,
)
TASK_QUEUE_LAG = Gauge(
    "agentmesh_task_queue_lag_seconds",
    "Age of the oldest queued task no worker has picked up yet (the KEDA/HPA scaling signal).",
    ["domain"],
    registry=REGISTRY,
)
TASK_DEAD_LETTER_DEPTH = Gauge(
    "agentmesh_task_dead_letter_depth",
    "Entries waiting in the domain's dead letters (inspect with `agentmesh tasks dead-letters list`).",
    ["domain"],
    registry=REGISTRY,
)
TASKS_FINISHED = Counter(
    "agentmesh_tasks_finished",
    "Tasks that reached a terminal state, by state.",
    ["domain", "state"],
    registry=REGISTRY,
)
TASK_RECOVERIES = Counter(
    "agentmesh_task_recoveries",
    "Tasks resumed from their last checkpoint after their worker was lost.",
    ["domain"],
    registry=REGISTRY,
)
TASK_ATTEMPTS_FAILED = Counter(
    "agentmesh_task_attempts_failed",
    "Attempts that ended with an executor error (retried until the attempt limit).",
    ["domain"],
    registry=REGISTRY,
)
TASK_DEAD_LETTERS = Counter(
    "agentmesh_task_dead_letters",
    "Tasks moved to the dead letters after too many failed attempts.",
    ["domain"],
    registry=REGISTRY,
)
TASK_OUTBOX_REPAIRS = Counter(
    "agentmesh_task_outbox_repairs",
    "Tasks the sweeper queued because their creator (or inline Run) stopped before queueing them.",
    ["domain"],
    registry=REGISTRY,
)
TASK_WORKERS_BUSY = Gauge(
    "agentmesh_task_workers_busy",
    "Durable tasks this replica is running now (bounded by AGENTMESH_WORKER_CONCURRENCY).",
    ["domain"],
    registry=REGISTRY,
)

# --- memory: usage, budgets, rate limits (per-session/user figures stay in Redis) ---

MODEL_TOKENS = Counter(
    "agentmesh_model_tokens",
    "Model tokens recorded against budgets, by agent domain and type (prompt | completion).",
    ["domain", "type"],
    registry=REGISTRY,
)
MODEL_COST_USD = Counter(
    "agentmesh_model_cost_usd",
    "Model cost in US dollars from the configured price table, by agent domain.",
    ["domain"],
    registry=REGISTRY,
)
UNPRICED_TOKENS = Counter(
    "agentmesh_unpriced_tokens",
    "Tokens of models missing from the price table (counted at cost 0), by agent domain.",
    ["domain"],
    registry=REGISTRY,
)
TOOL_CALLS_COUNTED = Counter(
    "agentmesh_usage_tool_calls",
    "Tool calls recorded against budgets (retries included), by agent domain and tool.",
    ["domain", "tool"],
    registry=REGISTRY,
)
BUDGET_EXHAUSTED = Counter(
    "agentmesh_budget_exhausted",
    "Usage records that found a budget exhausted, by domain and budget (e.g. task.tokens).",
    ["domain", "budget"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "agentmesh_rate_limited",
    "Rate-limit checks refused, by the limit's scope (tenant | user | domain | tool) and tool.",
    ["scope", "tool"],
    registry=REGISTRY,
)

# --- agent runtime (agents/) -------------------------------------------------

AGENT_TASKS = Counter(
    "agentmesh_agent_tasks",
    "Tasks an agent finished or paused, by domain, state and stop reason.",
    ["domain", "state", "stop_reason"],
    registry=REGISTRY,
)
AGENT_STEPS = Counter(
    "agentmesh_agent_steps",
    "Steps of the plan -> act -> observe loop, by domain and kind (model, tool, sanitize, delegate).",
    ["domain", "kind"],
    registry=REGISTRY,
)
AGENT_TOOL_CALLS = Counter(
    "agentmesh_agent_tool_calls",
    "Tool calls the model asked for, by domain, tool (the domain's allowed tools) and outcome.",
    ["domain", "tool", "outcome"],
    registry=REGISTRY,
)
AGENT_MODEL_LATENCY = Histogram(
    "agentmesh_agent_model_call_seconds",
    "Latency of one chat completion (retries included), by domain.",
    ["domain"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
AGENT_RUNS_IN_FLIGHT = Gauge(
    "agentmesh_agent_runs_in_flight",
    "Tasks this replica is running (Run calls and tasks that continue after a hand-off).",
    ["domain"],
    registry=REGISTRY,
)


# -- Kubernetes tool discovery (the registry) ----------------------------------

DISCOVERY_ACTIVE = Gauge(
    "agentmesh_discovery_active",
    "1 on the registry replica whose Kubernetes discovery holds the lease, 0 on the others.",
    registry=REGISTRY,
)
DISCOVERY_SERVICES = Gauge(
    "agentmesh_discovery_services",
    "Labelled Services known to discovery, by status (registered, failed, pending).",
    ["status"],
    registry=REGISTRY,
)
DISCOVERY_REGISTRATIONS = Counter(
    "agentmesh_discovery_registrations",
    "Tool versions registered (or confirmed unchanged) by discovery.",
    registry=REGISTRY,
)
DISCOVERY_ERRORS = Counter(
    "agentmesh_discovery_errors",
    "Discovery failures by kind (annotations, reflection, no_tools, registry, retire, watch).",
    ["kind"],
    registry=REGISTRY,
)
DISCOVERY_RELISTS = Counter(
    "agentmesh_discovery_relists",
    "Relists after a watch's resourceVersion expired (410 Gone), by namespace.",
    ["namespace"],
    registry=REGISTRY,
)
