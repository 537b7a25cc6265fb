"""How a model turn is meant (answer, direct message, question, refusal) and the artifacts it
delivers: from the script format, over the wire, through the state machine to the task outcome."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmesh.v1 import task_pb2
from agents.actions import Finished, StaleAction
from agents.executor import model_headers, task_outcome
from agents.machine import AGENT_REFUSED, reply_of
from agents.model.script import Conversation, ScriptError, load_script, respond
from agents.model.types import ChatMessage, ChatRole, MalformedResponse, ModelTurn, TokenUsage
from agents.model.wire import parse_response
from memory.tasks.execution import Failed, Rejected
from tests.unit.agents.test_run_machine import NOW, answer, expect_finished, expect_model, machine

SCRIPTS = Path(__file__).resolve().parents[3] / "agents" / "scripts"


def script_turn(tmp_path: Path, then: dict[str, Any]) -> ModelTurn:
    """The turn the scripted model sends for `then`, as the runtime parses it."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "default": then}))
    convo = Conversation([ChatMessage(ChatRole.USER, "hi")])
    reply = respond(load_script(path), convo, {}, prompt_text="hi")
    return parse_response(json.loads(json.dumps(reply.body)))


def parts(update: task_pb2.ArtifactUpdate) -> list[str]:
    return [p.WhichOneof("kind") or "" for p in update.artifact.parts]


def test_every_artifact_kind_crosses_the_wire(tmp_path: Path) -> None:
    got = script_turn(
        tmp_path,
        {
            "answer": "done",
            "artifacts": [
                {"name": "greeting", "text": "hello"},
                {"id": "f", "file": {"name": "a.bin", "media_type": "application/x-a", "base64": "AAEC"}},
                {"file": {"name": "b.txt", "media_type": "text/plain", "text": "bee"}},
                {"url": {"uri": "https://example.com/c", "name": "c", "media_type": "text/csv"}},
                {"data": {"n": 1, "s": "x"}},
            ],
        },
    )
    assert got.reply == "task" and got.content == "done"
    ids = [u.artifact.artifact_id for u in got.artifacts]
    assert ids == ["artifact-1", "f", "artifact-3", "artifact-4", "artifact-5"]
    assert [parts(u) for u in got.artifacts] == [["text"], ["file"], ["file"], ["file_uri"], ["data"]]
    assert got.artifacts[0].artifact.name == "greeting"
    assert got.artifacts[1].artifact.parts[0].file.content == b"\x00\x01\x02"
    assert got.artifacts[1].artifact.parts[0].file.media_type == "application/x-a"
    assert got.artifacts[2].artifact.parts[0].file.content == b"bee"
    assert got.artifacts[3].artifact.parts[0].file_uri.uri == "https://example.com/c"
    assert dict(got.artifacts[4].artifact.parts[0].data) == {"n": 1.0, "s": "x"}
    assert all(u.last_chunk and not u.append for u in got.artifacts)


def test_chunks_are_appended_updates_of_one_artifact_in_order(tmp_path: Path) -> None:
    got = script_turn(tmp_path, {"answer": "done", "artifacts": [{"id": "s", "chunks": ["a", "b", "c"]}]})
    assert [
        (u.artifact.artifact_id, u.artifact.parts[0].text, u.append, u.last_chunk) for u in got.artifacts
    ] == [
        ("s", "a", False, False),
        ("s", "b", True, False),
        ("s", "c", True, True),
    ]


@pytest.mark.parametrize(
    ("then", "problem"),
    [
        ({"tool_calls": [{"name": "t"}], "reply": "message"}, "needs an answer"),
        ({"answer": "x", "reply": "sometimes"}, "reply"),
        ({"answer": "x", "artifacts": [{"text": "a", "data": {}}]}, "exactly one of"),
        ({"answer": "x", "artifacts": [{"file": {"base64": "%%%"}}]}, "base64"),
        ({"answer": "x", "artifacts": [{"file": {"text": "a", "base64": "AA=="}}]}, "exactly one of"),
        ({"empty": True, "artifacts": [{"text": "a"}]}, "artifacts come with"),
    ],
)
def test_bad_replies_and_artifacts_are_refused_naming_the_field(
    tmp_path: Path, then: dict[str, Any], problem: str
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "rules": [{"then": then}]}))
    with pytest.raises(ScriptError, match=problem):
        load_script(path)


@pytest.mark.parametrize(
    "extension",
    [
        "not an object",
        {"reply": "shout"},
        {"artifacts": [{"artifact": {"parts": [{"text": "no id"}]}}]},
        {"artifacts": [{"artifact": {"artifactId": "a"}}]},
        {"artifacts": [{"artifact": {"artifactId": "a", "parts": [{"nope": 1}]}}]},
        {"artifacts": "many"},
    ],
)
def test_a_malformed_extension_is_a_malformed_response(extension: Any) -> None:
    body = {"choices": [{"message": {"role": "assistant", "content": "x", "agentmesh": extension}}]}
    with pytest.raises(MalformedResponse, match="agentmesh"):
        parse_response(body)


def test_the_conformance_script_picks_the_scenario_by_request_id() -> None:
    script = load_script(SCRIPTS / "conformance.yaml")

    def reply_to(request_id: str) -> dict[str, Any]:
        convo = Conversation(
            [ChatMessage(ChatRole.USER, "hi")], headers={"x-agentmesh-request-id": request_id}
        )
        message: dict[str, Any] = respond(script, convo, {}, prompt_text="hi").body["choices"][0]["message"]
        return message

    assert reply_to("tck-complete-task-1")["content"] == "Hello from TCK"
    assert reply_to("tck-message-response-1")["agentmesh"]["reply"] == "message"
    assert (
        reply_to("tck-artifact-file-url-9")["agentmesh"]["artifacts"][0]["artifact"]["artifactId"]
        == "file-url"
    )
    assert reply_to("tck-artifact-file-9")["agentmesh"]["artifacts"][0]["artifact"]["artifactId"] == "file"
    assert reply_to("tck-reject-task-2")["agentmesh"]["reply"] == "reject"


# -- the state machine -------------------------------------------------------------------------


def model_turn(
    content: str, reply: Any = "task", artifacts: tuple[task_pb2.ArtifactUpdate, ...] = ()
) -> ModelTurn:
    return ModelTurn(content, (), TokenUsage(10, 5), "test-model", reply=reply, artifacts=artifacts)


def test_artifacts_are_saved_with_the_step_that_delivered_them() -> None:
    m = machine()
    expect_model(m)
    update = task_pb2.ArtifactUpdate(
        artifact=task_pb2.Artifact(artifact_id="a", parts=[task_pb2.Part(text="x")]), last_chunk=True
    )
    answer(m, model_turn("done", artifacts=(update,)))
    done = expect_finished(m)
    assert done.outcome.state == task_pb2.TASK_STATE_COMPLETED
    assert m.step_artifacts(0) == [update] and m.step_artifacts(1) == []
    assert json.loads(m.steps[0].result_json)["artifacts"] == ["a"]


def test_a_direct_message_completes_and_the_steps_say_so() -> None:
    m = machine()
    expect_model(m)
    answer(m, model_turn("hello", reply="message"))
    done = expect_finished(m)
    assert done.outcome.state == task_pb2.TASK_STATE_COMPLETED and done.outcome.final_answer == "hello"
    assert reply_of(m.steps) == "message"
    other = machine()
    expect_model(other)
    answer(other, model_turn("hello"))
    assert reply_of(other.steps) == "task" and reply_of([]) == "task"


def test_a_question_parks_the_task_and_the_answer_continues_it_also_after_replay() -> None:
    m = machine()
    expect_model(m)
    answer(m, model_turn("Which order?", reply="input_required"))
    parked = expect_finished(m).outcome
    assert parked.state == task_pb2.TASK_STATE_INPUT_REQUIRED
    assert parked.stop_reason == task_pb2.STOP_REASON_AWAITING_INPUT
    assert parked.pending is not None and parked.pending.kind == task_pb2.PENDING_ACTION_KIND_INPUT
    assert parked.pending.message == "Which order?" and parked.message == "Which order?"
    with pytest.raises(StaleAction, match="waits for input"):
        m.decide(parked.pending.action_id, approve=True, now=NOW)
    with pytest.raises(StaleAction):
        m.answer("act-9", "ORD-1", now=NOW)
    # A fresh attempt (another worker) rebuilds the question from the steps, then takes the answer.
    again = machine()
    again.replay(m.steps, pending=parked.pending, stop_reason=parked.stop_reason)
    assert isinstance(again.next_action(NOW), Finished)
    again.answer(parked.pending.action_id, "ORD-1", now=NOW)
    assert again.steps[-1].kind == task_pb2.STEP_KIND_USER_INPUT
    request = expect_model(again).request
    assert [(m.role, m.content) for m in request.messages[-2:]] == [
        (ChatRole.ASSISTANT, "Which order?"),
        (ChatRole.USER, "ORD-1"),
    ]
    # And one more attempt after the answer was saved: no question pending, the answer kept.
    third = machine()
    third.replay(again.steps)
    assert expect_model(third).request.messages[-1].content == "ORD-1"


def test_a_refusal_rejects_the_task() -> None:
    m = machine()
    expect_model(m)
    answer(m, model_turn("I will not do that.", reply="reject"))
    outcome = expect_finished(m).outcome
    assert outcome.state == task_pb2.TASK_STATE_REJECTED
    assert outcome.error is not None and outcome.error.reason == AGENT_REFUSED
    result = task_outcome(outcome, task_pb2.Usage())
    assert isinstance(result, Rejected) and result.message == "I will not do that."
    # The sanitizer's refusal of a request it cannot read still fails (INVALID_REQUEST).
    sanitizer = task_outcome(
        outcome.__class__(
            task_pb2.TASK_STATE_REJECTED,
            task_pb2.STOP_REASON_POLICY_DENIED,
            "bad",
            error=task_pb2.TaskError(reason="INVALID_REQUEST"),
        ),
        task_pb2.Usage(),
    )
    assert isinstance(sanitizer, Failed)


@pytest.mark.parametrize(
    ("request_id", "sent"),
    [("tck-complete-task-1", True), ("", False), ("bad\r\nx-injected: 1", False), ("a" * 129, False)],
)
def test_the_request_id_reaches_the_model_only_when_header_safe(request_id: str, sent: bool) -> None:
    headers = model_headers("conformance", task_pb2.Task(request_id=request_id))
    assert headers["x-agentmesh-domain"] == "conformance"
    assert ("x-agentmesh-request-id" in headers) == sent
