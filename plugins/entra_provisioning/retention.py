"""Which runs' large XComs to delete: the pure half of ``settings.xcom_retention_days``.

Every run stores its members record and its summary as ``return_value`` XComs, which the metadata
database keeps until someone deletes them. ``report`` deletes those of its own DAG's runs older than the
retention age, and keeps the small ``counts`` XComs (the overview page, the alerts and the metrics read
those) and always the latest :data:`KEEP_LATEST_RUNS` runs whatever their age.

A task reaches the metadata database only through the task-execution API, which can delete one XCom of a
known run but cannot list a DAG's runs. So ``report`` remembers the runs it has seen in the workspace's
state Variable (:mod:`entra_provisioning.run_state`): ``runs`` is a list of ``[run_id, epoch seconds]``,
oldest first, one entry per run whose ``report`` ran. A run leaves the list once its XComs are deleted.
Runs from before this list existed, or whose ``report`` never ran, are left to ``airflow db clean``.

Nothing here touches Airflow: the functions take the list and return a new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "KEEP_LATEST_RUNS",
    "MAX_RUNS_PER_REPORT",
    "MAX_TRACKED_RUNS",
    "PURGED_TASKS",
    "enabled",
    "expired",
    "forget",
    "remember",
    "runs_of",
]

#: Always kept, whatever their age: the runs someone is most likely to look into.
KEEP_LATEST_RUNS = 3
#: At most this many runs' XComs are deleted by one ``report`` (four requests each), so turning retention
#: on for a long history spreads the work over a few runs instead of making one ``report`` slow.
MAX_RUNS_PER_REPORT = 50
#: The list never grows past this (a few tens of KB of Variable). Retention removes runs as it deletes
#: their XComs, so only a retention age longer than this many runs (or retention off) drops the oldest
#: entries; their XComs are then ``airflow db clean``'s.
MAX_TRACKED_RUNS = 1000
#: The tasks whose ``return_value`` is deleted: the token facts, the members record, the summary and
#: report's own result. Their ``counts`` XComs stay.
PURGED_TASKS = ("fetch_token", "resolve_members", "add_missing_users", "report")

_DAY_SECONDS = 86_400


def enabled(days: int | None) -> bool:
    """Whether a ``settings.xcom_retention_days`` value turns retention on (``0`` and ``null`` are off)."""
    return bool(days) and int(days or 0) > 0


def runs_of(value: Any) -> list[tuple[str, int]]:
    """The run list from the state Variable's ``runs`` value; anything malformed in it is dropped."""
    if not isinstance(value, list):
        return []
    runs: list[tuple[str, int]] = []
    for item in value:
        if (
            isinstance(item, list | tuple)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], int | float)
            and not isinstance(item[1], bool)
        ):
            runs.append((item[0], int(item[1])))
    return runs


def remember(runs: Sequence[tuple[str, int]], run_id: str, at: int) -> list[list[Any]]:
    """The list with ``run_id`` (started at ``at``, epoch seconds) in it, oldest first, as JSON values.

    A run already in the list (a retried ``report``) keeps its first entry.
    """
    known_run = any(known == run_id for known, _ in runs)
    kept = list(runs) if known_run else [*runs, (run_id, int(at))]
    kept.sort(key=lambda entry: entry[1])
    return [[known, when] for known, when in kept[-MAX_TRACKED_RUNS:]]


def expired(
    runs: Sequence[tuple[str, int]],
    now: int,
    days: int | None,
    *,
    keep_latest: int = KEEP_LATEST_RUNS,
    limit: int = MAX_RUNS_PER_REPORT,
) -> list[str]:
    """The runs whose ``return_value`` XComs are due for deletion, oldest first.

    :param runs: ``(run_id, started at in epoch seconds)``, in any order.
    :param now: the current time, epoch seconds.
    :param days: ``settings.xcom_retention_days``; off (nothing is due) when ``0`` or ``None``.
    :param keep_latest: the latest this many runs are never due.
    :param limit: at most this many runs (the oldest) are returned.
    :return: the run ids started more than ``days`` days before ``now``, but for the latest ``keep_latest``.
    """
    if not enabled(days):
        return []
    cutoff = now - int(days or 0) * _DAY_SECONDS
    ordered = sorted(runs, key=lambda entry: entry[1])
    candidates = ordered[: max(0, len(ordered) - keep_latest)]
    return [run_id for run_id, at in candidates if at < cutoff][: max(0, limit)]


def forget(runs: Sequence[tuple[str, int]], done: Sequence[str]) -> list[list[Any]]:
    """The list without the runs in ``done`` (whose XComs are deleted), as JSON values."""
    gone = set(done)
    return [[run_id, at] for run_id, at in runs if run_id not in gone]
