"""The overview page's data: one row per workspace DAG, read from Airflow's metadata database only.

Sources, all through Airflow's models: the DAG (``DagModel``: paused, schedule, next run, tags), its runs
(``DagRun``) and the small counts record each task pushes as an XCom with key :data:`COUNTS_KEY` in every
outcome. The large ``return_value`` members record is never read, and nothing here talks to Entra ID, Key
Vault or Databricks (nor holds a token: the records carry none).

Cost stays flat in the number of runs: one query reads the newest :data:`RECENT_RUNS` runs of every DAG
with their records (per DAG, a short walk down ``dag_run``'s ``dag_id`` index finds where they start),
one the newest failed run of each; only a DAG whose last real (non-dry) run or last successful token
check is older than that is read again, :data:`LOOKBACK_RUNS` runs deep. Records are decoded only when a
row needs them.

A missing count is unknown (``None``, shown "—"), never 0: a task that failed before its plan pushes a
record without counts.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from math import floor
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from entra_provisioning.config import DAG_ID_PREFIX
from entra_provisioning.config_fields import FIELDS
from entra_provisioning.run_record import COUNTS_KEY

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

TASK_IDS = ("fetch_token", "resolve_members", "add_missing_users")
#: Runs per DAG read at first: enough for the last run, the last real run and the last token check in
#: all but unusual histories (many dry runs in a row).
RECENT_RUNS = 10
#: How deep a DAG is looked at when its last real run or token check is older than :data:`RECENT_RUNS`.
LOOKBACK_RUNS = 500
#: Used when the workspaces file cannot be read where the page is served.
DEFAULT_WARNING_DAYS: int = FIELDS["secret_expiry_warning_days"].default
#: Outcomes of a record that explain a failed run.
FAILING_OUTCOMES = frozenset({"failed", "partial", "guard_stop"})


@dataclass(frozen=True)
class RunRef:
    """A DAG run as the page shows it: state, when, and the path of its page in the Airflow UI."""

    run_id: str
    state: str | None
    when: datetime | None
    url: str
    dry_run: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "state": self.state,
            "when": self.when.isoformat() if self.when else None,
            "url": self.url,
            "dry_run": self.dry_run,
        }


@dataclass
class WorkspaceRow:
    """One workspace DAG's line on the page; ``None`` means unknown or not applicable."""

    dag_id: str
    workspace: str
    tags: list[str]
    paused: bool
    schedule: str | None
    next_run: datetime | None
    target: str | None = None
    last_run: RunRef | None = None
    members_resolved: int | None = None
    drift: int | None = None
    #: Users still to add: what a dry run newer than the last real run would add, else what the last real
    #: run left unadded (:func:`left_to_add`).
    to_add: int | None = None
    #: ``to_add`` comes from a dry run newer than the last real run (what the next real run would add).
    to_add_from_dry_run: bool = False
    added: int | None = None
    failed_users: int | None = None
    #: The run the counts come from, and the last real run (added, failed users).
    counts_run: RunRef | None = None
    real_run: RunRef | None = None
    token_expires_on: datetime | None = None
    token_expires_in_days: int | None = None
    #: The last token check succeeded and its credential has no expiry (a Databricks connection).
    token_no_expiry: bool = False
    warning_days: int = DEFAULT_WARNING_DAYS
    last_failure: RunRef | None = None
    last_failure_reason: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def token_warning(self) -> bool:
        return self.token_expires_in_days is not None and self.token_expires_in_days <= self.warning_days

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("last_run", "counts_run", "real_run", "last_failure"):
            ref = getattr(self, name)
            out[name] = ref.to_json() if ref else None
        for name in ("next_run", "token_expires_on"):
            value = getattr(self, name)
            out[name] = value.isoformat() if value else None
        out["token_warning"] = self.token_warning
        out["never_run"] = self.last_run is None
        return out


@dataclass(frozen=True)
class RunFacts:
    """One run of a DAG with the counts records of its tasks (task id → record, or its stored value).

    Records are decoded when first asked for (:meth:`record`): a row needs a few of the records read,
    and decoding all of them is most of the cost.
    """

    id: int
    run_id: str
    state: str | None
    when: datetime | None
    records: dict[str, Any]

    def record(self, task_id: str) -> dict[str, Any] | None:
        value = self.records.get(task_id)
        if value is None or (isinstance(value, dict) and value.get("v") == 1):
            return value
        decoded = decode_record(value)
        if decoded is None:
            del self.records[task_id]
        else:
            self.records[task_id] = decoded
        return decoded


def run_url(dag_id: str, run_id: str) -> str:
    """The run's page in the Airflow UI, relative to the UI's root (the page adds its own base)."""
    return f"dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def decode_record(value: Any) -> dict[str, Any] | None:
    """A counts record from an XCom column value; ``None`` for anything that is not one.

    Values pushed through the Task Execution API arrive as JSON objects; ones stored through
    ``XComModel.serialize_value`` as a JSON string holding the object. Both are accepted.
    """
    if isinstance(value, bytes | bytearray):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, dict) or value.get("v") != 1:
        return None
    return value


def _count(record: Mapping[str, Any] | None, name: str) -> int | None:
    value = record.get(name) if record else None
    # bool is an int subclass: a record never carries a count as true/false, so such a value is unknown.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def left_to_add(record: Mapping[str, Any]) -> int | None:
    """Users a real run's attempt planned to add but did not: none after a success, the failed ones after
    a partial run, all of them after a guard stop. Unknown when a count is."""
    planned, added = _count(record, "to_add"), _count(record, "added")
    if planned is None or added is None:
        return None
    return max(0, planned - added - (_count(record, "existed_on_create") or 0))


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _one_line(text: Any, limit: int = 300) -> str | None:
    if not isinstance(text, str) or not text.strip():
        return None
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _ref(dag_id: str, run: RunFacts, dry_run: bool | None = None) -> RunRef:
    return RunRef(run.run_id, run.state, run.when, run_url(dag_id, run.run_id), dry_run)


def failure_reason(run: RunFacts) -> str:
    """The one-line reason of a failed run: the first failing task's record, in task order."""
    for task_id in TASK_IDS:
        record = run.record(task_id)
        if record and record.get("outcome") in FAILING_OUTCOMES:
            reason = _one_line(record.get("error"))
            if reason:
                return f"{task_id}: {reason}"
            return f"{task_id}: {record.get('outcome')}"
    return "no reason recorded (the run failed without a counts record; see its task logs)"


def fill_row(
    row: WorkspaceRow, runs: Iterable[RunFacts], last_failed: RunFacts | None, now: datetime
) -> bool:
    """Fill ``row`` from the DAG's runs, newest first. Pure: no database.

    :returns: whether everything the row needs was found in ``runs`` (the last real run and the last
        successful token check); ``False`` asks the caller to look deeper, unless these were all the runs.
    """
    latest_add: tuple[RunFacts, Mapping[str, Any]] | None = None
    real_add: tuple[RunFacts, Mapping[str, Any]] | None = None
    token: Mapping[str, Any] | None = None
    first = True
    for run in runs:
        if first:
            add = run.record("add_missing_users")
            row.last_run = _ref(row.dag_id, run, add.get("dry_run") if add else None)
            first = False
        add = run.record("add_missing_users")
        if add is not None:
            if latest_add is None:
                latest_add = (run, add)
            if real_add is None and add.get("dry_run") is False:
                real_add = (run, add)
        fetch = run.record("fetch_token")
        if token is None and fetch is not None and fetch.get("outcome") == "success":
            token = fetch
        if real_add is not None and token is not None:
            break
    if latest_add is not None:
        run, record = latest_add
        resolved = _count(record, "members_resolved")
        if resolved is None:
            resolved = _count(run.record("resolve_members"), "members_resolved")
        row.members_resolved = resolved
        row.drift = _count(record, "drift")
        row.to_add = _count(record, "to_add") if record.get("dry_run") is True else left_to_add(record)
        row.to_add_from_dry_run = record.get("dry_run") is True
        row.target = record.get("target") if isinstance(record.get("target"), str) else None
        row.counts_run = _ref(row.dag_id, run, record.get("dry_run") is True)
    if real_add is not None:
        run, record = real_add
        # Every attempt of the run together (an attempt that failed part-way and was retried still added
        # users); a record without it (older) has the attempt's own figure only.
        row.added = _count(record, "added_in_run")
        if row.added is None:
            row.added = _count(record, "added")
        row.failed_users = _count(record, "failed")
        row.real_run = _ref(row.dag_id, run, False)
        if row.target is None and isinstance(record.get("target"), str):
            row.target = record["target"]
    if token is not None:
        expires_on = _parse_time(token.get("token_expires_on"))
        row.token_expires_on = expires_on
        row.token_no_expiry = expires_on is None
        if expires_on is not None:
            row.token_expires_in_days = floor((expires_on - now).total_seconds() / 86400)
    if last_failed is not None:
        row.last_failure = _ref(row.dag_id, last_failed)
        row.last_failure_reason = failure_reason(last_failed)
    return real_add is not None and token is not None


# ------------------------------------------------------------------------------------------ queries


def _runs_with_records(session: Session, run_ids: Any) -> dict[int, tuple[str, RunFacts]]:
    """The runs selected by ``run_ids`` (a subquery of ids) with their counts records: id → (DAG, run).

    The records stay as stored (JSON text) until a row needs one.
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from sqlalchemy import Text, and_, cast, func, select

    rows = session.execute(
        select(
            DagRun.id,
            DagRun.dag_id,
            DagRun.run_id,
            DagRun.state,
            func.coalesce(DagRun.end_date, DagRun.start_date, DagRun.queued_at, DagRun.run_after),
            XComModel.task_id,
            cast(XComModel.value, Text),
        )
        .outerjoin(
            XComModel,
            # The whole primary key of xcom (dag_run_id, task_id, map_index, key): one index probe per task.
            and_(
                XComModel.dag_run_id == DagRun.id,
                XComModel.task_id.in_(TASK_IDS),
                XComModel.map_index == -1,
                XComModel.key == COUNTS_KEY,
            ),
        )
        .where(DagRun.id.in_(run_ids))
    )
    runs: dict[int, tuple[str, RunFacts]] = {}
    for run_pk, dag_id, run_id, state, when, task_id, value in rows:
        entry = runs.get(run_pk)
        if entry is None:
            entry = runs[run_pk] = (dag_id, RunFacts(run_pk, run_id, str(state) if state else None, when, {}))
        if task_id is not None and value is not None:
            entry[1].records[task_id] = value
    return runs


def _recent_runs(session: Session, dag_ids: Collection[str], depth: int) -> dict[str, list[RunFacts]]:
    """The newest ``depth`` runs of each DAG, newest first, with their counts records.

    Per DAG, the id of its ``depth``-th newest run is one short index walk (``dag_run`` is indexed on
    ``dag_id``, and run ids grow); the runs at or above it are then a range per DAG. No scan of a DAG's
    whole history, however long.
    """
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from sqlalchemy import and_, func, select
    from sqlalchemy.orm import aliased

    older = aliased(DagRun)
    nth_newest = (
        select(older.id)
        .where(older.dag_id == DagModel.dag_id)
        .order_by(older.id.desc())
        .limit(1)
        .offset(depth - 1)
        .correlate(DagModel)
        .scalar_subquery()
    )
    floors = (
        select(DagModel.dag_id.label("dag_id"), func.coalesce(nth_newest, 0).label("floor"))
        .where(DagModel.dag_id.in_(list(dag_ids)))
        .subquery()
    )
    recent_ids = select(DagRun.id).join(
        floors, and_(DagRun.dag_id == floors.c.dag_id, DagRun.id >= floors.c.floor)
    )
    runs = _runs_with_records(session, recent_ids)
    by_dag: dict[str, list[RunFacts]] = {dag_id: [] for dag_id in dag_ids}
    for run_pk in sorted(runs, reverse=True):
        dag_id, run = runs[run_pk]
        by_dag[dag_id].append(run)
    return by_dag


def _last_failed_runs(session: Session, dag_ids: Collection[str]) -> dict[str, RunFacts]:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import func, select

    newest = (
        select(func.max(DagRun.id))
        .where(DagRun.dag_id.in_(list(dag_ids)), DagRun.state == "failed")
        .group_by(DagRun.dag_id)
    )
    return {dag_id: run for dag_id, run in _runs_with_records(session, newest).values()}


def workspace_dags(session: Session, readable: Collection[str] | None) -> list[WorkspaceRow]:
    """The rows' DAG facts for every workspace DAG (by id prefix, not stale) the user may read."""
    from airflow.models.dag import DagModel, DagTag
    from sqlalchemy import select

    dags = session.execute(
        select(
            DagModel.dag_id,
            DagModel.is_paused,
            DagModel.timetable_summary,
            DagModel.next_dagrun_create_after,
        ).where(DagModel.dag_id.startswith(DAG_ID_PREFIX, autoescape=True), DagModel.is_stale.is_(False))
    ).all()
    allowed = None if readable is None else set(readable)
    rows = {
        dag_id: WorkspaceRow(
            dag_id=dag_id,
            workspace=dag_id.removeprefix(DAG_ID_PREFIX),
            tags=[],
            paused=bool(paused),
            schedule=summary if summary and summary != "None" else None,
            next_run=None if paused or not summary or summary == "None" else next_after,
        )
        for dag_id, paused, summary, next_after in dags
        if allowed is None or dag_id in allowed
    }
    if rows:
        for dag_id, tag in session.execute(
            select(DagTag.dag_id, DagTag.name).where(DagTag.dag_id.in_(list(rows)))
        ):
            rows[dag_id].tags.append(tag)
    for row in rows.values():
        row.tags.sort()
    return sorted(rows.values(), key=lambda row: row.workspace)


def overview_rows(
    session: Session,
    readable: Collection[str] | None,
    *,
    warning_days: Mapping[str, int] | None = None,
    now: datetime | None = None,
    recent: int = RECENT_RUNS,
    lookback: int = LOOKBACK_RUNS,
) -> list[WorkspaceRow]:
    """Every workspace DAG in ``readable`` (``None``: all) with its last run, counts and token expiry.

    :param warning_days: the token-expiry warning threshold by workspace name; others get the default.
    """
    now = now or datetime.now(UTC)
    rows = workspace_dags(session, readable)
    if not rows:
        return rows
    dag_ids = [row.dag_id for row in rows]
    runs = _recent_runs(session, dag_ids, recent)
    failed = _last_failed_runs(session, dag_ids)
    deeper = []
    for row in rows:
        row.warning_days = (warning_days or {}).get(row.workspace, DEFAULT_WARNING_DAYS)
        complete = fill_row(row, runs[row.dag_id], failed.get(row.dag_id), now)
        if not complete and len(runs[row.dag_id]) >= recent:
            deeper.append(row)
    if deeper and lookback > recent:
        more = _recent_runs(session, [row.dag_id for row in deeper], lookback)
        for row in deeper:
            if not fill_row(row, more[row.dag_id], failed.get(row.dag_id), now) and (
                len(more[row.dag_id]) >= lookback
            ):
                row.notes.append(f"looked back {lookback} runs only")
    return rows


def missing_pools(session: Session, dag_ids: Collection[str]) -> dict[str, list[str]]:
    """Pools that tasks of ``dag_ids`` wait for but that do not exist, with the DAGs waiting: Airflow
    3.3 never schedules such a task and says so only in the scheduler's log (``settings.graph_pool``
    without ``python -m entra_provisioning pool --create``)."""
    from airflow.models.pool import Pool
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    if not dag_ids:
        return {}
    waiting = session.execute(
        select(TaskInstance.pool, TaskInstance.dag_id)
        .where(
            TaskInstance.dag_id.in_(list(dag_ids)),
            TaskInstance.state == TaskInstanceState.SCHEDULED,
            TaskInstance.pool.not_in(select(Pool.pool)),
        )
        .distinct()
    ).all()
    blocked: dict[str, list[str]] = {}
    for pool, dag_id in waiting:
        blocked.setdefault(str(pool), []).append(str(dag_id))
    return {pool: sorted(dags) for pool, dags in sorted(blocked.items())}
