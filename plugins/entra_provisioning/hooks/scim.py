"""Databricks SCIM hook: list users once, create the missing ones, gently.

Shaped like the Databricks provider's hooks: endpoints are module constants, every call goes through
one request method, and the retry policy is declared once. The token is sent to the configured
workspace host alone, over HTTPS, and never appears in a log line or an exception message.

The same hook speaks the account-level API: pass ``account_id`` and the accounts host instead of a
workspace URL. Then the base path and the page size differ, and the account's workspace permission
assignments are reachable too (:meth:`DatabricksScimHook.list_permission_assignments`,
:meth:`DatabricksScimHook.assign_user`), each kind of call under its own client-side pace.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.bases.hook import BaseHook

from entra_provisioning import USER_AGENT
from entra_provisioning.config_fields import FIELDS
from entra_provisioning.errors import ErrorTable, PermanentError, TransientError
from entra_provisioning.hooks.scim_groups import ScimGroupsMixin
from entra_provisioning.identities import CreateOutcome, ExistingUser, Member
from entra_provisioning.retry import RetryPolicy, parse_retry_after
from entra_provisioning.urls import https_origin

if TYPE_CHECKING:
    import httpx

WORKSPACE_SCIM_PATH = "/api/2.0/preview/scim/v2"
ACCOUNT_SCIM_PATH = "/api/2.0/accounts/{account_id}/scim/v2"
ASSIGNMENTS_PATH = "/api/2.0/accounts/{account_id}/workspaces/{workspace_id}/permissionassignments"
USERS_ENDPOINT = "Users"
GROUPS_ENDPOINT = "Groups"
ME_ENDPOINT = "Me"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"

#: Workspace SCIM serves up to 10,000 users a page; the account API caps pages at 100 whatever we ask.
WORKSPACE_PAGE_SIZE = 10_000
ACCOUNT_PAGE_SIZE = 100
ADMINS_GROUP = "admins"

TIMEOUT_SECONDS = 60.0

#: The workspaces file's defaults, declared once in its field table (a leaf of plain facts, not the loader).
DEFAULT_CONCURRENCY: int = FIELDS["scim_concurrency"].default
DEFAULT_CREATES_PER_SECOND: float = FIELDS["scim_max_creates_per_second"].default

#: Bounded attempts and a bounded total wait per request; 409 answers and other 4xx are not retried.
SCIM_RETRY_POLICY = RetryPolicy(attempts=6, backoff_base=0.5, backoff_max=30.0)
#: A principal just created in the account can take a while (up to ~2 minutes reported) before a
#: workspace assignment finds it ("Principal not found in account."): wait for it within this policy.
ASSIGNABLE_RETRY_POLICY = RetryPolicy(attempts=10, backoff_base=1.0, backoff_max=30.0, deadline=180.0)
USER_PERMISSION = "USER"


class ScimError(PermanentError):
    """A SCIM call failed for good."""


class ScimAuthError(ScimError):
    """The token was refused (401) or its user may not administer users (403)."""


class ScimForbiddenError(ScimAuthError):
    """The token's user is not a workspace admin (HTTP 403, ``PERMISSION_DENIED``)."""


class ScimUnavailableError(TransientError):
    """Databricks kept failing (5xx) after every attempt: worth an Airflow retry."""


class ScimThrottledError(ScimUnavailableError):
    """Databricks is throttling us: 429, 503, or ``error_code`` ``REQUEST_LIMIT_EXCEEDED`` on a 500."""


class ScimUnreachableError(ScimUnavailableError):
    """No answer from the workspace host after every attempt (refused, reset or timed out)."""


class ScimThrottleCeilingError(ScimThrottledError):
    """Databricks asked us to wait longer than we are willing to sleep inside a task."""


class PrincipalNotAssignableError(TransientError):
    """The account does not find a principal for a workspace assignment yet (it was just created)."""


#: Databricks' answers by status and by error code (``error_code`` of platform errors, ``scimType`` of
#: SCIM errors). Throttling has come as 429, as 503, and as a 500 with ``REQUEST_LIMIT_EXCEEDED``.
SCIM_ERRORS = ErrorTable(
    server_error=ScimUnavailableError,
    client_error=ScimError,
    by_status={401: ScimAuthError, 403: ScimForbiddenError, 429: ScimThrottledError, 503: ScimThrottledError},
    by_code={
        "REQUEST_LIMIT_EXCEEDED": ScimThrottledError,
        "TEMPORARILY_UNAVAILABLE": ScimThrottledError,
        "UNAUTHENTICATED": ScimAuthError,
        "PERMISSION_DENIED": ScimForbiddenError,
    },
)


@dataclass
class ScimResponse:
    status: int
    body: Any
    #: True when an earlier attempt of this request may have been applied (dropped connection, 5xx).
    ambiguous_retry: bool = False


class Pacer:
    """Client-side rate limit shared by the create workers.

    Spacing requests evenly keeps us under Databricks' write limits instead of discovering them through
    429s; a throttled answer pushes every worker back, not just the one that received it.
    """

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self._interval = 1.0 / per_second
        self._clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self._interval
        delay = slot - now
        if delay > 0:
            time.sleep(delay)

    def hold_off(self, seconds: float) -> None:
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)


def escape_filter_value(value: str) -> str:
    """Quote a value for a SCIM filter (``userName eq "…"``): backslashes and double quotes escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_code(body: Any) -> str | None:
    """Databricks' own code of an error answer: ``error_code`` (platform) or ``scimType`` (SCIM)."""
    if not isinstance(body, dict):
        return None
    code = body.get("error_code") or body.get("scimType")
    return code if isinstance(code, str) else None


def _body_detail(body: Any) -> str | None:
    """What an error body says: its ``detail``/``message``/``error``, else the body itself (``None``: no body)."""
    if isinstance(body, dict):
        for key in ("detail", "message", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])[:300]
    return None if body is None else str(body)[:300]


def _error_detail(response: httpx.Response, body: Any) -> str:
    detail = _body_detail(body)
    return detail if detail is not None else response.text.strip()[:200] or response.reason_phrase


def _error_detail_of(body: Any) -> str:
    """:func:`_error_detail` for an answer already reduced to its body."""
    detail = _body_detail(body)
    return detail if detail is not None else "no detail"


class _BearerAuth:
    """Sets ``Authorization`` on every request from a token source, so a long run picks up refreshed
    tokens; the token itself is never stored on the client."""

    def __init__(self, token: str | Callable[[], str]) -> None:
        self._token = token

    def __call__(self, request: httpx.Request) -> httpx.Request:  # httpx accepts a callable auth
        token = self._token() if callable(self._token) else self._token
        request.headers["Authorization"] = f"Bearer {token}"
        return request

    def __repr__(self) -> str:
        return "_BearerAuth(<hidden>)"


@dataclass
class AccountPace:
    """Client-side paces of the account API's kinds of call (Databricks reports ≈ 5 writes/s, 20 GETs/s
    and 240 list calls a minute); creates keep the hook's ``max_creates_per_second``."""

    assignments_per_second: float = FIELDS["account_max_assignments_per_second"].default
    reads_per_second: float = FIELDS["account_max_reads_per_second"].default
    list_calls_per_minute: float = FIELDS["account_max_list_calls_per_minute"].default


class DatabricksScimHook(ScimGroupsMixin, BaseHook):
    """Talk to a Databricks workspace's (or account's) SCIM API with a bearer token.

    :param host: workspace URL (``https://adb-….azuredatabricks.net``) or, with ``account_id``, the
        accounts host (``https://accounts.azuredatabricks.net``).
    :param token: the PAT or Entra ID / OAuth token, or a callable returning a current one (asked before
        every request, so that a long run uses refreshed tokens); kept in memory only.
    :param account_id: set to use the account-level SCIM API instead of the workspace one.
    :param max_concurrency: creates in flight at once.
    :param max_creates_per_second: client-side pace of creates.
    :param account_pace: paces of the account API's other calls (account mode only).
    """

    conn_name_attr = "databricks_conn_id"
    default_conn_name = "databricks_default"
    conn_type = "databricks"
    hook_name = "Databricks SCIM (users)"

    #: The policy of every instance not given its own (tests swap in a faster one).
    default_retry_policy: ClassVar[RetryPolicy] = SCIM_RETRY_POLICY
    default_assignable_policy: ClassVar[RetryPolicy] = ASSIGNABLE_RETRY_POLICY

    def __init__(
        self,
        host: str,
        token: str | Callable[[], str],
        *,
        account_id: str | None = None,
        max_concurrency: int = DEFAULT_CONCURRENCY,
        max_creates_per_second: float = DEFAULT_CREATES_PER_SECOND,
        account_pace: AccountPace | None = None,
        retry_policy: RetryPolicy | None = None,
        assignable_policy: RetryPolicy | None = None,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        super().__init__()
        try:
            origin = https_origin(host)
        except ValueError as exc:
            raise ScimError(
                f"SCIM host must be an https:// origin without a path, got {host!r}: {exc}"
            ) from None
        self._host, self._port, self.origin = origin.host, origin.port, origin.url
        self.base_path = (
            ACCOUNT_SCIM_PATH.format(account_id=account_id) if account_id else WORKSPACE_SCIM_PATH
        )
        self.page_size = ACCOUNT_PAGE_SIZE if account_id else WORKSPACE_PAGE_SIZE
        self.account_id = account_id
        self._auth = _BearerAuth(token)
        self.max_concurrency = max_concurrency
        self.pacer = Pacer(max_creates_per_second)
        # The account API limits each kind of call separately, so each gets its own pace; the workspace
        # API's reads are left unpaced, as they always were.
        pace = account_pace or AccountPace()
        self.assign_pacer = Pacer(pace.assignments_per_second) if account_id else None
        self.read_pacer = Pacer(pace.reads_per_second) if account_id else None
        self.list_pacer = Pacer(pace.list_calls_per_minute / 60.0) if account_id else None
        self.retry_policy = retry_policy or self.default_retry_policy
        self.assignable_policy = assignable_policy or self.default_assignable_policy
        self.timeout = timeout
        self._client: httpx.Client | None = None
        self.throttled_responses = 0
        self._count_lock = threading.Lock()

    def __repr__(self) -> str:  # never show the token, even in a debugger or a traceback
        return f"{type(self).__name__}(origin={self.origin!r}, base_path={self.base_path!r})"

    # ----------------------------------------------------------------------------------- plumbing

    def get_conn(self) -> httpx.Client:
        """The HTTP client, bound to the configured origin; redirects are never followed."""
        if self._client is None:
            import httpx

            self._client = httpx.Client(
                base_url=self.origin,
                headers={"Accept": "application/scim+json", "User-Agent": USER_AGENT},
                auth=self._auth,
                timeout=httpx.Timeout(self.timeout, connect=10.0),
                follow_redirects=False,
                limits=httpx.Limits(max_connections=self.max_concurrency + 2),
                event_hooks={"request": [self._only_our_origin]},
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> DatabricksScimHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _only_our_origin(self, request: httpx.Request) -> None:
        url = request.url
        if url.scheme != "https" or url.host.lower() != self._host or (url.port or 443) != self._port:
            raise ScimError(f"refusing to send the workspace token to {url.host}")

    def _request(
        self,
        method: str,
        endpoint: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        path: str | None = None,
        pacer: Pacer | None = None,
    ) -> ScimResponse:
        """Send one SCIM request under :attr:`retry_policy`.

        Answers are mapped through :data:`SCIM_ERRORS`: throttling and server errors are retried,
        401/403 raise :class:`ScimAuthError`, and any other answer (201, 409, 400, …) is returned.

        :param path: the request's path when it is not ``<SCIM base>/<endpoint>`` (account assignments).
        :param pacer: the client-side pace this kind of call waits for, before every attempt.
        """
        import httpx

        client = self.get_conn()
        url = path or f"{self.base_path}/{endpoint}"
        ambiguous = False

        def once() -> ScimResponse:
            nonlocal ambiguous
            if pacer is not None:
                pacer.wait()
            try:
                response = client.request(method, url, params=params, json=json)
            except (httpx.TransportError, httpx.DecodingError) as exc:
                # A refused or timed-out connect never reached the server; a reset or read timeout may have
                # been applied before it failed, so a 409 on the retry could be our own create.
                ambiguous = ambiguous or not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                raise ScimUnreachableError(type(exc).__name__) from None
            body = _json_body(response) if response.content else None
            if response.status_code < 400:
                return ScimResponse(response.status_code, body, ambiguous)
            kind = SCIM_ERRORS.classify(response.status_code, _error_code(body))
            if issubclass(kind, ScimThrottledError):
                with self._count_lock:
                    self.throttled_responses += 1
                hint = parse_retry_after(response.headers.get("Retry-After"))
                if self.retry_policy.too_long(hint):
                    # Fail before touching the shared pacer: pushing it hours ahead would park every other
                    # create worker that long, even though this task is about to fail.
                    raise ScimThrottleCeilingError(
                        self.retry_policy.ceiling_message("Databricks", hint or 0.0), retry_after=hint
                    )
                # The throttled kind of call backs off (creates, when the call has no pace of its own).
                (pacer or self.pacer).hold_off(hint if hint is not None else self.retry_policy.backoff_base)
                raise kind(f"throttled (HTTP {response.status_code})", retry_after=hint)
            if issubclass(kind, ScimUnavailableError):
                ambiguous = True
                raise kind(f"HTTP {response.status_code}: {_error_detail(response, body)}")
            if kind is ScimAuthError:
                raise ScimAuthError(
                    f"the {self._scope} token is invalid or expired (HTTP 401 from {self.origin})"
                )
            if kind is ScimForbiddenError:
                raise ScimForbiddenError(
                    f"the token's user is not {'an account' if self.account_id else 'a workspace'} admin "
                    f"(HTTP 403 from {self.origin}): {_error_detail(response, body)}"
                )
            return ScimResponse(response.status_code, body, ambiguous)

        def give_up(exc: TransientError, attempts: int) -> BaseException:
            if isinstance(exc, ScimThrottleCeilingError):
                return exc
            if isinstance(exc, ScimUnreachableError):
                return ScimUnreachableError(
                    f"the Databricks {self._scope} {self.origin} is unreachable ({exc} on {method} {endpoint}, "
                    f"{attempts} attempts); check databricks_instance and the network"
                )
            return type(exc)(f"{method} {endpoint} still failing after {attempts} attempts: {exc}")

        return self.retry_policy.call(once, what=f"SCIM {method} {endpoint}", log=self.log, give_up=give_up)

    @property
    def _scope(self) -> str:
        return "account" if self.account_id else "workspace"

    # ---------------------------------------------------------------------------------- endpoints

    def me(self) -> dict[str, Any]:
        """The token's own user (``GET /Me``); proves the token authenticates."""
        response = self._request("GET", ME_ENDPOINT)
        if response.status != 200 or not isinstance(response.body, dict):
            raise ScimError(f"GET Me answered HTTP {response.status}")
        return response.body

    def check_admin(self) -> str:
        """Prove the token works and its user administers users; return that user's userName.

        :raises ScimAuthError: 401 (token invalid) or not an admin (403, or not in ``admins``).
        """
        me = self.me()
        user_name = str(me.get("userName", ""))
        groups = {str(g.get("display", "")).lower() for g in me.get("groups") or [] if isinstance(g, dict)}
        if ADMINS_GROUP not in groups:
            raise ScimAuthError(
                f"the token's user {user_name!r} is not a workspace admin (not in the '{ADMINS_GROUP}' group)"
            )
        # Listing users is what the run needs; a 403 here is caught as "not an admin" too.
        self._request("GET", USERS_ENDPOINT, params={"count": 1, "attributes": "userName"})
        return user_name

    def iter_user_pages(self, attributes: str = "userName,externalId") -> Iterator[list[dict[str, Any]]]:
        """Yield the workspace's users page by page (``startIndex``/``count``, 1-based).

        Paging follows what the server returns (``itemsPerPage``, ``totalResults``), not what we asked
        for, because servers cap page sizes.
        """
        start = 1
        while True:
            response = self._request(
                "GET",
                USERS_ENDPOINT,
                params={"startIndex": start, "count": self.page_size, "attributes": attributes},
                pacer=self.list_pacer,
            )
            if response.status != 200 or not isinstance(response.body, dict):
                raise ScimError(f"listing users answered HTTP {response.status}")
            resources = response.body.get("Resources") or []
            total = int(response.body.get("totalResults") or 0)
            if resources:
                yield resources
            served = int(response.body.get("itemsPerPage") or len(resources))
            start += served
            if not resources or served <= 0 or start > total:
                return

    def list_users(self) -> list[ExistingUser]:
        """Every user of the workspace, de-duplicated by id (pages may shift while we read them)."""
        seen: dict[str, ExistingUser] = {}
        for page in self.iter_user_pages():
            for user in page:
                user_id = str(user.get("id", ""))
                if user_id and user_id not in seen:
                    seen[user_id] = ExistingUser(
                        id=user_id,
                        user_name=str(user.get("userName", "")),
                        external_id=user.get("externalId"),
                    )
        return list(seen.values())

    def find_user(self, user_name: str) -> dict[str, Any] | None:
        """Look one user up by userName with an escaped SCIM filter."""
        response = self._request(
            "GET",
            USERS_ENDPOINT,
            params={"filter": f'userName eq "{escape_filter_value(user_name)}"'},
            pacer=self.read_pacer,
        )
        resources = (response.body or {}).get("Resources") or [] if isinstance(response.body, dict) else []
        return resources[0] if resources else None

    def create_user(self, member: Member, entitlements: Iterable[str] = ()) -> tuple[str, str | None]:
        """Create one user; returns ``("added" | "existed" | "failed", reason)``.

        409 means the userName exists: success. A 409 that answers a retry of a request that may already
        have been applied (dropped connection, 5xx) is our own earlier attempt, so it counts as added.
        """
        outcome, reason, _ = self._create(member, entitlements)
        return outcome, reason

    def _create(self, member: Member, entitlements: Iterable[str] = ()) -> tuple[str, str | None, str | None]:
        """:meth:`create_user`, also returning the user's id when the answer carries it (201)."""
        body: dict[str, Any] = {
            "schemas": [USER_SCHEMA],
            "userName": member.user_name,
            "displayName": member.display_name or member.user_name,
        }
        if not self.account_id:
            # The account API documents externalId as reserved (automatic identity management sets it), so
            # the Entra object id is sent to workspaces only.
            body["externalId"] = member.object_id
        values = list(entitlements)
        if values:
            body["entitlements"] = [{"value": value} for value in values]
        self.pacer.wait()
        response = self._request("POST", USERS_ENDPOINT, json=body)
        if response.status in (200, 201):
            created_id = response.body.get("id") if isinstance(response.body, dict) else None
            return "added", None, str(created_id) if created_id else None
        if response.status == 409:
            return ("added" if response.ambiguous_retry else "existed"), None, None
        detail = response.body.get("detail") if isinstance(response.body, dict) else None
        return "failed", f"HTTP {response.status}: {detail or 'no detail'}", None

    def create_users(
        self, members: Iterable[Member], entitlements: Iterable[str] = (), *, want_ids: bool = False
    ) -> CreateOutcome:
        """Create users with bounded concurrency; one user's failure never stops the others.

        :param want_ids: also record each user's Databricks id in ``ids`` (looked up for a 409), for the
            group memberships that follow.

        :raises ScimAuthError: when the token is refused; nothing more is attempted.
        :raises ScimThrottleCeilingError, ScimUnreachableError: likewise, for a wait over the ceiling or
            a workspace that stopped answering.
        """
        results = CreateOutcome()
        lock = threading.Lock()
        ents = tuple(entitlements)
        abort: list[BaseException] = []

        def one(member: Member) -> None:
            if abort:
                return
            created_id: str | None = None
            try:
                outcome, reason, created_id = self._create(member, ents)
                if want_ids and outcome != "failed" and created_id is None:
                    found = self.find_user(member.user_name)
                    created_id = str(found["id"]) if found and found.get("id") else None
            except ScimAuthError as exc:
                abort.append(exc)
                return
            except (ScimThrottleCeilingError, ScimUnreachableError) as exc:
                # Every remaining create would wait out the same ceiling or outage: stop, let Airflow retry.
                abort.append(exc)
                return
            except (ScimError, ScimUnavailableError) as exc:
                # This user's create was refused, or kept failing: report it, go on with the others.
                outcome, reason = "failed", str(exc)
            with lock:
                if outcome == "added":
                    results.added.append(member.user_name)
                elif outcome == "existed":
                    results.existed.append(member.user_name)
                else:
                    results.failed[member.user_name] = reason or "unknown error"
                if want_ids and created_id:
                    results.ids[member.user_name] = created_id

        with ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="scim-create") as pool:
            for _ in pool.map(one, members):
                pass
        if abort:
            raise abort[0]
        results.added.sort()
        results.existed.sort()
        return results

    # --------------------------------------------------------------------- account: workspace access

    def _assignments_path(self, workspace_id: int, principal_id: str | None = None) -> str:
        assert self.account_id, "workspace permission assignments are an account API: pass account_id"
        path = ASSIGNMENTS_PATH.format(account_id=self.account_id, workspace_id=workspace_id)
        return f"{path}/principals/{principal_id}" if principal_id is not None else path

    def check_account_admin(self) -> None:
        """Prove the token works on the account API and may read its users (an account admin's right).

        :raises ScimAuthError: 401 (token refused) or 403 (not an account admin).
        """
        self._request(
            "GET", USERS_ENDPOINT, params={"count": 1, "attributes": "userName"}, pacer=self.list_pacer
        )

    def list_permission_assignments(self, workspace_id: int) -> list[dict[str, Any]]:
        """The workspace's permission assignments as the account lists them (users, groups, service
        principals), one dict per principal: ``{"principal": {"principal_id", "user_name" | "group_name" |
        "service_principal_name", …}, "permissions": [...]}``."""
        response = self._request(
            "GET", "permissionassignments", path=self._assignments_path(workspace_id), pacer=self.list_pacer
        )
        if response.status == 404:
            raise ScimError(
                f"the account {self.account_id} has no workspace {workspace_id} (HTTP 404 listing its "
                f"permission assignments): check workspace_id and account_id"
            )
        if response.status != 200 or not isinstance(response.body, dict):
            raise ScimError(
                f"listing the permission assignments of workspace {workspace_id} answered HTTP {response.status}"
            )
        entries = response.body.get("permission_assignments") or []
        return [
            entry for entry in entries if isinstance(entry, dict) and isinstance(entry.get("principal"), dict)
        ]

    def group_member_ids(self, group_ids: Iterable[str]) -> set[str]:
        """The ids of every user in these account groups, through nested groups (each group read once)."""
        pending = [str(group_id) for group_id in group_ids]
        seen_groups: set[str] = set()
        users: set[str] = set()
        while pending:
            group_id = pending.pop()
            if group_id in seen_groups:
                continue
            seen_groups.add(group_id)
            response = self._request(
                "GET",
                f"{GROUPS_ENDPOINT}/{group_id}",
                params={"attributes": "members"},
                pacer=self.read_pacer,
            )
            if response.status == 404:
                continue  # deleted since the assignment list was read: it gives nobody access
            if response.status != 200 or not isinstance(response.body, dict):
                raise ScimError(f"reading account group {group_id} answered HTTP {response.status}")
            for member in response.body.get("members") or []:
                if not isinstance(member, dict) or not member.get("value"):
                    continue
                ref = str(member.get("$ref") or "")
                if ref.startswith("Groups/"):
                    pending.append(str(member["value"]))
                elif not ref.startswith("ServicePrincipals/"):
                    users.add(str(member["value"]))
        return users

    def assign_user(self, workspace_id: int, principal_id: str) -> None:
        """Give a principal ``USER`` access to the workspace.

        A PUT *replaces* the principal's permissions, so call this only for a principal with no assignment
        at all (the plan guarantees it); it is never used to change an existing one. A principal the account
        does not find yet (just created) is retried under :attr:`assignable_policy`.

        :raises ScimError: when the account refuses the assignment for good.
        """

        def once() -> None:
            try:
                response = self._request(
                    "PUT",
                    "permissionassignments",
                    path=self._assignments_path(workspace_id, principal_id),
                    json={"permissions": [USER_PERMISSION]},
                    pacer=self.assign_pacer,
                )
            except ScimUnavailableError as exc:
                # Throttling and outages were retried by the request's own policy already: they must not be
                # retried again here (one retry layer per kind of failure), only carried out.
                raise _CarriedOut(exc) from None
            if response.status == 200:
                return
            detail = _error_detail_of(response.body)
            if response.status in (400, 404) and "not found" in detail.lower():
                raise PrincipalNotAssignableError(f"HTTP {response.status}: {detail}")
            raise ScimError(f"assigning principal {principal_id} answered HTTP {response.status}: {detail}")

        def give_up(exc: TransientError, attempts: int) -> BaseException:
            return ScimError(
                f"the account still does not find principal {principal_id} for workspace {workspace_id} after "
                f"{attempts} attempts ({exc}); the next run assigns it"
            )

        try:
            self.assignable_policy.call(
                once, what=f"assignment of principal {principal_id}", log=self.log, give_up=give_up
            )
        except _CarriedOut as carried:
            raise carried.error from None

    def provision_account_users(
        self,
        workspace_id: int,
        to_create: Iterable[Member],
        to_assign: Iterable[tuple[Member, str]],
        *,
        assign: bool = True,
    ) -> CreateOutcome:
        """Create members the account lacks and give them, and existing account users without access,
        ``USER`` access to the workspace; each member's create and assignment run back to back, so creates
        and assignments proceed side by side, each at its own pace.

        :param to_create: members the account does not have: created, then assigned.
        :param to_assign: ``(member, account user id)`` of account users with no access to the workspace.
        :param assign: ``False`` when access comes through mirrored groups: members are only created.
        :returns: ``added`` = given access this run, ``created`` = created in the account, ``existed`` =
            creates answered 409, ``failed`` = ``{userName: reason}``.
        :raises ScimAuthError, ScimThrottleCeilingError, ScimUnreachableError: as :meth:`create_users`.
        """
        results = CreateOutcome()
        lock = threading.Lock()
        abort: list[BaseException] = []
        work: list[tuple[Member, str | None]] = [(m, None) for m in to_create] + list(to_assign)

        def one(item: tuple[Member, str | None]) -> None:
            member, principal_id = item
            if abort:
                return
            created = existed = False
            try:
                if principal_id is None:
                    outcome, reason, principal_id = self._create(member)
                    if outcome == "failed":
                        raise ScimError(reason or "create failed")
                    created, existed = outcome == "added", outcome == "existed"
                    if principal_id is None:  # 409, or a 201 without a body: look the id up
                        found = self.find_user(member.user_name)
                        if not found or not found.get("id"):
                            raise ScimError(
                                "the account answered that the user exists but does not list it yet"
                            )
                        principal_id = str(found["id"])
                with lock:
                    results.ids[member.user_name] = principal_id
                if assign:
                    self.assign_user(workspace_id, principal_id)
            except (ScimAuthError, ScimThrottleCeilingError, ScimUnreachableError) as exc:
                abort.append(exc)
                return
            except (ScimError, ScimUnavailableError) as exc:
                with lock:
                    if created:
                        results.created.append(member.user_name)
                    elif existed:
                        results.existed.append(member.user_name)
                    prefix = "created in the account but not assigned: " if created or existed else ""
                    results.failed[member.user_name] = f"{prefix}{exc}"
                return
            with lock:
                if assign:
                    results.added.append(member.user_name)
                if created:
                    results.created.append(member.user_name)
                elif existed:
                    results.existed.append(member.user_name)

        with ThreadPoolExecutor(
            max_workers=self.max_concurrency, thread_name_prefix="account-provision"
        ) as pool:
            for _ in pool.map(one, work):
                pass
        if abort:
            raise abort[0]
        for names in (results.added, results.created, results.existed):
            names.sort()
        return results


class _CarriedOut(Exception):
    """Carries a request's own final error through the assignable-wait policy untouched."""

    def __init__(self, error: ScimUnavailableError) -> None:
        super().__init__(str(error))
        self.error = error
