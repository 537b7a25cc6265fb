"""Checks on Run's input (pure): sizes, ids, labels, parts, limits against the caps; and the
requests as the task layer takes them (`new_task`, `pending_action_answer`).

One `Violations` collector names every bad field at once (INVALID_ARGUMENT,
reason INVALID_REQUEST); limits above the domain's caps are checked after the
fields are well formed and answer INVALID_ARGUMENT with reason
LIMIT_ABOVE_CAP naming the cap (`agents.limits.effective_budget`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

from agentmesh.kit.validation import OPAQUE_ID, Violations
from agentmesh.v1 import agent_service_pb2, task_pb2
from agents.caller import RESERVED_LABEL_PREFIX
from agents.limits import Budget, effective_budget
from agents.spec import DomainSpec
from memory.tasks.admission import NewTask

MAX_INSTRUCTION_BYTES = 32 * 1024
MAX_PARTS = 32
MAX_TEXT_PART_BYTES = 32 * 1024
MAX_DATA_PART_BYTES = 32 * 1024
MAX_FILE_PART_BYTES = 1024 * 1024
MAX_PARTS_TOTAL_BYTES = 4 * 1024 * 1024
MAX_NAME_CHARS = 256
MAX_URI_CHARS = 2048
MAX_LABELS = 16
MAX_PART_METADATA = 16
MAX_LABEL_VALUE_CHARS = 256
MAX_PAGE_SIZE = 500
LABEL_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
URI_SCHEMES = ("https://", "http://", "s3://", "gs://")


def check_parts(parts: Sequence[task_pb2.Part], violations: Violations, prefix: str = "parts") -> None:
    if not violations.max_items(parts, MAX_PARTS, prefix):
        return
    total = 0
    for index, part in enumerate(parts):
        where = f"{prefix}[{index}]"
        kind = part.WhichOneof("kind")
        if kind is None:
            violations.add(where, "is empty: set text, file, file_uri or data", "REQUIRED")
        elif kind == "text":
            violations.max_length(part.text, MAX_TEXT_PART_BYTES, f"{where}.text")
        elif kind == "data":
            violations.max_length(part.data.SerializeToString(), MAX_DATA_PART_BYTES, f"{where}.data")
        elif kind == "file":
            violations.max_length(part.file.content, MAX_FILE_PART_BYTES, f"{where}.file.content")
            violations.max_length(part.file.name, MAX_NAME_CHARS, f"{where}.file.name")
        elif kind == "file_uri":
            uri = part.file_uri.uri
            if (
                violations.required(uri, f"{where}.file_uri.uri")
                and violations.max_length(uri, MAX_URI_CHARS, f"{where}.file_uri.uri")
                and not uri.startswith(URI_SCHEMES)
            ):
                violations.add(
                    f"{where}.file_uri.uri", f"must start with one of {', '.join(URI_SCHEMES)}", "PATTERN"
                )
            violations.max_length(part.file_uri.name, MAX_NAME_CHARS, f"{where}.file_uri.name")
        if violations.max_items(part.metadata, MAX_PART_METADATA, f"{where}.metadata"):
            for key, value in part.metadata.items():
                violations.max_length(key, 64, f"{where}.metadata[{key[:20]!r}]")
                violations.max_length(value, MAX_LABEL_VALUE_CHARS, f"{where}.metadata[{key[:20]!r}]")
        total += part.ByteSize()
    if total > MAX_PARTS_TOTAL_BYTES:
        violations.add(
            prefix, f"are {total} bytes together; at most {MAX_PARTS_TOTAL_BYTES} allowed", "TOO_LONG"
        )


def check_labels(labels: Mapping[str, str], violations: Violations) -> None:
    if not violations.max_items(labels, MAX_LABELS, "labels"):
        return
    for key, value in labels.items():
        where = f"labels[{key[:40]!r}]"
        if violations.matches(key, LABEL_KEY, where, "label key") and key.startswith(RESERVED_LABEL_PREFIX):
            violations.add(where, f"labels starting with {RESERVED_LABEL_PREFIX!r} are reserved", "RESERVED")
        violations.max_length(value, MAX_LABEL_VALUE_CHARS, where)


def _check_task_input(
    spec: DomainSpec,
    request: agent_service_pb2.RunRequest | agent_service_pb2.SubmitTaskRequest,
    *,
    request_id_required: bool,
    what: str,
) -> Budget:
    violations = Violations()
    if violations.required(request.instruction.strip(), "instruction"):
        violations.max_length(request.instruction, MAX_INSTRUCTION_BYTES, "instruction")
    check_parts(request.parts, violations)
    if request.session_id:
        violations.matches(request.session_id, OPAQUE_ID, "session_id", "session id")
    wants_id = bool(request.request_id) or request_id_required
    if wants_id and violations.required(request.request_id, "request_id"):
        violations.matches(request.request_id, OPAQUE_ID, "request_id", "request id")
    check_labels(request.labels, violations)
    violations.raise_if_any(f"invalid {what} request")
    return effective_budget(spec, request.limits)


def check_run_request(spec: DomainSpec, request: agent_service_pb2.RunRequest) -> Budget:
    """The budget for a valid request; raises InvalidArgument naming every problem."""
    return _check_task_input(spec, request, request_id_required=False, what="Run")


def check_submit_request(spec: DomainSpec, request: agent_service_pb2.SubmitTaskRequest) -> Budget:
    """As Run, with `request_id` required (SubmitTask is idempotent on it)."""
    return _check_task_input(spec, request, request_id_required=True, what="SubmitTask")


def check_list_request(request: agent_service_pb2.ListTasksRequest) -> None:
    violations = Violations()
    violations.in_range(request.page_size, "page_size", low=0, high=MAX_PAGE_SIZE)
    violations.max_length(request.page_token, 4096, "page_token")
    if request.session_id:
        violations.matches(request.session_id, OPAQUE_ID, "session_id", "session id")
    violations.max_items(request.states, 8, "states")
    violations.raise_if_any("invalid ListTasks request")


def check_session_id(session_id: str, field: str = "session_id", *, required: bool = True) -> None:
    violations = Violations()
    if (session_id or required) and violations.required(session_id, field):
        violations.matches(session_id, OPAQUE_ID, field, "session id")
    violations.raise_if_any("invalid session id")


# --- from requests to the task layer's types ------------------------------------------------


def request_fingerprint(
    mode: str, request: agent_service_pb2.RunRequest | agent_service_pb2.SubmitTaskRequest
) -> str:
    """What must match for a repeated request id to be a replay: the request as sent, without
    the requested view (stored with the task; unchanged since the first release)."""
    body = request.SerializeToString(deterministic=True)
    if isinstance(request, agent_service_pb2.RunRequest) and request.view:
        copy = agent_service_pb2.RunRequest()
        copy.CopyFrom(request)
        copy.ClearField("view")
        body = copy.SerializeToString(deterministic=True)
    return hashlib.sha256(mode.encode() + b"\0" + body).hexdigest()


def new_task(request: agent_service_pb2.RunRequest | agent_service_pb2.SubmitTaskRequest) -> NewTask:
    """What the task layer keeps of a Run or SubmitTask request."""
    mode = "run" if isinstance(request, agent_service_pb2.RunRequest) else "submit"
    return NewTask(
        instruction=request.instruction,
        fingerprint=request_fingerprint(mode, request),
        parts=list(request.parts),
        session_id=request.session_id,
        request_id=request.request_id,
        labels=dict(request.labels),
        limits=request.limits,
    )


def pending_action_answer(request: agent_service_pb2.ResumeTaskRequest) -> task_pb2.PendingActionAnswer:
    """ResumeTask's answer as the task keeps it (the same fields, so the same bytes)."""
    return task_pb2.PendingActionAnswer.FromString(request.SerializeToString())
