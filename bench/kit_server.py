"""Echo server for bench.kit: the same handler bare (grpc.aio) or behind the kit (ServiceHost).

python -m bench.kit_server --port N --mode bare|kit
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from agentmesh.kit.config import Settings
from agentmesh.kit.server import ServiceHost
from agentmesh.v1 import agent_service_pb2, agent_service_pb2_grpc, task_pb2


class Echo(agent_service_pb2_grpc.AgentServiceServicer):
    async def GetTask(
        self, request: agent_service_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.Task:
        return task_pb2.Task(task_id=request.task_id)


async def bare(port: int) -> None:
    server = grpc.aio.server()
    agent_service_pb2_grpc.add_AgentServiceServicer_to_server(Echo(), server)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)  # for the readiness wait only
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def kit(port: int) -> None:
    settings = Settings.from_env(grpc_port=port, http_port=0, bind_host="127.0.0.1", max_in_flight=0)
    host = ServiceHost(settings, name="bench")
    servicer = Echo()
    host.add_service(
        agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"],
        lambda server: agent_service_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server),
    )
    await host.run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["bare", "kit"], required=True)
    ns = parser.parse_args()
    asyncio.run(bare(ns.port) if ns.mode == "bare" else kit(ns.port))
