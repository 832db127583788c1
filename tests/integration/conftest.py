"""Integration tests run the hooks with the real SDKs against the sandbox over HTTPS."""

from __future__ import annotations

import json

import pytest

from demo.sandbox_airflow import connections_env


@pytest.fixture
def connected(sandbox_env, monkeypatch: pytest.MonkeyPatch):
    """The sandbox (reset), its trust and identity environment, and the Airflow connections an operator
    would define: ``azure_default`` (managed identity) and ``msgraph_default`` (client secret)."""
    for key, value in connections_env(sandbox_env.endpoints).items():
        monkeypatch.setenv(key, value)
    return sandbox_env


def azure_connection_as(sandbox, identity: str) -> str:
    """An ``azure`` connection that signs in as a service principal of the sandbox tenant."""
    ident = sandbox.identity(identity)
    return json.dumps(
        {
            "conn_type": "azure",
            "login": ident["client_id"],
            "password": ident["client_secret"],
            "extra": {
                "tenantId": sandbox.tenant_id,
                "authority": sandbox.authority_host,
                "disable_instance_discovery": True,
            },
        }
    )
