"""The task side of a run's records: storing each task's counts record, and the ``report`` task.

``report`` runs after ``add_missing_users`` has finished for good (succeeded, failed after Airflow's
retries, or never ran because an upstream task failed). It is a teardown task, so its own outcome never
changes the run's. It reads the three counts records and, from them only:

- emits an asset event for the workspace when the run added someone (a partially failed run included),
  through the DAG's asset alias, with the run's counts in its ``extra``;
- sends the run's metrics (:mod:`entra_provisioning.metrics`) through Airflow's metrics facility;
- deletes the ``return_value`` XComs of its DAG's runs older than ``settings.xcom_retention_days``
  (:mod:`entra_provisioning.retention` chooses them; ``counts`` XComs and the latest runs stay);
- sends the run's events as alerts when the entry has ``notify`` (:mod:`entra_provisioning.notifiers`:
  once per event per run, the token warning once a day).

Airflow and the SDKs are imported inside the functions: this module is imported by the DAG file's tasks
only when they run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from entra_provisioning import metrics, notifiers, retention, run_state
from entra_provisioning.run_events import WORK_TASKS, added_in_run, asset_extra, run_events
from entra_provisioning.run_record import COUNTS_KEY

if TYPE_CHECKING:
    from airflow.sdk import Asset, AssetAlias

    from entra_provisioning.config import WorkspaceConfig

log = logging.getLogger(__name__)

#: Asset URIs use a scheme of our own (``x-`` marks a private scheme: Airflow keeps it as written);
#: ``databricks://`` belongs to the Databricks provider's Unity Catalog tables.
ASSET_SCHEME = "x-entra-provisioning"


def workspace_asset(ws: WorkspaceConfig) -> Asset:
    """The Airflow asset standing for "the users of this workspace": an event means someone was added."""
    from airflow.sdk import Asset

    return Asset(name=f"{ws.dag_id}__users", uri=f"{ASSET_SCHEME}://{ws.workspace_host}/users")


def users_added_alias(ws: WorkspaceConfig) -> AssetAlias:
    """The alias ``report`` attaches the workspace's asset event to, only when the run added someone."""
    from airflow.sdk import AssetAlias

    return AssetAlias(name=f"{ws.dag_id}__users_added")


def counts_pusher(ws: WorkspaceConfig, task: str) -> Callable[[dict[str, Any]], None]:
    """Store a counts record as the running task's ``counts`` XCom.

    For ``add_missing_users`` it first adds ``added_in_run``: what this attempt added plus what earlier
    attempts of the same run added (kept in the workspace's state Variable, since Airflow clears a task's
    XComs when a retry starts).
    """
    from airflow.sdk import get_current_context

    context = get_current_context()
    ti = context["ti"]
    run_id = str(context["run_id"])

    def push(record: dict[str, Any]) -> None:
        if task == "add_missing_users":
            if record.get("dry_run"):
                record["added_in_run"] = 0
            else:
                added = int(record.get("added") or 0)
                total, state = run_state.carry_added(run_state.load(ws.dag_id), run_id, added)
                record["added_in_run"] = total
                try:
                    run_state.save(ws.dag_id, state)
                except Exception as exc:  # the record matters more than the carry-over
                    log.warning("Could not save the run state (%s: %s)", type(exc).__name__, exc)
        ti.xcom_push(key=COUNTS_KEY, value=record)

    return push


def report(
    ws: WorkspaceConfig, context: Mapping[str, Any], *, xcom_retention_days: int | None = None
) -> dict[str, Any]:
    """Read the run's counts records and act on them; return what was done (small, for XCom).

    :param xcom_retention_days: ``settings.xcom_retention_days``: older runs' ``return_value`` XComs are
        deleted (``0``/``None``: none are, but the run is still remembered for when it is turned on).
    """
    ti = context["ti"]
    run_id = str(context["run_id"])
    records = {task: _pull(ti, task) for task in WORK_TASKS}
    events = run_events(records, expiry_warning_days=ws.secret_expiry_warning_days)
    added = added_in_run(records)
    if added:
        extra = asset_extra(records, workspace=ws.workspace_host, run_id=run_id)
        context["outlet_events"][users_added_alias(ws)].add(workspace_asset(ws), extra=extra)
        log.info("Asset event for %s: %d user(s) added in this run", workspace_asset(ws).uri, added)
    for event in events:
        log.info("Event %s: %s%s", event.kind, event.what, f" ({event.reason})" if event.reason else "")
    result: dict[str, Any] = {
        "events": [event.kind for event in events],
        "added_in_run": added,
        "asset_event": bool(added),
        "metrics": send_metrics(ws, records, run_id, retry=int(getattr(ti, "try_number", 1) or 1) > 1),
    }
    result.update(prune_xcoms(ws, run_id, _started(context), xcom_retention_days))
    if ws.notify is not None:
        # Last: a failure to send raises (for a retry) only after everything else has been done.
        result.update(notifiers.send_alerts(ws, events, context).as_dict())
    return result


def send_metrics(
    ws: WorkspaceConfig, records: Mapping[str, Mapping[str, Any] | None], run_id: str, *, retry: bool = False
) -> int:
    """Send the run's metrics; return how many were handed to Airflow (0 when metrics are off).

    Gauges may be sent again, counters may not: ``report`` can be retried (a mail outage fails it for its
    retry), so the run whose counters went out is recorded in the workspace's state Variable, and a
    retry (``retry``) that finds its run there sends the gauges only. Metrics are an observer's concern:
    a problem sending them, or recording that, is logged and never fails ``report``.
    """
    points = metrics.run_metrics(records, workspace=ws.name)
    state = run_state.load(ws.dag_id) if retry else None
    if state is not None and not run_state.counters_due(state, run_id):
        points = [point for point in points if point.kind == metrics.GAUGE]
        log.info("An earlier attempt of report sent this run's metric counters; sending the gauges only")
    try:
        backend = metrics.emit(points)
    except Exception as exc:
        log.warning("Metrics not sent (%s: %s)", type(exc).__name__, exc)
        return 0
    if backend is None:
        log.info("Metrics are off in Airflow's [metrics] section: %d metric(s) not sent", len(points))
        return 0
    log.info("Sent %d metric(s) of workspace %s through Airflow's %s metrics", len(points), ws.name, backend)
    if any(point.kind == metrics.COUNTER for point in points):
        try:
            current = state if state is not None else run_state.load(ws.dag_id)
            run_state.save(ws.dag_id, run_state.record_counters(current, run_id))
        except Exception as exc:
            log.warning(
                "Could not record that the metric counters were sent (%s: %s); a retry of report may send "
                "them again",
                type(exc).__name__,
                exc,
            )
    return len(points)


def prune_xcoms(ws: WorkspaceConfig, run_id: str, started: datetime, days: int | None) -> dict[str, int]:
    """Remember this run, and delete the ``return_value`` XComs of the DAG's runs past the retention age.

    Through the task SDK's XCom API (the configured XCom backend's, so an object-storage backend deletes its
    objects too): a task on a Celery worker reaches the metadata database only through the task-execution
    API. A run whose XComs could not all be deleted stays remembered and is tried again by the next run.
    Housekeeping never fails ``report``: a problem is logged.

    :return: ``xcoms_deleted`` (``return_value`` XComs deleted) and ``runs_pruned`` (runs done with).
    """
    try:
        state = run_state.load(ws.dag_id)
        runs = retention.runs_of(
            retention.remember(retention.runs_of(state.get("runs")), run_id, int(started.timestamp()))
        )
        due = retention.expired(runs, int(time.time()), days)
        deleted, done = _delete_return_values(ws.dag_id, due)
        if due:
            log.info(
                "Retention (%s day(s)): deleted %d return_value XCom(s) of %d run(s); %d run(s) to retry",
                days,
                deleted,
                len(done),
                len(due) - len(done),
            )
        run_state.save(ws.dag_id, {**state, "runs": retention.forget(runs, done)})
    except Exception as exc:
        log.warning("XCom retention skipped this run (%s: %s)", type(exc).__name__, exc)
        return {"xcoms_deleted": 0, "runs_pruned": 0}
    return {"xcoms_deleted": deleted, "runs_pruned": len(done)}


def _delete_return_values(dag_id: str, run_ids: list[str]) -> tuple[int, list[str]]:
    """Delete the ``return_value`` XComs of ``run_ids``; return how many existed and the runs done."""
    if not run_ids:
        return 0, []
    from airflow.sdk.execution_time.xcom import XCom

    deleted = 0
    done: list[str] = []
    for old in run_ids:
        try:
            for task in retention.PURGED_TASKS:
                # get_all answers [] for a task that stored nothing (a failed or skipped one); get_one and
                # delete would log "XCom not found" as an error for it.
                if not XCom.get_all(key="return_value", dag_id=dag_id, task_id=task, run_id=old):
                    continue
                XCom.delete(key="return_value", task_id=task, dag_id=dag_id, run_id=old)
                deleted += 1
        except Exception as exc:
            log.warning("Could not delete the XComs of run %s (%s: %s)", old, type(exc).__name__, exc)
            continue
        done.append(old)
    return deleted, done


def _started(context: Mapping[str, Any]) -> datetime:
    """When the run started (its age counts from then); now, if the context does not say."""
    from datetime import UTC

    dag_run = context.get("dag_run")
    for name in ("start_date", "run_after", "logical_date"):
        value = getattr(dag_run, name, None)
        if isinstance(value, datetime):
            return value
    return datetime.now(UTC)


def _pull(ti: Any, task: str) -> dict[str, Any] | None:
    value = ti.xcom_pull(task_ids=task, key=COUNTS_KEY)
    return dict(value) if isinstance(value, Mapping) else None
