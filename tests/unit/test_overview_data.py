"""The overview page's rows: the pure row logic, and the queries against a SQLite metadata database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from entra_provisioning.overview_data import (
    RunFacts,
    WorkspaceRow,
    decode_record,
    failure_reason,
    fill_row,
    run_url,
)

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
DAG = "entra_provisioning__alpha"


def row() -> WorkspaceRow:
    return WorkspaceRow(dag_id=DAG, workspace="alpha", tags=[], paused=False, schedule=None, next_run=None)


def run(pk: int, state: str = "success", **records: dict[str, Any]) -> RunFacts:
    return RunFacts(pk, f"manual__{pk}", state, NOW - timedelta(hours=100 - pk), records)


def add(dry: bool = False, **counts: Any) -> dict[str, Any]:
    base = {"v": 1, "task": "add_missing_users", "outcome": "dry_run" if dry else "success", "error": None}
    return {**base, "dry_run": dry, "target": "workspace", **counts}


def token(expires_on: str | None, outcome: str = "success") -> dict[str, Any]:
    return {"v": 1, "task": "fetch_token", "outcome": outcome, "error": None, "token_expires_on": expires_on}


def test_to_add_comes_from_a_dry_run_newer_than_the_last_real_run() -> None:
    r = row()
    complete = fill_row(
        r,
        [
            run(3, add_missing_users=add(dry=True, members_resolved=12, to_add=3, drift=1, added=0)),
            run(2, add_missing_users=add(members_resolved=10, to_add=4, added=4, failed=0, drift=2)),
            run(1, fetch_token=token("2026-03-11T12:00:00+00:00")),
        ],
        None,
        NOW,
    )
    assert complete
    assert (r.members_resolved, r.to_add, r.drift, r.to_add_from_dry_run) == (12, 3, 1, True)
    # Added and failed users are the last *real* run's, not the dry run's zero.
    assert (r.added, r.failed_users) == (4, 0)
    assert r.last_run is not None and r.last_run.dry_run is True and r.last_run.run_id == "manual__3"
    assert r.real_run is not None and r.real_run.run_id == "manual__2"
    assert r.token_expires_in_days == 10 and not r.token_no_expiry


def test_after_a_real_run_to_add_is_what_it_left_unadded() -> None:
    r = row()
    fill_row(r, [run(8, add_missing_users=add(to_add=5, added=2, existed_on_create=1, failed=2))], None, NOW)
    assert (r.to_add, r.to_add_from_dry_run, r.failed_users) == (2, False, 2)
    guard = {**add(to_add=700, added=0), "outcome": "guard_stop"}
    r = row()
    fill_row(r, [run(9, "failed", add_missing_users=guard)], None, NOW)
    assert r.to_add == 700


def test_added_counts_every_attempt_of_the_run() -> None:
    r = row()
    fill_row(r, [run(7, add_missing_users=add(to_add=5, added=2, added_in_run=5, failed=0))], None, NOW)
    assert r.added == 5


def test_a_real_run_newer_than_the_dry_run_wins() -> None:
    r = row()
    fill_row(
        r,
        [run(5, add_missing_users=add(to_add=3, added=3)), run(4, add_missing_users=add(dry=True, to_add=3))],
        None,
        NOW,
    )
    assert (r.to_add, r.to_add_from_dry_run, r.added) == (0, False, 3)


def test_missing_counts_are_unknown_never_zero() -> None:
    """An add_missing_users that failed before its plan pushes a record without counts."""
    r = row()
    early = {"v": 1, "task": "add_missing_users", "outcome": "failed", "error": "boom", "dry_run": False}
    resolve = {"v": 1, "task": "resolve_members", "outcome": "success", "error": None, "members_resolved": 7}
    fill_row(r, [run(9, "failed", add_missing_users=early, resolve_members=resolve)], None, NOW)
    assert r.to_add is None and r.drift is None and r.added is None and r.failed_users is None
    # The members resolved are known from resolve_members' record of the same run.
    assert r.members_resolved == 7
    # A count of the wrong type (true, a string) is unknown too.
    r = row()
    fill_row(r, [run(9, add_missing_users=add(to_add=True, drift="3", added=None))], None, NOW)
    assert (r.to_add, r.drift, r.added) == (None, None, None)
    json.dumps(r.to_json())  # the row is JSON-safe


def test_token_expiry_no_expiry_and_warning_threshold() -> None:
    r = row()
    r.warning_days = 14
    fill_row(r, [run(2, fetch_token=token("2026-03-08T00:00:00+00:00"))], None, NOW)
    assert r.token_expires_in_days == 6 and r.token_warning
    r = row()
    fill_row(r, [run(2, fetch_token=token("2026-06-08T00:00:00+00:00"))], None, NOW)
    assert r.token_expires_in_days == 98 and not r.token_warning
    # A failed token check does not hide the last successful one; no expiry means a connection.
    r = row()
    fill_row(r, [run(3, fetch_token=token(None, "failed")), run(2, fetch_token=token(None))], None, NOW)
    assert r.token_no_expiry and r.token_expires_in_days is None
    expired = row()
    fill_row(expired, [run(2, fetch_token=token("2026-02-27T12:00:00+00:00"))], None, NOW)
    assert expired.token_expires_in_days == -2 and expired.token_warning


def test_failure_reason_is_the_first_failing_task_in_task_order() -> None:
    failing = run(
        4,
        "failed",
        resolve_members={"v": 1, "outcome": "failed", "error": "Group 'X' not found\n  in tenant"},
        add_missing_users={"v": 1, "outcome": "failed", "error": "upstream failed"},
    )
    assert failure_reason(failing) == "resolve_members: Group 'X' not found in tenant"
    assert "no reason recorded" in failure_reason(run(5, "failed"))
    r = row()
    fill_row(r, [run(6)], failing, NOW)
    assert r.last_failure is not None and r.last_failure.run_id == "manual__4"
    assert r.last_failure_reason == "resolve_members: Group 'X' not found in tenant"


def test_records_are_decoded_from_either_storage_form_and_others_ignored() -> None:
    record = {"v": 1, "task": "fetch_token", "outcome": "success"}
    assert decode_record(record) == record
    assert decode_record(json.dumps(record)) == record
    assert decode_record(json.dumps(record).encode()) == record
    assert (
        decode_record({"v": 2}) is None and decode_record("not json") is None and decode_record([1]) is None
    )


def test_run_urls_are_quoted() -> None:
    assert run_url(DAG, "manual__2026-01-01T00:00:00+00:00") == (
        f"dags/{DAG}/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00"
    )


# ------------------------------------------------------------------------------------ the queries


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """12 workspace DAGs with 40 runs each, through the bench's seeding (Airflow's model tables)."""
    from bench.overview import create_schema, seed

    engine = create_schema(f"sqlite:///{tmp_path_factory.mktemp('overview') / 'airflow.db'}")
    seed(engine, workspaces=12, runs=40)
    yield engine
    engine.dispose()


def test_queries_agree_with_the_naive_reader_and_respect_readable(seeded: Any) -> None:
    from sqlalchemy.orm import Session

    from bench.overview import EPOCH, dag_id_of, naive_rows
    from entra_provisioning.overview_data import overview_rows

    every = {dag_id_of(i) for i in range(12)}
    with Session(seeded) as session:
        rows = overview_rows(session, every, now=EPOCH, warning_days={"ws-0001": 500})
        slow = naive_rows(session, sorted(every), EPOCH)
        for r in slow:
            r.warning_days = 500 if r.workspace == "ws-0001" else r.warning_days
        assert [r.to_json() for r in rows] == [r.to_json() for r in slow]
        assert len(rows) == 12 and all(r.last_run is not None for r in rows)
        first = rows[1]
        assert first.workspace == "ws-0001" and first.warning_days == 500 and first.token_warning
        # The seed's last run (index 39) is real, the last failure run 32 (every 25th from 7).
        assert first.last_run is not None and first.last_run.dry_run is False
        assert (
            first.last_failure_reason == "add_missing_users: 2 of 4 users could not be created: 403 Forbidden"
        )
        assert rows[2].token_no_expiry and rows[2].target == "account"
        assert set(first.tags) == {"entra-provisioning", "databricks", "team-1"}
        # Only the DAGs the user may read.
        some = overview_rows(session, {dag_id_of(3), dag_id_of(5), "some_other_dag"}, now=EPOCH)
        assert [r.dag_id for r in some] == [dag_id_of(3), dag_id_of(5)]
        assert overview_rows(session, set(), now=EPOCH) == []


def _add_dag_with_runs(engine: Any, dag_id: str, dry_flags: list[bool]) -> None:
    """A workspace DAG whose runs (oldest first) are real or dry as ``dry_flags`` says."""
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from sqlalchemy import func, insert, select

    from bench.overview import BUNDLE, EPOCH, records

    with engine.begin() as conn:
        conn.execute(
            insert(DagModel.__table__),
            [
                {
                    "dag_id": dag_id,
                    "is_paused": False,
                    "is_stale": False,
                    "bundle_name": BUNDLE,
                    "timetable_type": "",
                    "partition_mapper_info": [],
                    "max_active_tasks": 16,
                    "max_consecutive_failed_dag_runs": 0,
                    "has_task_concurrency_limits": False,
                }
            ],
        )
        first = (conn.execute(select(func.max(DagRun.id))).scalar() or 0) + 1
        for n, dry in enumerate(dry_flags):
            at, run_id = EPOCH + timedelta(hours=n), f"manual__{n}"
            conn.execute(
                insert(DagRun.__table__),
                [
                    {
                        "id": first + n,
                        "dag_id": dag_id,
                        "run_id": run_id,
                        "run_type": "manual",
                        "run_after": at,
                        "state": "success",
                    }
                ],
            )
            conn.execute(
                insert(XComModel.__table__),
                [
                    {
                        "dag_run_id": first + n,
                        "task_id": task,
                        "map_index": -1,
                        "key": "counts",
                        "dag_id": dag_id,
                        "run_id": run_id,
                        "timestamp": at,
                        "value": record,
                    }
                    for task, record in records(0, 8 + n, dry=dry, failed=False, connection=False).items()
                ],
            )


def test_a_long_run_of_dry_runs_is_looked_past(seeded: Any) -> None:
    """When the newest runs are all dry runs, the DAG is read deeper for its last real run."""
    from sqlalchemy.orm import Session

    from bench.overview import EPOCH
    from entra_provisioning.overview_data import overview_rows

    dag_id = "entra_provisioning__dry"
    _add_dag_with_runs(seeded, dag_id, [False] + [True] * 5)
    with Session(seeded) as session:
        shallow = overview_rows(session, {dag_id}, now=EPOCH, recent=3, lookback=3)[0]
        deep = overview_rows(session, {dag_id}, now=EPOCH, recent=3, lookback=40)[0]
    assert shallow.real_run is None and shallow.added is None
    assert deep.real_run is not None and deep.real_run.run_id == "manual__0"
    # records(0, 8, …): to_add = 8 % 7 = 1, all added; the newest dry run (13) has 13 % 7 = 6 to add.
    assert (deep.added, deep.failed_users, deep.to_add, deep.to_add_from_dry_run) == (1, 0, 6, True)
    assert deep.last_run is not None and deep.last_run.run_id == "manual__5"


def test_a_workspace_that_never_ran_says_so(seeded: Any) -> None:
    from airflow.models.dag import DagModel
    from sqlalchemy import insert
    from sqlalchemy.orm import Session

    from bench.overview import BUNDLE, EPOCH
    from entra_provisioning.overview_data import overview_rows

    new = "entra_provisioning__fresh"
    with seeded.begin() as conn:
        conn.execute(
            insert(DagModel.__table__),
            [
                {
                    "dag_id": new,
                    "is_paused": True,
                    "is_stale": False,
                    "bundle_name": BUNDLE,
                    "timetable_type": "",
                    "timetable_summary": "None",
                    "partition_mapper_info": [],
                    "max_active_tasks": 16,
                    "max_consecutive_failed_dag_runs": 0,
                    "has_task_concurrency_limits": False,
                },
                {  # a stale DAG (its workspace left the config) is not shown
                    "dag_id": "entra_provisioning__gone",
                    "is_paused": False,
                    "is_stale": True,
                    "bundle_name": BUNDLE,
                    "timetable_type": "",
                    "timetable_summary": "@daily",
                    "partition_mapper_info": [],
                    "max_active_tasks": 16,
                    "max_consecutive_failed_dag_runs": 0,
                    "has_task_concurrency_limits": False,
                },
            ],
        )
    with Session(seeded) as session:
        rows = overview_rows(session, {new, "entra_provisioning__gone"}, now=EPOCH)
    assert [r.dag_id for r in rows] == [new]
    data = rows[0].to_json()
    assert data["never_run"] is True and data["last_run"] is None and data["members_resolved"] is None
    assert data["paused"] is True and data["schedule"] is None and data["next_run"] is None


def test_a_missing_pool_that_tasks_wait_for_is_named(seeded: Any) -> None:
    """settings.graph_pool without the pool: Airflow schedules nothing and says so only in its scheduler
    log, so the page names the pool and the DAGs stuck behind it."""
    import uuid

    from airflow.models.pool import Pool
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import insert
    from sqlalchemy.orm import Session

    from bench.overview import dag_id_of
    from entra_provisioning.overview_data import missing_pools

    def ti(dag_id: str, task_id: str, pool: str, state: str) -> dict[str, Any]:
        return {
            "id": uuid.uuid4(),
            "dag_id": dag_id,
            "task_id": task_id,
            "run_id": "manual__0",
            "map_index": -1,
            "try_number": 0,
            "max_tries": 3,
            "pool": pool,
            "pool_slots": 1,
            "state": state,
            "queue": "default",
            "priority_weight": 1,
            "hostname": "",
            "unixname": "airflow",
            "executor_config": {},
            "span_status": "not_started",
        }

    a, b, c = dag_id_of(0), dag_id_of(1), dag_id_of(2)
    with seeded.begin() as conn:
        conn.execute(insert(Pool.__table__), [{"pool": "graph_ok", "slots": 2, "include_deferred": False}])
        conn.execute(
            insert(TaskInstance.__table__),
            [
                ti(a, "resolve_members", "entra_graph", "scheduled"),
                ti(b, "resolve_members", "entra_graph", "scheduled"),
                ti(b, "fetch_token", "entra_graph", "success"),  # not waiting
                ti(c, "resolve_members", "graph_ok", "scheduled"),  # the pool exists
                ti("someone_else", "t", "entra_graph", "scheduled"),  # not asked about
            ],
        )
    with Session(seeded) as session:
        assert missing_pools(session, [a, b, c]) == {"entra_graph": sorted([a, b])}
        assert missing_pools(session, [c]) == {}
        assert missing_pools(session, []) == {}
