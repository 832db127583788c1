"""Entra ID hook: find groups and list their transitive members through Microsoft Graph (msgraph-sdk).

The Graph client comes from the Azure provider's ``msgraph`` connection (client secret or certificate,
host, authority, proxies, as the provider documents). Paging follows ``@odata.nextLink`` only while it
stays on the Graph host the connection names: a link elsewhere would carry our bearer token off-site.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from airflow.sdk.bases.hook import BaseHook

from entra_provisioning.errors import ProvisioningError
from entra_provisioning.hooks.retry_after import MAX_RETRY_AFTER_SECONDS, parse_retry_after
from entra_provisioning.identities import is_object_id

if TYPE_CHECKING:
    from msgraph import GraphServiceClient

#: Graph serves 100 objects a page by default and at most 999.
PAGE_SIZE = 999
MEMBER_FIELDS = ("id", "userPrincipalName", "mail", "displayName", "accountEnabled", "userType")
GROUP_TYPE = "#microsoft.graph.group"

#: Retry policy for Graph, declared once. msgraph-sdk's middleware retries 429, 503 and 504 a few times;
#: this outer policy also covers 500, 502 and dropped connections, which the middleware does not, and
#: keeps the total bounded. What still fails after it is left to Airflow's task retries.
MAX_ATTEMPTS = 5
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0

_T = TypeVar("_T")


class GraphError(ProvisioningError):
    """Graph refused or failed a request we cannot do without."""


class GraphUnavailableError(GraphError):
    """Graph kept throttling or failing transiently; unlike other errors, worth an Airflow retry."""


class GroupNotFoundError(GraphError):
    """No group has the configured name or id."""


class AmbiguousGroupError(GraphError):
    """Several groups share the configured display name."""


def escape_odata_string(value: str) -> str:
    """Quote a value for an OData string literal: a single quote is written twice."""
    return value.replace("'", "''")


def _odata_error(exc: Exception) -> tuple[int | None, str]:
    status = getattr(exc, "response_status_code", None)
    error = getattr(exc, "error", None)
    text = str(exc).strip()
    message = getattr(error, "message", None) or (text.splitlines()[0] if text else "")
    return status, message or type(exc).__name__


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(exc, "response_headers", None) or {}
    value = next((v for k, v in dict(headers).items() if str(k).lower() == "retry-after"), None)
    return parse_retry_after(value)


def _is_transient(exc: BaseException) -> bool:
    import httpx
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, ODataError) and getattr(exc, "response_status_code", None) in TRANSIENT_STATUSES


def _describe(exc: Exception) -> str:
    status = getattr(exc, "response_status_code", None)
    if status is None:
        return f"{type(exc).__name__} (connection failed)"
    return f"HTTP {status}: {_odata_error(exc)[1]}"


class EntraGroupsHook(BaseHook):
    """Resolve Entra ID groups to their transitive members.

    :param msgraph_conn_id: Airflow connection of type ``msgraph``; its app needs the Graph application
        permissions ``GroupMember.Read.All`` and ``User.Read.All``.
    :param page_size: objects per Graph page (1-999).
    """

    conn_name_attr = "msgraph_conn_id"
    default_conn_name = "msgraph_default"
    conn_type = "msgraph"
    hook_name = "Entra ID groups (Microsoft Graph)"

    def __init__(self, msgraph_conn_id: str = default_conn_name, page_size: int = PAGE_SIZE) -> None:
        super().__init__()
        if not 1 <= page_size <= PAGE_SIZE:
            raise ValueError(f"page_size must be 1 to {PAGE_SIZE}")
        self.msgraph_conn_id = msgraph_conn_id
        self.page_size = page_size
        self.pages_read = 0
        self.retries = 0

    async def _with_retries(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run one Graph call under the retry policy; non-transient errors pass through untouched.

        :raises GraphUnavailableError: when the call still fails transiently after the last attempt, or
            Graph asks to wait longer than :data:`MAX_RETRY_AFTER_SECONDS`.
        """
        import tenacity

        async def attempt() -> _T:
            try:
                return await call()
            except Exception as exc:
                hint = _retry_after(exc) if _is_transient(exc) else None
                if hint is not None and hint > MAX_RETRY_AFTER_SECONDS:
                    raise GraphUnavailableError(
                        f"Microsoft Graph asked to retry {what} after {hint:.0f} s, more than the "
                        f"{MAX_RETRY_AFTER_SECONDS:.0f} s ceiling; failing so that Airflow can retry the task later"
                    ) from None
                raise

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            hint = _retry_after(exc) if exc is not None else None
            if hint is not None:
                return hint
            return min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (state.attempt_number - 1))

        def before_sleep(state: tenacity.RetryCallState) -> None:
            self.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            self.log.info(
                "Graph call failed while %s (%s); attempt %d of %d",
                what,
                _describe(exc) if isinstance(exc, Exception) else "unknown error",
                state.attempt_number,
                MAX_ATTEMPTS,
            )

        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(MAX_ATTEMPTS),
            wait=wait,
            retry=tenacity.retry_if_exception(_is_transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return await retrying(attempt)
        except Exception as exc:
            if not _is_transient(exc):
                raise
            raise GraphUnavailableError(
                f"Microsoft Graph kept failing while {what} ({_describe(exc)}, {MAX_ATTEMPTS} attempts); "
                "Airflow will retry the task"
            ) from None

    async def _client(self, provider_hook: Any) -> tuple[GraphServiceClient, str]:
        from msgraph import GraphServiceClient

        adapter = await provider_hook.get_async_conn()
        # The provider keeps a trailing slash on the base URL; the SDK's templates add their own.
        adapter.base_url = adapter.base_url.rstrip("/")
        # The provider's adapter already carries the connection's host, API version, proxies and
        # credential; the typed client only adds request builders on top of it.
        client = GraphServiceClient(request_adapter=adapter)
        return client, urlsplit(adapter.base_url).netloc.lower()

    @staticmethod
    async def _get_json(builder: Any, config: Any) -> dict[str, Any]:
        """GET what an msgraph-sdk request builder describes, through its adapter, as plain JSON.

        The request is the SDK's own (URL template, query options, headers) and goes through the
        connection's adapter (credential, allowed hosts, retry middleware). Only the typed models are
        skipped: deserialising a page into them costs about 5 ms per directory object (every object
        rebuilds the SDK's table of hundreds of field parsers), which is minutes for 100,000 members,
        and the first use imports the whole model package (seconds). JSON is what we keep anyway.

        :raises ODataError: for an error response, as the typed call would.
        """
        from msgraph.generated.models.o_data_errors.o_data_error import ODataError

        request = builder.to_get_request_information(config)
        raw = await builder.request_adapter.send_primitive_async(request, "bytes", {"XXX": ODataError})
        body = json.loads(raw) if raw else {}
        return body if isinstance(body, dict) else {}

    def members_by_group(self, groups: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """For each configured group (display name or object id), its transitive member objects.

        Each object is a plain dict with ``@odata.type`` and :data:`MEMBER_FIELDS`. Nested groups are
        expanded by Graph and left out here; users, service principals, devices and contacts are kept so
        that the caller can report what it skips.

        :raises GroupNotFoundError, AmbiguousGroupError, GraphError: naming the group.
        """
        return asyncio.run(self._members_by_group(groups))

    async def _members_by_group(self, groups: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        from airflow.providers.microsoft.azure.hooks.msgraph import KiotaRequestAdapterHook

        provider_hook = KiotaRequestAdapterHook(conn_id=self.msgraph_conn_id)
        try:
            client, graph_host = await self._client(provider_hook)
            result: dict[str, list[dict[str, Any]]] = {}
            for group in groups:
                group_id = await self._group_id(client, group)
                result[group] = await self._transitive_members(client, graph_host, group, group_id)
            return result
        finally:
            # The adapter lives in this task's event loop, which ends with this call.
            await provider_hook.close()

    async def _group_id(self, client: GraphServiceClient, group: str) -> str:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.groups.groups_request_builder import GroupsRequestBuilder
        from msgraph.generated.groups.item.group_item_request_builder import GroupItemRequestBuilder
        from msgraph.generated.models.o_data_errors.o_data_error import ODataError

        try:
            if is_object_id(group):
                item_query = GroupItemRequestBuilder.GroupItemRequestBuilderGetQueryParameters(
                    select=["id", "displayName"]
                )
                found = await self._with_retries(
                    f"looking up Entra group {group!r}",
                    lambda: self._get_json(
                        client.groups.by_group_id(group), RequestConfiguration(query_parameters=item_query)
                    ),
                )
                if not found.get("id"):
                    raise GroupNotFoundError(f"Entra group with object id {group!r} not found")
                return str(found["id"])
            query = GroupsRequestBuilder.GroupsRequestBuilderGetQueryParameters(
                filter=f"displayName eq '{escape_odata_string(group)}'", select=["id", "displayName"], top=5
            )
            page = await self._with_retries(
                f"looking up Entra group {group!r}",
                lambda: self._get_json(client.groups, RequestConfiguration(query_parameters=query)),
            )
        except ODataError as exc:
            status, message = _odata_error(exc)
            if status == 404:
                raise GroupNotFoundError(f"no Entra group has the object id {group!r}") from None
            raise GraphError(f"looking up Entra group {group!r} failed (HTTP {status}): {message}") from None
        matches = [g for g in page.get("value") or [] if isinstance(g, dict) and g.get("id")]
        if not matches:
            raise GroupNotFoundError(
                f"no Entra group has the display name {group!r} (names are matched exactly; "
                "an object id may be given instead)"
            )
        if len(matches) > 1:
            ids = ", ".join(sorted(str(g["id"]) for g in matches))
            raise AmbiguousGroupError(
                f"{len(matches)} Entra groups have the display name {group!r} ({ids}); "
                "put the object id of the intended one in entra_groups"
            )
        return str(matches[0]["id"])

    async def _transitive_members(
        self, client: GraphServiceClient, graph_host: str, group: str, group_id: str
    ) -> list[dict[str, Any]]:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.groups.item.transitive_members.transitive_members_request_builder import (
            TransitiveMembersRequestBuilder,
        )
        from msgraph.generated.models.o_data_errors.o_data_error import ODataError

        builder = client.groups.by_group_id(group_id).transitive_members
        query = TransitiveMembersRequestBuilder.TransitiveMembersRequestBuilderGetQueryParameters(
            select=list(MEMBER_FIELDS), top=self.page_size, count=True
        )
        config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=query)
        # $count is an advanced query: Graph requires eventual consistency for it.
        config.headers.add("ConsistencyLevel", "eventual")
        members: list[dict[str, Any]] = []
        try:
            what = f"listing members of Entra group {group!r}"
            page = await self._with_retries(what, lambda: self._get_json(builder, config))
            while page:
                self.pages_read += 1
                members.extend(_as_dict(obj) for obj in page.get("value") or [] if _keep(obj))
                next_link = page.get("@odata.nextLink")
                if not next_link:
                    break
                if urlsplit(next_link).netloc.lower() != graph_host or urlsplit(next_link).scheme != "https":
                    raise GraphError(
                        f"Graph returned a next page link for group {group!r} on another host "
                        f"({urlsplit(next_link).netloc}); refusing to send the token there"
                    )
                next_config: RequestConfiguration[Any] = RequestConfiguration()
                next_config.headers.add("ConsistencyLevel", "eventual")
                next_builder = builder.with_url(next_link)
                page = await self._with_retries(
                    what, functools.partial(self._get_json, next_builder, next_config)
                )
        except ODataError as exc:
            status, message = _odata_error(exc)
            hint = " (the app needs GroupMember.Read.All and User.Read.All)" if status == 403 else ""
            raise GraphError(
                f"listing members of Entra group {group!r} failed (HTTP {status}){hint}: {message}"
            ) from None
        return members


def _keep(obj: Any) -> bool:
    # Nested groups are containers: Graph already expanded them into transitive members.
    return isinstance(obj, Mapping) and str(obj.get("@odata.type") or "").lower() != GROUP_TYPE


def _as_dict(obj: Mapping[str, Any]) -> dict[str, Any]:
    # Only the fields the plan reads, whatever else a page carries.
    return {"@odata.type": obj.get("@odata.type"), **{name: obj.get(name) for name in MEMBER_FIELDS}}
