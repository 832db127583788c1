"""Key Vault fidelity: the official SecretClient with ManagedIdentityCredential, unmodified."""

from __future__ import annotations

import time

import httpx
import pytest


def _client(sandbox, credential=None):
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient

    return SecretClient(vault_url=sandbox.vault_url(), credential=credential or ManagedIdentityCredential())


def test_secret_client_with_managed_identity_reads_latest_version(sandbox_env):
    client = _client(sandbox_env)
    secret = client.get_secret("ws-alpha-pat")
    assert secret.value == "dapi-alpha-admin-0001"
    assert secret.properties.enabled is True
    assert secret.properties.expires_on is not None
    assert secret.properties.content_type == "text/plain"
    assert secret.id.startswith(sandbox_env.vault_url() + "/secrets/ws-alpha-pat/")
    # The id is the full versioned URL; the older version is kept and addressable.
    oldest = next(iter(client.list_properties_of_secret_versions("ws-alpha-pat")))
    old = client.get_secret("ws-alpha-pat", version=oldest.version)
    assert old.value == "dapi-alpha-admin-old"
    versions = list(client.list_properties_of_secret_versions("ws-alpha-pat"))
    assert len(versions) == 2


def test_challenge_then_token_flow_is_logged(sandbox_env):
    # The SDK caches challenges per process; forget them so this client has to be challenged again.
    from azure.keyvault.secrets._shared import http_challenge_cache

    http_challenge_cache.clear()
    _client(sandbox_env).get_secret("ws-beta-pat")
    log = sandbox_env.control.log(system="vault:kv-demo")
    statuses = [e["status"] for e in log]
    assert statuses[0] == 401 and log[0]["token_sha256"] is None  # the bare challenge probe
    assert statuses[-1] == 200 and log[-1]["token_sha256"]
    identity_log = sandbox_env.control.log(system="identity")
    assert any(e["endpoint"] == "identity.msi.token" and e["status"] == 200 for e in identity_log)


def test_missing_disabled_and_expired_secrets(sandbox_env):
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    client = _client(sandbox_env)
    with pytest.raises(ResourceNotFoundError) as missing:
        client.get_secret("no-such-secret")
    assert missing.value.error.code == "SecretNotFound"
    with pytest.raises(HttpResponseError) as disabled:
        client.get_secret("disabled-pat")
    assert disabled.value.status_code == 403
    assert "disabled" in str(disabled.value).lower()
    expired = client.get_secret("expired-pat")  # served, like Key Vault: exp is for the caller to check
    assert expired.properties.expires_on.timestamp() < time.time()


def test_identity_without_access_is_forbidden(sandbox_env):
    from azure.core.exceptions import HttpResponseError
    from azure.identity import ClientSecretCredential

    outsider = sandbox_env.identity("outsider")
    credential = ClientSecretCredential(
        sandbox_env.tenant_id,
        outsider["client_id"],
        outsider["client_secret"],
        authority=sandbox_env.authority_host,
        disable_instance_discovery=True,
    )
    with pytest.raises(HttpResponseError) as denied:
        _client(sandbox_env, credential).get_secret("ws-alpha-pat")
    assert denied.value.status_code == 403


def test_raw_refusals(sandbox_clean):
    url = sandbox_clean.secret_url("ws-alpha-pat") + "?api-version=7.5"
    with httpx.Client(verify=sandbox_clean.ca_file) as http:
        bare = http.get(url)
        assert bare.status_code == 401
        challenge = bare.headers["www-authenticate"]
        assert challenge.startswith("Bearer authorization=")
        assert f'resource="{sandbox_clean.endpoints["vaults"]["kv-demo"]["resource"]}"' in challenge
        # A Graph token is refused by the vault (audience-bound).
        graph_token = _msi_token(http, sandbox_clean, "https://graph.microsoft.com")
        wrong = http.get(url, headers={"Authorization": f"Bearer {graph_token}"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "Unauthorized"
        vault_token = _msi_token(
            http, sandbox_clean, sandbox_clean.endpoints["vaults"]["kv-demo"]["resource"]
        )
        ok = http.get(url, headers={"Authorization": f"Bearer {vault_token}"})
        assert ok.status_code == 200
        assert ok.json()["id"].startswith(sandbox_clean.vault_url())
        missing = http.get(
            sandbox_clean.secret_url("nope") + "?api-version=7.5",
            headers={"Authorization": f"Bearer {vault_token}"},
        )
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "SecretNotFound"
        disabled = http.get(
            sandbox_clean.secret_url("disabled-pat") + "?api-version=7.5",
            headers={"Authorization": f"Bearer {vault_token}"},
        )
        assert disabled.status_code == 403
        assert disabled.json()["error"]["code"] == "Forbidden"
        assert disabled.json()["error"]["innererror"]["code"] == "SecretDisabled"
        # Tokens expire.
        sandbox_clean.control.expire_tokens()
        expired = http.get(url, headers={"Authorization": f"Bearer {vault_token}"})
        assert expired.status_code == 401


def _msi_token(http: httpx.Client, sandbox, resource: str) -> str:
    response = http.get(
        sandbox.endpoints["identity"]["msi_endpoint"],
        params={"resource": resource, "api-version": "2019-08-01"},
        headers={"X-IDENTITY-HEADER": sandbox.endpoints["identity"]["identity_header"]},
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def test_default_azure_credential_reaches_the_vault_through_managed_identity(sandbox_env):
    from azure.identity import DefaultAzureCredential

    credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
    assert _client(sandbox_env, credential).get_secret("ws-beta-pat").value == "dapi-beta-admin-0001"


def test_api_version_is_required(sandbox_clean):
    with httpx.Client(verify=sandbox_clean.ca_file) as http:
        token = _msi_token(http, sandbox_clean, sandbox_clean.endpoints["vaults"]["kv-demo"]["resource"])
        response = http.get(
            sandbox_clean.secret_url("ws-beta-pat"), headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadParameter"
