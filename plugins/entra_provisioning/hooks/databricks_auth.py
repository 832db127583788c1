"""Tokens for the Databricks APIs from an Airflow connection of the Databricks provider's type.

The connection supplies credentials only; the workspace entry decides which host they are for. Which
credential a connection holds is read from the provider's documented fields:

================================  ==========================================  ===========================
connection                        how the token is obtained                   by
================================  ==========================================  ===========================
login + password + extra          Entra ID client credentials for the Azure   the provider; with
``azure_tenant_id``               Databricks resource                         ``azure_ad_endpoint`` (which
                                                                              it ignores), azure-identity
extra ``use_default_azure_        ``DefaultAzureCredential`` (workload        the provider; with
credential``                      identity, ``IDENTITY_ENDPOINT``, …)         ``azure_managed_identity_
                                                                              client_id``, azure-identity
extra ``use_azure_managed_        ``ManagedIdentityCredential``               azure-identity (the
identity``                                                                    provider first probes the
                                                                              VM metadata endpoint)
extra ``service_principal_        Databricks OAuth M2M: client credentials    this module (the provider
oauth`` + login + password        at the workspace's ``/oidc/v1/token`` or    knows only the workspace
                                  the account's                               endpoint)
                                  ``/oidc/accounts/<id>/v1/token``
password alone (or extra          a personal access token (workspace target   —
``token``)                        only)
================================  ==========================================  ===========================

Nothing here sends a Databricks request through the provider's ``_do_api_call`` (it logs request headers
at debug level): the token is handed to our own SCIM hook, which sends it to the configured host alone.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit

from airflow.sdk.bases.hook import BaseHook

from entra_provisioning import USER_AGENT
from entra_provisioning.errors import PermanentError, TransientError

#: The Azure Databricks resource (application id) Entra ID tokens are issued for: the provider's
#: ``DEFAULT_DATABRICKS_SCOPE`` (a test keeps the two equal; the provider is imported only when used).
DATABRICKS_RESOURCE = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d"
#: A token with less than this left is refreshed before its next use: the provider's
#: ``TOKEN_REFRESH_LEAD_TIME`` (kept equal by the same test).
REFRESH_LEAD_SECONDS = 120.0

ENTRA_SERVICE_PRINCIPAL = "Entra ID service principal"
DEFAULT_CREDENTIAL = "Azure default credential"
MANAGED_IDENTITY = "managed identity"
OAUTH_M2M = "Databricks OAuth M2M"
PERSONAL_ACCESS_TOKEN = "personal access token"


class DatabricksCredentialError(PermanentError):
    """The connection cannot give a usable token for this entry (wrong kind, wrong host, refused)."""


class DatabricksCredentialUnavailableError(TransientError):
    """The token service did not answer usefully; an Airflow retry may succeed."""


def _origin_of(host: str) -> str:
    """``https://host[:port]`` from a connection's host field, which may omit the scheme."""
    text = host.strip().rstrip("/")
    parts = urlsplit(text if "://" in text else f"https://{text}")
    netloc = (parts.hostname or "").lower()
    if parts.port not in (None, 443):
        netloc = f"{netloc}:{parts.port}"
    return f"https://{netloc}"


class DatabricksConnectionTokens(BaseHook):
    """Obtain (and refresh) Databricks API tokens from one Airflow ``databricks`` connection.

    :param databricks_conn_id: the Airflow connection.
    :param allowed_origins: the origins this entry will send the token to (the workspace, or the account
        host and the workspace); a connection that names another host is refused.
    :param token_origin: where a Databricks OAuth M2M token is requested: the workspace origin, or the
        account host (with ``account_id``).
    :param account_id: the account, when ``token_origin`` is the account host.
    :param allow_pat: whether a personal access token in the connection is acceptable (workspace target).
    """

    hook_name = "Databricks tokens (Entra provisioning)"
    #: Databricks OAuth M2M: how long the token request may take.
    timeout_seconds_oauth: ClassVar[float] = 30.0

    def __init__(
        self,
        databricks_conn_id: str,
        *,
        allowed_origins: tuple[str, ...],
        token_origin: str,
        account_id: str | None = None,
        allow_pat: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.databricks_conn_id = databricks_conn_id
        self.allowed_origins = tuple(_origin_of(origin) for origin in allowed_origins)
        self.token_origin = _origin_of(token_origin)
        self.account_id = account_id
        self.allow_pat = allow_pat
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self.expires_on: float | None = None
        self.refreshes = 0

    def __repr__(self) -> str:  # never show a token, even in a traceback
        return f"{type(self).__name__}(conn_id={self.databricks_conn_id!r}, method={self.method!r})"

    # ------------------------------------------------------------------------------------ what it holds

    @functools.cached_property
    def provider_hook(self) -> Any:
        """The Databricks provider's hook on the same connection: its Entra ID token code is reused."""
        from airflow.providers.databricks.hooks.databricks_base import BaseDatabricksHook

        return BaseDatabricksHook(databricks_conn_id=self.databricks_conn_id, caller="entra-provisioning")

    @functools.cached_property
    def databricks_conn(self) -> Any:
        # Read directly: the provider (and aiohttp, which it imports) is loaded only for its own token paths.
        return self.get_connection(self.databricks_conn_id)

    @property
    def extras(self) -> dict[str, Any]:
        return dict(self.databricks_conn.extra_dejson or {})

    @property
    def method(self) -> str:
        """Which kind of credential the connection holds (see the module's table)."""
        extras, conn = self.extras, self.databricks_conn
        if extras.get("service_principal_oauth"):
            return OAUTH_M2M
        if "azure_tenant_id" in extras:
            return ENTRA_SERVICE_PRINCIPAL
        if extras.get("use_azure_managed_identity"):
            return MANAGED_IDENTITY
        if extras.get("use_default_azure_credential"):
            return DEFAULT_CREDENTIAL
        if extras.get("token") or (conn.password and not conn.login):
            return PERSONAL_ACCESS_TOKEN
        raise DatabricksCredentialError(
            f"connection {self.databricks_conn_id!r} holds no credential this job can use: give login, "
            "password and extra azure_tenant_id (Entra service principal), extra use_default_azure_credential "
            "or use_azure_managed_identity (managed or workload identity), extra service_principal_oauth with "
            "login and password (Databricks OAuth M2M), or a personal access token as password"
        )

    def check(self) -> str:
        """Refuse a connection whose host names another workspace or account, or whose kind cannot serve
        this entry; returns the credential kind.

        :raises DatabricksCredentialError: naming the connection and what is wrong.
        """
        method = self.method
        named = self.extras.get("host") or self.databricks_conn.host
        if named:
            origin = _origin_of(str(named))
            if origin not in self.allowed_origins:
                raise DatabricksCredentialError(
                    f"connection {self.databricks_conn_id!r} names host {origin}, but this workspace entry "
                    f"provisions {' and '.join(self.allowed_origins)}: its credentials stay with the host "
                    "their owner meant. Clear the connection's host or point it at this entry's host"
                )
        conn_account = self.extras.get("account_id")
        if conn_account and self.account_id and str(conn_account).lower() != self.account_id.lower():
            raise DatabricksCredentialError(
                f"connection {self.databricks_conn_id!r} is for account {conn_account}, but this entry "
                f"provisions account {self.account_id}"
            )
        if method == PERSONAL_ACCESS_TOKEN and not self.allow_pat:
            raise DatabricksCredentialError(
                f"connection {self.databricks_conn_id!r} holds a personal access token, which the account API "
                "does not accept; use an Entra service principal, a managed identity or OAuth M2M"
            )
        return method

    # ------------------------------------------------------------------------------------------ tokens

    def token(self) -> str:
        """A token valid for at least :data:`REFRESH_LEAD_SECONDS` more; refreshed when needed.

        Safe to call from several threads (the SCIM hook's create workers call it per request).
        """
        with self._lock:
            now = self._clock()
            if self._token is not None and (
                self.expires_on is None or self.expires_on - now > REFRESH_LEAD_SECONDS
            ):
                return self._token
            self._token, self.expires_on = self._fetch(self.check())
            self.refreshes += 1
            return self._token

    def _fetch(self, method: str) -> tuple[str, float | None]:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            if method == PERSONAL_ACCESS_TOKEN:
                return str(self.extras.get("token") or self.databricks_conn.password), None
            if method == OAUTH_M2M:
                return self._oauth_m2m()
            if method == MANAGED_IDENTITY:
                from azure.identity import ManagedIdentityCredential

                client_id = self.extras.get("azure_managed_identity_client_id")
                with ManagedIdentityCredential(client_id=client_id) as credential:
                    access = credential.get_token(f"{DATABRICKS_RESOURCE}/.default")
                return access.token, float(access.expires_on)
            if method == ENTRA_SERVICE_PRINCIPAL and self.extras.get("azure_ad_endpoint"):
                # The provider lists azure_ad_endpoint among its extras but does not pass it on: a sovereign
                # cloud's (or a private) authority would be ignored. Honour it, without asking the public
                # cloud's instance discovery about an authority it cannot know.
                from azure.identity import ClientSecretCredential

                conn = self.databricks_conn
                with ClientSecretCredential(
                    self.extras["azure_tenant_id"],
                    conn.login,
                    conn.password,
                    authority=self.extras["azure_ad_endpoint"],
                    disable_instance_discovery=True,
                ) as credential:
                    access = credential.get_token(f"{DATABRICKS_RESOURCE}/.default")
                return access.token, float(access.expires_on)
            if method == DEFAULT_CREDENTIAL and self.extras.get("azure_managed_identity_client_id"):
                # The provider's default-credential path does not pass a user-assigned identity's client id.
                from azure.identity import DefaultAzureCredential

                with DefaultAzureCredential(
                    managed_identity_client_id=self.extras["azure_managed_identity_client_id"]
                ) as credential:
                    access = credential.get_token(f"{DATABRICKS_RESOURCE}/.default")
                return access.token, float(access.expires_on)
            # The provider's own Entra ID code: client credentials, or DefaultAzureCredential.
            provider = self.provider_hook
            provider.oauth_tokens.pop(DATABRICKS_RESOURCE, None)
            if method == ENTRA_SERVICE_PRINCIPAL:
                token = provider._get_aad_token(DATABRICKS_RESOURCE)
            else:
                token = provider._get_aad_token_for_default_az_credential(DATABRICKS_RESOURCE)
            expires = provider.oauth_tokens.get(DATABRICKS_RESOURCE, {}).get("expires_on")
            return token, float(expires) if expires is not None else None
        except ClientAuthenticationError as exc:
            raise DatabricksCredentialError(
                f"Entra ID refused a token for Databricks to connection {self.databricks_conn_id!r} ({method}): "
                f"{str(exc).splitlines()[0][:300]}"
            ) from None
        except (DatabricksCredentialError, DatabricksCredentialUnavailableError):
            raise
        except Exception as exc:  # the provider wraps its failures in AirflowException, and so on
            raise DatabricksCredentialUnavailableError(
                f"could not obtain a Databricks token from connection {self.databricks_conn_id!r} ({method}): "
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            ) from None

    def _oauth_m2m(self) -> tuple[str, float]:
        import httpx

        conn = self.databricks_conn
        if not conn.login or not conn.password:
            raise DatabricksCredentialError(
                f"connection {self.databricks_conn_id!r} asks for OAuth M2M (service_principal_oauth) but lacks "
                "the service principal's client id (login) or OAuth secret (password)"
            )
        path = f"/oidc/accounts/{self.account_id}/v1/token" if self.account_id else "/oidc/v1/token"
        try:
            response = httpx.post(
                f"{self.token_origin}{path}",
                data={"grant_type": "client_credentials", "scope": "all-apis"},
                auth=(conn.login, conn.password),
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                timeout=self.timeout_seconds_oauth,
                follow_redirects=False,
            )
        except httpx.HTTPError as exc:
            raise DatabricksCredentialUnavailableError(
                f"the Databricks OAuth token endpoint {self.token_origin}{path} did not answer ({type(exc).__name__})"
            ) from None
        body: Any = (
            response.json() if response.content and "json" in response.headers.get("content-type", "") else {}
        )
        if response.status_code >= 500 or response.status_code == 429:
            raise DatabricksCredentialUnavailableError(
                f"the Databricks OAuth token endpoint answered HTTP {response.status_code}"
            )
        if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            detail = body.get("error_description") or body.get("error") if isinstance(body, dict) else None
            raise DatabricksCredentialError(
                f"Databricks refused an OAuth M2M token to connection {self.databricks_conn_id!r} "
                f"(HTTP {response.status_code} from {self.token_origin}{path}): {detail or 'no detail'}"
            )
        return str(body["access_token"]), self._clock() + float(body.get("expires_in") or 3600)
