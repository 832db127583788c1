"""What a workspace's DAG remembers between task attempts and runs: one Airflow Variable per workspace.

Airflow clears a task instance's XComs when an attempt starts, so a retried ``add_missing_users`` would
forget what the failed attempt added, and nothing in XCom says when the last token-expiry alert went out.
This small JSON Variable (``<dag_id>__state``, visible under Admin → Variables, no secret in it) keeps:

- ``run_id`` / ``added_in_run``: users added by the attempts of the current run so far;
- ``alerted``: ``{"run_id": …, "events": [...]}``, the alerts already sent for the latest alerted run, so a
  retried report never sends one twice;
- ``token_alerted_on``: the day (UTC, ISO date) the last token-expiry alert was sent;
- ``metrics_run_id``: the latest run whose counters were sent, so a retried report does not count them
  twice.
- ``runs``: ``[[run_id, started at, epoch seconds], …]``, the runs whose ``report`` ran and whose
  ``return_value`` XComs are not deleted yet (:mod:`entra_provisioning.retention`; the task-execution API
  cannot list a DAG's runs, so ``report`` keeps this list to know which XComs to delete).

``max_active_runs=1`` makes each workspace's DAG the only writer of its Variable. The decisions are pure
functions; only :func:`load` and :func:`save` touch Airflow.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "alerts_due",
    "carry_added",
    "counters_due",
    "load",
    "record_alert",
    "record_counters",
    "save",
    "variable_key",
]

#: The event kind limited to one alert a day per workspace (whatever the number of runs that day).
DAILY_KINDS = frozenset({"token_expiring"})


def variable_key(dag_id: str) -> str:
    return f"{dag_id}__state"


def carry_added(state: dict[str, Any], run_id: str, added_now: int) -> tuple[int, dict[str, Any]]:
    """Users added by this run's attempts so far, this one included; and the state to save.

    A new run starts from zero; a retry of the same run adds to what the earlier attempts added.
    """
    before = int(state.get("added_in_run", 0)) if state.get("run_id") == run_id else 0
    total = before + max(0, int(added_now))
    return total, {**state, "run_id": run_id, "added_in_run": total}


def alerts_due(
    state: dict[str, Any], run_id: str, kinds: list[str], today: str
) -> tuple[list[str], list[str]]:
    """Which of a run's event ``kinds`` still need a message, and which were sent already (in that order).

    Already sent: recorded under ``alerted`` for this very run (a retried ``report``), or, for the token
    warning, recorded as sent on ``today`` (a UTC ISO date) by any run.
    """
    alerted = state.get("alerted")
    sent_in_run = (
        set(alerted.get("events") or ())
        if isinstance(alerted, dict) and alerted.get("run_id") == run_id
        else set()
    )
    due: list[str] = []
    done: list[str] = []
    for kind in kinds:
        if kind in sent_in_run or (kind in DAILY_KINDS and state.get("token_alerted_on") == today):
            done.append(kind)
        else:
            due.append(kind)
    return due, done


def record_alert(state: dict[str, Any], run_id: str, kind: str, today: str) -> dict[str, Any]:
    """The state to save once the message for ``kind`` of ``run_id`` has been sent.

    Only the latest alerted run is kept (``max_active_runs=1``: a later run's report never races an
    earlier one's), so the Variable stays a few hundred bytes.
    """
    alerted = state.get("alerted")
    events = (
        list(alerted.get("events") or ())
        if isinstance(alerted, dict) and alerted.get("run_id") == run_id
        else []
    )
    if kind not in events:
        events.append(kind)
    new = {**state, "alerted": {"run_id": run_id, "events": events}}
    if kind in DAILY_KINDS:
        new["token_alerted_on"] = today
    return new


def counters_due(state: dict[str, Any], run_id: str) -> bool:
    """Whether ``run_id``'s metric counters are still to be sent (no earlier attempt of report sent them)."""
    return state.get("metrics_run_id") != run_id


def record_counters(state: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The state to save once ``run_id``'s metric counters have been sent."""
    return {**state, "metrics_run_id": run_id}


def load(dag_id: str) -> dict[str, Any]:
    """The workspace's state (empty when there is none, or it cannot be read: it is a convenience)."""
    from airflow.sdk import Variable

    try:
        raw = Variable.get(variable_key(dag_id), default=None)
    except Exception as exc:
        log.warning("Could not read Variable %s (%s: %s)", variable_key(dag_id), type(exc).__name__, exc)
        return {}
    if not raw:
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return {}
    return dict(value) if isinstance(value, dict) else {}


def save(dag_id: str, state: dict[str, Any]) -> None:
    from airflow.sdk import Variable

    Variable.set(
        variable_key(dag_id),
        json.dumps(state, sort_keys=True),
        description=(
            "entra-provisioning: per-workspace run state (added in the current run, alerts and metric "
            "counters sent)"
        ),
    )
