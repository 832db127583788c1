"""Entra ID hook: find groups and list their transitive members through Microsoft Graph (msgraph-sdk).

The Graph client comes from the Azure provider's ``msgraph`` connection (client secret or certificate,
host, authority, proxies, as the provider documents). Paging follows ``@odata.nextLink`` only while it
stays on the Graph host the connection names: a link elsewhere would carry our bearer token off-site.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from airflow.sdk.bases.hook import BaseHook

from entra_provisioning import USER_AGENT
from entra_provisioning.errors import ErrorTable, PermanentError, TransientError
from entra_provisioning.hooks import PROVIDER_HOOK_LOGGER, quiet_sdk_loggers
from entra_provisioning.identities import is_object_id
from entra_provisioning.retry import RetryPolicy, parse_retry_after

if TYPE_CHECKING:
    from msgraph import GraphServiceClient

#: Graph serves 100 objects a page by default and at most 999.
PAGE_SIZE = 999
MEMBER_FIELDS = ("id", "userPrincipalName", "mail", "displayName", "accountEnabled", "userType")
#: Selected too when service principals are provisioned; Graph fills it in for a member service
#: principal only when the app holds Application.Read.All.
APP_ID_FIELD = "appId"
GROUP_TYPE = "#microsoft.graph.group"

_T = TypeVar("_T")


class GraphError(PermanentError):
    """Graph refused a request we cannot do without; a retry will not change that."""


class GraphPermissionError(GraphError):
    """The app lacks a Graph permission (HTTP 403, ``Authorization_RequestDenied``)."""


class GroupNotFoundError(GraphError):
    """No group has the configured name or id."""


class AmbiguousGroupError(GraphError):
    """Several groups share the configured display name."""


class GraphUnavailableError(TransientError):
    """Graph kept throttling or failing transiently (or asked to wait past the ceiling): worth a retry."""


#: Graph's answers by status and by ``error.code``. Only throttling and server-side failures are retried.
GRAPH_ERRORS = ErrorTable(
    server_error=GraphUnavailableError,
    client_error=GraphError,
    by_status={403: GraphPermissionError, 404: GroupNotFoundError, 429: GraphUnavailableError},
    by_code={
        "Authorization_RequestDenied": GraphPermissionError,
        "Request_ResourceNotFound": GroupNotFoundError,
        "TooManyRequests": GraphUnavailableError,
        "activityLimitReached": GraphUnavailableError,
        "serviceNotAvailable": GraphUnavailableError,
    },
)

#: Graph's retries live in one layer, ours: kiota's RetryHandler (in the adapter the provider builds)
#: would otherwise sleep any Retry-After up to 180 s, three times per request, before we see a 429.
GRAPH_RETRY_POLICY = RetryPolicy(attempts=5, backoff_base=1.0, backoff_max=30.0)


def escape_odata_string(value: str) -> str:
    """Quote a value for an OData string literal: a single quote is written twice."""
    return value.replace("'", "''")


def _odata_error(exc: Exception) -> tuple[int | None, str | None, str]:
    """Status, Graph's ``error.code`` and a one-line message of an ODataError."""
    status = getattr(exc, "response_status_code", None)
    error = getattr(exc, "error", None)
    text = str(exc).strip()
    message = getattr(error, "message", None) or (text.splitlines()[0] if text else "")
    return status, getattr(error, "code", None), message or type(exc).__name__


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(exc, "response_headers", None) or {}
    value = next((v for k, v in dict(headers).items() if str(k).lower() == "retry-after"), None)
    return parse_retry_after(value)


def _request_config(query: Any = None) -> Any:
    """A request configuration with our User-Agent and kiota's own retries switched off."""
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from kiota_http.middleware.options import RetryHandlerOption

    config: RequestConfiguration[Any] = RequestConfiguration(
        query_parameters=query, options=[RetryHandlerOption(delay=0, max_retries=0, should_retry=False)]
    )
    config.headers.add("User-Agent", USER_AGENT)
    return config


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

    #: The policy of every instance not given its own (tests swap in a faster one).
    default_retry_policy: ClassVar[RetryPolicy] = GRAPH_RETRY_POLICY

    def __init__(
        self,
        msgraph_conn_id: str = default_conn_name,
        page_size: int = PAGE_SIZE,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= page_size <= PAGE_SIZE:
            raise ValueError(f"page_size must be 1 to {PAGE_SIZE}")
        self.msgraph_conn_id = msgraph_conn_id
        self.page_size = page_size
        self.retry_policy = retry_policy or self.default_retry_policy
        self.pages_read = 0
        #: 429 answers Graph gave this hook (each was retried, or ended the task as transient).
        self.throttled_responses = 0
        self.retries = 0
        #: Each configured group's ``(object id, display name)``, filled as groups are looked up.
        self.group_objects: dict[str, tuple[str, str]] = {}

    async def _call(self, what: str, request: Callable[[], Awaitable[_T]], permission_hint: str = "") -> _T:
        """Run one Graph request under :attr:`retry_policy`, mapping failures through :data:`GRAPH_ERRORS`.

        :param what: the call, for messages ("looking up Entra group 'X'").
        :param permission_hint: added to a 403's message, to say which Graph permissions the call needs.
        :raises GraphError: (or a subclass) at once, for an answer a retry cannot change, as
            "<what> failed (HTTP <status>)<hint>: <Graph's message>".
        :raises GraphUnavailableError: when the request still fails transiently after the policy's
            attempts or deadline, or Graph asks to wait longer than the policy's ceiling.
        """
        import httpx
        from msgraph.generated.models.o_data_errors.o_data_error import ODataError

        async def attempt() -> _T:
            try:
                return await request()
            except httpx.TransportError as exc:
                raise GraphUnavailableError(f"{type(exc).__name__} (connection failed)") from None
            except ODataError as exc:
                status, code, message = _odata_error(exc)
                kind = GRAPH_ERRORS.classify(status, code)
                if issubclass(kind, GraphUnavailableError):
                    if status == 429:
                        self.throttled_responses += 1
                    raise kind(f"HTTP {status}: {message}", retry_after=_retry_after(exc)) from None
                hint = permission_hint if status == 403 else ""
                raise kind(f"{what} failed (HTTP {status}){hint}: {message}") from None

        def counted(*_: object) -> None:
            self.retries += 1

        def give_up(exc: TransientError, attempts: int) -> BaseException:
            if self.retry_policy.too_long(exc.retry_after):
                return GraphUnavailableError(
                    self.retry_policy.ceiling_message("Microsoft Graph", exc.retry_after or 0.0, what)
                )
            return GraphUnavailableError(
                f"Microsoft Graph kept failing while {what} ({exc}, {attempts} attempts); "
                "Airflow will retry the task"
            )

        return await self.retry_policy.acall(
            attempt, what=f"Graph call {what}", log=self.log, give_up=give_up, on_retry=counted
        )

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
        connection's adapter (credential, allowed hosts, proxies). Only the typed models are
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
        with self.stream_members_by_group(groups) as streams:
            return {group: list(objects) for group, objects in streams.items()}

    @contextmanager
    def stream_members_by_group(
        self, groups: Sequence[str], *, with_app_id: bool = False
    ) -> Iterator[dict[str, Iterator[dict[str, Any]]]]:
        """:meth:`members_by_group`, read page by page as the caller consumes each group's objects.

        Every group is looked up first (so a missing or ambiguous one fails before any member is read);
        then each group's iterator fetches its next page only when the previous one is used up, so no
        more than one page (≤ 999 objects) is held here however large the group.

        :param with_app_id: also select service principals' ``appId`` (``include_service_principals``).
        :raises GroupNotFoundError, AmbiguousGroupError, GraphError: naming the group, on entry or while
            the iterators are consumed.
        """
        fields = (*MEMBER_FIELDS, APP_ID_FIELD) if with_app_id else MEMBER_FIELDS
        with asyncio.Runner() as runner:
            provider_hook = self._provider_hook()
            try:
                client, graph_host = runner.run(self._client(provider_hook))
                for group in groups:
                    self.group_objects[group] = runner.run(self._group_id(client, group))
                yield {
                    group: _objects(
                        runner,
                        self._member_pages(client, graph_host, group, self.group_objects[group][0], fields),
                    )
                    for group in groups
                }
            finally:
                # The adapter lives in this runner's event loop, which ends with this block.
                runner.run(provider_hook.close())

    def _provider_hook(self) -> Any:
        from airflow.providers.microsoft.azure.hooks.msgraph import KiotaRequestAdapterHook

        quiet_sdk_loggers()
        provider_hook = KiotaRequestAdapterHook(conn_id=self.msgraph_conn_id)
        # The provider logs a dump of the connection (host, client id, scopes, proxies, …) at INFO on every
        # adapter it builds. Its structlog logger ignores stdlib levels, so give it the stdlib logger of the
        # same name, which quiet_sdk_loggers() set to WARNING.
        provider_hook._log = logging.getLogger(PROVIDER_HOOK_LOGGER)  # type: ignore[assignment]
        return provider_hook

    async def _group_id(self, client: GraphServiceClient, group: str) -> tuple[str, str]:
        """The group's ``(object id, display name)``."""
        from msgraph.generated.groups.groups_request_builder import GroupsRequestBuilder
        from msgraph.generated.groups.item.group_item_request_builder import GroupItemRequestBuilder

        what = f"looking up Entra group {group!r}"
        try:
            if is_object_id(group):
                item_query = GroupItemRequestBuilder.GroupItemRequestBuilderGetQueryParameters(
                    select=["id", "displayName"]
                )
                found = await self._call(
                    what,
                    lambda: self._get_json(client.groups.by_group_id(group), _request_config(item_query)),
                )
                if not found.get("id"):
                    raise GroupNotFoundError(f"Entra group with object id {group!r} not found")
                return str(found["id"]), str(found.get("displayName") or found["id"])
            query = GroupsRequestBuilder.GroupsRequestBuilderGetQueryParameters(
                filter=f"displayName eq '{escape_odata_string(group)}'", select=["id", "displayName"], top=5
            )
            page = await self._call(what, lambda: self._get_json(client.groups, _request_config(query)))
        except GroupNotFoundError:
            raise GroupNotFoundError(f"no Entra group has the object id {group!r}") from None
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
        return str(matches[0]["id"]), str(matches[0].get("displayName") or group)

    async def _member_pages(
        self,
        client: GraphServiceClient,
        graph_host: str,
        group: str,
        group_id: str,
        fields: Sequence[str] = MEMBER_FIELDS,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Each page of the group's transitive members, fetched when the previous one was taken."""
        from msgraph.generated.groups.item.transitive_members.transitive_members_request_builder import (
            TransitiveMembersRequestBuilder,
        )

        builder = client.groups.by_group_id(group_id).transitive_members
        query = TransitiveMembersRequestBuilder.TransitiveMembersRequestBuilderGetQueryParameters(
            select=list(fields), top=self.page_size, count=True
        )
        config = _request_config(query)
        # $count is an advanced query: Graph requires eventual consistency for it.
        config.headers.add("ConsistencyLevel", "eventual")
        what = f"listing members of Entra group {group!r}"
        hint = " (the app needs GroupMember.Read.All and User.Read.All)"
        page = await self._call(what, lambda: self._get_json(builder, config), hint)
        while page:
            self.pages_read += 1
            yield [_as_dict(obj, fields) for obj in page.get("value") or [] if _keep(obj)]
            next_link = page.get("@odata.nextLink")
            if not next_link:
                break
            link = urlsplit(next_link)
            if link.netloc.lower() != graph_host or link.scheme != "https":
                raise GraphError(
                    f"Graph returned a next page link for group {group!r} on another host "
                    f"({link.netloc}); refusing to send the token there"
                )
            next_config = _request_config()
            next_config.headers.add("ConsistencyLevel", "eventual")
            page = await self._call(
                what, functools.partial(self._get_json, builder.with_url(next_link), next_config), hint
            )


def _objects(runner: asyncio.Runner, pages: AsyncIterator[list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """The objects of async ``pages``, each page fetched on ``runner`` only when the last is used up."""

    async def next_page() -> list[dict[str, Any]] | None:
        try:
            return await anext(pages)
        except StopAsyncIteration:
            return None

    while (page := runner.run(next_page())) is not None:
        # Drop each object from the page as it is handed over, so the caller decides what stays alive.
        page.reverse()
        while page:
            yield page.pop()


def _keep(obj: Any) -> bool:
    # Nested groups are containers: Graph already expanded them into transitive members.
    return isinstance(obj, Mapping) and str(obj.get("@odata.type") or "").lower() != GROUP_TYPE


def _as_dict(obj: Mapping[str, Any], fields: Sequence[str] = MEMBER_FIELDS) -> dict[str, Any]:
    # Only the fields the plan reads, whatever else a page carries.
    return {"@odata.type": obj.get("@odata.type"), **{name: obj.get(name) for name in fields}}
