"""The record of one run: counts and names, small enough for XCom and readable in the task log.

Pure like :mod:`entra_provisioning.plan`: it only arranges what the plan and the creates produced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from entra_provisioning.identities import CreateOutcome
from entra_provisioning.plan import AccountPlan, Plan, Resolution

__all__ = [
    "ACCOUNT_FIELDS",
    "DEFAULT_LIST_LIMIT",
    "MAX_REASON_CHARS",
    "CreateOutcome",
    "RunSummary",
    "build_summary",
]

#: Fields a record carries for the account target only: workspace-target records keep their documented keys.
ACCOUNT_FIELDS = (
    "target",
    "to_create",
    "created_in_account",
    "access_direct",
    "access_via_group",
    "created_user_names",
)

#: Most names kept in each list of a summary; counts stay exact whatever the limit.
DEFAULT_LIST_LIMIT = 1000

# Failure reasons often carry a server response body (sometimes a whole HTML error page); the summary
# keeps enough to diagnose and leaves the full text to the task log.
MAX_REASON_CHARS = 300


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _more_marker(hidden: int) -> str:
    return f"… and {hidden} more"


def _capped(names: Sequence[str], limit: int) -> list[str]:
    # The marker is a list element so the XCom alone shows the list is partial; it cannot be mistaken
    # for a userName, which never contains spaces.
    if len(names) <= limit:
        return list(names)
    return [*names[:limit], _more_marker(len(names) - limit)]


def _capped_reasons(failed: Mapping[str, str], limit: int) -> dict[str, str]:
    def short(reason: str) -> str:
        return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"

    names = sorted(failed)
    kept = {name: short(failed[name]) for name in names[:limit]}
    if len(names) > limit:
        kept[_more_marker(len(names) - limit)] = "not listed here; see the task log"
    return kept


@dataclass(frozen=True, slots=True)
class RunSummary:
    """Counts and names describing one run of ``add_missing_users``.

    Counts are always exact; the name lists are capped (see :func:`build_summary`) and end with an
    ``"… and N more"`` marker when cut.
    """

    dry_run: bool
    members_resolved: int
    already_present: int
    to_add: int
    added: int
    existed_on_create: int
    failed: int
    skipped: dict[str, int]
    drift: int
    renamed: int
    empty_groups: list[str]
    to_add_user_names: list[str]
    added_user_names: list[str]
    existed_on_create_user_names: list[str]
    failed_user_names: dict[str, str]
    drift_user_names: list[str]
    renamed_user_names: list[str]
    #: ``workspace`` or ``account``; the fields below are the account target's (and in its records only).
    target: str = "workspace"
    #: Of ``to_add``: members the account lacked, to be created there first.
    to_create: int = 0
    created_in_account: int = 0
    access_direct: int = 0
    access_via_group: int = 0
    created_user_names: list[str] = field(default_factory=list)

    @property
    def is_account(self) -> bool:
        return self.target == "account"

    @property
    def skipped_total(self) -> int:
        """Total directory objects skipped, all reasons together."""
        return sum(self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (str, int, bool, lists and dicts of those) for XCom.

        :return: Every field, plus ``skipped_total``; lists are copies, so mutating the result leaves the
            summary untouched.
        """
        record = {
            "dry_run": self.dry_run,
            "members_resolved": self.members_resolved,
            "already_present": self.already_present,
            "to_add": self.to_add,
            "added": self.added,
            "existed_on_create": self.existed_on_create,
            "failed": self.failed,
            "skipped": dict(self.skipped),
            "skipped_total": self.skipped_total,
            "drift": self.drift,
            "renamed": self.renamed,
            "empty_groups": list(self.empty_groups),
            "to_add_user_names": list(self.to_add_user_names),
            "added_user_names": list(self.added_user_names),
            "existed_on_create_user_names": list(self.existed_on_create_user_names),
            "failed_user_names": dict(self.failed_user_names),
            "drift_user_names": list(self.drift_user_names),
            "renamed_user_names": list(self.renamed_user_names),
        }
        if self.is_account:
            # Workspace-target records keep exactly their documented keys.
            record.update({name: _copy(getattr(self, name)) for name in ACCOUNT_FIELDS})
        return record

    def render_table(self) -> str:
        """Render a fixed-width text table for the task log: one metric per line, then the name lists.

        :return: Multi-line text without a trailing newline.
        """
        mode = "DRY RUN (nothing written)" if self.dry_run else "live"
        metrics: list[tuple[str, int | str]] = [
            ("mode", f"{mode}, account target" if self.is_account else mode),
            ("members resolved", self.members_resolved),
        ]
        if self.is_account:
            metrics += [
                ("already had access", self.already_present),
                ("  directly assigned", self.access_direct),
                ("  through a group", self.access_via_group),
                ("to assign", self.to_add),
                ("  of which to create", self.to_create),
                ("created in the account", self.created_in_account),
                ("assigned to the workspace", self.added),
            ]
        else:
            metrics += [
                ("already present", self.already_present),
                ("to add", self.to_add),
                ("added", self.added),
            ]
        metrics += [
            ("existed on create (409)", self.existed_on_create),
            ("failed", self.failed),
            *((f"skipped: {reason}", count) for reason, count in self.skipped.items()),
            ("skipped (total)", self.skipped_total),
            ("drift (reported only)", self.drift),
            ("renamed (manual cleanup)", self.renamed),
            ("empty groups", len(self.empty_groups)),
        ]
        label_width = max(len(label) for label, _ in metrics)
        value_width = max(len(str(value)) for _, value in metrics if isinstance(value, int))
        title = "Entra ID → Databricks provisioning summary"
        rule = "-" * max(len(title), label_width + 2 + value_width)
        lines = [title, rule]
        # Numbers right-aligned so magnitudes line up; the mode text left-aligned reads better.
        lines += [
            f"{label:<{label_width}}  {value:>{value_width}}"
            if isinstance(value, int)
            else f"{label:<{label_width}}  {value}"
            for label, value in metrics
        ]

        def section(title: str, count: int, entries: list[str]) -> None:
            if entries:
                lines.extend(["", f"{title} ({count}):", *(f"  {entry}" for entry in entries)])

        # In a live run the added list says the same as "to add" once creates succeed.
        if self.dry_run:
            section("would assign" if self.is_account else "would add", self.to_add, self.to_add_user_names)
        if self.is_account:
            section("created in the account", self.created_in_account, self.created_user_names)
        section(
            "assigned to the workspace" if self.is_account else "added", self.added, self.added_user_names
        )
        section("existed on create", self.existed_on_create, self.existed_on_create_user_names)
        if self.failed_user_names:
            width = max(len(name) for name in self.failed_user_names)
            section(
                "failed",
                self.failed,
                [f"{name:<{width}}  {reason}" for name, reason in self.failed_user_names.items()],
            )
        drift_title = (
            "drift: has access to the workspace, in none of the groups"
            if self.is_account
            else "drift: in Databricks, in none of the groups"
        )
        section(drift_title, self.drift, self.drift_user_names)
        section("renamed in Entra: old account left in place", self.renamed, self.renamed_user_names)
        section("empty groups", len(self.empty_groups), self.empty_groups)
        return "\n".join(lines)


def build_summary(
    resolution: Resolution,
    plan: Plan | AccountPlan,
    outcome: CreateOutcome | None,
    *,
    dry_run: bool,
    list_limit: int = DEFAULT_LIST_LIMIT,
) -> RunSummary:
    """Summarise a run from its resolution, its plan and what the creates did.

    :param resolution: The resolved members (for counts of members, skips and empty groups).
    :param plan: The plan the run acted on.
    :param outcome: What the creates did; ``None`` when none were attempted (a dry run, or nothing to
        add).
    :param dry_run: Whether the run was a dry run.
    :param list_limit: Most names kept per list (``failed_user_names`` included); counts stay exact.
    :return: The summary.
    :raises ValueError: If a dry run reports creates, or ``list_limit`` is negative.
    """
    if list_limit < 0:
        raise ValueError(f"list_limit must be >= 0, got {list_limit}")
    outcome = outcome or CreateOutcome()
    if dry_run and (outcome.added or outcome.existed or outcome.failed or outcome.created):
        raise ValueError("A dry run cannot have created users; pass outcome=None for dry runs.")
    # The old account's id is what an administrator needs to find and remove it.
    renamed = [
        f"{entry.old_user_name} → {entry.new_user_name} (old Databricks id {entry.old_user_id})"
        for entry in plan.renamed
    ]
    account: dict[str, Any] = {}
    if isinstance(plan, AccountPlan):
        account = {
            "target": "account",
            "to_create": len(plan.to_create),
            "created_in_account": len(outcome.created),
            "access_direct": len(plan.access_direct),
            "access_via_group": len(plan.access_via_group),
            "created_user_names": _capped(sorted(outcome.created), list_limit),
        }
    return RunSummary(
        **account,
        dry_run=dry_run,
        members_resolved=len(resolution.members),
        already_present=len(plan.already_present),
        to_add=len(plan.to_add),
        added=len(outcome.added),
        existed_on_create=len(outcome.existed),
        failed=len(outcome.failed),
        skipped=resolution.skipped_counts(),
        drift=len(plan.drift),
        renamed=len(plan.renamed),
        # Configured groups are few, and the table counts this list, so it is never capped.
        empty_groups=list(resolution.empty_groups),
        to_add_user_names=_capped([member.user_name for member in plan.to_add], list_limit),
        added_user_names=_capped(sorted(outcome.added), list_limit),
        existed_on_create_user_names=_capped(sorted(outcome.existed), list_limit),
        failed_user_names=_capped_reasons(outcome.failed, list_limit),
        drift_user_names=_capped([user.user_name for user in plan.drift], list_limit),
        renamed_user_names=_capped(renamed, list_limit),
    )
