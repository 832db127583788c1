"""A workspace DAG run for real with ``airflow dags test`` against the sandbox."""

from __future__ import annotations

import json
from typing import Any

import pytest

from demo.sandbox_airflow import latest_xcom

DAG = "entra_provisioning__alpha"
EXPECTED_NEW = {
    "carol.chen@contoso.com",
    "dave.diaz@contoso.com",
    "erin.evans@contoso.com",
    "jane@fabrikam.com",
}
ACCOUNT_DAG = "entra_provisioning__gamma"
#: ws-gamma's members without access: bob and erin are not in the account yet, jane neither.
ACCOUNT_NEW = {"bob.baker@contoso.com", "erin.evans@contoso.com", "jane@fabrikam.com"}

pytestmark = pytest.mark.e2e


def latest_report(airflow_sandbox) -> dict:
    """What the newest run's ``report`` task did (its return value)."""
    return latest_xcom(airflow_sandbox.home, DAG, "report")


def asset_events(airflow_sandbox) -> list[tuple[str, dict]]:
    """Every asset event stored for alpha's asset: (uri, extra)."""
    rows = airflow_sandbox.query(
        "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "WHERE a.name = ? ORDER BY e.id",
        f"{DAG}__users",
    )
    return [(uri, json.loads(extra) if isinstance(extra, str) else extra) for uri, extra in rows]


def test_dry_run_then_real_run_then_nothing_twice(airflow_sandbox) -> None:
    box = airflow_sandbox.sandbox
    box.reset()
    before = box.control.workspace_user_names("ws-alpha")

    dry = airflow_sandbox.run("dags", "test", DAG, "--conf", json.dumps({"dry_run": True}))
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    summary = airflow_sandbox.summary(DAG)
    assert summary["dry_run"] is True and summary["added"] == 0
    assert set(summary["to_add_user_names"]) == EXPECTED_NEW
    assert box.control.workspace_user_names("ws-alpha") == before
    assert airflow_sandbox.creates("ws-alpha") == 0
    counts = airflow_sandbox.counts(DAG)
    assert counts["outcome"] == "dry_run" and counts["to_add"] == 4 and counts["added_in_run"] == 0
    assert latest_report(airflow_sandbox)["asset_event"] is False

    first = airflow_sandbox.run("dags", "test", DAG)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summary = airflow_sandbox.summary(DAG)
    assert set(summary["added_user_names"]) == EXPECTED_NEW
    assert summary["already_present"] == 2 and summary["drift"] == 2
    # The service principal in Data Engineers is provisioned (include_service_principals), the device not.
    assert summary["skipped"] == {"disabled": 2, "no_user_name": 2, "not_a_user": 1, "duplicate_user_name": 0}
    assert summary["groups"]["created"] == ["Data Engineers", "Data Scientists"]
    assert summary["service_principals"]["added"] == 1
    assert box.control.workspace_user_names("ws-alpha") == before | EXPECTED_NEW
    assert airflow_sandbox.creates("ws-alpha") == 4
    # The counts record: the summary's counts, a few hundred bytes, beside the return value.
    counts = airflow_sandbox.counts(DAG)
    assert counts["outcome"] == "success" and counts["error"] is None
    assert (counts["added"], counts["added_in_run"], counts["to_add"], counts["drift"]) == (4, 4, 4, 2)
    assert counts["members_resolved"] == 6 and counts["service_principals_added"] == 1
    assert len(json.dumps(counts)) < 1000
    assert airflow_sandbox.counts(DAG, "resolve_members")["members_resolved"] == 6
    assert airflow_sandbox.counts(DAG, "fetch_token")["outcome"] == "success"
    # The run added someone, so report attached an asset event to the workspace's asset, with the counts.
    assert latest_report(airflow_sandbox)["asset_event"] is True
    events = asset_events(airflow_sandbox)
    assert len(events) == 1
    uri, extra = events[0]
    assert uri == f"x-entra-provisioning://{extra['workspace']}/users"
    assert extra["workspace"].startswith("127.0.0.1:")  # the sandbox workspace's host
    assert extra["added_in_run"] == 4 and extra["outcome"] == "success"

    second = airflow_sandbox.run("dags", "test", DAG)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    summary = airflow_sandbox.summary(DAG)
    assert summary["added"] == 0 and summary["to_add"] == 0 and summary["already_present"] == 6
    assert airflow_sandbox.creates("ws-alpha") == 4  # no POST at all on the second run
    # Nobody added: no asset event this time.
    assert latest_report(airflow_sandbox)["asset_event"] is False
    assert len(asset_events(airflow_sandbox)) == 1


def test_each_task_stores_its_result_once(airflow_sandbox) -> None:
    """The -> dict annotations must not make Airflow push every key again as an XCom of its own."""
    rows = airflow_sandbox.query("SELECT DISTINCT task_id, key FROM xcom WHERE dag_id = ?", DAG)
    keys: dict[str, set[str]] = {}
    for task_id, key in rows:
        keys.setdefault(task_id, set()).add(key)
    assert keys["resolve_members"] == {"return_value", "counts"}, keys
    assert keys["add_missing_users"] == {"return_value", "counts"}, keys
    assert keys["fetch_token"] == {"return_value", "counts"}, keys
    assert keys["report"] == {"return_value"}, keys


def test_guard_fails_before_any_write(airflow_sandbox) -> None:
    box = airflow_sandbox.sandbox
    box.reset()
    before = box.control.workspace_user_names("ws-alpha")
    run = airflow_sandbox.run("dags", "test", DAG, "--conf", json.dumps({"max_new_users_per_run": 1}))
    assert run.returncode != 0
    assert "max_new_users_per_run" in run.stdout + run.stderr
    assert box.control.workspace_user_names("ws-alpha") == before
    assert airflow_sandbox.creates("ws-alpha") == 0
    # The failed task still left its counts record, with the one-line reason; report ran and said so.
    counts = airflow_sandbox.counts(DAG)
    assert counts["outcome"] == "guard_stop" and counts["to_add"] == 4 and counts["added_in_run"] == 0
    assert counts["error"].startswith(
        "Refusing to add 5 new users"
    )  # 4 users and the SP and "\n" not in counts["error"]
    assert latest_report(airflow_sandbox)["events"] == ["guard_stop"]


def test_the_pat_is_nowhere_in_the_metadata_db(airflow_sandbox) -> None:
    """After the runs above: no table of the metadata DB (XCom, rendered fields, conf…) holds the PAT."""
    import sqlite3

    pat = airflow_sandbox.sandbox.pat("ws-alpha")
    assert airflow_sandbox.summary(DAG) is not None  # the runs happened and left XComs behind
    with sqlite3.connect(airflow_sandbox.home / "airflow.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        hits = []
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                if any(pat.encode() in (v if isinstance(v, bytes) else str(v).encode()) for v in row):
                    hits.append(table)
    assert "xcom" in tables and "rendered_task_instance_fields" in tables
    assert hits == []


def _account_writes(box) -> int:
    counts = box.control.counts().get("account", {})
    return sum(
        sum((counts.get(name) or {}).values()) for name in ("scim.users.create", "account.assignments.put")
    )


def test_account_target_dry_run_then_real_run_then_nothing_twice(airflow_sandbox) -> None:
    """The identity-federated workspace through the account API, with a managed-identity connection."""
    box = airflow_sandbox.sandbox
    box.reset()

    dry = airflow_sandbox.run("dags", "test", ACCOUNT_DAG, "--conf", json.dumps({"dry_run": True}))
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    summary = airflow_sandbox.summary(ACCOUNT_DAG)
    assert summary["target"] == "account" and summary["dry_run"] is True
    assert set(summary["to_add_user_names"]) == ACCOUNT_NEW
    assert _account_writes(box) == 0

    first = airflow_sandbox.run("dags", "test", ACCOUNT_DAG)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summary = airflow_sandbox.summary(ACCOUNT_DAG)
    assert set(summary["added_user_names"]) == ACCOUNT_NEW
    assert summary["created_in_account"] == 3 and summary["access_via_group"] == 1
    granted = {a["name"] for a in box.control.account_assignments("ws-gamma") if a["kind"] == "user"}
    assert granted >= ACCOUNT_NEW
    assert box.control.workspace_user_names("ws-gamma") >= ACCOUNT_NEW  # identity federation
    writes = _account_writes(box)

    second = airflow_sandbox.run("dags", "test", ACCOUNT_DAG)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    summary = airflow_sandbox.summary(ACCOUNT_DAG)
    assert summary["to_add"] == 0 and summary["added"] == 0
    assert _account_writes(box) == writes  # no create and no assignment on the second run


def test_no_entra_token_is_in_the_metadata_db(airflow_sandbox) -> None:
    """Every Entra token the sandbox issues starts with ``sbx-at.``: none may reach XCom, rendered fields,
    conf or any other table (the account run above used one for Databricks, others for Graph)."""
    import sqlite3

    assert airflow_sandbox.summary(ACCOUNT_DAG) is not None
    with sqlite3.connect(airflow_sandbox.home / "airflow.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        hits = [
            table
            for table in tables
            for row in db.execute(f'SELECT * FROM "{table}"')
            if any(b"sbx-at." in (v if isinstance(v, bytes) else str(v).encode()) for v in row)
        ]
    assert hits == []


def test_account_target_mirrors_a_group_and_assigns_it(airflow_sandbox) -> None:
    """An extra account-target entry that mirrors Data Engineers as an account group, with ``airflow dags
    test``: the group is created with its members, assigned to the workspace, and nobody directly."""
    import yaml

    box = airflow_sandbox.sandbox
    box.reset()
    original = airflow_sandbox.config_file.read_text()
    document = yaml.safe_load(original)
    gamma = next(e for e in document["workspaces"] if e["name"] == "gamma")
    entry = {**gamma, "name": "gamma-groups", "entra_groups": ["Data Engineers"], "mirror_groups": True}
    document["workspaces"].append(entry)
    airflow_sandbox.config_file.write_text(yaml.safe_dump(document, sort_keys=False))
    try:
        run = airflow_sandbox.run("dags", "test", "entra_provisioning__gamma-groups")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    finally:
        airflow_sandbox.config_file.write_text(original)
    summary = airflow_sandbox.summary("entra_provisioning__gamma-groups")
    assert summary["groups"]["created"] == ["Data Engineers"]
    assert summary["groups"]["assigned_to_workspace"] == ["Data Engineers"]
    group = box.control.account_group("Data Engineers")
    assert {m["name"] for m in group["members"]} == {
        "alice.archer@contoso.com",
        "bob.baker@contoso.com",
        "carol.chen@contoso.com",
        "dave.diaz@contoso.com",
    }
    assignments = box.control.account_assignments("ws-gamma")
    assert any(a["kind"] == "group" and a["name"] == "Data Engineers" for a in assignments)
    assert not any(a["kind"] == "user" and a["name"] == "bob.baker@contoso.com" for a in assignments)


def test_a_runs_metrics_reach_a_statsd_listener(airflow_sandbox) -> None:
    """README "Metrics": with ``[metrics] statsd_on``, ``report`` sends the run's counts through Airflow's
    metrics to a StatsD server on loopback. A dry run with InfluxDB-style tags (the workspace a tag), then
    a real run with plain names (the workspace in the name), throttled twice by Graph and once by SCIM."""
    from demo.sandbox_airflow import airflow
    from sandbox.statsd import StatsdListener, counter_total, gauge_value

    def arrived(name: str, tags: dict[str, str] | None = None) -> Any:
        return lambda samples: (
            [s for s in samples if s.name == name and dict(s.tags) == (tags or {})] and samples
        )

    box = airflow_sandbox.sandbox
    box.reset()
    ours = "airflow.entra_provisioning."
    skipped = {"disabled": 2, "no_user_name": 2, "not_a_user": 1, "duplicate_user_name": 0}
    with StatsdListener() as listener:
        env = {**airflow_sandbox.env, **listener.airflow_env()}
        tagged = {**env, "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True"}
        dry = airflow(tagged, "dags", "test", DAG, "--conf", json.dumps({"dry_run": True}))
        assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
        alpha = {"workspace": "alpha"}
        # The last metric report sends; the listener's thread may still be reading the datagrams.
        last = arrived(ours + "throttled_requests_total", {"service": "databricks", **alpha})
        samples = listener.wait_for("the dry run's metrics", last)
        days = airflow_sandbox.counts(DAG, "fetch_token")["token_expires_in_days"]
        assert isinstance(days, int) and days > 0
        assert gauge_value(samples, ours + "users_to_add", alpha) == 4
        assert gauge_value(samples, ours + "members_resolved", alpha) == 6
        assert gauge_value(samples, ours + "drift", alpha) == 2
        assert gauge_value(samples, ours + "token_expires_in_days", alpha) == days
        for reason, count in skipped.items():
            assert gauge_value(samples, ours + "skipped", {"reason": reason, **alpha}) == count, reason
        # A dry run adds nobody: nothing about added or failed users is sent, not even a zero.
        assert not [s for s in samples if s.name.startswith(ours + "users_added")]
        assert not [s for s in samples if s.name.startswith(ours + "users_failed")]
        assert listener.malformed == []

        mark = len(listener.samples())
        box.control.set_faults(
            [
                {"system": "graph", "rate_429": 1.0, "retry_after": 1, "max_faults": 2},
                {
                    "system": "workspace:ws-alpha",
                    "endpoint": "scim.users.create",
                    "rate_429": 1.0,
                    "retry_after": 1,
                    "max_faults": 1,
                },
            ]
        )
        try:
            real = airflow(env, "dags", "test", DAG)
        finally:
            box.control.clear_faults()
        assert real.returncode == 0, real.stdout[-3000:] + real.stderr[-3000:]
        name = ours + "{}.alpha"
        last = arrived(name.format("throttled_requests_total.databricks"))
        samples = listener.wait_for("the real run's metrics", last, since=mark)
    counts = airflow_sandbox.counts(DAG)
    resolve = airflow_sandbox.counts(DAG, "resolve_members")
    assert (counts["added_in_run"], resolve["throttled"], counts["throttled"]) == (4, 2, 1)
    assert gauge_value(samples, name.format("users_added")) == 4
    assert counter_total(samples, name.format("users_added_total")) == 4
    assert gauge_value(samples, name.format("users_failed")) == 0
    assert counter_total(samples, name.format("users_failed_total")) == 0
    assert gauge_value(samples, name.format("users_to_add")) == 4
    assert gauge_value(samples, name.format("drift")) == 2
    assert gauge_value(samples, name.format("members_resolved")) == 6
    assert gauge_value(samples, name.format("skipped.disabled")) == 2
    assert counter_total(samples, name.format("throttled_requests_total.graph")) == 2
    assert counter_total(samples, name.format("throttled_requests_total.databricks")) == 1
    # Once per run: report sent each metric once, and nothing of ours carries tags in this mode.
    mine = [s for s in samples if s.name.startswith(ours)]
    assert len(mine) == len({s.name for s in mine}) == 14 and not any(s.tags for s in mine)
