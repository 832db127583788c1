"""Databricks SCIM hook: list users once, create the missing ones, gently.

Shaped like the Databricks provider's hooks: endpoints are module constants, every call goes through
one request method, and the retry policy is declared once. The token is sent to the configured
workspace host alone, over HTTPS, and never appears in a log line or an exception message.

The same hook speaks the account-level API: pass ``account_id`` and the accounts host instead of a
workspace URL; only the base path and the page size differ.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.hook import BaseHook

from entra_provisioning.errors import ProvisioningError
from entra_provisioning.hooks.retry_after import MAX_RETRY_AFTER_SECONDS, parse_retry_after
from entra_provisioning.identities import CreateOutcome, ExistingUser, Member
from entra_provisioning.urls import https_origin

if TYPE_CHECKING:
    import httpx

WORKSPACE_SCIM_PATH = "/api/2.0/preview/scim/v2"
ACCOUNT_SCIM_PATH = "/api/2.0/accounts/{account_id}/scim/v2"
USERS_ENDPOINT = "Users"
ME_ENDPOINT = "Me"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"

#: Workspace SCIM serves up to 10,000 users a page; the account API caps pages at 100 whatever we ask.
WORKSPACE_PAGE_SIZE = 10_000
ACCOUNT_PAGE_SIZE = 100
ADMINS_GROUP = "admins"

#: Retry policy, declared once: bounded attempts and a bounded total wait per request.
MAX_ATTEMPTS = 6
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
TIMEOUT_SECONDS = 60.0


class ScimError(ProvisioningError):
    """A SCIM call failed for good."""


class ScimAuthError(ScimError):
    """The token was refused (401) or its user may not administer users (403)."""


class ScimUnreachableError(ScimError):
    """No answer from the workspace host after every attempt (refused, reset or timed out)."""


class ScimThrottleCeilingError(ScimError):
    """Databricks asked us to wait longer than we are willing to sleep inside a task."""


class _Retryable(Exception):
    """A failure worth another attempt; ``retry_after`` is the server's hint, if any."""

    def __init__(
        self,
        reason: str,
        retry_after: float | None = None,
        ambiguous: bool = False,
        unreachable: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        # True when the request may have been applied before it failed (dropped connection, 5xx).
        self.ambiguous = ambiguous
        # True when no HTTP answer came back at all (refused, reset, timed out).
        self.unreachable = unreachable


@dataclass
class ScimResponse:
    status: int
    body: Any
    attempts: int
    ambiguous_retry: bool = False


class Pacer:
    """Client-side rate limit shared by the create workers.

    Spacing requests evenly keeps us under Databricks' write limits instead of discovering them through
    429s; a throttled answer pushes every worker back, not just the one that received it.
    """

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
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


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:200] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "message", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])[:300]
    return str(body)[:300]


def _is_throttled(response: httpx.Response) -> bool:
    if response.status_code in (429, 503):
        return True
    # Databricks has answered its concurrency limit with a plain 500 carrying this code.
    return response.status_code == 500 and "REQUEST_LIMIT_EXCEEDED" in response.text


class DatabricksScimHook(BaseHook):
    """Talk to a Databricks workspace's (or account's) SCIM API with a personal access token.

    :param host: workspace URL (``https://adb-….azuredatabricks.net``) or, with ``account_id``, the
        accounts host (``https://accounts.azuredatabricks.net``).
    :param token: the PAT; kept in memory only.
    :param account_id: set to use the account-level SCIM API instead of the workspace one.
    :param max_concurrency: creates in flight at once.
    :param max_creates_per_second: client-side pace of creates.
    """

    conn_name_attr = "databricks_conn_id"
    default_conn_name = "databricks_default"
    conn_type = "databricks"
    hook_name = "Databricks SCIM (users)"

    def __init__(
        self,
        host: str,
        token: str,
        *,
        account_id: str | None = None,
        max_concurrency: int = 4,
        max_creates_per_second: float = 5.0,
        max_attempts: int = MAX_ATTEMPTS,
        max_retry_after: float = MAX_RETRY_AFTER_SECONDS,
        backoff_base: float = BACKOFF_BASE_SECONDS,
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
        self._token = token
        self.max_concurrency = max_concurrency
        self.pacer = Pacer(max_creates_per_second)
        self.max_attempts = max_attempts
        self.max_retry_after = max_retry_after
        self.backoff_base = backoff_base
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
                headers={"Authorization": f"Bearer {self._token}", "Accept": "application/scim+json"},
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

    def _wait_seconds(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                raise ScimThrottleCeilingError(
                    f"Databricks asked to retry after {retry_after:.0f} s, more than the "
                    f"{self.max_retry_after:.0f} s ceiling; failing so that Airflow can retry the task later"
                )
            return retry_after
        return min(BACKOFF_MAX_SECONDS, self.backoff_base * 2 ** (attempt - 1))

    def _retrying(self) -> Any:
        import tenacity

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            hint = exc.retry_after if isinstance(exc, _Retryable) else None
            return self._wait_seconds(state.attempt_number, hint)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.log.info(
                "SCIM request failed (%s); attempt %d of %d", exc, state.attempt_number, self.max_attempts
            )

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=wait,
            retry=tenacity.retry_if_exception_type(_Retryable),
            before_sleep=before_sleep,
            reraise=True,
        )

    def _request(
        self, method: str, endpoint: str, *, params: dict[str, Any] | None = None, json: Any = None
    ) -> ScimResponse:
        """Send one SCIM request with the retry policy; 4xx answers are returned, not raised."""
        import httpx

        client = self.get_conn()
        url = f"{self.base_path}/{endpoint}"
        attempts = 0
        ambiguous = False

        def once() -> ScimResponse:
            nonlocal attempts, ambiguous
            attempts += 1
            try:
                response = client.request(method, url, params=params, json=json)
            except (httpx.TransportError, httpx.DecodingError) as exc:
                # A refused or timed-out connect never reached the server; a reset or read timeout may have
                # been applied before it failed, so a 409 on the retry could be our own create.
                unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                ambiguous = ambiguous or not unsent
                raise _Retryable(
                    f"{type(exc).__name__} talking to {self.origin}", ambiguous=not unsent, unreachable=True
                ) from None
            if _is_throttled(response):
                with self._count_lock:
                    self.throttled_responses += 1
                hint = parse_retry_after(response.headers.get("Retry-After"))
                # Check the ceiling before touching the shared pacer: pushing it hours ahead would park
                # every other create worker that long, even though this task is about to fail.
                self._wait_seconds(1, hint)
                self.pacer.hold_off(hint if hint is not None else self.backoff_base)
                raise _Retryable(f"throttled (HTTP {response.status_code})", retry_after=hint)
            if response.status_code >= 500:
                ambiguous = True
                raise _Retryable(f"HTTP {response.status_code}: {_error_detail(response)}", ambiguous=True)
            if response.status_code == 401:
                raise ScimAuthError(
                    f"the workspace token is invalid or expired (HTTP 401 from {self.origin})"
                )
            if response.status_code == 403:
                raise ScimAuthError(
                    f"the token's user is not a workspace admin (HTTP 403 from {self.origin}): "
                    f"{_error_detail(response)}"
                )
            body: Any = None
            if response.content:
                try:
                    body = response.json()
                except ValueError:
                    body = response.text
            return ScimResponse(response.status_code, body, attempts, ambiguous)

        try:
            result: ScimResponse = self._retrying()(once)
        except _Retryable as exc:
            if exc.unreachable:
                raise ScimUnreachableError(
                    f"the Databricks workspace {self.origin} is unreachable ({exc.reason.split(' ')[0]} on "
                    f"{method} {endpoint}, {attempts} attempts); check databricks_instance and the network"
                ) from None
            raise ScimError(
                f"{method} {endpoint} still failing after {attempts} attempts: {exc.reason}"
            ) from None
        return result

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
            "GET", USERS_ENDPOINT, params={"filter": f'userName eq "{escape_filter_value(user_name)}"'}
        )
        resources = (response.body or {}).get("Resources") or [] if isinstance(response.body, dict) else []
        return resources[0] if resources else None

    def create_user(self, member: Member, entitlements: Iterable[str] = ()) -> tuple[str, str | None]:
        """Create one user; returns ``("added" | "existed" | "failed", reason)``.

        409 means the userName exists: success. A 409 that answers a retry of a request that may already
        have been applied (dropped connection, 5xx) is our own earlier attempt, so it counts as added.
        """
        body: dict[str, Any] = {
            "schemas": [USER_SCHEMA],
            "userName": member.user_name,
            "displayName": member.display_name or member.user_name,
            "externalId": member.object_id,
        }
        values = list(entitlements)
        if values:
            body["entitlements"] = [{"value": value} for value in values]
        self.pacer.wait()
        response = self._request("POST", USERS_ENDPOINT, json=body)
        if response.status in (200, 201):
            return "added", None
        if response.status == 409:
            return ("added", None) if response.ambiguous_retry else ("existed", None)
        detail = response.body.get("detail") if isinstance(response.body, dict) else None
        return "failed", f"HTTP {response.status}: {detail or 'no detail'}"

    def create_users(self, members: Iterable[Member], entitlements: Iterable[str] = ()) -> CreateOutcome:
        """Create users with bounded concurrency; one user's failure never stops the others.

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
            try:
                outcome, reason = self.create_user(member, ents)
            except ScimAuthError as exc:
                abort.append(exc)
                return
            except (ScimThrottleCeilingError, ScimUnreachableError) as exc:
                # Every remaining create would wait out the same ceiling or outage: stop, let Airflow retry.
                abort.append(exc)
                return
            except ScimError as exc:
                outcome, reason = "failed", str(exc)
            with lock:
                if outcome == "added":
                    results.added.append(member.user_name)
                elif outcome == "existed":
                    results.existed.append(member.user_name)
                else:
                    results.failed[member.user_name] = reason or "unknown error"

        with ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="scim-create") as pool:
            for _ in pool.map(one, members):
                pass
        if abort:
            raise abort[0]
        results.added.sort()
        results.existed.sort()
        return results
