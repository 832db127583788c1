"""KeyVaultSecretHook with the real SecretClient and azure-identity against the sandbox's Key Vault."""

from __future__ import annotations

import pytest

from entra_provisioning.hooks.key_vault import KeyVaultSecretHook, SecretUnavailableError

from .conftest import azure_connection_as


def test_reads_the_latest_version_with_managed_identity(connected) -> None:
    value, facts = KeyVaultSecretHook().get_secret(connected.secret_url("ws-alpha-pat"))
    assert value == "dapi-alpha-admin-0001"
    assert facts.name == "ws-alpha-pat" and len(facts.version) == 32
    assert facts.expires_on is not None and facts.enabled
    # The managed identity's Key Vault token went to the vault and nowhere else.
    assert connected.hosts_for_token(value) == set()


def test_a_pinned_version_is_read_even_after_rotation(connected) -> None:
    hook = KeyVaultSecretHook()
    vault = connected.control.vault("kv-demo")
    oldest = min(vault["secrets"]["ws-alpha-pat"], key=lambda v: v["created"])
    value, facts = hook.get_secret(connected.secret_url("ws-alpha-pat"), oldest["version"])
    assert value == "dapi-alpha-admin-old"
    assert facts.version == oldest["version"]


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("no-such-secret", "does not exist"),
        ("disabled-pat", "is disabled"),
        ("expired-pat", "expired"),
    ],
)
def test_unusable_secrets_fail_clearly_without_the_value(connected, secret: str, message: str) -> None:
    with pytest.raises(SecretUnavailableError, match=message) as info:
        KeyVaultSecretHook().get_secret(connected.secret_url(secret))
    assert "dapi-" not in str(info.value)
    assert secret in str(info.value)


def test_identity_without_access_gets_a_clear_403(connected, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_KV_OUTSIDER", azure_connection_as(connected, "outsider"))
    with pytest.raises(SecretUnavailableError, match=r"may not read .*HTTP 403") as info:
        KeyVaultSecretHook(azure_conn_id="kv_outsider").get_secret(connected.secret_url("ws-alpha-pat"))
    assert "kv_outsider" in str(info.value)


def test_service_principal_with_access_reads_the_secret(connected, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_KV_APP", azure_connection_as(connected, "graph-reader"))
    value, _ = KeyVaultSecretHook(azure_conn_id="kv_app").get_secret(connected.secret_url("ws-beta-pat"))
    assert value == "dapi-beta-admin-0001"
