"""Every kind of Databricks connection, against the sandbox: the provider's Entra ID code (service
principal, default credential), azure-identity (managed identity) and Databricks OAuth M2M; for the
account target and for a workspace with no PAT."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from entra_provisioning import tasks
from entra_provisioning.config import WorkspaceConfig
from entra_provisioning.hooks.databricks_auth import (
    DEFAULT_CREDENTIAL,
    ENTRA_SERVICE_PRINCIPAL,
    MANAGED_IDENTITY,
    OAUTH_M2M,
)

M2M_APP_ID = "7a1d0c55-0000-4000-8000-0000000000a4"
M2M_SECRET = "dose-demo-m2m-runner-secret"


@pytest.fixture
def seeded(connected) -> Any:
    """The demo seed, with graph-reader (a client-secret app) also an account admin and a ws-beta admin,
    and airflow-mi a ws-beta admin, so every connection kind can serve both targets."""
    seed = copy.deepcopy(connected.seed)
    seed["account"]["service_principals"].append({"identity": "graph-reader", "admin": True})
    beta = next(w for w in seed["workspaces"] if w["name"] == "ws-beta")
    beta["service_principals"] = [
        {"identity": "graph-reader", "admin": True},
        {"identity": "airflow-mi", "admin": True},
    ]
    connected.control.reset(seed)
    yield connected
    connected.control.reset(connected.seed)


def connection(sandbox: Any, kind: str) -> dict[str, Any]:
    mi, sp = sandbox.identity("airflow-mi"), sandbox.identity("graph-reader")
    return {
        ENTRA_SERVICE_PRINCIPAL: {
            "login": sp["client_id"],
            "password": sp["client_secret"],
            # The sandbox's authority: the provider itself would ask login.microsoftonline.com's instance
            # discovery about it, which cannot work here (nor for a sovereign cloud's authority).
            "extra": {"azure_tenant_id": sandbox.tenant_id, "azure_ad_endpoint": sandbox.authority_host},
        },
        DEFAULT_CREDENTIAL: {"extra": {"use_default_azure_credential": True}},
        MANAGED_IDENTITY: {
            "extra": {"use_azure_managed_identity": True, "azure_managed_identity_client_id": mi["client_id"]}
        },
        OAUTH_M2M: {"login": M2M_APP_ID, "password": M2M_SECRET, "extra": {"service_principal_oauth": True}},
    }[kind]


def use(monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any]) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_DBX_UNDER_TEST", json.dumps({"conn_type": "databricks", **fields}))
    return "dbx_under_test"


def account_entry(sandbox: Any, conn_id: str) -> WorkspaceConfig:
    return WorkspaceConfig(
        name="conn-kinds",
        databricks_instance=sandbox.workspace_host("ws-gamma"),
        entra_groups=("Data Engineers",),
        pat_secret_url=None,
        schedule=None,
        target="account",
        databricks_conn_id=conn_id,
        account_id=sandbox.account_id,
        account_host=sandbox.account_host,
        workspace_id=int(sandbox.endpoints["workspaces"]["ws-gamma"]["workspace_id"]),
    )


@pytest.mark.parametrize("kind", [ENTRA_SERVICE_PRINCIPAL, DEFAULT_CREDENTIAL, MANAGED_IDENTITY, OAUTH_M2M])
def test_each_connection_kind_provisions_through_the_account(seeded, monkeypatch, kind: str) -> None:
    ws = account_entry(seeded, use(monkeypatch, connection(seeded, kind)))
    facts = tasks.fetch_token(ws)
    assert facts["credential"] == kind
    assert facts["target"] == "account"
    assert "token" not in json.dumps(facts).replace("token_expires_in_minutes", "")
    summary = tasks.add_missing_users(ws, facts, tasks.resolve_members(ws), {})
    assert summary["failed"] == 0
    assert summary["added"] + summary["already_present"] == summary["members_resolved"] > 0


@pytest.mark.parametrize("kind", [ENTRA_SERVICE_PRINCIPAL, MANAGED_IDENTITY])
def test_a_workspace_needs_no_pat_with_an_admin_service_principal(seeded, monkeypatch, kind: str) -> None:
    ws = WorkspaceConfig(
        name="no-pat",
        databricks_instance=seeded.workspace_host("ws-beta"),
        entra_groups=("Data Engineers",),
        pat_secret_url=None,
        schedule=None,
        databricks_conn_id=use(monkeypatch, connection(seeded, kind)),
    )
    facts = tasks.fetch_token(ws)
    assert (
        facts["admin_user_name"]
        == seeded.identity("graph-reader" if kind == ENTRA_SERVICE_PRINCIPAL else "airflow-mi")["client_id"]
    )
    summary = tasks.add_missing_users(ws, facts, tasks.resolve_members(ws), {})
    assert summary["failed"] == 0 and summary["added"] == summary["to_add"] > 0
    # No Key Vault read at all on this path.
    assert not [e for e in seeded.control.log() if e["system"].startswith("vault")]


def test_an_identity_that_is_not_an_account_admin_fails_for_good(connected, monkeypatch) -> None:
    """graph-reader is not registered in the demo account: the account refuses its token (403)."""
    ws = account_entry(connected, use(monkeypatch, connection(connected, ENTRA_SERVICE_PRINCIPAL)))
    with pytest.raises(AirflowFailException, match="not an account admin"):
        tasks.fetch_token(ws)


def test_a_wrong_client_secret_is_a_clear_permanent_failure(connected, monkeypatch) -> None:
    fields = connection(connected, ENTRA_SERVICE_PRINCIPAL)
    fields["password"] = "wrong"
    ws = account_entry(connected, use(monkeypatch, fields))
    with pytest.raises(
        AirflowFailException, match="Entra ID refused a token for Databricks to connection 'dbx_under_test'"
    ):
        tasks.fetch_token(ws)


def test_a_wrong_oauth_secret_is_a_clear_permanent_failure(connected, monkeypatch) -> None:
    fields = connection(connected, OAUTH_M2M)
    fields["password"] = "wrong"
    ws = account_entry(connected, use(monkeypatch, fields))
    with pytest.raises(AirflowFailException, match=r"Databricks refused an OAuth M2M token .*HTTP 401"):
        tasks.fetch_token(ws)
