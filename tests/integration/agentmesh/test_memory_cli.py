"""`agentmesh memory …` and `agentmesh usage` against a real server."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from agentmesh.cli.main import app
from agentmesh.kit.net import free_port
from memory.connection import create_redis
from memory.context import Turn, TurnToolCall
from memory.facts import FactStore
from memory.prices import builtin_prices
from memory.sessions import SessionStore
from memory.usage import Attribution, StepUsage, UsageStore

pytestmark = pytest.mark.integration
runner = CliRunner()


def turn(model: str, prompt_tokens: int, completion_tokens: int, wall_s: float = 0.0) -> StepUsage:
    """A model turn priced the one way (the built-in prices), as the agent's state machine does."""
    cost = builtin_prices().cost(model, prompt_tokens, completion_tokens)
    return StepUsage.model_call(prompt_tokens, completion_tokens, cost, wall_s=wall_s)


def populate(url: str) -> None:
    async def main() -> None:
        redis = create_redis(url)
        sessions = SessionStore(redis)
        for user in ("alice", "bob"):
            await sessions.append(
                "acme",
                user,
                "s-1",
                Turn.user("Where is order A-1?"),
                Turn.assistant(tool_calls=[TurnToolCall("c1", "orders_get", '{"id": "A-1"}')]),
                Turn.tool("c1", "orders_get", "shipped", task_id="t-1", step=1),
                Turn.assistant("It shipped."),
            )
            await FactStore(redis).put("acme", user, "carrier", "DHL")
            usage = UsageStore(redis)
            who = Attribution("acme", user, "refunds", f"t-{user}", "s-1")
            await usage.record(who, turn("gpt-4o", 1000, 200))
            await usage.record(who, turn("local-llama", 50, 5))
            await usage.record(who, StepUsage.tool_call("orders_get"))
        await redis.aclose()

    asyncio.run(main())


def test_session_show_prints_turns_and_the_packet(redis_url: str) -> None:
    populate(redis_url)
    args = ["memory", "session", "show", "--tenant", "acme", "--user", "alice", "--session", "s-1"]
    human = runner.invoke(app, [*args, "--redis", redis_url])
    assert human.exit_code == 0, human.output
    for part in ("stored turns", "orders_get", "context packet"):
        assert part in human.output
    result = runner.invoke(app, [*args, "--redis", redis_url, "--json", "--budget", "500"])
    document = json.loads(result.output)
    assert [t["role"] for t in document["turns"]] == ["user", "assistant", "tool", "assistant"]
    assert document["packet"]["budget"] == 500 and document["packet"]["tokens"] <= 500
    assert document["packet"]["messages"][0]["role"] == "system"  # the pinned fact
    missing = runner.invoke(app, ["memory", "session", "show", "--tenant", "acme", "--user", "carol",
                                  "--session", "s-1", "--redis", redis_url])  # fmt: skip
    assert missing.exit_code == 1


def test_usage_by_user_session_and_domain(redis_url: str) -> None:
    populate(redis_url)
    base = ["usage", "--domain", "refunds", "--redis", redis_url, "--json"]
    user = json.loads(runner.invoke(app, [*base, "--tenant", "acme", "--user", "alice"]).output)
    assert user["tasks"] == 1 and user["usage"]["totalTokens"] == "1255" and user["unpriced_tokens"] == 55
    assert user["usage"]["costUsd"] == pytest.approx(0.0045)
    one = runner.invoke(app, [*base, "--tenant", "acme", "--user", "bob", "--session", "s-1"])
    session = json.loads(one.output)
    assert session["scope"]["user"] == "bob" and session["usage"]["toolCalls"] == 1
    ambiguous = runner.invoke(app, [*base, "--session", "s-1"])
    assert ambiguous.exit_code == 2 and "several users" in ambiguous.output
    domain = json.loads(runner.invoke(app, base).output)
    assert domain["tasks"] == 2 and domain["scope"]["tenant"] == "*"
    human = runner.invoke(app, ["usage", "--domain", "refunds", "--tenant", "acme", "--redis", redis_url])
    assert human.exit_code == 0 and "unpriced tokens" in human.output and "cost (USD)" in human.output
    assert runner.invoke(app, ["usage", "--domain", "refunds", "--user", "alice"]).exit_code == 2


def test_unreachable_redis_exits_3(monkeypatch: pytest.MonkeyPatch) -> None:
    from memory import connection

    monkeypatch.setattr(connection, "RETRIES", 1)
    result = runner.invoke(
        app, ["usage", "--domain", "refunds", "--redis", f"redis://127.0.0.1:{free_port()}/0"]
    )
    assert result.exit_code == 3 and "unreachable" in result.output
