"""Artifacts from tool results: a response's agentmesh.v1.Artifact fields (a delegated agent's
task's artifacts among them) become artifacts of the calling task, saved with the tool's step."""

from __future__ import annotations

from agentmesh.v1 import agent_service_pb2, task_pb2
from agents.tools import MAX_TOOL_ARTIFACTS, runner_result, tool_artifacts
from tests.unit.agents.test_run_machine import NOW, call, expect_model, expect_tool, machine, ok, turn
from tool_registry.invoke import CallOutcome, ToolResult


def delegated(*artifacts: task_pb2.Artifact) -> agent_service_pb2.RunResponse:
    task = task_pb2.Task(task_id="t-2", state=task_pb2.TASK_STATE_COMPLETED, final_answer="done")
    task.artifacts.extend(artifacts)
    task.labels["k"] = "v"  # a map field is walked past, not mistaken for a message
    return agent_service_pb2.RunResponse(task=task)


def test_a_delegated_agents_artifacts_become_the_callers_with_tool_prefixed_ids() -> None:
    response = delegated(
        task_pb2.Artifact(artifact_id="label", name="Label", parts=[task_pb2.Part(text="L")]),
        task_pb2.Artifact(parts=[task_pb2.Part(file_uri=task_pb2.FileUri(uri="https://x/y.pdf"))]),
    )
    updates = tool_artifacts("agent_fulfillment", response)
    assert [u.artifact.artifact_id for u in updates] == ["agent_fulfillment.label", "agent_fulfillment.2"]
    assert updates[0].artifact.name == "Label" and updates[0].artifact.parts[0].text == "L"
    assert updates[1].artifact.parts[0].file_uri.uri == "https://x/y.pdf"
    assert all(u.last_chunk and not u.append for u in updates)


def test_no_artifacts_in_a_plain_response_and_at_most_the_cap() -> None:
    assert tool_artifacts("crm_get", task_pb2.TaskError(reason="x")) == ()
    assert tool_artifacts("crm_get", None) == ()
    many = delegated(*(task_pb2.Artifact(artifact_id=str(i)) for i in range(MAX_TOOL_ARTIFACTS + 5)))
    assert len(tool_artifacts("agent_x", many)) == MAX_TOOL_ARTIFACTS


def test_only_a_successful_result_delivers_artifacts() -> None:
    response = delegated(task_pb2.Artifact(artifact_id="a", parts=[task_pb2.Part(text="x")]))
    good = ToolResult("agent_f", "1.0.0", CallOutcome.OK, "{}", response={}, message=response, attempts=1)
    bad = ToolResult("agent_f", "1.0.0", CallOutcome.ERROR, "{}", message=response, attempts=1)
    assert [u.artifact.artifact_id for u in runner_result(good, is_agent=True).artifacts] == ["agent_f.a"]
    assert runner_result(bad, is_agent=True).artifacts == ()


def test_the_machine_saves_tool_artifacts_with_the_tool_step() -> None:
    m = machine()
    expect_model(m)
    m.model_answered(turn(call("inventory_check", {"sku": "A"})), started=NOW, duration=0.01)
    expect_tool(m)
    update = task_pb2.ArtifactUpdate(
        artifact=task_pb2.Artifact(artifact_id="inventory_check.1"), last_chunk=True
    )
    result = ok()
    m.tool_finished(
        type(result)(result.outcome, result=result.result, attempts=1, version="1.0.0", artifacts=(update,)),
        started=NOW,
        duration=0.01,
    )
    assert m.step_artifacts(1) == [update] and m.step_artifacts(0) == []
