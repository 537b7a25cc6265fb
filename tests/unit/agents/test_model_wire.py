"""OpenAI-compatible wire format: requests out, responses in, malformed answers as errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agents.model.types import ChatMessage, ChatRequest, ChatRole, MalformedResponse, ToolCall
from agents.model.wire import (
    MAX_RAW_ARGUMENTS,
    message_from_wire,
    message_to_wire,
    parse_arguments,
    parse_response,
    request_body,
)


def body(message: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], **extra}


def test_text_answer_with_usage() -> None:
    turn = parse_response(
        body({"role": "assistant", "content": "done"}, usage={"prompt_tokens": 7, "completion_tokens": 3})
    )
    assert turn.content == "done" and turn.tool_calls == ()
    assert (turn.usage.prompt_tokens, turn.usage.completion_tokens, turn.usage.estimated) == (7, 3, False)
    assert turn.model == "m" and not turn.scripted


def test_tool_calls_with_string_and_object_arguments() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "inventory_check", "arguments": '{"sku": "A-1"}'},
            },
            {"id": "c2", "type": "function", "function": {"name": "email_send", "arguments": {"to": "a@b"}}},
            {"type": "function", "function": {"name": "noop"}},
        ],
    }
    turn = parse_response(body(message))
    assert [c.name for c in turn.tool_calls] == ["inventory_check", "email_send", "noop"]
    assert turn.tool_calls[0].arguments == {"sku": "A-1"}
    assert (
        turn.tool_calls[1].arguments == {"to": "a@b"} and turn.tool_calls[1].raw_arguments == '{"to":"a@b"}'
    )
    assert turn.tool_calls[2].arguments == {} and turn.tool_calls[2].call_id == "call_2"


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ('{"sku": ', "not valid JSON"),
        ("[1, 2]", "must be a JSON object, got list"),
        ('"text"', "must be a JSON object, got str"),
        (42, "must be a JSON object, got int"),
        ("x" * (MAX_RAW_ARGUMENTS + 1), "at most"),
        ("[" * 10_000, "not valid JSON"),
    ],
)
def test_bad_arguments_travel_on_the_call_instead_of_failing_the_turn(raw: object, error: str) -> None:
    text, parsed, problem = parse_arguments(raw)
    assert parsed is None and problem is not None and error in problem
    assert len(text) <= MAX_RAW_ARGUMENTS


def test_legacy_function_call_shape() -> None:
    turn = parse_response(body({"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}))
    assert turn.tool_calls[0].name == "f"


def test_content_as_list_of_parts() -> None:
    turn = parse_response(
        body({"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]})
    )
    assert turn.content == "ab"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"choices": []}, "no choices"),
        ({}, "no choices"),
        ([], "not a JSON object"),
        ({"choices": [{"index": 0}]}, "has no message"),
        ({"choices": [{"message": {"role": "assistant", "content": "  "}}]}, "empty"),
        ({"choices": [{"message": {"role": "assistant", "tool_calls": "nope"}}]}, "not a list"),
        ({"choices": [{"message": {"role": "assistant", "tool_calls": [{"function": 3}]}}]}, "no function"),
        ({"error": {"message": "overloaded"}}, "overloaded"),
        ({"choices": [{"message": {"role": "assistant", "content": 5}}]}, "unexpected type"),
    ],
)
def test_malformed_responses_raise_a_structured_error(payload: Any, message: str) -> None:
    with pytest.raises(MalformedResponse, match=message):
        parse_response(payload)


def test_missing_usage_is_estimated_deterministically() -> None:
    messages = [ChatMessage(ChatRole.USER, "x" * 400)]
    first = parse_response(body({"role": "assistant", "content": "y" * 40}), request_messages=messages)
    second = parse_response(body({"role": "assistant", "content": "y" * 40}), request_messages=messages)
    assert first.usage == second.usage
    assert first.usage.estimated and first.usage.prompt_tokens == 100 and first.usage.completion_tokens == 10


def test_scripted_answers_are_recognised() -> None:
    assert parse_response(body({"role": "assistant", "content": "a"}, system_fingerprint="scripted")).scripted
    assert parse_response({**body({"role": "assistant", "content": "a"}), "model": "scripted:x"}).scripted
    assert parse_response(body({"role": "assistant", "content": "a"}), scripted=True).scripted


def test_request_body_round_trips_through_the_server_parser() -> None:
    call = ToolCall("c1", "inventory_check", '{"sku":"A"}', {"sku": "A"})
    messages = [
        ChatMessage(ChatRole.SYSTEM, "sys"),
        ChatMessage(ChatRole.USER, "ship it"),
        ChatMessage(ChatRole.ASSISTANT, "", tool_calls=(call,)),
        ChatMessage(ChatRole.TOOL, '{"status":"OK"}', tool_call_id="c1", name="inventory_check"),
    ]
    tools = [{"type": "function", "function": {"name": "inventory_check", "parameters": {"type": "object"}}}]
    wire = request_body(
        "gpt", ChatRequest(messages, tools=tools, max_tokens=50, response_schema={"type": "object"})
    )
    assert wire["model"] == "gpt" and wire["max_tokens"] == 50 and wire["tool_choice"] == "auto"
    assert wire["response_format"]["type"] == "json_schema"
    assert wire["messages"][2]["content"] is None
    decoded = [message_from_wire(raw, i) for i, raw in enumerate(json.loads(json.dumps(wire["messages"])))]
    assert decoded[2].tool_calls[0].arguments == {"sku": "A"}
    assert decoded[3].tool_call_id == "c1" and decoded[3].role is ChatRole.TOOL
    assert message_to_wire(decoded[1]) == {"role": "user", "content": "ship it"}


def test_server_parser_rejects_unknown_roles() -> None:
    with pytest.raises(ValueError, match=r"messages\[3\].role"):
        message_from_wire({"role": "wizard", "content": "x"}, 3)
