"""A workspace DAG run for real with ``airflow dags test`` against the sandbox."""

from __future__ import annotations

import json

import pytest

DAG = "entra_provisioning__alpha"
EXPECTED_NEW = {"carol.chen@contoso.com", "dave.diaz@contoso.com", "erin.evans@contoso.com", "jane@fabrikam.com"}

pytestmark = pytest.mark.e2e


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

    first = airflow_sandbox.run("dags", "test", DAG)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summary = airflow_sandbox.summary(DAG)
    assert set(summary["added_user_names"]) == EXPECTED_NEW
    assert summary["already_present"] == 2 and summary["drift"] == 2
    assert summary["skipped"] == {"disabled": 2, "no_user_name": 2, "not_a_user": 2, "duplicate_user_name": 0}
    assert box.control.workspace_user_names("ws-alpha") == before | EXPECTED_NEW
    assert airflow_sandbox.creates("ws-alpha") == 4

    second = airflow_sandbox.run("dags", "test", DAG)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    summary = airflow_sandbox.summary(DAG)
    assert summary["added"] == 0 and summary["to_add"] == 0 and summary["already_present"] == 6
    assert airflow_sandbox.creates("ws-alpha") == 4  # no POST at all on the second run


def test_guard_fails_before_any_write(airflow_sandbox) -> None:
    box = airflow_sandbox.sandbox
    box.reset()
    before = box.control.workspace_user_names("ws-alpha")
    run = airflow_sandbox.run("dags", "test", DAG, "--conf", json.dumps({"max_new_users_per_run": 1}))
    assert run.returncode != 0
    assert "max_new_users_per_run" in run.stdout + run.stderr
    assert box.control.workspace_user_names("ws-alpha") == before
    assert airflow_sandbox.creates("ws-alpha") == 0


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
