"""settings.graph_pool against a real Airflow 3.3.2 (a migrated SQLite home): ``pool --create`` as ``make ui``
and docker-compose's airflow-init run it, and a workspace run whose ``resolve_members`` is in the pool."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from demo.sandbox_airflow import workspaces_yaml
from demo.ui import GRAPH_POOL, create_graph_pool

pytestmark = pytest.mark.e2e

DAG = "entra_provisioning__alpha"


def pool_check(airflow_sandbox) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entra_provisioning", "pool", str(airflow_sandbox.config_file)],
        env=airflow_sandbox.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_pool_create_then_check_then_a_run_in_the_pool(airflow_sandbox) -> None:
    sandbox = airflow_sandbox.sandbox
    airflow_sandbox.config_file.write_text(workspaces_yaml(sandbox.endpoints, settings=GRAPH_POOL))
    name, slots = GRAPH_POOL["graph_pool"], GRAPH_POOL["graph_pool_slots"]

    missing = pool_check(airflow_sandbox)
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert f"pool {name!r} does not exist" in missing.stderr

    created = create_graph_pool(airflow_sandbox.env, airflow_sandbox.config_file)
    assert created.returncode == 0, created.stdout + created.stderr
    got = airflow_sandbox.run("pools", "get", str(name), "--output", "json")
    assert got.returncode == 0, got.stderr
    (pool,) = json.loads(got.stdout)
    assert (pool["pool"], int(pool["slots"])) == (name, slots)
    assert pool_check(airflow_sandbox).returncode == 0

    # Run again with other slots: the pool is updated, not duplicated or refused.
    airflow_sandbox.config_file.write_text(
        workspaces_yaml(sandbox.endpoints, settings={**GRAPH_POOL, "graph_pool_slots": 5})
    )
    assert create_graph_pool(airflow_sandbox.env, airflow_sandbox.config_file).returncode == 0
    (pool,) = json.loads(airflow_sandbox.run("pools", "get", str(name), "--output", "json").stdout)
    assert int(pool["slots"]) == 5

    # A dry run with resolve_members in the pool: the task instance records the pool it ran in.
    result = airflow_sandbox.run("dags", "test", DAG, "--conf", json.dumps({"dry_run": True}))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = airflow_sandbox.query(
        "SELECT task_id, pool, state FROM task_instance WHERE dag_id = ? ORDER BY start_date DESC", DAG
    )
    newest = {}
    for task_id, task_pool, state in rows:
        newest.setdefault(task_id, (task_pool, state))
    assert newest["resolve_members"] == (name, "success")
    assert newest["fetch_token"] == ("default_pool", "success")
