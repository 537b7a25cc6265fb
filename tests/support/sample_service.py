"""A small AgentService servicer that exercises the kit's edge behaviour in tests.

Each method does one thing the kit must handle: validate and echo (Run), raise
a domain error (GetTask), raise an unexpected exception (SubmitTask), block until
released (ListTasks: in-flight bound, drain), stream (WatchTask). Also runnable as
a process: `python -m tests.support.sample_service` serves it with the settings
from the environment, like every real service.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from agentmesh.kit.config import Settings
from agentmesh.kit.errors import NotFound
from agentmesh.kit.logs import configure_logging
from agentmesh.kit.server import ServiceHost
from agentmesh.kit.validation import OPAQUE_ID, Violations
from agentmesh.v1 import agent_service_pb2, agent_service_pb2_grpc, task_pb2

SECRET_TEXT = "db password is hunter2"
SERVICE = agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"]


class SampleAgent(agent_service_pb2_grpc.AgentServiceServicer):
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def Run(
        self, request: agent_service_pb2.RunRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.RunResponse:
        violations = Violations()
        if violations.required(request.instruction, "instruction"):
            violations.max_length(request.instruction, 32 * 1024, "instruction")
        if request.session_id:
            violations.matches(request.session_id, OPAQUE_ID, "session_id", "session id")
        violations.in_range(request.limits.max_iterations, "limits.max_iterations", low=0, high=12)
        violations.raise_if_any()
        task = task_pb2.Task(
            task_id="t-1", state=task_pb2.TASK_STATE_COMPLETED, final_answer=request.instruction.upper()
        )
        return agent_service_pb2.RunResponse(task=task)

    async def GetTask(
        self, request: agent_service_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.Task:
        raise NotFound(f"task {request.task_id!r} not found", metadata={"task_id": request.task_id})

    async def SubmitTask(
        self, request: agent_service_pb2.SubmitTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.Task:
        raise RuntimeError(SECRET_TEXT)

    async def ListTasks(
        self, request: agent_service_pb2.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.ListTasksResponse:
        self.entered += 1
        await self.release.wait()
        return agent_service_pb2.ListTasksResponse()

    async def WatchTask(self, request: agent_service_pb2.WatchTaskRequest, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        for index in range(3):
            yield task_pb2.TaskEvent(event_id=str(index), task_id=request.task_id)
        if request.task_id == "fail":
            raise NotFound("gone mid-stream")

    async def GetAgentCard(
        self, request: agent_service_pb2.GetAgentCardRequest, context: grpc.aio.ServicerContext
    ) -> agent_service_pb2.AgentCard:
        return agent_service_pb2.AgentCard(domain="sample", description="kit test servicer")


def registration(servicer: SampleAgent) -> tuple[object, object]:
    return SERVICE, lambda server: agent_service_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)


async def _main() -> None:
    settings = Settings.from_env()
    configure_logging("sample", settings.log_level, settings.log_format)
    host = ServiceHost(settings, name="sample")
    servicer = SampleAgent()
    servicer.release.set()
    host.add_service(*registration(servicer))  # type: ignore[arg-type]
    await host.run()


if __name__ == "__main__":
    logging.captureWarnings(True)
    asyncio.run(_main())
