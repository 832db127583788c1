"""Group mirroring, service principals and entitlements against the sandbox, for both targets."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from entra_provisioning import tasks
from entra_provisioning.hooks.scim import DatabricksScimHook

from .conftest import workspace
from .test_account_target import account_workspace

ETL_APP_ID = "0a6f2a13-c15d-5cce-a92e-8d98ae5df6f7"
#: Data Engineers' enabled users (Frank is disabled); Carol and Dave come through the nested group.
ENGINEERS = {
    "alice@contoso.onmicrosoft.com",
    "bob@contoso.onmicrosoft.com",
    "carol@contoso.onmicrosoft.com",
    "dave@contoso.onmicrosoft.com",
}


@pytest.fixture
def apps_graph(connected, monkeypatch: pytest.MonkeyPatch) -> str:
    """An msgraph connection for the app that holds Application.Read.All (service principals' appId)."""
    conn = json.loads(os.environ["AIRFLOW_CONN_MSGRAPH_DEFAULT"])
    apps = connected.identity("graph-reader-apps")
    conn["login"], conn["password"] = apps["client_id"], apps["client_secret"]
    monkeypatch.setenv("AIRFLOW_CONN_MSGRAPH_APPS", json.dumps(conn))
    return "msgraph_apps"


def entra_group_id(sandbox: Any, name: str) -> str:
    (group_id,) = [g["id"] for g in sandbox.control.tenant()["groups"] if g["displayName"] == name]
    return str(group_id)


def run(ws: Any, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return tasks.add_missing_users(ws, tasks.fetch_token(ws), tasks.resolve_members(ws), params or {})


def writes(sandbox: Any, since: int) -> list[str]:
    return [
        e["endpoint"]
        for e in sandbox.control.log(since=since)
        if e["method"] in ("POST", "PUT", "PATCH", "DELETE") and not e["system"].startswith("identity")
    ]


def members_of(group: dict[str, Any]) -> set[str]:
    return {m["name"] for m in group["members"]}


def test_a_group_and_its_service_principal_are_mirrored_once(connected, apps_graph) -> None:
    ws = workspace(
        connected,
        groups=("Data Engineers",),
        mirror_groups=True,
        include_service_principals=True,
        msgraph_conn_id=apps_graph,
    )
    summary = run(ws)
    group = connected.control.workspace_group("ws-beta", "Data Engineers")
    assert group is not None and group["externalId"] == entra_group_id(connected, "Data Engineers")
    assert members_of(group) == {*ENGINEERS, ETL_APP_ID}
    assert [sp["applicationId"] for sp in connected.control.workspace_service_principals("ws-beta")] == [
        ETL_APP_ID
    ]
    groups, sps = summary["groups"], summary["service_principals"]
    assert groups["created"] == ["Data Engineers"] and groups["memberships_added"] == 5
    assert "workspace-local" in groups["notes"][0]
    assert (sps["resolved"], sps["added"], sps["without_app_id"]) == (1, 1, 0)
    assert summary["added"] == 4  # the users, as before

    since = connected.control.last_seq()
    again = run(ws)
    assert writes(connected, since) == []
    assert again["groups"]["memberships_to_add"] == 0 and again["service_principals"]["to_add"] == 0


def test_without_application_read_all_service_principals_are_skipped_and_said_once(connected, caplog) -> None:
    ws = workspace(connected, groups=("Data Engineers",), include_service_principals=True)
    summary = run(ws)
    assert (
        summary["service_principals"]["without_app_id"] == 1 and summary["service_principals"]["added"] == 0
    )
    assert summary["added"] == 4
    assert any(
        "needs the Application.Read.All application permission" in r.getMessage() for r in caplog.records
    )


def test_someone_elses_group_is_left_alone_and_the_others_are_mirrored(connected) -> None:
    """ws-beta holds an "Analysts & Friends's Club" group without externalId: not ours."""
    ws = workspace(connected, groups=("Analysts & Friends's Club", "Data Engineers"), mirror_groups=True)
    before = connected.control.workspace_group("ws-beta", "Analysts & Friends's Club")
    with pytest.raises(
        AirflowFailException, match=r"1 group\(s\) could not be mirrored .*belongs to someone else"
    ):
        run(ws)
    assert connected.control.workspace_group("ws-beta", "Analysts & Friends's Club") == before
    assert members_of(connected.control.workspace_group("ws-beta", "Data Engineers")) == ENGINEERS


def seed_stale_group(sandbox: Any, extra: list[str]) -> None:
    """Our mirror of Data Engineers, holding two people who left the Entra group."""
    for name in extra:
        sandbox.control.add_workspace_user("ws-beta", name)
    sandbox.control.add_workspace_group(
        "ws-beta", "Data Engineers", external_id=entra_group_id(sandbox, "Data Engineers"), members=extra
    )


def test_membership_drift_is_reported_and_only_removed_when_opted_in(connected) -> None:
    leavers = ["leaver-1@contoso.com", "leaver-2@contoso.com"]
    seed_stale_group(connected, leavers)
    ws = workspace(connected, groups=("Data Engineers",), mirror_groups=True)
    summary = run(ws)
    assert summary["groups"]["membership_drift"] == 2 and summary["groups"]["memberships_removed"] == 0
    assert sorted(summary["groups"]["membership_drift_names"]) == [f"Data Engineers: {n}" for n in leavers]
    assert members_of(connected.control.workspace_group("ws-beta", "Data Engineers")) == {
        *ENGINEERS,
        *leavers,
    }

    # Opted in, under a guard of 1: nothing is written at all.
    since = connected.control.last_seq()
    strict = workspace(
        connected,
        groups=("Data Engineers",),
        mirror_groups=True,
        remove_stale_members=True,
        max_membership_removals_per_run=1,
    )
    with pytest.raises(AirflowFailException, match="Refusing to remove 2 stale group memberships"):
        run(strict)
    assert writes(connected, since) == []

    # Dry run shows what it would remove; then a real run removes the memberships, never the users.
    allowed = workspace(connected, groups=("Data Engineers",), mirror_groups=True, remove_stale_members=True)
    dry = run(allowed, {"dry_run": True})
    assert dry["groups"]["memberships_to_remove"] == 2 and writes(connected, since) == []
    done = run(allowed)
    assert done["groups"]["memberships_removed"] == 2
    assert members_of(connected.control.workspace_group("ws-beta", "Data Engineers")) == ENGINEERS
    assert {*leavers} <= connected.control.workspace_user_names("ws-beta")  # users stay


def test_memberships_are_added_in_batches_under_the_servers_limit(connected) -> None:
    connected.control.set_workspace_limits("ws-beta", patch_members_max=2)
    ws = workspace(connected, groups=("Data Engineers",), mirror_groups=True, group_patch_batch_size=2)
    run(ws)
    patches = connected.control.log(endpoint="scim.groups.patch")
    assert [e["status"] for e in patches] == [204, 204]  # 4 members, 2 per PATCH
    assert members_of(connected.control.workspace_group("ws-beta", "Data Engineers")) == ENGINEERS


def test_a_batch_over_the_servers_limit_fails_that_group_with_the_reason(connected) -> None:
    connected.control.set_workspace_limits("ws-beta", patch_members_max=2)
    ws = workspace(connected, groups=("Data Engineers",), mirror_groups=True, group_patch_batch_size=3)
    with pytest.raises(
        AirflowFailException, match=r"Data Engineers: changing the members of group .* HTTP 400"
    ):
        run(ws)


def test_entitlements_go_to_users_this_job_creates_only(connected) -> None:
    ws = workspace(connected, groups=("Data Engineers",), entitlements=("allow-cluster-create",))
    connected.control.add_workspace_user("ws-beta", "alice@contoso.onmicrosoft.com")
    run(ws)
    assert connected.control.workspace_user("ws-beta", "bob@contoso.onmicrosoft.com")["entitlements"] == [
        {"value": "allow-cluster-create"}
    ]
    assert not connected.control.workspace_user("ws-beta", "alice@contoso.onmicrosoft.com").get(
        "entitlements"
    )


def test_account_mirroring_assigns_the_group_not_each_user(connected, apps_graph) -> None:
    ws = account_workspace(
        connected,
        groups=("Data Engineers",),
        mirror_groups=True,
        include_service_principals=True,
        msgraph_conn_id=apps_graph,
    )
    summary = run(ws)
    group = connected.control.account_group("Data Engineers")
    assert group is not None and members_of(group) == {*ENGINEERS, ETL_APP_ID}
    assignments = connected.control.account_assignments("ws-gamma")
    assert {"Data Engineers"} == {
        a["name"] for a in assignments if a["kind"] == "group" and a["name"] == "Data Engineers"
    }
    assert not {a["name"] for a in assignments if a["kind"] == "user"} & ENGINEERS  # no direct assignment
    assert connected.control.workspace_user_names("ws-gamma") >= ENGINEERS  # access through the group
    assert summary["groups"]["assigned_to_workspace"] == ["Data Engineers"]
    assert summary["created_in_account"] == 4 and summary["added"] == 0

    since = connected.control.last_seq()
    run(ws)
    assert writes(connected, since) == []


def test_account_mirroring_with_direct_assignments_too(connected) -> None:
    ws = account_workspace(
        connected, groups=("Data Engineers",), mirror_groups=True, assign_users_directly=True
    )
    summary = run(ws)
    direct = {a["name"] for a in connected.control.account_assignments("ws-gamma") if a["kind"] == "user"}
    assert direct >= ENGINEERS
    assert summary["added"] == 4 and summary["groups"]["assigned_to_workspace"] == ["Data Engineers"]


def test_a_group_databricks_keeps_in_sync_itself_is_reported_not_forced(connected) -> None:
    """An AIM-synced group carrying our Entra group's id: Databricks refuses membership changes (500)."""
    connected.control.add_account_group(
        "Data Engineers", external_id=entra_group_id(connected, "Data Engineers"), external=True
    )
    from entra_provisioning.tasks import GroupsNotMirroredYetError

    ws = account_workspace(connected, groups=("Data Engineers",), mirror_groups=True)
    # A lasting 5xx cannot be told from an outage: Airflow's retries get their chance before the run fails.
    with pytest.raises(GroupsNotMirroredYetError, match=r"Data Engineers: .*HTTP 500"):
        run(ws)
    patches = connected.control.log(endpoint="scim.groups.patch")
    assert len(patches) == DatabricksScimHook.default_retry_policy.attempts  # a 5xx is retried, then reported
