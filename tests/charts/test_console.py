"""The operator console in the chart: off by default; on, a Deployment and a Service that verify
users' tokens and hold no credential of their own (the console acts with each user's token)."""

from __future__ import annotations

from typing import Any

from tests.charts.chart import VALUE_SETS, render
from tests.charts.test_semantics import component, container_env, main_container, ports_by_name


def console_docs(value_set: str) -> list[dict[str, Any]]:
    return [
        d
        for d in render(value_set).documents
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "console"
    ]


def test_the_console_is_off_by_default() -> None:
    assert render("defaults").values["console"]["enabled"] is False
    assert console_docs("defaults") == []


def test_on_it_is_a_deployment_and_a_service_without_credentials_of_its_own() -> None:
    enabled = [name for name, values in VALUE_SETS.items() if values.get("console", {}).get("enabled")]
    assert enabled, "a CI value set turns the console on"
    for value_set in enabled:
        r = render(value_set)
        docs = console_docs(value_set)
        kinds = sorted(d["kind"] for d in docs)
        expected = (
            ["Deployment", "NetworkPolicy", "Service"]
            if r.values["networkPolicy"]["enabled"]
            else [
                "Deployment",
                "Service",
            ]
        )
        assert kinds == expected, value_set
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        assert component(deployment) == "console"
        container = main_container(deployment)
        env = container_env(container)
        # No service token, no signing key: every call carries the signed-in user's token.
        assert "AGENTMESH_SERVICE_TOKEN" not in env and "AGENTMESH_SIGNING_KEY" not in env
        assert env["AGENTMESH_ROLE"]["value"] == "console"
        assert env["AGENTMESH_CONSOLE_SECURE_COOKIES"]["value"] == "true"
        assert ports_by_name(container) == {"http": r.values["console"]["port"]}
        service = next(d for d in docs if d["kind"] == "Service")
        assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
        if r.values["tls"]["enabled"]:
            assert env["AGENTMESH_TLS_CA"]["value"] == "/etc/agentmesh/tls/ca.crt"
