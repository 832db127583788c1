"""The account target against the sandbox: the same idempotence, dry-run, guard, crash-and-retry and
token-safety properties the workspace target has, plus what is particular to workspace assignments
(never downgrade an admin, access through a group, principals that are not assignable yet)."""

from __future__ import annotations

import copy
import json
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import pytest
from airflow.sdk.exceptions import AirflowFailException

from demo.sandbox_airflow import DATABRICKS_CONN_ID, connections_env
from entra_provisioning import tasks
from entra_provisioning.config import WorkspaceConfig

from .conftest import kill_add_missing_users_when, team

WS = "ws-gamma"
TEAM = "Account Team"
SIZE = 10


def account_workspace(sandbox: Any, groups: tuple[str, ...] = (TEAM,), **options: Any) -> WorkspaceConfig:
    """An account-target entry for the sandbox's identity-federated workspace (fast pace: it is local)."""
    options.setdefault("scim_max_creates_per_second", 200.0)
    options.setdefault("account_max_assignments_per_second", 200.0)
    options.setdefault("account_max_list_calls_per_minute", 60_000.0)
    options.setdefault("account_max_reads_per_second", 1_000.0)
    options.setdefault("max_new_users_per_run", None)
    options.setdefault("databricks_conn_id", DATABRICKS_CONN_ID)
    return WorkspaceConfig(
        name="account-reliability",
        databricks_instance=sandbox.workspace_host(WS),
        entra_groups=groups,
        pat_secret_url=None,
        schedule=None,
        target="account",
        account_id=sandbox.account_id,
        account_host=sandbox.account_host,
        workspace_id=int(sandbox.endpoints["workspaces"][WS]["workspace_id"]),
        **options,
    )


def name(i: int) -> str:
    return f"account-team-{i:03d}@contoso.onmicrosoft.com"


def account_seed(sandbox: Any, size: int = SIZE) -> dict[str, Any]:
    """The start seed plus a team in Entra, of which, in the account: #0 an ADMIN of the workspace, #1 a
    direct USER, #2 a member of the assigned group "Gamma Readers", #3 and #4 without access; the rest
    missing from the account."""
    users, group = team(TEAM, size)
    seed = copy.deepcopy(sandbox.seed)
    seed["users"] = [*seed["users"], *users]
    seed["groups"] = [*seed["groups"], group]
    account = seed["account"]
    account["users"] = [*account["users"], *({"userName": name(i)} for i in range(5))]
    for g in account["groups"]:
        if g["displayName"] == "Gamma Readers":
            g["members"] = [*g["members"], name(2)]
    account["assignments"][WS] = [
        *account["assignments"][WS],
        {"user": name(0), "permissions": ["ADMIN"]},
        {"user": name(1), "permissions": ["USER"]},
    ]
    account.setdefault("limits", {})["assignable_delay_ms"] = 0
    return seed


def run_all(ws: WorkspaceConfig, params: dict[str, Any] | None = None) -> dict[str, Any]:
    facts = tasks.fetch_token(ws)
    return tasks.add_missing_users(ws, facts, tasks.resolve_members(ws), params or {})


def access(sandbox: Any) -> dict[str, list[str]]:
    return {
        a["name"]: a["permissions"] for a in sandbox.control.account_assignments(WS) if a["kind"] == "user"
    }


def writes(sandbox: Any, since: int = 0) -> list[tuple[str, str]]:
    return [
        (e["method"], e["endpoint"])
        for e in sandbox.control.log(since=since)
        if e["method"] in ("POST", "PUT", "PATCH", "DELETE") and not e["system"].startswith("identity")
    ]


def test_first_run_creates_and_assigns_and_a_second_run_writes_nothing(connected) -> None:
    connected.control.reset(account_seed(connected))
    ws = account_workspace(connected)
    summary = run_all(ws)

    assert (summary["target"], summary["members_resolved"]) == ("account", SIZE)
    assert (summary["already_present"], summary["access_direct"], summary["access_via_group"]) == (3, 2, 1)
    assert (summary["to_add"], summary["to_create"], summary["created_in_account"], summary["added"]) == (
        7,
        5,
        5,
        7,
    )
    assert summary["failed"] == 0
    # Account users with access to the workspace who are in no configured group (the seed's own).
    assert summary["drift_user_names"] == [
        "alice.archer@contoso.com",
        "carol.chen@contoso.com",
        "dave.diaz@contoso.com",
        "olga.owner@contoso.com",
    ]
    assert sorted(summary["created_user_names"]) == [name(i) for i in range(5, SIZE)]

    granted = access(connected)
    assert granted[name(0)] == ["ADMIN"], "an admin was downgraded"
    assert all(granted.get(name(i)) == ["USER"] for i in (1, *range(3, SIZE)))
    assert name(2) not in granted, "a member with access through a group was assigned directly"
    assignment_puts = [e for e in connected.control.log(endpoint="account.assignments.put")]
    assert len(assignment_puts) == 7  # one per member without access, none for those who had it

    # Identity federation: the workspace lists every one of them, with the account's ids.
    account_ids = {u["userName"]: u["id"] for u in connected.control.account_users()}
    workspace_ids = {u["userName"]: u["id"] for u in connected.control.workspace_users(WS)}
    for i in range(SIZE):
        assert workspace_ids[name(i)] == account_ids[name(i)]

    since = connected.control.last_seq()
    again = run_all(ws)
    assert writes(connected, since) == []
    assert (again["to_add"], again["added"], again["already_present"]) == (0, 0, SIZE)


def test_dry_run_writes_nothing_and_lists_who_would_be_assigned(connected) -> None:
    connected.control.reset(account_seed(connected))
    ws = account_workspace(connected)
    since = connected.control.last_seq()
    summary = run_all(ws, {"dry_run": True})
    assert writes(connected, since) == []
    assert summary["dry_run"] is True
    assert summary["to_add_user_names"] == [name(i) for i in range(3, SIZE)]
    assert (summary["added"], summary["created_in_account"]) == (0, 0)


def test_the_guard_counts_creates_and_assignments_and_stops_before_any_write(connected) -> None:
    connected.control.reset(account_seed(connected))
    ws = account_workspace(connected, max_new_users_per_run=6)
    since = connected.control.last_seq()
    with pytest.raises(AirflowFailException, match="Refusing to add 7 new users"):
        run_all(ws)
    assert writes(connected, since) == []


def test_a_principal_not_assignable_yet_is_waited_for(connected) -> None:
    seed = account_seed(connected)
    seed["account"]["limits"]["assignable_delay_ms"] = 1500
    connected.control.reset(seed)
    summary = run_all(account_workspace(connected))
    assert (summary["added"], summary["failed"]) == (7, 0)
    statuses = connected.control.counts()["account"]["account.assignments.put"]
    assert int(statuses.get("404", 0)) > 0, "the delay was not exercised"
    assert int(statuses["200"]) == 7


def test_tokens_reach_only_the_account_host(connected) -> None:
    connected.control.reset(account_seed(connected))
    run_all(account_workspace(connected))
    account = urlsplit(connected.account_host).netloc
    hosts = connected.control.token_hosts()
    databricks_tokens = [h for h in hosts.values() if account in h]
    assert databricks_tokens, "no token reached the account"
    assert all(set(h) == {account} for h in databricks_tokens)  # never the workspace, Graph or a vault
    assert connected.control.log(system=f"workspace:{WS}") == []


def test_a_connection_naming_another_host_is_refused_before_any_request(connected, monkeypatch) -> None:
    connected.control.reset(account_seed(connected))
    conn = json.loads(connections_env(connected.endpoints)[f"AIRFLOW_CONN_{DATABRICKS_CONN_ID.upper()}"])
    conn["host"] = connected.workspace_host("ws-alpha")
    monkeypatch.setenv("AIRFLOW_CONN_DBX_ELSEWHERE", json.dumps(conn))
    since = connected.control.last_seq()
    with pytest.raises(AirflowFailException, match=r"names host .* credentials stay with the host"):
        tasks.fetch_token(account_workspace(connected, databricks_conn_id="dbx_elsewhere"))
    assert [e for e in connected.control.log(since=since) if not e["system"].startswith("identity")] == []


def test_killed_mid_way_then_retried_creates_and_assigns_everyone_exactly_once(connected, tmp_path) -> None:
    size, kill_after = 24, 6
    connected.control.reset(account_seed(connected, size))
    ws = account_workspace(
        connected, scim_concurrency=2, scim_max_creates_per_second=6.0, account_max_assignments_per_second=6.0
    )
    facts = tasks.fetch_token(ws)
    members = tasks.resolve_members(ws)

    def assigned() -> int:
        return int(
            connected.control.counts().get("account", {}).get("account.assignments.put", {}).get("200", 0)
        )

    kill_add_missing_users_when(
        connected, ws, facts, members, lambda: assigned() >= kill_after, tmp_path, "k assignments"
    )
    first = assigned()
    assert kill_after <= first < size - 3  # killed mid-way

    summary = tasks.add_missing_users(ws, facts, members, {})  # Airflow's retry: same body, same inputs

    names = [u["userName"] for u in connected.control.account_users()]
    assert Counter(names) == Counter(set(names))  # nobody twice in the account
    granted = access(connected)
    assert all(name(i) in granted for i in range(size) if i != 2)
    assert granted[name(0)] == ["ADMIN"]
    creates = connected.control.counts()["account"]["scim.users.create"]
    assert int(creates.get("201", 0)) == size - 5  # one successful create per missing member, both attempts
    puts = [e for e in connected.control.log(endpoint="account.assignments.put") if e["status"] == 200]
    assert len(puts) == size - 3  # one successful assignment per member without access, both attempts
    assert summary["failed"] == 0
    assert summary["added"] == size - 3 - first


def test_an_assignment_outage_is_retried_in_one_layer_and_reported_per_user(connected) -> None:
    """A 503 on every assignment: each PUT is retried by the request policy alone (not again by the
    wait for new principals), each member is reported with its reason, and Airflow's retry is left to act."""
    from entra_provisioning.hooks.scim import DatabricksScimHook
    from entra_provisioning.tasks import UsersNotAddedError

    connected.control.reset(account_seed(connected))
    connected.control.set_faults(
        [{"system": "account", "endpoint": "account.assignments.put", "rate_503": 1.0}]
    )
    ws = account_workspace(connected)
    with pytest.raises(UsersNotAddedError, match=r"7 user\(s\) could not be added") as info:
        run_all(ws)
    assert "created in the account but not assigned" in str(info.value)
    puts = connected.control.log(endpoint="account.assignments.put")
    assert len(puts) == 7 * DatabricksScimHook.default_retry_policy.attempts
    connected.control.clear_faults()
    # Airflow's retry: the five now in the account are assigned, nobody is created twice.
    summary = run_all(ws)
    assert (summary["added"], summary["to_create"], summary["failed"]) == (7, 0, 0)
