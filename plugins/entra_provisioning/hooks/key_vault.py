"""Key Vault hook: read one secret by its URL, with the identity of an Airflow Azure connection.

The credential follows the Azure provider's ``azure`` connection: a client id, secret and ``tenantId``
give a service principal; otherwise ``DefaultAzureCredential`` (managed identity, workload identity,
environment), optionally pinned with ``managed_identity_client_id`` / ``workload_identity_tenant_id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.bases.hook import BaseHook

from entra_provisioning.errors import ErrorTable, PermanentError, TransientError
from entra_provisioning.hooks import quiet_sdk_loggers
from entra_provisioning.retry import RetryPolicy, parse_retry_after
from entra_provisioning.urls import SecretRef, parse_secret_url

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

DEFAULT_AUTHORITY = "login.microsoftonline.com"


class SecretUnavailableError(PermanentError):
    """The secret cannot be used: missing, disabled, expired, not yet valid or not readable."""


class SecretNotFoundError(SecretUnavailableError):
    """No secret (or version) of that name (HTTP 404, ``SecretNotFound``)."""


class SecretDisabledError(SecretUnavailableError):
    """The secret (version) is disabled (HTTP 403, ``innererror.code`` ``SecretDisabled``)."""


class KeyVaultPermissionError(SecretUnavailableError):
    """The connection's identity may not read the secret (HTTP 403 for any other reason)."""


class KeyVaultUnavailableError(TransientError):
    """Key Vault is throttling, failing or unreachable: worth an Airflow retry, unlike the errors above."""


class KeyVaultUnreachableError(KeyVaultUnavailableError):
    """No answer from the vault at all (refused, reset or timed out)."""


#: Key Vault's answers by status and by ``error.innererror.code`` (or ``error.code``).
KEY_VAULT_ERRORS = ErrorTable(
    server_error=KeyVaultUnavailableError,
    client_error=SecretUnavailableError,
    by_status={
        403: KeyVaultPermissionError,
        404: SecretNotFoundError,
        429: KeyVaultUnavailableError,
    },
    by_code={
        "SecretDisabled": SecretDisabledError,
        "SecretNotFound": SecretNotFoundError,
        "Throttled": KeyVaultUnavailableError,
    },
)

#: azure-core's own retries are off for our client (RetryPolicy.no_retries): this is the only layer.
#: Ten attempts, azure-core's own default total: throttled vaults answer 429 in bursts, and the
#: unauthenticated challenge request that starts every client can be throttled too. The deadline, not the
#: count, bounds the time.
KEY_VAULT_RETRY_POLICY = RetryPolicy(attempts=10, backoff_base=0.5, backoff_max=10.0)


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

    #: The policy of every instance not given its own (tests swap in a faster one).
    default_retry_policy: ClassVar[RetryPolicy] = KEY_VAULT_RETRY_POLICY

    def __init__(
        self, azure_conn_id: str = default_conn_name, retry_policy: RetryPolicy | None = None
    ) -> None:
        super().__init__()
        self.azure_conn_id = azure_conn_id
        self.retry_policy = retry_policy or self.default_retry_policy

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
            ServiceRequestError,
            ServiceResponseError,
        )
        from azure.core.pipeline.policies import RetryPolicy as AzureRetryPolicy
        from azure.keyvault.secrets import SecretClient

        ref: SecretRef = parse_secret_url(secret_url)
        wanted = version or ref.version
        where = f"secret {ref.name!r} in {ref.vault_url}" + (f" (version {wanted})" if wanted else "")
        quiet_sdk_loggers()
        client = SecretClient(
            vault_url=ref.vault_url,
            credential=self.get_credential(),
            retry_policy=AzureRetryPolicy.no_retries(),
        )

        def attempt() -> Any:
            try:
                return client.get_secret(ref.name, wanted)
            except ClientAuthenticationError as exc:
                raise SecretUnavailableError(
                    f"could not authenticate to Key Vault for {where} with connection {self.azure_conn_id!r}: "
                    f"{_first_line(exc)}"
                ) from None
            except HttpResponseError as exc:
                kind = KEY_VAULT_ERRORS.classify(exc.status_code, _error_code(exc))
                if issubclass(kind, TransientError):
                    headers: Any = getattr(exc.response, "headers", None) or {}
                    retry_after = parse_retry_after(headers.get("Retry-After"))
                    raise kind(f"HTTP {exc.status_code}", retry_after=retry_after) from None
                raise kind(_message(kind, where, self.azure_conn_id, exc)) from None
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise KeyVaultUnreachableError(_first_line(exc)) from None

        def give_up(exc: TransientError, attempts: int) -> BaseException:
            if self.retry_policy.too_long(exc.retry_after):
                return KeyVaultUnavailableError(
                    self.retry_policy.ceiling_message("Key Vault", exc.retry_after or 0.0, f"reading {where}")
                )
            if isinstance(exc, KeyVaultUnreachableError):
                return KeyVaultUnavailableError(
                    f"Key Vault {ref.vault_url} is unreachable: {exc} ({attempts} attempts)"
                )
            return KeyVaultUnavailableError(
                f"Key Vault kept answering {exc} for {where} ({attempts} attempts); Airflow will retry the task"
            )

        try:
            secret = self.retry_policy.call(
                attempt, what=f"Key Vault read of {where}", log=self.log, give_up=give_up
            )
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
            raise SecretDisabledError(f"{where} is disabled")
        if facts.expires_on is not None and facts.expires_on <= now:
            raise SecretUnavailableError(f"{where} expired on {facts.expires_on.isoformat()}")
        if facts.not_before is not None and facts.not_before > now:
            raise SecretUnavailableError(f"{where} is not valid before {facts.not_before.isoformat()}")
        if not secret.value:
            raise SecretUnavailableError(f"{where} is empty")
        return secret.value, facts


def _error_code(exc: Any) -> str | None:
    """Key Vault's own error code: ``error.innererror.code`` where it has one, else ``error.code``."""
    error = getattr(exc, "error", None)
    inner = getattr(error, "innererror", None) or {}
    code = inner.get("code") if isinstance(inner, dict) else None
    return code or getattr(error, "code", None)


def _message(kind: type[Exception], where: str, conn_id: str, exc: Any) -> str:
    if kind is SecretNotFoundError:
        return f"{where} does not exist"
    if kind is SecretDisabledError:
        return f"{where} is disabled"
    if kind is KeyVaultPermissionError:
        return (
            f"the identity of connection {conn_id!r} may not read {where} "
            f"(HTTP 403: grant it 'get' on secrets): {_first_line(exc)}"
        )
    return f"Key Vault answered HTTP {exc.status_code} for {where}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
