"""Unit tests of the run summary: exact counts, capped lists, JSON safety and the log table."""

from __future__ import annotations

import json

import pytest

from entra_provisioning.plan import (
    ExistingUser,
    Member,
    Plan,
    Resolution,
    SkippedMember,
    SkipReason,
    build_plan,
)
from entra_provisioning.summary import (
    ACCOUNT_FIELDS,
    MAX_REASON_CHARS,
    CreateOutcome,
    RunSummary,
    build_summary,
)


def resolution_and_plan(n_members: int = 5, n_present: int = 2, n_drift: int = 3) -> tuple[Resolution, Plan]:
    members = tuple(Member(f"obj-{i}", f"u{i:05}@x.com", f"User {i}", ("eng",)) for i in range(n_members))
    skipped = (
        SkippedMember("d1", SkipReason.DISABLED, "Dis", ("eng",), "dis@x.com"),
        SkippedMember("d2", SkipReason.DISABLED, "Dis2", ("eng",), "dis2@x.com"),
        SkippedMember("p1", SkipReason.NOT_A_USER, "", ("eng",), "#microsoft.graph.device"),
    )
    resolution = Resolution(("eng", "empty"), members, skipped, empty_groups=("empty",))
    existing = [ExistingUser(f"e{i}", f"U{i:05}@x.com") for i in range(n_present)]
    existing += [ExistingUser(f"d{i}", f"drift{i:05}@x.com") for i in range(n_drift)]
    existing.append(ExistingUser("r1", "old.name@x.com", f"obj-{n_members - 1}"))
    return resolution, build_plan(resolution, existing)


def test_counts_of_a_live_run() -> None:
    resolution, plan = resolution_and_plan()
    outcome = CreateOutcome(
        added=["u00002@x.com"], existed=["u00003@x.com"], failed={"u00004@x.com": "400 Bad Request"}
    )
    summary = build_summary(resolution, plan, outcome, dry_run=False)
    assert (summary.members_resolved, summary.already_present, summary.to_add) == (5, 2, 3)
    assert (summary.added, summary.existed_on_create, summary.failed) == (1, 1, 1)
    assert summary.skipped == {"disabled": 2, "no_user_name": 0, "not_a_user": 1, "duplicate_user_name": 0}
    assert summary.skipped_total == 3
    assert (summary.drift, summary.renamed) == (3, 1)
    assert summary.dry_run is False
    assert summary.added_user_names == ["u00002@x.com"]
    assert summary.existed_on_create_user_names == ["u00003@x.com"]
    assert summary.failed_user_names == {"u00004@x.com": "400 Bad Request"}
    assert summary.drift_user_names == ["drift00000@x.com", "drift00001@x.com", "drift00002@x.com"]
    assert summary.renamed_user_names == ["old.name@x.com → u00004@x.com (old Databricks id r1)"]
    assert summary.empty_groups == ["empty"]


def test_dry_run_has_no_creates_but_lists_who_would_be_added() -> None:
    resolution, plan = resolution_and_plan()
    summary = build_summary(resolution, plan, None, dry_run=True)
    assert summary.dry_run is True
    assert (summary.added, summary.existed_on_create, summary.failed) == (0, 0, 0)
    assert summary.to_add_user_names == ["u00002@x.com", "u00003@x.com", "u00004@x.com"]
    table = summary.render_table()
    assert "DRY RUN" in table
    assert "would add (3):" in table


def test_dry_run_with_creates_is_rejected() -> None:
    resolution, plan = resolution_and_plan()
    with pytest.raises(ValueError, match="dry run"):
        build_summary(resolution, plan, CreateOutcome(added=["u00002@x.com"]), dry_run=True)


def test_lists_are_capped_but_counts_stay_exact() -> None:
    resolution, plan = resolution_and_plan(n_members=30, n_present=0, n_drift=25)
    names = [m.user_name for m in plan.to_add]
    outcome = CreateOutcome(added=names[:20], failed={name: "boom" for name in names[20:]})
    summary = build_summary(resolution, plan, outcome, dry_run=False, list_limit=8)
    assert (summary.to_add, summary.added, summary.failed, summary.drift) == (30, 20, 10, 25)
    assert summary.added_user_names == [*names[:8], "… and 12 more"]
    assert summary.to_add_user_names[-1] == "… and 22 more"
    assert len(summary.drift_user_names) == 9
    assert summary.drift_user_names[-1] == "… and 17 more"
    assert len(summary.failed_user_names) == 9
    assert list(summary.failed_user_names)[:8] == names[20:28]
    assert "… and 2 more" in summary.failed_user_names


def test_list_exactly_at_the_limit_has_no_marker() -> None:
    resolution, plan = resolution_and_plan(n_members=4, n_present=0, n_drift=4)
    summary = build_summary(resolution, plan, None, dry_run=False, list_limit=4)
    assert len(summary.drift_user_names) == 4
    assert not any("more" in name for name in summary.drift_user_names)


def test_long_failure_reasons_are_shortened() -> None:
    resolution, plan = resolution_and_plan()
    html = "<html>" + "x" * 5000
    summary = build_summary(resolution, plan, CreateOutcome(failed={"u00002@x.com": html}), dry_run=False)
    reason = summary.failed_user_names["u00002@x.com"]
    assert len(reason) == MAX_REASON_CHARS
    assert reason.startswith("<html>")
    assert reason.endswith("…")


def test_negative_list_limit_is_rejected() -> None:
    resolution, plan = resolution_and_plan()
    with pytest.raises(ValueError, match="list_limit"):
        build_summary(resolution, plan, None, dry_run=False, list_limit=-1)


def test_default_cap_keeps_xcom_small_for_large_runs() -> None:
    resolution, plan = resolution_and_plan(n_members=20_000, n_present=0, n_drift=20_000)
    names = [m.user_name for m in plan.to_add]
    summary = build_summary(resolution, plan, CreateOutcome(added=names), dry_run=False)
    assert summary.added == 20_000
    assert len(summary.added_user_names) == 1001
    assert len(json.dumps(summary.to_dict())) < 200_000


def test_to_dict_is_json_safe_and_complete() -> None:
    resolution, plan = resolution_and_plan()
    outcome = CreateOutcome(added=["u00002@x.com"], failed={"u00004@x.com": "400"})
    summary = build_summary(resolution, plan, outcome, dry_run=False)
    data = summary.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["skipped_total"] == 3
    assert data["failed_user_names"] == {"u00004@x.com": "400"}
    field_names = set(RunSummary.__dataclass_fields__) - set(ACCOUNT_FIELDS)
    assert field_names <= set(data)
    assert not set(ACCOUNT_FIELDS) & set(data), "a workspace-target record keeps its documented keys"
    # A copy: callers may edit the dict without changing the summary.
    data["added_user_names"].append("x")
    assert summary.added_user_names == ["u00002@x.com"]


def test_table_has_one_metric_per_line_with_the_numbers() -> None:
    resolution, plan = resolution_and_plan()
    outcome = CreateOutcome(
        added=["u00002@x.com"], existed=["u00003@x.com"], failed={"u00004@x.com": "400 x"}
    )
    table = build_summary(resolution, plan, outcome, dry_run=False).render_table()
    lines = table.splitlines()
    metric_lines = lines[2 : lines.index("")]

    def metric(label: str) -> str:
        matching = [line for line in metric_lines if line.startswith(label)]
        assert len(matching) == 1, label
        return matching[0].split()[-1]

    assert metric("members resolved") == "5"
    assert metric("already present") == "2"
    assert metric("to add") == "3"
    assert metric("added") == "1"
    assert metric("existed on create") == "1"
    assert metric("failed") == "1"
    assert metric("skipped: disabled") == "2"
    assert metric("skipped: not_a_user") == "1"
    assert metric("skipped (total)") == "3"
    assert metric("drift") == "3"
    assert metric("renamed") == "1"
    assert metric("empty groups") == "1"
    assert metric("mode") == "live"
    # Fixed width: every metric value ends in the same column.
    assert len({len(line) for line in metric_lines if not line.startswith("mode")}) == 1
    assert "failed (1):" in lines
    assert any(line.strip().startswith("u00004@x.com") and line.endswith("400 x") for line in lines)
    assert "  drift00002@x.com" in lines
    assert "  old.name@x.com → u00004@x.com (old Databricks id r1)" in lines


def test_table_omits_empty_sections() -> None:
    resolution = Resolution(("g",), (Member("1", "a@x.com", "A", ("g",)),))
    plan = build_plan(resolution, [ExistingUser("e", "a@x.com")])
    table = build_summary(resolution, plan, None, dry_run=False).render_table()
    assert "drift:" not in table
    assert "failed (" not in table
    assert table.splitlines()[0] == "Entra ID → Databricks provisioning summary"
