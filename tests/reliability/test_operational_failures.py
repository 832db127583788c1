"""Operational failures: each ends the task with one clear, exact message (no chained traceback noise)."""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import socket
import time
from datetime import UTC, datetime

import pytest
from airflow.sdk.exceptions import AirflowFailException

from entra_provisioning import tasks
from entra_provisioning.hooks.scim import DatabricksScimHook, ScimUnreachableError

from .conftest import workspace


def one_message(exc: BaseException) -> str:
    # Raised "from None": the task log shows this message alone, not an SDK traceback under it.
    assert exc.__cause__ is None and exc.__suppress_context__
    return str(exc)


def fails(call) -> str:
    with pytest.raises(AirflowFailException) as info:
        call()
    return one_message(info.value)


def group_ids(sandbox, name: str) -> list[str]:
    return sorted(g["id"] for g in sandbox.control.tenant()["groups"] if g["displayName"] == name)


def test_group_not_found(connected) -> None:
    assert fails(lambda: tasks.resolve_members(workspace(connected, groups=("No Such Group",)))) == (
        "no Entra group has the display name 'No Such Group' (names are matched exactly; "
        "an object id may be given instead)"
    )
    missing = "00000000-0000-4000-8000-000000000000"
    assert fails(lambda: tasks.resolve_members(workspace(connected, groups=(missing,)))) == (
        f"no Entra group has the object id {missing!r}"
    )


def test_group_name_ambiguous(connected) -> None:
    ids = ", ".join(group_ids(connected, "Duplicate Name"))
    assert fails(lambda: tasks.resolve_members(workspace(connected, groups=("Duplicate Name",)))) == (
        f"2 Entra groups have the display name 'Duplicate Name' ({ids}); "
        "put the object id of the intended one in entra_groups"
    )


def test_graph_app_without_permission(connected, monkeypatch) -> None:
    # The sandbox's "outsider" app gets tokens but no Graph permission: every Graph call answers 403.
    connection = json.loads(os.environ["AIRFLOW_CONN_MSGRAPH_DEFAULT"])
    outsider = connected.identity("outsider")
    connection["login"], connection["password"] = outsider["client_id"], outsider["client_secret"]
    monkeypatch.setenv("AIRFLOW_CONN_MSGRAPH_DEFAULT", json.dumps(connection))
    assert fails(lambda: tasks.resolve_members(workspace(connected, groups=("Data Engineers",)))) == (
        "looking up Entra group 'Data Engineers' failed (HTTP 403): "
        "Insufficient privileges to complete the operation."
    )


def test_a_403_on_member_pages_names_the_permissions_the_app_needs() -> None:
    # The sandbox grants Graph access per app, so a look-up that passes and a member page that is
    # refused cannot be staged there; the phrasing of the hook's one Graph call is checked directly.
    import asyncio

    from msgraph.generated.models.o_data_errors.main_error import MainError
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    from entra_provisioning.hooks.entra import EntraGroupsHook, GraphPermissionError

    async def refused() -> None:
        error = ODataError()
        error.response_status_code = 403
        error.error = MainError(code="Authorization_RequestDenied", message="Insufficient privileges.")
        raise error

    what, hint = (
        "listing members of Entra group 'G'",
        " (the app needs GroupMember.Read.All and User.Read.All)",
    )
    with pytest.raises(GraphPermissionError) as info:
        asyncio.run(EntraGroupsHook()._call(what, refused, hint))
    assert str(info.value) == (
        "listing members of Entra group 'G' failed (HTTP 403) (the app needs GroupMember.Read.All and "
        "User.Read.All): Insufficient privileges."
    )


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("no-such-pat", "secret 'no-such-pat' in {vault} does not exist"),
        ("disabled-pat", "secret 'disabled-pat' in {vault} is disabled"),
    ],
)
def test_secret_missing_or_disabled(connected, secret: str, message: str) -> None:
    ws = workspace(connected, secret=secret)
    assert fails(lambda: tasks.fetch_token(ws)) == message.format(vault=connected.vault_url())


def test_secret_expired(connected) -> None:
    exp = connected.control.vault("kv-demo")["secrets"]["expired-pat"][-1]["exp"]
    when = datetime.fromtimestamp(exp, UTC).isoformat()
    assert fails(lambda: tasks.fetch_token(workspace(connected, secret="expired-pat"))) == (
        f"secret 'expired-pat' in {connected.vault_url()} expired on {when}"
    )


def test_secret_forbidden(connected, monkeypatch) -> None:
    from tests.integration.conftest import azure_connection_as  # the same helper the hook tests use

    monkeypatch.setenv("AIRFLOW_CONN_KV_OUTSIDER", azure_connection_as(connected, "outsider"))
    message = fails(lambda: tasks.fetch_token(workspace(connected, azure_conn_id="kv_outsider")))
    prefix = (
        f"the identity of connection 'kv_outsider' may not read secret 'ws-beta-pat' in {connected.vault_url()} "
        "(HTTP 403: grant it 'get' on secrets): "
    )
    assert message.startswith(prefix)
    assert "\n" not in message  # the server's explanation, one line of it


def test_pat_invalid_401(connected) -> None:
    seed = copy.deepcopy(connected.seed)
    vault = next(v for v in seed["vaults"] if v["name"] == "kv-demo")
    vault["secrets"].append(
        {"name": "revoked-pat", "versions": [{"value": "dapi-revoked-0000", "exp": "+90d"}]}
    )
    connected.control.reset(seed)
    assert fails(lambda: tasks.fetch_token(workspace(connected, secret="revoked-pat"))) == (
        f"the workspace token is invalid or expired (HTTP 401 from {connected.workspace_host('ws-beta')})"
    )


def test_pat_of_a_non_admin_403(connected) -> None:
    ws = workspace(connected, ws="ws-alpha", secret="ws-alpha-pat-nonadmin")
    message = fails(lambda: tasks.fetch_token(ws))
    assert re.fullmatch(
        r"the token's user '[^']+@contoso\.com' is not a workspace admin \(not in the 'admins' group\)",
        message,
    ), message


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_workspace_unreachable(connected) -> None:
    ws = workspace(connected)
    host = f"https://127.0.0.1:{closed_port()}"
    ws = type(ws)(**{**ws.__dict__, "databricks_instance": host})
    started = time.monotonic()
    with pytest.raises(ScimUnreachableError) as info:
        tasks.fetch_token(ws)
    # Bounded: six refused connects and the back-off between them, not minutes.
    assert time.monotonic() - started < 40
    assert one_message(info.value) == (
        f"the Databricks workspace {host} is unreachable (ConnectError on GET Me, {DatabricksScimHook.default_retry_policy.attempts} attempts); "
        "check databricks_instance and the network"
    )


def test_guard_exceeded(connected) -> None:
    ws = workspace(connected, groups=("Data Engineers",), max_new_users_per_run=1)
    facts, members = tasks.fetch_token(ws), tasks.resolve_members(ws)
    assert fails(lambda: tasks.add_missing_users(ws, facts, members, {})) == (
        "Refusing to add 4 new users: max_new_users_per_run is 1 (0 members are already present). Nothing was "
        "written. If this many additions is expected, trigger the DAG manually and set 'max_new_users_per_run' "
        'in the trigger form to at least 4, or pass the DAG run conf {"max_new_users_per_run": 4}. A dry run '
        "lists who would be added without adding them."
    )
    creates = connected.control.counts().get("workspace:ws-beta", {}).get("scim.users.create", {})
    assert creates == {}


def test_empty_group_is_a_warning_and_the_run_succeeds(connected, caplog) -> None:
    caplog.set_level(logging.INFO)
    ws = workspace(connected, groups=("Empty Group",))
    summary = tasks.add_missing_users(ws, tasks.fetch_token(ws), tasks.resolve_members(ws), {})
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["Entra group 'Empty Group' has no members; nothing to provision from it"]
    assert summary["empty_groups"] == ["Empty Group"]
    assert summary["added"] == summary["to_add"] == summary["failed"] == 0


def test_graph_unreachable(connected, monkeypatch) -> None:
    from entra_provisioning.hooks import entra

    connection = json.loads(os.environ["AIRFLOW_CONN_MSGRAPH_DEFAULT"])
    connection["host"] = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("AIRFLOW_CONN_MSGRAPH_DEFAULT", json.dumps(connection))
    # Before the Graph retry policy this escaped as a raw httpx.ConnectError from inside msgraph-sdk.
    with pytest.raises(entra.GraphUnavailableError) as info:
        tasks.resolve_members(workspace(connected, groups=("Data Engineers",)))
    assert one_message(info.value) == (
        "Microsoft Graph kept failing while looking up Entra group 'Data Engineers' "
        f"(ConnectError (connection failed), {entra.EntraGroupsHook.default_retry_policy.attempts} attempts); Airflow will retry the task"
    )


def test_key_vault_unreachable(connected) -> None:
    from entra_provisioning.hooks.key_vault import KeyVaultUnavailableError

    vault = f"https://127.0.0.1:{closed_port()}"
    ws = workspace(connected)
    ws = type(ws)(**{**ws.__dict__, "pat_secret_url": f"{vault}/secrets/ws-beta-pat"})
    started = time.monotonic()
    # Before, this was SecretUnavailableError turned into AirflowFailException: no retry for an outage.
    with pytest.raises(KeyVaultUnavailableError) as info:
        tasks.fetch_token(ws)
    assert time.monotonic() - started < 60
    message = one_message(info.value)
    assert message.startswith(f"Key Vault {vault} is unreachable: ")
    assert "\n" not in message
