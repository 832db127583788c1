"""Faults of a real deployment, on the production-shaped Airflow (PostgreSQL metadata, CeleryExecutor over
Redis, one process per component) with PostgreSQL and Redis of its own on free loopback ports, so that
they can be stopped, killed and restarted without touching the machine's servers.

One deployment serves the module. First, ten workspaces (``demo/load.py``: ``ws-load-001`` …, each with
its own group and a group they all share, Graph rate-limited tenant-wide and creates limited per
workspace) are triggered at once on a worker with 4 slots, with ``resolve_members`` in a Graph pool of 2
(``settings.graph_pool``): all succeed, nothing is doubled, and the sandbox's request log shows at most 2
Graph requests in flight at any moment.

Then each test provisions its own Entra group (``gen-000`` … ``gen-005``,
60 users each, none of them in the workspace yet) into ``ws-beta`` through its own workspace entry, and
breaks something while that run is creating users:

1. the Celery worker's whole process tree is SIGKILLed mid-create, and a new worker started;
2. the scheduler is stopped (SIGTERM, a redeploy) mid-create and started again;
3. the scheduler is SIGKILLed in the middle of a three-run backfill;
4. the metadata database is down for 15 s mid-create (components that exit are restarted, as
   ``restart: always`` does in docker-compose);
5. Redis restarts while a task is queued in it: with persistence (append-only file) the message survives;
   without, it is lost and Airflow's ``task_queued_timeout`` recovers it;
6. Graph answers 503 for longer than every retry: the run fails with a one-line reason; once Graph is
   back, the next run adds everyone.

After each: the run succeeded (or, for 6, failed and then the next succeeded), every member of the group
exists exactly once in the workspace, no create was answered 409 (none was sent twice), and the summary of
the successful attempt adds up. Each test prints its timings (kill to recovery, and so on);
docs/production.md quotes them.

Skipped when ``initdb``/``pg_ctl`` or ``redis-server`` are not installed, unless
``ENTRA_PROVISIONING_REQUIRE_SERVICES=1`` (``.ci/run`` sets it), which makes that a failure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from demo.distributed import AirflowCluster, Endpoints, fresh_database, wait_for
from demo.load import VAULT, LoadPlan, load_seed, run_load, workspace_entries
from demo.sandbox_airflow import DemoWorkspace, airflow_env, workspaces_yaml
from demo.services import PrivatePostgres, PrivateRedis, missing_binaries
from demo.ui import create_graph_pool
from sandbox.client import DEMO_SEED, SandboxProcess
from sandbox.pytest_plugin import Sandbox

from .conftest import require_services

WORKSPACE = "ws-beta"
#: ``1`` measures with Airflow's default heartbeat timeout (300 s) and our default retry delay (120 s)
#: instead of the shortened ones (for docs/production.md's figures; too slow for ``make test``):
#: ``ENTRA_PROVISIONING_FAULTS_DEFAULT_TIMEOUTS=1 pytest tests/e2e/test_faults.py -k worker_killed -s``.
DEFAULT_TIMEOUTS = os.environ.get("ENTRA_PROVISIONING_FAULTS_DEFAULT_TIMEOUTS") == "1"
#: Shortened detection timeouts (Airflow's defaults: 300 s and 600 s); docs/production.md gives both.
HEARTBEAT_TIMEOUT = 300 if DEFAULT_TIMEOUTS else 45
RETRY_DELAY = 120 if DEFAULT_TIMEOUTS else 5
QUEUED_TIMEOUT = 60
RUN_TIMEOUT = 300
#: Each test's run creates its group's users at this pace, so that there is time to break something
#: between the first create and the last (60 users: about 15 s).
CREATES_PER_SECOND = 4
GROUP_SIZE = 60
#: The timings of every test, printed at the end of the module (and quoted in docs/production.md).
TIMINGS: dict[str, float] = {}

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]


def _entry(name: str, group: str, **options: Any) -> DemoWorkspace:
    return DemoWorkspace(
        name=name,
        sandbox_workspace=WORKSPACE,
        groups=(group,),
        secret="ws-beta-pat",
        options={
            "retries": 3,
            "retry_delay_seconds": RETRY_DELAY,
            "scim_concurrency": 1,
            "scim_max_creates_per_second": CREATES_PER_SECOND,
            **options,
        },
    )


ENTRIES = {
    "worker": _entry("f_worker", "gen-000"),
    "scheduler": _entry("f_scheduler", "gen-001"),
    "database": _entry("f_database", "gen-002"),
    "broker": _entry("f_broker", "gen-003"),
    "broker_lost": _entry("f_broker_lost", "gen-004"),
    "outage": _entry("f_outage", "gen-005", retries=1),
    # Runs daily, backfilled over three days: each run re-checks a small group (6 users on ws-alpha).
    "backfill": DemoWorkspace(
        name="f_backfill",
        sandbox_workspace="ws-alpha",
        groups=("Data Scientists",),
        secret="ws-alpha-pat",
        options={"schedule": "@daily", "retries": 3, "retry_delay_seconds": 5},
    ),
}


#: Ten workspaces triggered together; their Graph reads share a pool of two slots.
LOAD = LoadPlan(workspaces=10)
GRAPH_POOL, GRAPH_POOL_SLOTS, WORKER_SLOTS = "entra_graph", 2, 4


def dag_id(key: str) -> str:
    return f"entra_provisioning__{ENTRIES[key].name}"


@dataclass
class Faults:
    cluster: AirflowCluster
    sandbox: Sandbox
    postgres: PrivatePostgres
    redis: PrivateRedis
    #: Components that exited by themselves during a fault (and were restarted): the test's findings.
    died: dict[str, list[str]] = field(default_factory=dict)

    def creates(self, status: str = "201") -> int:
        counts = self.sandbox.control.counts().get(f"workspace:{WORKSPACE}", {})
        return int((counts.get("scim.users.create") or {}).get(status, 0))

    def user_names(self) -> list[str]:
        return [u["userName"] for u in self.sandbox.control.workspace_users(WORKSPACE)]

    def task(self, key: str, run_id: str, task_id: str) -> dict[str, Any]:
        return dict(
            self.cluster.api("GET", f"/api/v2/dags/{dag_id(key)}/dagRuns/{run_id}/taskInstances/{task_id}")
        )

    def wait_run(
        self, key: str, run_id: str, timeout: float = RUN_TIMEOUT, revive: str = ""
    ) -> dict[str, Any]:
        """Until the run ends (either way). With ``revive``, components that exit are started again (and
        recorded under that name), as a container orchestrator would; otherwise their exit fails the test."""

        def ended() -> dict[str, Any] | None:
            if revive:
                restarted = self.cluster.revive()
                if restarted:
                    self.died.setdefault(revive, []).extend(restarted)
            else:
                self.cluster.check_alive()
            run = self.cluster.run(dag_id(key), run_id)
            return run if run["state"] in ("success", "failed") else None

        return dict(wait_for(f"run {run_id} of {dag_id(key)}", ended, timeout, 2.0, self.cluster.log_tails))

    def start_creating(self, key: str) -> tuple[str, set[str], int, int]:
        """Trigger ``key``'s DAG and wait until its run has created a few users: (run id, the workspace's
        users before, the 201s before, the users it had created then)."""
        before, baseline = set(self.user_names()), self.creates()
        run_id = self.cluster.trigger(dag_id(key))
        return run_id, before, baseline, self.wait_creating(baseline)

    def wait_creating(self, baseline: int, at_least: int = 5) -> int:
        """Until the run has created ``at_least`` users; returns how many it had then."""
        return int(
            wait_for(
                "the first creates",
                lambda: (self.creates() - baseline >= at_least) and self.creates() - baseline,
                RUN_TIMEOUT,
                0.2,
                self.cluster.log_tails,
            )
        )

    def assert_provisioned_once(
        self, key: str, run_id: str, baseline: int, before: set[str]
    ) -> dict[str, Any]:
        """The run succeeded; every member is in the workspace once; nobody was created twice."""
        run = self.cluster.run(dag_id(key), run_id)
        assert run["state"] == "success", self.cluster.task_log_tails(dag_id(key), run_id)
        summary = self.cluster.summary(dag_id(key), run_id)
        names = self.user_names()
        assert len(names) == len(set(names)), "a userName exists twice"
        created = set(names) - before
        # Each create made one new user: no second create of anyone (it would be a 409 or a duplicate).
        assert self.creates() - baseline == len(created)
        assert self.creates("409") == 0
        assert summary["failed"] == 0 and summary["added"] == summary["to_add"]
        assert summary["already_present"] + summary["added"] == summary["members_resolved"]
        # The group's members are all there now: what this attempt added and what earlier attempts had.
        assert 0 < summary["members_resolved"] <= GROUP_SIZE
        assert len(created) == summary["members_resolved"]
        assert set(summary["added_user_names"]) <= created
        return dict(summary)


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    problem = missing_binaries()
    require_services(None if problem is None else f"the fault tests need private servers: {problem}")

    root = tmp_path_factory.mktemp("faults")
    seed = yaml.safe_load(DEMO_SEED.read_text())
    # Six disjoint groups of 60 synthetic users (gen-000 … gen-005), one per test.
    seed["generate"] = {**seed["generate"], "users": 6 * GROUP_SIZE, "groups": 6, "disabled_ratio": 0.0}
    # The load plan's tenant beside it: its users and groups, PATs and empty workspaces, Graph's limits.
    load = load_seed(LOAD)
    seed["users"] += load["users"]
    seed["groups"] += load["groups"]
    seed["workspaces"] += load["workspaces"]
    seed["graph"] = load["graph"]
    (vault,) = [v for v in seed["vaults"] if v["name"] == VAULT]
    (load_vault,) = [v for v in load["vaults"] if v["name"] == VAULT]
    vault["secrets"] += load_vault["secrets"]
    seed_file = root / "seed.yaml"
    seed_file.write_text(yaml.safe_dump(seed, sort_keys=False))
    started = time.monotonic()
    with (
        SandboxProcess(root / "sandbox", seed=seed_file) as process,
        PrivatePostgres(root / "service-logs") as postgres,
        PrivateRedis(root / "redis", persistent=True) as redis,
    ):
        box = Sandbox(process)
        config_file = root / "workspaces.yaml"
        load_entries = [
            dataclasses.replace(e, options={"scim_max_creates_per_second": LOAD.creates_per_second})
            for e in workspace_entries(LOAD)
        ]
        config_file.write_text(
            workspaces_yaml(
                box.endpoints,
                [*ENTRIES.values(), *load_entries],
                settings={"graph_pool": GRAPH_POOL, "graph_pool_slots": GRAPH_POOL_SLOTS},
            )
        )
        env = airflow_env(box.endpoints, root / "home", config_file)
        env.update(
            {
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": str(QUEUED_TIMEOUT),
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
            }
        )
        services = Endpoints(
            pg_host="127.0.0.1",
            pg_port=postgres.port,
            pg_user=postgres.user,
            redis_host="127.0.0.1",
            redis_port=redis.port,
            redis_db=0,
        )
        with fresh_database("entra_prov_faults_", services) as database:
            cluster = AirflowCluster(
                env, root / "cluster", database, services, worker_concurrency=WORKER_SLOTS
            )
            try:
                cluster.migrate()
                # What airflow-init does in docker-compose.yaml: the Graph pool of settings.graph_pool.
                pool = create_graph_pool(cluster.env, config_file)
                assert pool.returncode == 0, pool.stdout[-2000:] + pool.stderr[-2000:]
                cluster.start()
                cluster.wait_ready([dag_id(key) for key in ENTRIES] + LOAD.dag_ids())
                # Backfill runs of a paused DAG stay queued in Airflow 3.3: every DAG is unpaused (the
                # daily one then also runs once for its latest interval, which adds its group's users).
                for key in ENTRIES:
                    cluster.unpause(dag_id(key))
                print(f"\nfault deployment ready in {time.monotonic() - started:.0f} s ({root})")
                yield Faults(cluster, box, postgres, redis)
            finally:
                exit_codes = cluster.stop()
                print(f"fault deployment stopped: {exit_codes}; timings: {json.dumps(TIMINGS)}")


def test_ten_workspaces_at_once_share_the_graph_pool(faults: Faults) -> None:
    cluster, control = faults.cluster, faults.sandbox.control
    first_seq = control.last_seq()
    result = run_load(cluster, control, LOAD)
    TIMINGS["ten_at_once_s"] = round(result.wall_seconds)
    print(f"\nten workspaces at once: {json.dumps(result.as_dict())}")
    # Every run succeeded; every member is in its workspace once, one 201 each, no 409.
    assert result.ok, result.problems
    assert result.states == {"success": LOAD.workspaces}
    assert result.creates_201 == result.members_expected and result.creates_409 == 0
    # The pool, as Airflow recorded it and as Graph saw it: never more than its slots reading at once,
    # although the worker ran up to 4 tasks at a time.
    pools = cluster.query(
        "SELECT DISTINCT pool FROM task_instance WHERE task_id = 'resolve_members' AND dag_id LIKE %s",
        (f"entra_provisioning__{LOAD.entry_name(1)[:-3]}%",),
    )
    assert pools == [(GRAPH_POOL,)], pools
    graph = control.log(since=first_seq, system="graph")
    assert graph, "no Graph request was logged"
    in_flight = _max_in_flight(graph)
    TIMINGS["graph_max_in_flight"] = in_flight
    assert 1 <= in_flight <= GRAPH_POOL_SLOTS, in_flight


def _max_in_flight(entries: list[dict[str, Any]]) -> int:
    """The most requests the sandbox was serving at one moment (each entry's ``ts`` is when the answer
    went out, ``duration_ms`` how long it took)."""
    edges = []
    for entry in entries:
        end = float(entry["ts"])
        edges += [(end - float(entry["duration_ms"]) / 1000, 1), (end, -1)]
    current = peak = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        current += step
        peak = max(peak, current)
    return peak


def _worker_ready(cluster: AirflowCluster, offset: int) -> bool:
    cluster.check_alive()
    return b" ready." in cluster.component("worker").log_file.read_bytes()[offset:]


def test_a_worker_killed_mid_create_loses_and_doubles_nobody(faults: Faults) -> None:
    cluster, key = faults.cluster, "worker"
    run_id, before, baseline, created_at_kill = faults.start_creating(key)

    killed = time.monotonic()
    offset = cluster.component("worker").log_file.stat().st_size
    cluster.kill("worker", signal.SIGKILL)  # the whole tree: pool children and task supervisors too
    cluster.relaunch("worker")
    wait_for("the new worker", lambda: _worker_ready(cluster, offset), 120, 1.0, cluster.log_tails)
    # Nothing heartbeats for the lost attempt any more: the scheduler must notice within the timeout
    # (plus its 10 s detection interval), not leave it RUNNING forever.
    wait_for(
        "the lost attempt to leave RUNNING",
        lambda: (
            faults.task(key, run_id, "add_missing_users")["try_number"] >= 2
            or faults.task(key, run_id, "add_missing_users")["state"] != "running"
        ),
        HEARTBEAT_TIMEOUT + 90,
        1.0,
        cluster.log_tails,
    )
    detected = time.monotonic() - killed
    run = faults.wait_run(key, run_id, timeout=RETRY_DELAY + RUN_TIMEOUT)
    recovered = time.monotonic() - killed

    summary = faults.assert_provisioned_once(key, run_id, baseline, before)
    task = faults.task(key, run_id, "add_missing_users")
    assert task["state"] == "success" and task["try_number"] >= 2, task
    # The successful attempt found what the killed one had created and added the rest.
    assert summary["already_present"] >= created_at_kill and summary["added"] > 0
    assert run["state"] == "success"
    TIMINGS.update(worker_kill_detected_s=round(detected), worker_kill_recovered_s=round(recovered))
    print(f"\nworker SIGKILL after {created_at_kill} creates: lost attempt detected in {detected:.0f} s, "
          f"run done {recovered:.0f} s after the kill (heartbeat timeout {HEARTBEAT_TIMEOUT} s)")  # fmt: skip


def test_a_scheduler_redeployed_mid_run_finishes_it(faults: Faults) -> None:
    cluster, key = faults.cluster, "scheduler"
    run_id, before, baseline, _ = faults.start_creating(key)
    stopped = time.monotonic()
    cluster.kill("scheduler", signal.SIGTERM)
    cluster.relaunch("scheduler")
    faults.wait_run(key, run_id)
    TIMINGS["scheduler_restart_run_s"] = round(time.monotonic() - stopped)
    faults.assert_provisioned_once(key, run_id, baseline, before)


def test_a_scheduler_killed_mid_backfill_finishes_it(faults: Faults) -> None:
    cluster, key = faults.cluster, "backfill"
    dag = dag_id(key)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = today - timedelta(days=4), today - timedelta(days=2)
    result = cluster.airflow(
        "backfill", "create", "--dag-id", dag,
        "--from-date", start.isoformat(), "--to-date", end.isoformat(), "--max-active-runs", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    def backfill_runs() -> list[dict[str, Any]]:
        return [r for r in cluster.runs(dag) if r["run_type"] == "backfill"]

    def first_done() -> bool:
        cluster.check_alive()
        return any(r["state"] == "success" for r in backfill_runs())

    wait_for("the first backfill run", first_done, RUN_TIMEOUT, 2.0, cluster.log_tails)
    killed = time.monotonic()
    cluster.kill("scheduler", signal.SIGKILL)
    cluster.relaunch("scheduler")

    def all_done() -> list[dict[str, Any]] | None:
        cluster.check_alive()
        runs = backfill_runs()
        return runs if len(runs) == 3 and all(r["state"] in ("success", "failed") for r in runs) else None

    runs = wait_for("the whole backfill", all_done, 3 * RUN_TIMEOUT, 2.0, cluster.log_tails)
    TIMINGS["scheduler_kill_backfill_s"] = round(time.monotonic() - killed)
    assert sorted(r["logical_date"][:10] for r in runs) == [
        (start + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(3)
    ]
    assert [r["state"] for r in runs] == ["success"] * 3, runs
    summaries = [cluster.summary(dag, r["dag_run_id"]) for r in runs]
    # Add-only: whichever run came first added the group; the others found everyone there.
    assert sum(s["added"] for s in summaries) <= 6 and all(s["failed"] == 0 for s in summaries)
    names = [u["userName"] for u in faults.sandbox.control.workspace_users("ws-alpha")]
    assert len(names) == len(set(names))


def test_a_database_restart_mid_run_loses_and_doubles_nobody(faults: Faults) -> None:
    key = "database"
    run_id, before, baseline, _ = faults.start_creating(key)
    down = time.monotonic()
    faults.postgres.stop("fast")
    time.sleep(15)
    faults.postgres.start()
    faults.wait_run(key, run_id, revive="database")
    TIMINGS["database_restart_run_s"] = round(time.monotonic() - down)
    faults.assert_provisioned_once(key, run_id, baseline, before)
    print(f"\ncomponents that exited during the database outage (restarted): {faults.died.get('database')}")


def _queued_in_redis(faults: Faults, key: str, run_id: str) -> bool:
    import redis

    task = faults.task(key, run_id, "fetch_token")
    if task["state"] != "queued":
        return False
    client = redis.Redis(port=faults.redis.port, socket_timeout=5)
    try:
        return int(client.llen(faults.cluster.queue)) > 0
    finally:
        client.close()


def _redis_restart_with_a_queued_task(faults: Faults, key: str, *, persistent: bool) -> float:
    """Stop the worker, trigger, restart Redis while fetch_token waits in it, start the worker; returns
    the seconds from the restart to the end of the run."""
    cluster = faults.cluster
    cluster.kill("worker", signal.SIGTERM)  # a clean stop: nothing is running, the next task stays queued
    run_id = cluster.trigger(dag_id(key))
    before, baseline = set(faults.user_names()), faults.creates()
    wait_for("fetch_token queued in Redis", lambda: _queued_in_redis(faults, key, run_id), 120, 0.5)
    faults.redis.stop()  # SIGTERM: with the append-only file, Redis has written every message
    restarted = time.monotonic()
    faults.redis.start(persistent=persistent)
    offset = cluster.component("worker").log_file.stat().st_size
    cluster.relaunch("worker")
    wait_for("the new worker", lambda: _worker_ready(cluster, offset), 120, 1.0, cluster.log_tails)
    faults.wait_run(key, run_id, timeout=QUEUED_TIMEOUT * 4 + RUN_TIMEOUT, revive=f"redis-{persistent}")
    took = time.monotonic() - restarted
    faults.assert_provisioned_once(key, run_id, baseline, before)
    return took


def test_a_redis_restart_with_persistence_keeps_the_queued_task(faults: Faults) -> None:
    took = _redis_restart_with_a_queued_task(faults, "broker", persistent=True)
    TIMINGS["redis_restart_persistent_s"] = round(took)
    # The message survived: the task ran as soon as the worker was back, not after the queued timeout.
    assert took < QUEUED_TIMEOUT + 30, took


def test_a_redis_restart_without_persistence_is_recovered_by_the_queued_timeout(faults: Faults) -> None:
    took = _redis_restart_with_a_queued_task(faults, "broker_lost", persistent=False)
    TIMINGS["redis_restart_lost_s"] = round(took)
    # The message was lost with Redis's memory: only task_queued_timeout brought the task back.
    assert took >= QUEUED_TIMEOUT - 10, took


def test_a_graph_outage_longer_than_every_retry_then_the_next_run_adds_everyone(faults: Faults) -> None:
    cluster, box, key = faults.cluster, faults.sandbox, "outage"
    before, baseline = set(faults.user_names()), faults.creates()
    box.control.set_faults([{"system": "graph", "rate_503": 1.0}])
    try:
        started = time.monotonic()
        run_id = cluster.trigger(dag_id(key))
        run = faults.wait_run(key, run_id)
        TIMINGS["graph_outage_failed_after_s"] = round(time.monotonic() - started)
    finally:
        box.control.clear_faults()
    assert run["state"] == "failed"
    resolve = faults.task(key, run_id, "resolve_members")
    assert resolve["state"] == "failed" and resolve["try_number"] == 2, resolve  # retries: 1
    assert faults.task(key, run_id, "add_missing_users")["state"] == "upstream_failed"
    counts = cluster.xcom(dag_id(key), run_id, "resolve_members", "counts")
    assert counts["outcome"] == "failed" and "503" in counts["error"] and "\n" not in counts["error"]
    assert faults.creates() == baseline and set(faults.user_names()) == before

    run_id = cluster.trigger(dag_id(key))
    faults.wait_run(key, run_id)
    summary = faults.assert_provisioned_once(key, run_id, baseline, before)
    assert summary["already_present"] == 0 and summary["added"] == summary["members_resolved"]
