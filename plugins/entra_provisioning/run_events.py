"""What happened in a run, read from its tasks' counts records: the events alerts and asset events act on.

Pure: the ``report`` task gathers the records (:mod:`entra_provisioning.report`) and acts on the result.
A run's failure is one event of one kind (the kinds are exclusive); the token's expiry and drift in a
mirrored group are independent of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EVENT_KINDS",
    "WORK_TASKS",
    "Event",
    "added_in_run",
    "asset_extra",
    "run_events",
]

#: The tasks that do the work, in order; each pushes a counts record.
WORK_TASKS = ("fetch_token", "resolve_members", "add_missing_users")

#: ``run_failed``: the run failed for good (after Airflow's retries) for a reason other than the two below;
#: ``users_failed``: some users could not be added (the others were); ``guard_stop``: the guard stopped
#: the run before any write; ``token_expiring``: the Key Vault secret expires within the warning window;
#: ``membership_drift``: a mirrored group has members the Entra group no longer has (left in place).
EVENT_KINDS = ("run_failed", "users_failed", "guard_stop", "token_expiring", "membership_drift")

Records = Mapping[str, Mapping[str, Any] | None]


@dataclass(frozen=True, slots=True)
class Event:
    """One thing worth telling people about a run: ``what`` is a sentence, ``reason`` a one-line cause."""

    kind: str
    what: str
    reason: str | None = None


def run_events(records: Records, *, expiry_warning_days: int) -> list[Event]:
    """The events of a run whose work tasks have all finished (succeeded, failed for good or not run)."""
    events: list[Event] = []
    failure = _failure(records)
    if failure is not None:
        events.append(failure)
    token = records.get("fetch_token") or {}
    days = token.get("token_expires_in_days")
    if isinstance(days, int) and days <= expiry_warning_days:
        events.append(
            Event(
                "token_expiring",
                f"The workspace's token secret expires in {days} day(s)",
                f"expires on {token.get('token_expires_on')}; rotate it in Key Vault before then",
            )
        )
    add = records.get("add_missing_users") or {}
    drift = int(add.get("membership_drift") or 0) - int(add.get("memberships_removed") or 0)
    if drift > 0:
        events.append(
            Event(
                "membership_drift",
                f"{drift} membership(s) of mirrored groups are no longer in Entra ID",
                "they were left in place; see the run summary's membership_drift_names, or turn on "
                "remove_stale_members",
            )
        )
    return events


def _failure(records: Records) -> Event | None:
    # The tasks run one after the other, so the first without a successful record is where the run stopped.
    for task in WORK_TASKS:
        record = records.get(task)
        if record is None:
            return Event(
                "run_failed",
                f"The run failed: {task} left no record",
                "the task was killed or could not start (see its log in Airflow)",
            )
        outcome = record.get("outcome")
        if outcome == "partial":
            return Event(
                "users_failed",
                f"{record.get('failed', '?')} user(s) could not be added; {record.get('added_in_run', '?')} "
                "were added in this run",
                record.get("error"),
            )
        if outcome == "guard_stop":
            return Event(
                "guard_stop",
                f"The guard stopped the run before any write: {record.get('to_add', '?')} user(s) to add",
                record.get("error"),
            )
        if outcome == "failed":
            return Event("run_failed", f"The run failed in {task}", record.get("error"))
    return None


def added_in_run(records: Records) -> int:
    """Users this run added, over all its attempts (0 for a dry run, or when unknown)."""
    add = records.get("add_missing_users") or {}
    if add.get("dry_run"):
        return 0
    return int(add.get("added_in_run") or add.get("added") or 0)


def asset_extra(records: Records, *, workspace: str, run_id: str) -> dict[str, Any]:
    """The ``extra`` of the asset event a run that added someone emits: where, and the run's counts."""
    add = dict(records.get("add_missing_users") or {})
    keys = ("outcome", "target", "members_resolved", "added", "failed", "drift", "to_add", "already_present")
    return {
        "workspace": workspace,
        "run_id": run_id,
        "added_in_run": added_in_run(records),
        **{key: add[key] for key in keys if key in add},
    }
