"""Which credential a Databricks connection holds, which hosts it may serve, and when its token refreshes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from entra_provisioning.hooks import databricks_auth
from entra_provisioning.hooks.databricks_auth import (
    DEFAULT_CREDENTIAL,
    ENTRA_SERVICE_PRINCIPAL,
    MANAGED_IDENTITY,
    OAUTH_M2M,
    PERSONAL_ACCESS_TOKEN,
    DatabricksConnectionTokens,
    DatabricksCredentialError,
)

WS = "https://adb-6234138917436195.15.azuredatabricks.net"
ACCOUNTS = "https://accounts.azuredatabricks.net"


def connection(monkeypatch: pytest.MonkeyPatch, **fields: Any) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_DBX_TEST", json.dumps({"conn_type": "databricks", **fields}))
    return "dbx_test"


def tokens(conn_id: str, **kwargs: Any) -> DatabricksConnectionTokens:
    options: dict[str, Any] = {
        "allowed_origins": (ACCOUNTS, WS),
        "token_origin": ACCOUNTS,
        "account_id": "acc",
    }
    options.update(kwargs)
    return DatabricksConnectionTokens(conn_id, **options)


def test_constants_are_the_providers() -> None:
    # In a child process: the provider imports aiohttp, which fixes its CA bundle at import time, and this
    # process's later sandbox tests need it to read the sandbox's bundle.
    import subprocess
    import sys

    probe = (
        "from airflow.providers.databricks.hooks.databricks_base import DEFAULT_DATABRICKS_SCOPE, "
        "TOKEN_REFRESH_LEAD_TIME; print(DEFAULT_DATABRICKS_SCOPE, TOKEN_REFRESH_LEAD_TIME)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    scope, lead = done.stdout.splitlines()[-1].split()
    assert scope == databricks_auth.DATABRICKS_RESOURCE
    assert float(lead) == databricks_auth.REFRESH_LEAD_SECONDS


@pytest.mark.parametrize(
    ("fields", "method"),
    [
        ({"login": "app", "password": "s", "extra": {"azure_tenant_id": "t"}}, ENTRA_SERVICE_PRINCIPAL),
        ({"extra": {"use_default_azure_credential": True}}, DEFAULT_CREDENTIAL),
        (
            {"extra": {"use_azure_managed_identity": True, "azure_managed_identity_client_id": "c"}},
            MANAGED_IDENTITY,
        ),
        ({"login": "app", "password": "s", "extra": {"service_principal_oauth": True}}, OAUTH_M2M),
        ({"password": "dapi-123"}, PERSONAL_ACCESS_TOKEN),
    ],
)
def test_the_credential_kind_is_read_from_the_providers_fields(
    monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any], method: str
) -> None:
    assert tokens(connection(monkeypatch, **fields)).method == method


def test_a_connection_without_a_credential_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatabricksCredentialError, match="connection 'dbx_test' holds no credential"):
        tokens(connection(monkeypatch, login="someone")).check()


@pytest.mark.parametrize(
    "host",
    [
        "https://adb-1.1.azuredatabricks.net",
        "adb-1.1.azuredatabricks.net",
        "https://accounts.azuredatabricks.us",
    ],
)
def test_a_connection_naming_another_host_is_refused(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    conn_id = connection(monkeypatch, host=host, extra={"use_default_azure_credential": True})
    with pytest.raises(DatabricksCredentialError, match="credentials stay with the host"):
        tokens(conn_id).check()


@pytest.mark.parametrize("host", [None, WS, "adb-6234138917436195.15.azuredatabricks.net/", ACCOUNTS + "/"])
def test_a_connection_naming_this_entrys_host_or_none_is_accepted(
    monkeypatch: pytest.MonkeyPatch, host: str | None
) -> None:
    fields: dict[str, Any] = {"extra": {"use_default_azure_credential": True}}
    if host:
        fields["host"] = host
    assert tokens(connection(monkeypatch, **fields)).check() == DEFAULT_CREDENTIAL


def test_another_account_in_the_connection_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = connection(monkeypatch, extra={"use_default_azure_credential": True, "account_id": "other"})
    with pytest.raises(DatabricksCredentialError, match="is for account other"):
        tokens(conn_id).check()


def test_a_pat_is_refused_for_the_account_api(monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = connection(monkeypatch, password="dapi-123")
    with pytest.raises(DatabricksCredentialError, match="account API does not accept"):
        tokens(conn_id).check()
    assert tokens(conn_id, allow_pat=True, account_id=None).token() == "dapi-123"


def test_the_token_is_refreshed_only_near_its_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000.0]
    source = tokens(
        connection(monkeypatch, extra={"use_default_azure_credential": True}), clock=lambda: now[0]
    )
    issued = iter([("t1", 1_000.0 + 3600), ("t2", 1_000.0 + 7200)])
    monkeypatch.setattr(source, "_fetch", lambda method: next(issued))
    assert source.token() == "t1"
    now[0] += 3600 - 121  # still more than the lead time left
    assert source.token() == "t1"
    now[0] += 2  # inside the lead time
    assert source.token() == "t2"
    assert source.refreshes == 2


def test_repr_never_shows_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    source = tokens(connection(monkeypatch, password="dapi-secret-value"), allow_pat=True, account_id=None)
    source.token()
    assert "dapi-secret-value" not in repr(source)


class FakeProvider:
    """Stands in for the provider's hook: records which of its Entra ID methods was asked, and for what."""

    def __init__(self, conn: Any) -> None:
        self.databricks_conn = conn
        self.oauth_tokens: dict[str, dict[str, Any]] = {}
        self.asked: list[tuple[str, str]] = []

    def _get_aad_token(self, resource: str) -> str:
        self.asked.append(("client credentials", resource))
        self.oauth_tokens[resource] = {"access_token": "sp-token", "expires_on": 5_000}
        return "sp-token"

    def _get_aad_token_for_default_az_credential(self, resource: str) -> str:
        self.asked.append(("default credential", resource))
        self.oauth_tokens[resource] = {"access_token": "dc-token", "expires_on": 6_000}
        return "dc-token"


@pytest.mark.parametrize(
    ("extra", "asked", "expected"),
    [
        ({"azure_tenant_id": "t"}, "client credentials", ("sp-token", 5_000.0)),
        ({"use_default_azure_credential": True}, "default credential", ("dc-token", 6_000.0)),
    ],
)
def test_the_providers_entra_code_serves_the_public_cloud_cases(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], asked: str, expected: tuple[str, float]
) -> None:
    """The wire side of these two paths is the provider's (msal's public-cloud instance discovery cannot
    reach the sandbox); what is ours is choosing them, the resource asked for and the expiry read back."""
    source = tokens(connection(monkeypatch, login="app", password="s", extra=extra), clock=lambda: 1_000.0)
    fake = FakeProvider(source.databricks_conn)
    monkeypatch.setattr(type(source), "provider_hook", property(lambda self: fake))
    assert source.token() == expected[0]
    assert source.expires_on == expected[1]
    assert fake.asked == [(asked, databricks_auth.DATABRICKS_RESOURCE)]
