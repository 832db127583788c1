"""Key Vault hook: read one secret by its URL, with the identity of an Airflow Azure connection.

The credential follows the Azure provider's ``azure`` connection: a client id, secret and ``tenantId``
give a service principal; otherwise ``DefaultAzureCredential`` (managed identity, workload identity,
environment), optionally pinned with ``managed_identity_client_id`` / ``workload_identity_tenant_id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.hook import BaseHook

from entra_provisioning.errors import ProvisioningError
from entra_provisioning.hooks.retry_after import MAX_RETRY_AFTER_SECONDS
from entra_provisioning.urls import SecretRef, parse_secret_url

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

DEFAULT_AUTHORITY = "login.microsoftonline.com"

#: Key Vault's retry policy, declared once. azure-core sleeps for whatever ``Retry-After`` says; beyond
#: MAX_RETRY_AFTER_SECONDS we fail the task (Airflow retries it later) instead.
#: azure-core gives up after 3 error statuses by default; throttled vaults answer 429 in bursts, and the
#: challenge round trip is one more request that can be throttled, so allow as many as SCIM does.
MAX_STATUS_RETRIES = 5


class SecretUnavailableError(ProvisioningError):
    """The secret cannot be used: missing, disabled, expired, not yet valid or not readable."""


class KeyVaultUnavailableError(ProvisioningError):
    """Key Vault is throttling, failing or unreachable: worth an Airflow retry, unlike the errors above."""


class _RetryAfterTooLong(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"Retry-After {seconds:.0f} s")
        self.seconds = seconds


def _retry_policy() -> Any:
    """azure-core's retry policy, refusing to sleep longer than :data:`MAX_RETRY_AFTER_SECONDS`."""
    from azure.core.pipeline.policies import RetryPolicy

    class CeilingRetryPolicy(RetryPolicy):
        def get_retry_after(self, response: Any) -> float | None:
            seconds = super().get_retry_after(response)
            if seconds is not None and seconds > MAX_RETRY_AFTER_SECONDS:
                # Not an AzureError, so the policy's own retry loop lets it through.
                raise _RetryAfterTooLong(seconds)
            return seconds

    return CeilingRetryPolicy(retry_status=MAX_STATUS_RETRIES)


@dataclass(frozen=True)
class SecretFacts:
    """What may be said about a secret without revealing it."""

    vault_url: str
    name: str
    version: str
    enabled: bool
    expires_on: datetime | None
    not_before: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "vault_url": self.vault_url,
            "secret_name": self.name,
            "secret_version": self.version,
            "expires_on": self.expires_on.isoformat() if self.expires_on else None,
        }


class KeyVaultSecretHook(BaseHook):
    """Read a secret from Azure Key Vault given its URL.

    :param azure_conn_id: Airflow connection (type ``azure``) whose identity may *get* secrets.
    """

    conn_name_attr = "azure_conn_id"
    default_conn_name = "azure_default"
    conn_type = "azure"
    hook_name = "Azure Key Vault secret by URL"

    def __init__(self, azure_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.azure_conn_id = azure_conn_id

    def get_credential(self) -> TokenCredential:
        """Build the connection's credential the way the Azure provider documents it."""
        conn = self.get_connection(self.azure_conn_id)
        extra = conn.extra_dejson
        tenant = extra.get("tenantId") or extra.get("tenant_id")
        if conn.login and conn.password and tenant:
            from azure.identity import ClientSecretCredential

            return ClientSecretCredential(
                tenant_id=tenant,
                client_id=conn.login,
                client_secret=conn.password,
                authority=extra.get("authority") or DEFAULT_AUTHORITY,
                # Sovereign or private authorities are not in Microsoft's instance-discovery list.
                disable_instance_discovery=bool(extra.get("disable_instance_discovery", False)),
            )
        from airflow.providers.microsoft.azure.utils import get_sync_default_azure_credential

        return get_sync_default_azure_credential(
            managed_identity_client_id=extra.get("managed_identity_client_id"),
            workload_identity_tenant_id=extra.get("workload_identity_tenant_id"),
        )

    def get_secret(self, secret_url: str, version: str | None = None) -> tuple[str, SecretFacts]:
        """Read the secret's value and facts.

        :param secret_url: ``https://<vault>.vault.azure.net/secrets/<name>[/<version>]``.
        :param version: pin this version (overrides a version in the URL).
        :raises SecretUnavailableError: with a message naming the vault and secret (never the value).
        """
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )
        from azure.keyvault.secrets import SecretClient

        ref: SecretRef = parse_secret_url(secret_url)
        wanted = version or ref.version
        where = f"secret {ref.name!r} in {ref.vault_url}" + (f" (version {wanted})" if wanted else "")
        client = SecretClient(
            vault_url=ref.vault_url, credential=self.get_credential(), retry_policy=_retry_policy()
        )
        try:
            secret = client.get_secret(ref.name, wanted)
        except ResourceNotFoundError:
            raise SecretUnavailableError(f"{where} does not exist") from None
        except ClientAuthenticationError as exc:
            raise SecretUnavailableError(
                f"could not authenticate to Key Vault for {where} with connection {self.azure_conn_id!r}: "
                f"{_first_line(exc)}"
            ) from None
        except HttpResponseError as exc:
            if exc.status_code == 403:
                if _is_disabled(exc):
                    raise SecretUnavailableError(f"{where} is disabled") from None
                raise SecretUnavailableError(
                    f"the identity of connection {self.azure_conn_id!r} may not read {where} "
                    f"(HTTP 403: grant it 'get' on secrets): {_first_line(exc)}"
                ) from None
            if exc.status_code is not None and (exc.status_code == 429 or exc.status_code >= 500):
                raise KeyVaultUnavailableError(
                    f"Key Vault kept answering HTTP {exc.status_code} for {where}; Airflow will retry the task"
                ) from None
            raise SecretUnavailableError(f"Key Vault answered HTTP {exc.status_code} for {where}") from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise KeyVaultUnavailableError(
                f"Key Vault {ref.vault_url} is unreachable: {_first_line(exc)}"
            ) from None
        except _RetryAfterTooLong as exc:
            raise KeyVaultUnavailableError(
                f"Key Vault asked to retry reading {where} after {exc.seconds:.0f} s, more than the "
                f"{MAX_RETRY_AFTER_SECONDS:.0f} s ceiling; failing so that Airflow can retry the task later"
            ) from None
        finally:
            client.close()

        props = secret.properties
        facts = SecretFacts(
            vault_url=ref.vault_url,
            name=ref.name,
            version=props.version or "",
            enabled=props.enabled is not False,
            expires_on=props.expires_on,
            not_before=props.not_before,
        )
        now = datetime.now(UTC)
        if not facts.enabled:
            raise SecretUnavailableError(f"{where} is disabled")
        if facts.expires_on is not None and facts.expires_on <= now:
            raise SecretUnavailableError(f"{where} expired on {facts.expires_on.isoformat()}")
        if facts.not_before is not None and facts.not_before > now:
            raise SecretUnavailableError(f"{where} is not valid before {facts.not_before.isoformat()}")
        if not secret.value:
            raise SecretUnavailableError(f"{where} is empty")
        return secret.value, facts


def _is_disabled(exc: Any) -> bool:
    text = f"{getattr(exc, 'error', '')} {exc}".lower()
    return "disabled" in text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
