"""The workspace DAGs on a production-shaped Airflow: PostgreSQL metadata, CeleryExecutor over Redis, and
scheduler, dag-processor, api-server, triggerer and a Celery worker as separate processes (loopback only).

One cluster serves the whole module (starting it is most of the cost); the tests run in file order and
later ones build on the state the earlier ones left, as an operator's day would:

1. trigger ``alpha`` through the REST API the UI uses: dry run (nothing written), then for real; a DAG
   scheduled on alpha's asset runs once, after the real run, and not after a third run that adds nobody;
2. a *scheduled* run of ``beta`` (its cron fires every minute) succeeds;
3. a backfill of ``beta`` succeeds and creates nobody (add-only makes it a re-check);
4. the CLI operations of docs/operations.md: trigger with a conf, list runs, task states, the run
   summary;
5. the tasks ran on the Celery worker, from our queue;
6. the PAT is in no task log file and nowhere in the metadata DB, and went only to its workspace;
7. a bad entry in the workspaces file: the dag-processor reports it as the config-check file's import
   error while alpha and beta stay active and runnable; a file broken as a whole makes Airflow mark them
   stale (what one bad entry used to do); fixing the file brings them back;
8. XCom retention: ``report`` deletes the ``return_value`` XComs of alpha's runs older than
   ``settings.xcom_retention_days`` (backdated for the test), keeping the latest 3 runs' and every ``counts``
   XCom; the operations page's ``airflow db clean`` commands run (as a dry run);
9. metrics: every component sends StatsD to a listener on loopback; the ``report`` task on the Celery
   worker sent each run's metrics, and the counters add up to what the sandbox saw created.

Skipped when PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) is not reachable, unless
``ENTRA_PROVISIONING_REQUIRE_SERVICES=1`` (``.ci/run`` sets it), which makes that a failure.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import yaml

from demo.distributed import (
    COMPONENTS,
    AirflowCluster,
    fresh_database,
    services_problem,
    wait_for,
)
from demo.sandbox_airflow import DEMO_WORKSPACES, airflow_env, workspaces_yaml
from sandbox.client import SandboxProcess
from sandbox.pytest_plugin import Sandbox
from sandbox.smtp import SmtpSink
from sandbox.statsd import StatsdListener

from .conftest import require_services

ALPHA = "entra_provisioning__alpha"
BETA = "entra_provisioning__beta"
GAMMA = "entra_provisioning__gamma"
#: ws-gamma's members without access (identity-federated: provisioned through the account API).
GAMMA_NEW = {"bob.baker@contoso.com", "erin.evans@contoso.com", "jane@fabrikam.com"}
ALPHA_NEW = {"carol.chen@contoso.com", "dave.diaz@contoso.com", "erin.evans@contoso.com", "jane@fabrikam.com"}
RUN_TIMEOUT = 240  # seconds for one run on a busy 2-core machine; a healthy run takes about 30 s
CHECK_FILE = "entra_provisioning_config_check.py"
#: Someone else's DAG, scheduled on alpha's asset (written into the test's DAG folder).
WATCHER = "watches_alpha_users"
DAG_FILE = "entra_provisioning_dags.py"
#: How often the dag-processor re-reads each DAG file here (Airflow's default is 30 s): a config edit shows
#: up within seconds, which the config case below waits for several times.
PARSE_INTERVAL = 10

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@dataclass
class Distributed:
    cluster: AirflowCluster
    sandbox: Sandbox
    beta_unpaused_at: datetime
    initial_users: dict[str, set[str]]
    config_file: Path
    #: The StatsD server every component's ``[metrics]`` points at (statsd_on).
    statsd: StatsdListener

    def creates(self, workspace: str) -> dict[str, int]:
        """SCIM create requests sent to ``workspace`` so far, by HTTP status."""
        counts = self.sandbox.control.counts().get(f"workspace:{workspace}", {})
        return dict(counts.get("scim.users.create") or {})


@pytest.fixture(scope="module")
def distributed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distributed]:
    require_services(services_problem())

    root = tmp_path_factory.mktemp("distributed")
    alpha, beta, gamma = DEMO_WORKSPACES
    # alpha: manual only, so nothing but this test's triggers touches ws-alpha.
    # beta: due every minute, so the scheduler itself starts runs while the test watches.
    beta = dataclasses.replace(beta, options={**beta.options, "schedule": "* * * * *"})
    started = time.monotonic()
    with SandboxProcess(root / "sandbox") as process, StatsdListener() as statsd:
        sandbox = Sandbox(process)
        config_file = root / "workspaces.yaml"
        config_file.write_text(workspaces_yaml(sandbox.endpoints, (alpha, beta, gamma)))
        base_env = airflow_env(sandbox.endpoints, root / "home", config_file)
        base_env["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"] = str(PARSE_INTERVAL)
        # The package's DAG files, plus a DAG of someone else's scheduled on alpha's asset.
        base_env["AIRFLOW__CORE__DAGS_FOLDER"] = str(_dags_folder(root / "dags", sandbox))
        base_env.update(statsd.airflow_env())
        initial = {ws: sandbox.control.workspace_user_names(ws) for ws in ("ws-alpha", "ws-beta")}
        with fresh_database() as database:
            cluster = AirflowCluster(base_env, root / "cluster", database)
            try:
                cluster.migrate()
                cluster.start()
                cluster.wait_ready([ALPHA, BETA, GAMMA, WATCHER])
                cluster.unpause(WATCHER)
                # Unpaused first (with the CLI command docs/operations.md gives), so its scheduled runs happen
                # while the REST tests run.
                unpaused = cluster.airflow("dags", "unpause", BETA)
                assert unpaused.returncode == 0, unpaused.stdout[-2000:] + unpaused.stderr[-2000:]
                beta_unpaused_at = datetime.now(UTC)
                print(f"\ndistributed Airflow ready in {time.monotonic() - started:.0f} s ({root})")
                yield Distributed(cluster, sandbox, beta_unpaused_at, initial, config_file, statsd)
            finally:
                exit_codes = cluster.stop()
                print(f"distributed Airflow stopped after {time.monotonic() - started:.0f} s: {exit_codes}")
    assert all(c.process.poll() is not None for c in cluster.components)


def test_rest_trigger_dry_run_then_real_run(distributed: Distributed) -> None:
    cluster, box = distributed.cluster, distributed.sandbox
    before = box.control.workspace_user_names("ws-alpha")
    assert not ALPHA_NEW & before

    cluster.unpause(ALPHA)
    dry_run_id = cluster.trigger(ALPHA, {"dry_run": True})
    cluster.wait_run(ALPHA, dry_run_id, timeout=RUN_TIMEOUT)
    dry = cluster.summary(ALPHA, dry_run_id)
    assert dry["dry_run"] is True and dry["added"] == 0
    assert set(dry["to_add_user_names"]) == ALPHA_NEW  # "would add"
    assert box.control.workspace_user_names("ws-alpha") == before
    assert distributed.creates("ws-alpha") == {}

    run_id = cluster.trigger(ALPHA)
    run = cluster.wait_run(ALPHA, run_id, timeout=RUN_TIMEOUT)
    assert run["run_type"] == "manual" and run["conf"] == {}
    summary = cluster.summary(ALPHA, run_id)
    assert summary["dry_run"] is False
    assert set(summary["added_user_names"]) == ALPHA_NEW
    assert box.control.workspace_user_names("ws-alpha") == before | ALPHA_NEW
    assert distributed.creates("ws-alpha") == {"201": len(ALPHA_NEW)}


def test_an_asset_event_only_after_a_run_that_added_someone(distributed: Distributed) -> None:
    """alpha's dry run and its real run above emitted one asset event (the real run's, with its counts), so
    the DAG scheduled on alpha's asset ran once, and saw the counts; a run that adds nobody emits none."""
    cluster = distributed.cluster

    def watcher_runs(done: int) -> list[dict[str, Any]] | None:
        cluster.check_alive()
        runs = cluster.runs(WATCHER)
        return runs if sum(r["state"] == "success" for r in runs) >= done else None

    (run,) = wait_for("the asset-scheduled run", lambda: watcher_runs(1), RUN_TIMEOUT, 2, cluster.log_tails)
    assert run["run_type"] == "asset_triggered"
    seen = cluster.xcom(WATCHER, run["dag_run_id"], "note_the_event")
    assert seen["added_in_run"] == len(ALPHA_NEW) and seen["outcome"] == "success"
    assert seen["source_dag_id"] == ALPHA and seen["uri"].endswith("/users")

    run_id = cluster.trigger(ALPHA)  # everyone is there now: nobody to add
    cluster.wait_run(ALPHA, run_id, timeout=RUN_TIMEOUT)
    report = cluster.xcom(ALPHA, run_id, "report")
    assert report["asset_event"] is False and report["added_in_run"] == 0
    events = cluster.query(
        "SELECT e.source_run_id FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.name = %s",
        (f"{ALPHA}__users",),
    )
    assert len(events) == 1, events
    time.sleep(2 * PARSE_INTERVAL)  # the scheduler creates asset-triggered runs within seconds
    assert len(cluster.runs(WATCHER)) == 1


def test_an_account_target_run_on_the_celery_worker(distributed: Distributed) -> None:
    """gamma: an identity-federated workspace, provisioned through the account API with the managed
    identity's Databricks connection, on the real worker."""
    cluster, box = distributed.cluster, distributed.sandbox
    cluster.unpause(GAMMA)
    run_id = cluster.trigger(GAMMA)
    cluster.wait_run(GAMMA, run_id, timeout=RUN_TIMEOUT)
    summary = cluster.summary(GAMMA, run_id)
    assert summary["target"] == "account"
    assert set(summary["added_user_names"]) == GAMMA_NEW and summary["failed"] == 0
    granted = {a["name"] for a in box.control.account_assignments("ws-gamma") if a["kind"] == "user"}
    assert granted >= GAMMA_NEW
    assert box.control.workspace_user_names("ws-gamma") >= GAMMA_NEW


def test_a_scheduled_run_succeeds(distributed: Distributed) -> None:
    """A run the scheduler started from the cron (not the one unpausing catches up on) succeeds."""
    cluster, box = distributed.cluster, distributed.sandbox
    unpaused = distributed.beta_unpaused_at.isoformat()

    def ticked() -> dict[str, Any] | None:
        cluster.check_alive()
        runs = [r for r in cluster.runs(BETA) if r["run_type"] == "scheduled" and r["run_after"] > unpaused]
        return next((r for r in runs if r["state"] == "success"), None)

    run = wait_for(
        "a scheduled run of beta", ticked, timeout=90 + RUN_TIMEOUT, interval=3, context=cluster.log_tails
    )
    summary = cluster.summary(BETA, run["dag_run_id"])
    assert summary["dry_run"] is False and summary["failed"] == 0
    members = box.control.workspace_user_names("ws-beta")
    # Whichever scheduled run came first added the groups' users; by now every one of them is there.
    assert summary["to_add"] == 0 or set(summary["added_user_names"]) <= members
    assert summary["already_present"] + summary["added"] == summary["members_resolved"]
    assert len(members) > 200  # "Large Team" alone has about 250 users


def test_backfill_is_a_harmless_recheck(distributed: Distributed) -> None:
    """``airflow backfill create`` on an add-only DAG: every run re-checks membership and adds nobody new."""
    cluster, box = distributed.cluster, distributed.sandbox
    # Nothing is added by a backfill when the workspace is already complete, so make sure it is: the
    # scheduled runs above have provisioned beta (wait for any in flight to end first).
    wait_for("beta to have no active run", lambda: not _active_runs(cluster, BETA), RUN_TIMEOUT, interval=3)
    members_before = box.control.workspace_user_names("ws-beta")
    creates_before = distributed.creates("ws-beta")
    assert creates_before.get("201", 0) == len(members_before - distributed.initial_users["ws-beta"]) > 200

    # Two minutes an hour before the test started: no scheduled run exists for them.
    start = (distributed.beta_unpaused_at - timedelta(hours=1)).replace(second=0, microsecond=0)
    end = start + timedelta(minutes=1)
    result = cluster.airflow(
        "backfill", "create", "--dag-id", BETA,
        "--from-date", start.isoformat(), "--to-date", end.isoformat(),
        "--max-active-runs", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    def backfill_done() -> list[dict[str, Any]] | None:
        cluster.check_alive()
        runs = [r for r in cluster.runs(BETA) if r["run_type"] == "backfill"]
        return runs if len(runs) == 2 and all(r["state"] in ("success", "failed") for r in runs) else None

    runs = wait_for(
        "the backfill runs", backfill_done, 2 * RUN_TIMEOUT, interval=3, context=cluster.log_tails
    )
    assert sorted(r["logical_date"][:16] for r in runs) == [
        start.strftime("%Y-%m-%dT%H:%M"),
        end.strftime("%Y-%m-%dT%H:%M"),
    ]
    assert [r["state"] for r in runs] == ["success", "success"]
    for run in runs:
        summary = cluster.summary(BETA, run["dag_run_id"])
        assert summary["added"] == 0 and summary["to_add"] == 0 and summary["failed"] == 0
        assert summary["already_present"] == summary["members_resolved"] > 200
    # Add-only and idempotent: nobody was created again, nobody removed.
    assert box.control.workspace_user_names("ws-beta") == members_before
    assert distributed.creates("ws-beta") == creates_before
    paused = cluster.airflow("dags", "pause", BETA)
    assert paused.returncode == 0, paused.stderr[-2000:]
    assert cluster.api("GET", f"/api/v2/dags/{BETA}")["is_paused"] is True


def test_cli_operations_from_the_readme(distributed: Distributed) -> None:
    """docs/operations.md "Operations CLI": trigger with a conf, list runs, task states, read the run summary."""
    cluster, box = distributed.cluster, distributed.sandbox
    before = box.control.workspace_user_names("ws-alpha")

    trigger = cluster.airflow("dags", "trigger", ALPHA, "-c", '{"dry_run": true}', "-o", "json")
    assert trigger.returncode == 0, trigger.stdout[-3000:] + trigger.stderr[-3000:]
    (created,) = _json_out(trigger.stdout)
    run_id = created["dag_run_id"]
    cluster.wait_run(ALPHA, run_id, timeout=RUN_TIMEOUT)

    listed = cluster.airflow("dags", "list-runs", ALPHA, "-o", "json")
    assert listed.returncode == 0, listed.stderr[-3000:]
    runs = {r["run_id"]: r for r in _json_out(listed.stdout)}
    assert runs[run_id]["state"] == "success"
    # The three REST runs (dry, real, and the one that added nobody) and this one.
    assert sum(r["state"] == "success" for r in runs.values()) == 4

    states = cluster.airflow("tasks", "states-for-dag-run", ALPHA, run_id, "-o", "json")
    assert states.returncode == 0, states.stderr[-3000:]
    assert {t["task_id"]: t["state"] for t in _json_out(states.stdout)} == {
        "fetch_token": "success",
        "resolve_members": "success",
        "add_missing_users": "success",
        "report": "success",
    }

    summary = cluster.summary(ALPHA, run_id)
    assert summary["dry_run"] is True and summary["to_add"] == 0 and summary["already_present"] == 6
    assert box.control.workspace_user_names("ws-alpha") == before
    # The same summary as a table in the task log: "Run summary for alpha:" followed by the counts.
    (log_file,) = [
        p
        for p in cluster.task_log_files()
        if f"run_id={run_id}" in str(p) and "task_id=add_missing_users" in str(p)
    ]
    assert "Run summary for alpha" in log_file.read_text()


def test_tasks_ran_on_the_celery_worker(distributed: Distributed) -> None:
    cluster = distributed.cluster
    assert [c.name for c in cluster.components] == [name for name, _ in COMPONENTS]
    pids = {c.process.pid for c in cluster.components}
    assert len(pids) == len(COMPONENTS)  # one process (group) per component
    rows = cluster.query(
        "SELECT DISTINCT queue, state, executor FROM task_instance WHERE dag_id = %s", (ALPHA,)
    )
    assert rows and all(queue == cluster.queue and state == "success" for queue, state, _ in rows), rows
    jobs = {job for (job,) in cluster.query("SELECT DISTINCT job_type FROM job")}
    assert {"SchedulerJob", "TriggererJob", "DagProcessorJob"} <= jobs
    worker_log = next(c for c in cluster.components if c.name == "worker").log_file.read_text(
        errors="replace"
    )
    assert cluster.queue in worker_log  # the worker consumed our queue and nothing else


def test_the_pat_is_in_no_log_and_nowhere_in_the_metadata_db(distributed: Distributed) -> None:
    cluster, box = distributed.cluster, distributed.sandbox
    pats = {ws: box.pat(ws) for ws in ("ws-alpha", "ws-beta")}

    log_files = cluster.task_log_files() + [c.log_file for c in cluster.components]
    task_logs = [p for p in log_files if "dag_id=" in str(p)]
    assert len(task_logs) >= 3 * 6  # every task of every run above left a log file
    assert any("Run summary for" in p.read_text(errors="replace") for p in task_logs)
    for path in log_files:
        data = path.read_bytes()
        for ws, pat in pats.items():
            assert pat.encode() not in data, f"{ws} PAT in {path}"
        # Every Entra token the sandbox issues (Graph, Key Vault, and Databricks for gamma) starts so.
        assert b"sbx-at." not in data, f"an Entra token in {path}"

    # The tables named in the design first (each must hold rows, or the search proves nothing) …
    assert cluster.query("SELECT count(*) FROM xcom")[0][0] >= 3 * 6
    assert cluster.query("SELECT count(*) FROM rendered_task_instance_fields")[0][0] >= 3 * 6
    confs = [conf for (conf,) in cluster.query("SELECT conf FROM dag_run")]
    assert {"dry_run": True} in confs
    # … then every row of every table of the metadata database, as text.
    tables = [t for (t,) in cluster.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    assert {"xcom", "rendered_task_instance_fields", "dag_run", "task_instance", "log"} <= set(tables)
    hits = []
    for table in tables:
        for ws, pat in [*pats.items(), ("an Entra token", "sbx-at.")]:
            found = cluster.query(f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE %s', (f"%{pat}%",))
            if found[0][0]:
                hits.append((table, ws))
    assert hits == []

    # The PAT was presented to its own workspace host and to nothing else.
    for ws, pat in pats.items():
        host = urlsplit(box.workspace_host(ws)).netloc
        assert box.hosts_for_token(pat) == {host}, ws


def test_a_bad_entry_keeps_the_other_dags_a_broken_file_does_not(distributed: Distributed) -> None:
    """docs/configuration.md "When the workspaces file has a problem", on the real dag-processor and Celery worker."""
    cluster, config_file = distributed.cluster, distributed.config_file
    good = config_file.read_text()
    assert _import_errors(cluster) == {}
    # beta was paused by the backfill test, but a scheduled run may still be going on a busy machine; a
    # task of it that started while the file is broken would find no DAG and be rescheduled for minutes
    # (as docs/production.md says), so the file is broken only once nothing of beta runs.
    _wait_beta_idle(cluster)
    document = yaml.safe_load(good)
    delta = {**document["workspaces"][0], "name": "delta", "scim_concurrency": 0}
    try:
        # One bad entry: loud under the config-check file, while the workspace DAG file parses cleanly.
        edited_at = datetime.now(UTC)
        config_file.write_text(yaml.safe_dump({**document, "workspaces": [*document["workspaces"], delta]}))
        errors = wait_for(
            "the config-check import error",
            lambda: _reparsed(cluster, edited_at) and _import_errors(cluster),
            timeout=6 * PARSE_INTERVAL + 60,
            interval=2,
            context=cluster.log_tails,
        )
        assert list(errors) == [CHECK_FILE], errors
        assert f"{config_file}: workspaces[3] (name 'delta'): field 'scim_concurrency'" in errors[CHECK_FILE]
        for dag_id in (ALPHA, BETA):
            assert cluster.api("GET", f"/api/v2/dags/{dag_id}")["is_stale"] is False
        with pytest.raises(Exception, match="404"):
            cluster.api("GET", "/api/v2/dags/entra_provisioning__delta")
        # A task that starts now re-parses the DAG file on the worker, and still finds its DAG there.
        run_id = cluster.trigger(ALPHA, {"dry_run": True})
        cluster.wait_run(ALPHA, run_id, timeout=RUN_TIMEOUT)

        # The file broken as a whole: the DAG file fails to import too, and Airflow marks every DAG it
        # defined stale. That is what a single bad entry did before entries were checked one by one.
        config_file.write_text("- the whole file is a list, not a mapping\n")

        def all_stale() -> dict[str, str] | None:
            errors = _import_errors(cluster)
            stale = all(cluster.api("GET", f"/api/v2/dags/{d}")["is_stale"] for d in (ALPHA, BETA))
            return errors if stale and DAG_FILE in errors else None

        errors = wait_for(
            "alpha and beta to go stale",
            all_stale,
            6 * PARSE_INTERVAL + 60,
            interval=2,
            context=cluster.log_tails,
        )
        assert "the file must be a mapping" in errors[DAG_FILE]
    finally:
        config_file.write_text(good)

    def recovered() -> bool:
        fresh = not any(cluster.api("GET", f"/api/v2/dags/{d}")["is_stale"] for d in (ALPHA, BETA))
        return fresh and _import_errors(cluster) == {}

    wait_for(
        "alpha and beta to come back",
        recovered,
        6 * PARSE_INTERVAL + 60,
        interval=2,
        context=cluster.log_tails,
    )


def test_retention_deletes_old_return_values_and_keeps_counts(distributed: Distributed) -> None:
    """docs/operations.md "Keeping the metadata database small" on the real deployment: ``report`` on the
    Celery worker remembers each run in alpha's state Variable and, with the default
    ``settings.xcom_retention_days`` (30), deletes through the task-execution API the ``return_value``
    XComs of runs older than that, but for the latest 3, keeping every ``counts`` XCom and every run row.
    The runs are made old by backdating their entries in the Variable (the only dates retention reads)."""
    from entra_provisioning.run_events import WORK_TASKS

    cluster = distributed.cluster
    state_key = f"{ALPHA}__state"

    def finished() -> list[str]:
        done = [r for r in cluster.runs(ALPHA) if r["state"] in ("success", "failed")]
        return [r["dag_run_id"] for r in sorted(done, key=lambda r: r["start_date"])]

    # At least four finished runs, so that with a fifth the two oldest are past the latest three.
    for _ in range(max(0, 4 - len(finished()))):
        cluster.wait_run(ALPHA, cluster.trigger(ALPHA, {"dry_run": True}), timeout=RUN_TIMEOUT)
    runs = finished()
    state = json.loads(cluster.api("GET", f"/api/v2/variables/{state_key}")["value"])
    remembered = [run_id for run_id, _ in state["runs"]]
    assert remembered == runs, (remembered, runs)  # every report remembered its run, in order

    old = int((datetime.now(UTC) - timedelta(days=40)).timestamp())
    state["runs"] = [[run_id, old + i] for i, (run_id, _) in enumerate(state["runs"])]
    cluster.api("PATCH", f"/api/v2/variables/{state_key}", {"key": state_key, "value": json.dumps(state)})
    expired, kept = runs[:-2], runs[-2:]  # the new run and the two latest old ones stay

    def xcoms(run_ids: list[str]) -> set[tuple[str, str, str]]:
        rows = cluster.query(
            "SELECT run_id, task_id, key FROM xcom WHERE dag_id = %s AND run_id = ANY(%s)", (ALPHA, run_ids)
        )
        return {(str(run_id), str(task), str(key)) for run_id, task, key in rows}

    before = xcoms(runs)
    to_delete = {row for row in before if row[0] in expired and row[2] == "return_value"}
    assert {row[1] for row in to_delete} >= {"resolve_members", "add_missing_users", "report"}

    run_id = cluster.trigger(ALPHA, {"dry_run": True})
    cluster.wait_run(ALPHA, run_id, timeout=RUN_TIMEOUT)
    report = cluster.xcom(ALPHA, run_id, "report")
    assert report["xcoms_deleted"] == len(to_delete) and report["runs_pruned"] == len(expired), report

    after = xcoms([*runs, run_id])
    assert after == (before - to_delete) | xcoms([run_id])
    assert not {row for row in after if row[0] in expired and row[2] != "counts"}
    for gone in expired:  # the counts records stay, and so does the run
        assert {task for r, task, key in after if r == gone and key == "counts"} == set(WORK_TASKS), gone
        assert cluster.run(ALPHA, gone)["state"] in ("success", "failed")
    for stays in (*kept, run_id):
        assert (stays, "resolve_members", "return_value") in after, stays
    state = json.loads(cluster.api("GET", f"/api/v2/variables/{state_key}")["value"])
    assert [r for r, _ in state["runs"]] == [*kept, run_id]

    # The operations page's `airflow db clean` commands, as a dry run against this database: they parse and
    # run in Airflow 3.3.2, and the dry run deletes nothing.
    ago = subprocess.run(
        ["date", "-u", "-d", "180 days ago", "+%Y-%m-%d"], capture_output=True, text=True, check=True
    ).stdout.strip()
    tables = "dag_run,task_instance,task_instance_history,log,job,asset_event,import_error"
    for args in (("--tables", tables), ("--tables", "xcom", "--dag-ids", f"{ALPHA},{BETA}")):
        cleaned = cluster.airflow(
            "db", "clean", "--clean-before-timestamp", ago, *args, "--skip-archive", "--dry-run", "--yes"
        )
        assert cleaned.returncode == 0, cleaned.stdout[-3000:] + cleaned.stderr[-3000:]
    assert xcoms([*runs, run_id]) == after


def test_metrics_arrive_from_the_celery_worker(distributed: Distributed) -> None:
    """README "Metrics" on the real deployment: ``[metrics] statsd_on`` in every component, pointed at a
    StatsD listener on loopback. ``report`` runs on the Celery worker and sends each run's metrics through
    the task SDK's stats API: a fresh run's values are exactly its counts records', and the counters of all
    the runs above add up to the users the sandbox saw created."""
    from entra_provisioning.metrics import run_metrics, stat_name
    from entra_provisioning.run_events import WORK_TASKS
    from sandbox.statsd import counter_total, gauge_value, gauge_values

    cluster, box, statsd = distributed.cluster, distributed.sandbox, distributed.statsd
    ours = "airflow.entra_provisioning."
    _wait_beta_idle(cluster)  # beta is paused by now; a queued run of it never sends anything

    # Every run so far sent its users_added_total: the sums are the creates the sandbox answered 201.
    # (A run's report may still be sending as its run ends: wait a little for the sums, then compare.)
    expected = {
        "alpha": distributed.creates("ws-alpha").get("201", 0),
        "beta": distributed.creates("ws-beta").get("201", 0),
        "gamma": len(GAMMA_NEW),
    }
    assert expected["alpha"] == len(ALPHA_NEW) and expected["beta"] > 200

    def totals(samples: list[Any]) -> dict[str, float]:
        return {ws: counter_total(samples, f"{ours}users_added_total.{ws}") for ws in expected}

    with suppress(TimeoutError):  # the assertion below then shows the difference
        statsd.wait_for("the users_added_total sums", lambda s: totals(s) == expected, timeout=30)
    assert totals(statsd.samples()) == expected
    # Dry runs send no users_added: the first value is alpha's first real run, which added its four.
    assert gauge_values(statsd.samples(), f"{ours}users_added.alpha")[0] == len(ALPHA_NEW)

    # A fresh run: what arrives is exactly what its three counts records say, in plain StatsD names.
    mark = len(statsd.samples())
    run_id = cluster.trigger(ALPHA)
    cluster.wait_run(ALPHA, run_id, timeout=RUN_TIMEOUT)
    records = {task: _counts(cluster, ALPHA, run_id, task) for task in WORK_TASKS}
    want = {stat_name(m, tagged=False)[0]: (m.kind, m.value) for m in run_metrics(records, workspace="alpha")}
    assert len(want) == 14
    samples = statsd.wait_for(
        "the fresh run's metrics",
        lambda s: {x.name for x in s if x.name.startswith(ours)} >= {f"airflow.{n}" for n in want} and s,
        since=mark,
    )
    got = {
        s.name.removeprefix("airflow."): ({"g": "gauge", "c": "counter"}[s.kind], s.value)
        for s in samples
        if s.name.startswith(ours)
    }
    assert got == want
    assert len([s for s in samples if s.name.startswith(ours)]) == len(want)  # once per run
    # … and they are the facts of alpha in the seed: complete now, two users in no group, six members.
    assert gauge_value(samples, f"{ours}users_to_add.alpha") == 0
    assert gauge_value(samples, f"{ours}users_added.alpha") == 0
    assert gauge_value(samples, f"{ours}drift.alpha") == 2
    assert gauge_value(samples, f"{ours}members_resolved.alpha") == 6
    assert (
        gauge_value(samples, f"{ours}token_expires_in_days.alpha")
        == records["fetch_token"]["token_expires_in_days"]
        > 0
    )
    assert box.control.workspace_user_names("ws-alpha") >= ALPHA_NEW

    # Sent from the report task on the worker: its task instance ran from our Celery queue, and its log
    # says what it sent.
    ((queue, state),) = cluster.query(
        "SELECT queue, state FROM task_instance WHERE dag_id = %s AND run_id = %s AND task_id = 'report'",
        (ALPHA, run_id),
    )
    assert (queue, state) == (cluster.queue, "success")
    (log_file,) = [
        p for p in cluster.task_log_files() if f"run_id={run_id}" in str(p) and "task_id=report" in str(p)
    ]
    assert "Sent 14 metric(s) of workspace alpha through Airflow's statsd metrics" in log_file.read_text()
    assert [line for line in statsd.malformed if "entra_provisioning" in line] == []


def _counts(cluster: AirflowCluster, dag_id: str, run_id: str, task_id: str) -> dict[str, Any] | None:
    """A task's counts record (XCom ``counts``), through the REST API."""
    return dict(cluster.xcom(dag_id, run_id, task_id, "counts"))


def _import_errors(cluster: AirflowCluster) -> dict[str, str]:
    """The DAG-file import errors Airflow shows, by file name."""
    errors = cluster.api("GET", "/api/v2/importErrors?limit=100")["import_errors"]
    return {Path(e["filename"]).name: e["stack_trace"] for e in errors}


def _reparsed(cluster: AirflowCluster, since: datetime) -> bool:
    """Whether the workspace DAG file was parsed again after ``since`` (its DAGs carry the parse time)."""
    parsed = cluster.api("GET", f"/api/v2/dags/{ALPHA}")["last_parsed_time"]
    return parsed is not None and datetime.fromisoformat(parsed) > since


def _wait_beta_idle(cluster: AirflowCluster) -> None:
    """Until no run of (paused) beta is running: a run queued just before the pause stays queued for good
    (Airflow starts queued runs of unpaused DAGs only), so only running ones are waited for."""
    wait_for(
        "beta to have no running run",
        lambda: not [r for r in cluster.runs(BETA) if r["state"] == "running"],
        RUN_TIMEOUT,
        interval=3,
        context=cluster.log_tails,
    )


def _active_runs(cluster: AirflowCluster, dag_id: str) -> list[dict[str, Any]]:
    return [r for r in cluster.runs(dag_id) if r["state"] in ("queued", "running")]


def _json_out(stdout: str) -> list[dict[str, Any]]:
    """The JSON document an ``airflow … -o json`` command printed (log lines may precede it)."""
    lines = [line for line in stdout.splitlines() if line.startswith(("[{", "[]"))]
    assert lines, stdout[-3000:]
    return list(json.loads(lines[-1]))


def _dags_folder(folder: Path, sandbox: Sandbox) -> Path:
    """The repo's DAG files (linked) and a DAG scheduled on alpha's asset, which returns what it saw."""
    repo_dags = Path(__file__).resolve().parents[2] / "dags"
    folder.mkdir()
    for dag_file in (DAG_FILE, CHECK_FILE):
        (folder / dag_file).symlink_to(repo_dags / dag_file)
    host = urlsplit(sandbox.endpoints["workspaces"]["ws-alpha"]["host"]).netloc
    (folder / "watches_alpha_users.py").write_text(
        f"""\
from datetime import datetime

from airflow.sdk import Asset, dag, task

ALPHA_USERS = Asset(name="{ALPHA}__users", uri="x-entra-provisioning://{host}/users")


@dag(dag_id="{WATCHER}", schedule=ALPHA_USERS, start_date=datetime(2025, 1, 1), catchup=False)
def watches_alpha_users():
    @task
    def note_the_event(triggering_asset_events=None):
        (event,) = triggering_asset_events[ALPHA_USERS]
        return {{**event.extra, "source_dag_id": event.source_dag_id, "uri": event.asset.uri}}

    note_the_event()


watches_alpha_users()
"""
    )
    return folder


# ---------------------------------------------------------------------------------------------- alerts

ALERTS = "entra_provisioning__alerts"


@pytest.fixture(scope="module")
def alerting(distributed: Distributed) -> Iterator[tuple[Distributed, SmtpSink]]:
    """A mail server on 127.0.0.1, an ``smtp`` connection to it created in the metadata DB with the CLI (so
    the Celery worker reads it through the api-server), and a workspace entry ``alerts`` (alpha's workspace,
    a 3650-day expiry window so the token warning is due) that mails it."""
    cluster, config_file = distributed.cluster, distributed.config_file
    good = config_file.read_text()
    with SmtpSink() as smtp:
        added = cluster.airflow("connections", "add", "smtp_alerts", "--conn-json", smtp.connection())
        assert added.returncode == 0, added.stdout[-2000:] + added.stderr[-2000:]
        document = yaml.safe_load(good)
        alpha = next(e for e in document["workspaces"] if e["name"] == "alpha")
        entry = {
            **alpha,
            "name": "alerts",
            "secret_expiry_warning_days": 3650,
            "notify": {"email": ["oncall@contoso.example"], "smtp_conn_id": "smtp_alerts"},
        }
        config_file.write_text(yaml.safe_dump({**document, "workspaces": [*document["workspaces"], entry]}))
        try:
            cluster.wait_ready([ALERTS], timeout=6 * PARSE_INTERVAL + 60)
            cluster.unpause(ALERTS)
            yield distributed, smtp
        finally:
            config_file.write_text(good)


def test_alerts_from_the_celery_worker_once_a_day(alerting: tuple[Distributed, SmtpSink]) -> None:
    """The report task on the worker mails the token warning of a dry run, with a link to the run in this
    cluster's UI; a second run the same day sends nothing (the state Variable, written through the
    api-server, remembers the day)."""
    distributed, smtp = alerting
    cluster = distributed.cluster
    first = cluster.trigger(ALERTS, {"dry_run": True})
    cluster.wait_run(ALERTS, first, timeout=RUN_TIMEOUT)
    (mail,) = smtp.wait_for(1, timeout=30)
    assert mail.recipients == ("oncall@contoso.example",)
    assert mail.subject == "[Entra provisioning] alerts: token secret expires soon"
    assert f'<a href="{cluster.api_url}/dags/{ALERTS}/runs/{quote(first, safe="")}">' in mail.body
    assert distributed.sandbox.pat("ws-alpha") not in mail.body

    second = cluster.trigger(ALERTS, {"dry_run": True})
    cluster.wait_run(ALERTS, second, timeout=RUN_TIMEOUT)
    report = cluster.xcom(ALERTS, second, "report")
    assert report["events"] == ["token_expiring"] and report["alerts_already_sent"] == ["token_expiring"]
    assert len(smtp.mails) == 1
