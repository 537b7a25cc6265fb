"""A2A across replicas: a task followed on one agent process survives the SIGKILL of the one running it.

Two processes of the training domain on one valkey, the dummy tool answering slowly. An
a2a-sdk client (its gRPC transport, `a2a.client.transports.grpc.GrpcTransport`) sends a
streaming message to replica 1; whichever replica's worker claims the task, the test
subscribes (SubscribeToTask) on the *other* one, then SIGKILLs the one holding it while
its tool call is in flight. The subscriber must still see the task reach COMPLETED: the
survivor's worker reclaims it once the lease lapses, and SubscribeToTask, served from the
task's events in Redis, follows it on any replica.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from a2a.client.transports.grpc import GrpcTransport
from a2a.types import a2a_pb2 as a2a

from tests.chaos.drills import TRAINING
from tests.chaos.harness import chaos_mesh, log_tails
from tests.support.auth import authorized_channel

# ~20 s (most of it starting the mesh's processes): at the CI subset's limit, so `make chaos` only.
pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

REPLICAS = ("agent-training-1", "agent-training-2")
# Long enough to aim the kill at the call in flight; the lease (AGENTMESH_CLAIM_IDLE_TIMEOUT=2 in
# the chaos mesh) lapses well before the test's budget.
TOOL_ENV = {"dummy": {"DUMMY_LATENCY_MS": "1500"}}


def transport(target: str) -> GrpcTransport:
    """The a2a-sdk's own gRPC client transport on a channel that carries the test token."""
    return GrpcTransport(authorized_channel(target), None)


async def test_a_subscriber_on_another_replica_sees_a_killed_replicas_task_finish(tmp_path: Path) -> None:
    async with chaos_mesh(tmp_path, agents={TRAINING: 2}, tools=("dummy",), tool_env=TOOL_ENV) as mesh:
        targets = {name: mesh.mesh.planned(name).grpc_target for name in REPLICAS}
        assert all(targets.values()), targets
        sender = transport(str(targets[REPLICAS[0]]))
        message = a2a.Message(
            message_id="a2a-cross-replica-1",
            context_id="a2a-cross-replica",
            role=a2a.ROLE_USER,
            parts=[a2a.Part(text="Act on a2a-cross-replica")],
        )
        stream = sender.send_message_streaming(a2a.SendMessageRequest(message=message))
        first = await anext(stream)
        assert first.HasField("task"), first
        task_id = first.task.id
        # The replica whose worker holds the task, once its tool call is in flight.
        deadline = time.monotonic() + 30
        holder = ""
        while time.monotonic() < deadline:
            holder = (await mesh.holders(TRAINING)).get(task_id, "")
            if holder and task_id in await mesh.calls_in_flight("dummy_act"):
                break
            await asyncio.sleep(0.05)
        assert holder, (
            f"no replica claimed {task_id}: {await mesh.snapshot(TRAINING, task_id)}\n"
            + log_tails(mesh, [*REPLICAS, "tool-dummy"])
        )
        survivor = next(name for name in REPLICAS if name != holder)
        subscriber = transport(str(targets[survivor]))
        updates = subscriber.subscribe(a2a.SubscribeToTaskRequest(id=task_id))
        opening = await anext(updates)
        assert opening.HasField("task") and opening.task.id == task_id, opening
        assert opening.task.status.state == a2a.TASK_STATE_WORKING, opening

        kill = mesh.kill(holder, task_id=task_id, window="in-call")
        states = []

        async def follow() -> None:
            async for update in updates:
                if update.HasField("status_update"):
                    states.append(update.status_update.status.state)

        try:
            await asyncio.wait_for(follow(), 45)
        except TimeoutError:
            raise AssertionError(
                f"the subscriber on {survivor} saw {states} within 45 s of killing {holder}\n"
                + log_tails(mesh, REPLICAS)
            ) from None
        finally:
            await sender.close()
            await subscriber.close()
        assert states and states[-1] == a2a.TASK_STATE_COMPLETED, states
        finished = await mesh.snapshot(TRAINING, task_id)
        assert finished is not None and finished.attempt >= 2, (
            finished
        )  # reclaimed, not finished by the dead one
        print(f"killed {holder}; {survivor} reported COMPLETED {time.monotonic() - kill.at:.1f}s later")
