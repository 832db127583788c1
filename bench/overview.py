"""Bench row (o): the overview page's data for many workspaces with a long history, beside a naive reader.

A throwaway SQLite metadata database gets Airflow's schema (the models' tables) and, through the models'
tables, ``workspaces`` workspace DAGs with ``runs`` runs each: mostly real scheduled runs, a dry run
every 10th run, a failure every 25th (a partial run whose ``add_missing_users`` record carries the
reason); each run has the three tasks' counts records and a ``return_value`` of ~0.5 KB (never read, but
in the table as in real life). One in three workspaces uses a Databricks connection (no token expiry).

Measured: ``overview_rows`` (what ``GET /entra-provisioning/api/workspaces`` computes before JSON) for
all DAGs, median of ``repeats`` runs, each in a fresh session; and a naive reader that loads, per DAG,
every run and every counts record through the ORM and keeps the newest (one pass, as written first).
Both must give the same rows.

    python -m bench.overview --workspaces 200 --runs 1000     # prints one JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

TASKS = ("fetch_token", "resolve_members", "add_missing_users")
BUNDLE = "dags-folder"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def dag_id_of(index: int) -> str:
    from entra_provisioning.config import DAG_ID_PREFIX

    return f"{DAG_ID_PREFIX}ws-{index:04d}"


def create_schema(url: str) -> Any:
    """An engine on ``url`` with Airflow's metadata tables created from its models."""
    from airflow.models import import_all_models
    from airflow.models.base import Base
    from sqlalchemy import create_engine

    import_all_models()
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    return engine


def records(index: int, run: int, *, dry: bool, failed: bool, connection: bool) -> dict[str, dict[str, Any]]:
    """The three counts records of run ``run`` of workspace ``index`` (the data contract's shapes)."""
    expires = None if connection else (EPOCH + timedelta(days=400 - index % 30)).isoformat()
    token = {
        "v": 1,
        "task": "fetch_token",
        "outcome": "success",
        "error": None,
        "token_expires_in_days": None if connection else 400 - index % 30,
        "token_expires_on": expires,
    }
    members = 100 + index % 50
    resolve = {
        "v": 1,
        "task": "resolve_members",
        "outcome": "success",
        "error": None,
        "members_resolved": members,
        "skipped": {"disabled": 1},
        "throttled": 0,
    }
    to_add = run % 7
    failed_users = min(2, to_add) if failed else 0
    add: dict[str, Any] = {
        "v": 1,
        "task": "add_missing_users",
        "outcome": "dry_run" if dry else "partial" if failed else "success",
        "error": f"{failed_users} of {to_add} users could not be created: 403 Forbidden" if failed else None,
        "dry_run": dry,
        "target": "account" if connection else "workspace",
        "members_resolved": members,
        "already_present": members - to_add,
        "to_add": to_add,
        "added": 0 if dry else to_add - failed_users,
        "added_in_run": 0 if dry else to_add - failed_users,
        "failed": failed_users,
        "drift": index % 5,
        "skipped": {"disabled": 1},
        "skipped_total": 1,
        "throttled": 0,
        "membership_drift": 0,
    }
    return {"fetch_token": token, "resolve_members": resolve, "add_missing_users": add}


def seed(engine: Any, workspaces: int, runs: int, *, batch: int = 20_000) -> dict[str, int]:
    """Fill the database: DAGs, tags, runs and XComs, with bulk inserts into the models' tables."""
    from airflow.models.dag import DagModel, DagTag
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from sqlalchemy import insert

    filler = {"user_names": [f"user{i:04d}@contoso.com" for i in range(4)]}
    counts = {"dags": 0, "runs": 0, "xcoms": 0}
    with engine.begin() as conn:
        conn.execute(insert(DagBundleModel.__table__), [{"name": BUNDLE, "active": True}])
        conn.execute(
            insert(DagModel.__table__),
            [
                {
                    "dag_id": dag_id_of(i),
                    "is_paused": False,
                    "is_stale": False,
                    "bundle_name": BUNDLE,
                    "timetable_type": "airflow.timetables.interval.CronDataIntervalTimetable",
                    "timetable_summary": "0 */6 * * *",
                    "next_dagrun_create_after": EPOCH + timedelta(hours=6),
                    "partition_mapper_info": [],
                    "max_active_tasks": 16,
                    "max_active_runs": 1,
                    "max_consecutive_failed_dag_runs": 0,
                    "has_task_concurrency_limits": False,
                }
                for i in range(workspaces)
            ],
        )
        conn.execute(
            insert(DagTag.__table__),
            [
                {"dag_id": dag_id_of(i), "name": name}
                for i in range(workspaces)
                for name in ("entra-provisioning", "databricks", f"team-{i % 4}")
            ],
        )
        counts["dags"] = workspaces
    run_rows: list[dict[str, Any]] = []
    xcom_rows: list[dict[str, Any]] = []
    next_id = 1

    def flush() -> None:
        with engine.begin() as conn:
            if run_rows:
                conn.execute(insert(DagRun.__table__), run_rows)
            if xcom_rows:
                conn.execute(insert(XComModel.__table__), xcom_rows)
        counts["runs"] += len(run_rows)
        counts["xcoms"] += len(xcom_rows)
        run_rows.clear()
        xcom_rows.clear()

    # Runs are interleaved across DAGs in time order, as a scheduler creates them.
    for run in range(runs):
        at = EPOCH - timedelta(hours=6 * (runs - run))
        for i in range(workspaces):
            dry, failed = run % 10 == 3, run % 25 == 7
            dag_id = dag_id_of(i)
            run_id = f"{'manual' if dry else 'scheduled'}__{at.isoformat()}"
            run_rows.append(
                {
                    "id": next_id,
                    "dag_id": dag_id,
                    "run_id": run_id,
                    "run_type": "manual" if dry else "scheduled",
                    "run_after": at,
                    "logical_date": None if dry else at,
                    "queued_at": at,
                    "start_date": at,
                    "end_date": at + timedelta(minutes=2),
                    "state": "failed" if failed else "success",
                    "conf": {"dry_run": True} if dry else {},
                    "clear_number": 0,
                    "span_status": "ended",
                }
            )
            for task_id, record in records(i, run, dry=dry, failed=failed, connection=i % 3 == 2).items():
                common = {"dag_run_id": next_id, "task_id": task_id, "map_index": -1, "dag_id": dag_id}
                common.update({"run_id": run_id, "timestamp": at})
                xcom_rows.append({**common, "key": "counts", "value": record})
                xcom_rows.append({**common, "key": "return_value", "value": filler})
            next_id += 1
            if len(xcom_rows) >= batch:
                flush()
    flush()
    return counts


def naive_rows(session: Any, dag_ids: list[str], now: datetime) -> list[Any]:
    """Per DAG: every run and every counts record through the ORM, then the same row logic."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    from entra_provisioning.overview_data import (
        COUNTS_KEY,
        RunFacts,
        decode_record,
        fill_row,
        workspace_dags,
    )

    rows = workspace_dags(session, dag_ids)
    for row in rows:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == row.dag_id).order_by(DagRun.id.desc()))
        facts = []
        by_id: dict[int, dict[str, Any]] = {}
        for run in runs:
            by_id[run.id] = {}
            when = run.end_date or run.start_date or run.queued_at or run.run_after
            facts.append(
                RunFacts(run.id, run.run_id, str(run.state) if run.state else None, when, by_id[run.id])
            )
        for xcom in session.scalars(
            select(XComModel).where(XComModel.dag_id == row.dag_id, XComModel.key == COUNTS_KEY)
        ):
            record = decode_record(xcom.value)
            if record is not None and xcom.dag_run_id in by_id:
                by_id[xcom.dag_run_id][xcom.task_id] = record
        failed = next((run for run in facts if run.state == "failed"), None)
        fill_row(row, facts, failed, now)
    return rows


def measure(
    workspaces: int, runs: int, repeats: int = 5, naive: bool = True, db: Path | None = None
) -> dict[str, Any]:
    """Seed a fresh database, time ours ``repeats`` times and the naive reader once; check they agree.

    With ``db``, that database is kept, and reused when it exists (seeded with the same sizes).
    """
    from sqlalchemy.orm import Session

    from entra_provisioning.overview_data import overview_rows

    with tempfile.TemporaryDirectory(prefix="bench-overview-") as tmp:
        reuse = db is not None and db.exists()
        db = db or Path(tmp) / "airflow.db"
        started = time.perf_counter()
        engine = create_schema(f"sqlite:///{db}")
        if reuse:
            counts = {"dags": workspaces, "runs": workspaces * runs, "xcoms": workspaces * runs * 6}
        else:
            counts = seed(engine, workspaces, runs)
        seed_seconds = time.perf_counter() - started
        dag_ids = [dag_id_of(i) for i in range(workspaces)]
        now = EPOCH
        times = []
        ours: list[Any] = []
        for _ in range(repeats):
            with Session(engine) as session:
                t0 = time.perf_counter()
                ours = overview_rows(session, set(dag_ids), now=now)
                times.append(time.perf_counter() - t0)
        result: dict[str, Any] = {
            "workspaces": workspaces,
            "runs_per_workspace": runs,
            **counts,
            "db_mb": round(db.stat().st_size / 1e6, 1),
            "seed_seconds": seed_seconds,
            "database": "sqlite",
            "repeats": repeats,
            "seconds": statistics.median(times),
            "run_seconds": times,
            "rows": len(ours),
            "rows_with_counts": sum(row.members_resolved is not None for row in ours),
            "rows_with_failure": sum(row.last_failure is not None for row in ours),
        }
        if naive:
            with Session(engine) as session:
                t0 = time.perf_counter()
                slow = naive_rows(session, dag_ids, now)
                result["naive_seconds"] = time.perf_counter() - t0
            result["same_rows"] = [r.to_json() for r in slow] == [r.to_json() for r in ours]
            result["ratio"] = result["naive_seconds"] / result["seconds"]
        engine.dispose()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workspaces", type=int, default=200)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-naive", action="store_true")
    parser.add_argument("--db", type=Path, help="keep the seeded SQLite file here (reused when it exists)")
    args = parser.parse_args(argv)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    result = measure(args.workspaces, args.runs, args.repeats, naive=not args.no_naive, db=args.db)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
