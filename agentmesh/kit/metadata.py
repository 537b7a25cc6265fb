"""gRPC metadata keys used across the mesh (lower-case, as gRPC requires)."""

from __future__ import annotations

# Caller credentials: `Bearer <JWT>`.
AUTHORIZATION = "authorization"
# Deduplication key for side-effecting tool calls: `<task_id>:<step>`; the tool
# SDK stores the first result under it and replays it for repeats.
IDEMPOTENCY_KEY = "idempotency-key"
# W3C trace context, also carried in task-queue entries.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# Approval granted for a call that needs one (the pending action id).
APPROVAL = "x-agentmesh-approval"
# Task and step a tool call belongs to (for logs and cost attribution).
TASK_ID = "x-agentmesh-task-id"
STEP = "x-agentmesh-step"
# Set by the server on every response: the error id of an INTERNAL failure is
# in ErrorInfo metadata instead.
REQUEST_ID = "x-request-id"
# Caller identity until JWT verification lands (agents.caller reads them in one place).
TENANT = "x-agentmesh-tenant"
USER = "x-agentmesh-user"
# How many agents deep a delegation chain is (0 for a direct caller).
DELEGATION_DEPTH = "x-agentmesh-delegation-depth"
# Sent to the model API with each chat completion (the scripted model can match on it).
DOMAIN = "x-agentmesh-domain"
# Set by the tool SDK on a response replayed from its idempotency store (the side
# effect did not run again); the invoker reports TOOL_OUTCOME_DEDUPLICATED.
REPLAYED = "x-agentmesh-replayed"
