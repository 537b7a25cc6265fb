"""The a2a-sdk reference A2A server for bench.a2a: its gRPC binding over DefaultRequestHandler.

python -m bench.a2a_reference --port N --model-url URL --store memory|sqlite [--sqlite PATH]

The executor does what the agentmesh agent does for the benchmark's task: it
publishes the task (submitted), marks it working, makes one HTTP POST to the
same scripted model server (one aiohttp session, the body sent as bytes in one
write, like the agent's model client) and completes the task with the model's
answer as the status message. The task store is the SDK's InMemoryTaskStore or
its DatabaseTaskStore on SQLite (aiosqlite). No auth (the reference has none
configured); the client sends the same metadata to every server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging

import aiohttp
import grpc
from a2a.helpers.proto_helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler, GrpcHandler
from a2a.server.tasks import InMemoryTaskStore, TaskStore, TaskUpdater
from a2a.types import a2a_pb2 as a2a
from a2a.types import a2a_pb2_grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1._async import HealthServicer

SYSTEM_PROMPT = "Answer in one line."


class ScriptedModelExecutor(AgentExecutor):
    """One POST to the scripted model per task; its answer completes the task."""

    def __init__(self, http: aiohttp.ClientSession, model_url: str) -> None:
        self.http = http
        self.url = f"{model_url}/chat/completions"

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        task = context.current_task or new_task_from_user_message(context.message)
        if context.current_task is None:
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        body = json.dumps(
            {
                "model": "scripted",
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": context.get_user_input()},
                ],
            }
        ).encode()
        async with self.http.post(
            self.url, data=body, headers={"content-type": "application/json"}
        ) as response:
            payload = json.loads(await response.read())
        answer = payload["choices"][0]["message"]["content"]
        await updater.complete(updater.new_agent_message([a2a.Part(text=answer)]))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None and context.context_id is not None
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


async def task_store(kind: str, sqlite_path: str) -> TaskStore:
    if kind == "memory":
        return InMemoryTaskStore()
    from a2a.server.tasks import DatabaseTaskStore
    from sqlalchemy.ext.asyncio import create_async_engine

    store = DatabaseTaskStore(create_async_engine(f"sqlite+aiosqlite:///{sqlite_path}"))
    await store.initialize()
    return store


def card(port: int) -> a2a.AgentCard:
    return a2a.AgentCard(
        name="reference",
        description="a2a-sdk reference server for bench.a2a",
        version="1.0.0",
        supported_interfaces=[
            a2a.AgentInterface(url=f"127.0.0.1:{port}", protocol_binding="GRPC", protocol_version="1.0")
        ],
        capabilities=a2a.AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[a2a.AgentSkill(id="answer", name="answer", description="answers", tags=["bench"])],
    )


async def serve(port: int, model_url: str, store_kind: str, sqlite_path: str) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), trust_env=False) as http:
        handler = DefaultRequestHandler(
            agent_executor=ScriptedModelExecutor(http, model_url),
            task_store=await task_store(store_kind, sqlite_path),
            agent_card=card(port),
        )
        server = grpc.aio.server()
        a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(handler), server)
        health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)  # readiness wait only
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(prog="python -m bench.a2a_reference")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-url", required=True)
    parser.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--sqlite", default="/tmp/a2a-reference.db")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.model_url, args.store, args.sqlite))
