"""TLS and mTLS on real grpc.aio servers (issue "Security", item 8), certificates made in the test.

mTLS refuses a client without a certificate and serves one with; kubelet-style
plaintext health answers on its own port; renewed certificate files are picked up
without a restart; an oversized bearer token gets UNAUTHENTICATED from the edge.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentmesh.kit.auth import mesh_auth
from agentmesh.kit.auth.keys import generate_issuer_key
from agentmesh.kit.channels import create_channel
from agentmesh.kit.errors import from_rpc_error
from agentmesh.kit.testing import local_settings, running_host
from agentmesh.v1 import agent_service_pb2, agent_service_pb2_grpc
from tests.support.certs import CertificateAuthority
from tests.support.sample_service import SampleAgent, registration

pytestmark = pytest.mark.integration


async def _run(channel: grpc.aio.Channel) -> str:
    stub = agent_service_pb2_grpc.AgentServiceStub(channel)
    response = await stub.Run(agent_service_pb2.RunRequest(instruction="ship"), timeout=5)
    return response.task.final_answer


async def _health(target: str, channel: grpc.aio.Channel | None = None) -> int:
    own = channel is None
    channel = channel or grpc.aio.insecure_channel(target)
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return reply.status
    finally:
        if own:
            await channel.close()


async def test_mtls_refuses_a_client_without_a_certificate_and_serves_one_with(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    server_cert, server_key = ca.write(tmp_path / "server", "server", server=True)
    client_cert, client_key = ca.write(tmp_path / "client", "client", server=False)
    ca_file = tmp_path / "server" / "ca.crt"
    settings = local_settings(tls_cert=server_cert, tls_key=server_key, tls_ca=ca_file)
    client = local_settings(tls_cert=client_cert, tls_key=client_key, tls_ca=ca_file)
    async with running_host([registration(SampleAgent())], settings=settings) as (host, _):
        target = f"127.0.0.1:{host.grpc_port}"
        async with create_channel(target, settings=client) as channel:
            assert await _run(channel) == "SHIP"
        # TLS without a client certificate, then no TLS at all: both refused.
        anonymous = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca.pem))
        plain = grpc.aio.insecure_channel(target)
        for channel in (anonymous, plain):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _run(channel)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            await channel.close()
        # A certificate from another CA: refused too.
        other = CertificateAuthority("other CA").issue("intruder", server=False)
        intruder = grpc.aio.secure_channel(
            target,
            grpc.ssl_channel_credentials(
                root_certificates=ca.pem, private_key=other.key, certificate_chain=other.cert
            ),
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _run(intruder)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        await intruder.close()
        # Probes: plaintext health on its own port, health only.
        assert host.health_port and host.health_port != host.grpc_port
        assert await _health(f"127.0.0.1:{host.health_port}") == health_pb2.HealthCheckResponse.SERVING
        probe = grpc.aio.insecure_channel(f"127.0.0.1:{host.health_port}")
        with pytest.raises(grpc.aio.AioRpcError) as unimplemented:
            await _run(probe)
        assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED
        await probe.close()


async def test_renewed_certificate_files_are_served_without_a_restart(tmp_path: Path) -> None:
    first, second = CertificateAuthority("first CA"), CertificateAuthority("second CA")
    cert, key = first.write(tmp_path, "server", server=True)
    settings = local_settings(tls_cert=cert, tls_key=key)
    async with running_host([registration(SampleAgent())], settings=settings) as (host, _):
        target = f"127.0.0.1:{host.grpc_port}"

        async def answer(ca: CertificateAuthority) -> str:
            channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca.pem))
            try:
                return await _run(channel)
            except grpc.aio.AioRpcError as exc:
                return exc.code().name
            finally:
                await channel.close()

        assert (await answer(first), await answer(second)) == ("SHIP", "UNAVAILABLE")
        # The channel factory: AGENTMESH_TLS_CA alone is TLS without a client certificate.
        async with create_channel(target, settings=local_settings(tls_ca=tmp_path / "ca.crt")) as channel:
            assert await _run(channel) == "SHIP"
        renewed = second.issue("server", server=True)
        await asyncio.sleep(0.01)  # a new mtime even on coarse clocks
        key.write_bytes(renewed.key)
        cert.write_bytes(renewed.cert)
        assert (await answer(second), await answer(first)) == ("SHIP", "UNAVAILABLE")
        # A half-written renewal (garbage) keeps the previous certificate.
        cert.write_bytes(b"not a certificate")
        assert await answer(second) == "SHIP"


async def test_an_oversized_token_gets_unauthenticated_from_the_edge(tmp_path: Path) -> None:
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(generate_issuer_key().pem())
    settings = local_settings(signing_key=key_file)
    authenticator = mesh_auth(settings).authenticator(audiences=("agentmesh",))
    async with running_host(
        [registration(SampleAgent())], settings=settings, authenticator=authenticator
    ) as (_, channel):
        stub = agent_service_pb2_grpc.AgentServiceStub(channel)
        for size in (20 * 1024, 40 * 1024):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Run(
                    agent_service_pb2.RunRequest(instruction="ship"),
                    metadata=(("authorization", "Bearer " + "a" * size),),
                    timeout=5,
                )
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value.details()
            assert from_rpc_error(refused.value).metadata["cause"] == "oversized"
