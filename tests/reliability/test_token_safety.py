"""The PAT and the Graph token go only where they belong, and no error message or log line carries them.

(Searching task log files, XCom, rendered fields and DAG run conf after a distributed run is done by the
distributed end-to-end test.)
"""

from __future__ import annotations

import logging
import socket
import traceback

import pytest

from entra_provisioning import tasks
from entra_provisioning.hooks.entra import EntraGroupsHook, GraphError
from entra_provisioning.hooks.scim import (
    DatabricksScimHook,
    ScimError,
    ScimUnavailableError,
    ScimUnreachableError,
)
from entra_provisioning.plan import Member
from entra_provisioning.retry import RetryPolicy

from .conftest import workspace


def netloc(url: str) -> str:
    return url.split("//", 1)[1]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("foreign", ["other host", "plain http on the Graph host"])
def test_a_next_link_to_another_host_is_not_followed_with_a_token(connected, foreign: str) -> None:
    graph = netloc(connected.endpoints["graph"]["origin"])
    other = netloc(connected.workspace_host("ws-alpha"))
    origin = f"https://{other}" if foreign == "other host" else f"http://{graph}"
    connected.control.set_graph_next_link_origin(origin)
    hook = EntraGroupsHook(page_size=100)  # "Large Team" spans three pages of 100
    with pytest.raises(GraphError) as info:
        hook.members_by_group(["Large Team"])
    assert "on another host" in str(info.value) and "refusing to send the token there" in str(info.value)
    assert hook.pages_read == 1
    # Nothing reached the other host, and every bearer token Graph's client sent went to Graph alone.
    assert connected.control.log(system="workspace:ws-alpha") == []
    assert all(set(hosts) == {graph} for hosts in connected.control.token_hosts().values())
    assert len(connected.control.log(system="graph", endpoint="graph.groups.transitiveMembers")) == 1


def test_the_scim_hook_refuses_to_send_the_token_to_another_origin(connected) -> None:
    pat = connected.pat("ws-beta")
    other = connected.workspace_host("ws-alpha")
    with DatabricksScimHook(connected.workspace_host("ws-beta"), pat) as scim:
        client = scim.get_conn()
        for url in (
            f"{other}/api/2.0/preview/scim/v2/Me",
            connected.workspace_host("ws-beta").replace("https", "http") + "/x",
        ):
            with pytest.raises(ScimError, match=r"refusing to send the workspace token to 127\.0\.0\.1"):
                client.get(url)
        assert pat not in repr(scim)
    assert connected.control.log() == []
    assert connected.hosts_for_token(pat) == set()


def test_the_pat_is_presented_only_to_the_configured_workspace_host(connected) -> None:
    ws = workspace(connected, groups=("Data Engineers",))
    facts = tasks.fetch_token(ws)
    tasks.add_missing_users(ws, facts, tasks.resolve_members(ws), {})
    assert connected.hosts_for_token(connected.pat("ws-beta")) == {
        netloc(connected.workspace_host("ws-beta"))
    }
    # Add-only, as SECURITY.md says: reads, and POSTs that create users; nothing else is ever sent.
    sent = {(e["method"], e["endpoint"]) for e in connected.control.log(system="workspace:ws-beta")}
    assert {method for method, _ in sent} == {"GET", "POST"}
    assert {endpoint for method, endpoint in sent if method == "POST"} == {"scim.users.create"}


def everything_said(exc: BaseException) -> str:
    """Message, repr and the whole formatted traceback (causes and contexts included)."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


KNOWN_PAT = "dapi-LEAK-CANARY-0123456789abcdef"


def test_failure_paths_never_mention_the_token(connected, caplog, capsys) -> None:
    caplog.set_level(logging.DEBUG)
    beta = connected.workspace_host("ws-beta")
    said: list[str] = []

    def expect_failure(call, exc_type=Exception) -> None:
        with pytest.raises(exc_type) as info:
            call()
        said.append(everything_said(info.value))

    fast = {"max_creates_per_second": 200}
    twice = RetryPolicy(attempts=2, backoff_base=0.01)
    # 401: a token the workspace does not know.
    with DatabricksScimHook(beta, KNOWN_PAT, **fast) as scim:
        expect_failure(scim.check_admin, ScimError)
    # A workspace that is unreachable.
    with DatabricksScimHook(
        f"https://127.0.0.1:{closed_port()}", KNOWN_PAT, retry_policy=twice, **fast
    ) as scim:
        expect_failure(scim.check_admin, ScimUnreachableError)
    # A real PAT whose user is not an admin, through the task body (Key Vault → SCIM).
    nonadmin = connected.pat("ws-alpha", admin=False)
    expect_failure(
        lambda: tasks.fetch_token(workspace(connected, ws="ws-alpha", secret="ws-alpha-pat-nonadmin")),
    )
    # Server errors that outlast the retries, and create failures reported per user.
    admin = connected.pat("ws-beta")
    connected.control.set_faults(
        [{"system": "workspace:ws-beta", "endpoint": "scim.users.list", "rate_500": 1.0}]
    )
    with DatabricksScimHook(beta, admin, retry_policy=twice, **fast) as scim:
        expect_failure(scim.list_users, ScimUnavailableError)
    connected.control.set_faults(
        [{"system": "workspace:ws-beta", "endpoint": "scim.users.create", "rate_503": 1.0, "retry_after": 0}]
    )
    with DatabricksScimHook(beta, admin, retry_policy=twice, **fast) as scim:
        results = scim.create_users([Member("oid-x", "x@contoso.com", "X", ("g",))])
        said.append(repr(results))
        assert results.failed
    connected.control.clear_faults()
    # The whole task failing on those per-user failures.
    connected.control.set_faults(
        [{"system": "workspace:ws-beta", "endpoint": "scim.users.create", "rate_500": 1.0}]
    )
    ws = workspace(connected, groups=("Data Engineers",))
    facts = tasks.fetch_token(ws)
    expect_failure(
        lambda: tasks.add_missing_users(ws, facts, tasks.resolve_members(ws), {}), tasks.UsersNotAddedError
    )

    # Key Vault: secrets that are read but refused (expired is served, as by the real service; disabled).
    for name in ("expired-pat", "disabled-pat"):
        expect_failure(lambda name=name: tasks.fetch_token(workspace(connected, secret=name)))

    assert len(said) == 8
    captured = capsys.readouterr()
    for secret in (KNOWN_PAT, nonadmin, admin, "dapi-expired-0001", "dapi-disabled-0001"):
        for text in said:
            assert secret not in text
        assert secret not in caplog.text
        assert secret not in captured.out + captured.err


def test_the_origin_check_compares_normalised_origins() -> None:
    import httpx

    hook = DatabricksScimHook("https://ADB-1.1.azuredatabricks.net:443", KNOWN_PAT)
    assert hook.origin == "https://adb-1.1.azuredatabricks.net"
    # Its own requests pass (httpx drops the default port and lower-cases the host) ...
    hook._only_our_origin(
        httpx.Request("GET", "https://adb-1.1.azuredatabricks.net/api/2.0/preview/scim/v2/Me")
    )
    hook._only_our_origin(httpx.Request("GET", "https://adb-1.1.azuredatabricks.net:443/x"))
    # ... and nothing else does.
    for url in (
        "http://adb-1.1.azuredatabricks.net/x",
        "https://adb-1.1.azuredatabricks.net:8443/x",
        "https://adb-1.1.azuredatabricks.net.evil.example/x",
        "https://adb-1.1.azuredatabricks.net@evil.example/x",
        "https://adb-2.1.azuredatabricks.net/x",
    ):
        with pytest.raises(ScimError, match="refusing to send the workspace token"):
            hook._only_our_origin(httpx.Request("GET", url))
    for bad in ("https://user:pw@adb-1.1.azuredatabricks.net", "https://adb-1.1.azuredatabricks.net:99999"):
        with pytest.raises(ScimError, match="must be an https:// origin"):
            DatabricksScimHook(bad, KNOWN_PAT)


def test_a_workspace_url_written_with_capitals_still_works(connected) -> None:
    port = connected.workspace_host("ws-beta").rsplit(":", 1)[1]
    with DatabricksScimHook(f"https://LOCALHOST:{port}", connected.pat("ws-beta")) as scim:
        assert scim.check_admin() == "admin@contoso.com"
