"""The counts record: a small XCom every task of a workspace DAG pushes in every outcome.

The run summary (``add_missing_users``' return value) and the members record are large and exist only
when a task succeeds. The counts record is a few hundred bytes, is pushed on failure too (before the task
raises), and is what everything that watches many workspaces reads: the overview page, the alerts, the
metrics and the asset events. Pure: building a record touches no Airflow API.

Keys of the ``add_missing_users`` record (``fetch_token`` and ``resolve_members`` push subsets):

- ``outcome``: ``success``, ``dry_run``, ``partial`` (some users failed, the others were added),
  ``guard_stop`` (the guard stopped the run before any write) or ``failed``;
- ``error``: the failure's one-line reason, or ``None``;
- the counts of the run summary (``members_resolved``, ``to_add``, ``added``, ``failed``, ``drift``, …),
  absent when the task failed before it knew them (unknown is not zero);
- ``added_in_run``: users added by every attempt of this run together (an attempt that failed part-way
  and was retried still counts what it added);
- ``throttled``: requests the service answered with 429 (and that were retried) during this attempt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "COUNTS_KEY",
    "COUNTS_VERSION",
    "MAX_ERROR_CHARS",
    "OUTCOMES",
    "CountsRecord",
    "one_line",
]

#: XCom key of the counts record (the members record and the summary stay under ``return_value``).
COUNTS_KEY = "counts"
COUNTS_VERSION = 1
OUTCOMES = ("success", "dry_run", "partial", "guard_stop", "failed")
#: The reason is for a table cell and an e-mail subject line; the task log has the whole message.
MAX_ERROR_CHARS = 300

#: The run summary's counts the ``add_missing_users`` record copies (the name lists stay in the summary).
SUMMARY_COUNTS = (
    "dry_run",
    "target",
    "members_resolved",
    "already_present",
    "to_add",
    "added",
    "existed_on_create",
    "failed",
    "drift",
    "skipped",
    "skipped_total",
    "renamed",
)


def one_line(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """The first line of ``message``, whitespace collapsed, cut to ``limit`` characters."""
    first = " ".join(str(message).strip().splitlines()[0].split()) if str(message).strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


@dataclass
class CountsRecord:
    """The counts record of one task attempt, filled in as the task learns things.

    The task body updates it (:meth:`update`); the task's wrapper turns it into the XCom value with
    :meth:`finish` whether the body returned or raised.
    """

    task: str
    counts: dict[str, Any] = field(default_factory=dict)

    def update(self, **values: Any) -> None:
        self.counts.update(values)

    def update_from_summary(self, summary: Mapping[str, Any]) -> None:
        """Copy the counts of a run summary (or of the partial summary a failure carries)."""
        self.counts.update({key: _copy(summary[key]) for key in SUMMARY_COUNTS if key in summary})
        service_principals = summary.get("service_principals")
        if isinstance(service_principals, Mapping):
            self.counts["service_principals_added"] = int(service_principals.get("added", 0))
            self.counts["service_principals_failed"] = int(service_principals.get("failed", 0))
        groups = summary.get("groups")
        if isinstance(groups, Mapping):
            self.counts["membership_drift"] = int(groups.get("membership_drift", 0))
            self.counts["memberships_removed"] = int(groups.get("memberships_removed", 0))
            self.counts["groups_failed"] = len(groups.get("failed") or {})

    def finish(self, outcome: str, error: str | None = None, *, at: datetime | None = None) -> dict[str, Any]:
        """The JSON-safe XCom value: version, task, outcome, one-line error, then the counts."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        record: dict[str, Any] = {
            "v": COUNTS_VERSION,
            "task": self.task,
            "outcome": outcome,
            "error": one_line(error) if error else None,
        }
        if at is not None:
            record["at"] = at.isoformat()
        record.update(self.counts)
        return record


def outcome_of_result(result: Mapping[str, Any]) -> str:
    """``dry_run`` or ``success`` for what a task returned (only a dry run's summary says ``dry_run``)."""
    return "dry_run" if result.get("dry_run") is True else "success"


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value
