"""The counts record, the events read from it, and the per-run carry of what was added (all pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from entra_provisioning import tasks
from entra_provisioning.plan import GuardExceeded
from entra_provisioning.run_events import added_in_run, asset_extra, run_events
from entra_provisioning.run_record import CountsRecord, one_line
from entra_provisioning.run_state import carry_added

SUMMARY: dict[str, Any] = {
    "dry_run": False,
    "members_resolved": 6,
    "already_present": 2,
    "to_add": 4,
    "added": 3,
    "existed_on_create": 0,
    "failed": 1,
    "skipped": {"disabled": 2},
    "skipped_total": 2,
    "drift": 2,
    "renamed": 0,
    "added_user_names": ["a@x", "b@x", "c@x"] * 400,
    "groups": {"membership_drift": 3, "memberships_removed": 1, "failed": {"G": "refused"}},
}


def ok(task: str, **counts: Any) -> dict[str, Any]:
    return {"v": 1, "task": task, "outcome": "success", "error": None, **counts}


def test_a_record_copies_the_counts_but_not_the_name_lists() -> None:
    counts = CountsRecord("add_missing_users")
    counts.update_from_summary(SUMMARY)
    record = counts.finish("partial", "1 user(s) could not be added\nsecond line")
    assert record["outcome"] == "partial" and record["error"] == "1 user(s) could not be added"
    assert (record["added"], record["failed"], record["drift"], record["membership_drift"]) == (3, 1, 2, 3)
    assert record["groups_failed"] == 1 and "added_user_names" not in record
    assert len(json.dumps(record)) < 600


def test_an_unknown_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match="outcome must be one of"):
        CountsRecord("fetch_token").finish("exploded")


def test_one_line_takes_the_first_line_and_caps_it() -> None:
    assert one_line("  a   b \n c") == "a b"
    assert len(one_line("x" * 1000)) == 300 and one_line("x" * 1000).endswith("…")
    assert one_line("") == ""


def test_recorded_pushes_a_record_on_success_and_before_a_failure_propagates() -> None:
    pushed: list[dict[str, Any]] = []
    assert tasks.recorded("add_missing_users", lambda counts: dict(SUMMARY), pushed.append) == SUMMARY
    assert pushed[-1]["outcome"] == "success" and pushed[-1]["added"] == 3

    def partial(counts: CountsRecord) -> dict[str, Any]:
        raise tasks.UsersNotAddedError("1 user(s) could not be added", summary=SUMMARY)

    with pytest.raises(tasks.UsersNotAddedError):
        tasks.recorded("add_missing_users", partial, pushed.append)
    assert pushed[-1]["outcome"] == "partial" and pushed[-1]["added"] == 3

    def guard(counts: CountsRecord) -> dict[str, Any]:
        counts.update(to_add=9, members_resolved=12)
        raise tasks.task_errors(lambda: (_ for _ in ()).throw(GuardExceeded(9, 1, 3)))()

    with pytest.raises(Exception, match="Refusing to add 9 new users"):
        tasks.recorded("add_missing_users", guard, pushed.append)
    assert pushed[-1]["outcome"] == "guard_stop" and pushed[-1]["to_add"] == 9


def test_a_record_that_cannot_be_stored_does_not_hide_the_outcome() -> None:
    def broken(_: dict[str, Any]) -> None:
        raise RuntimeError("XCom backend down")

    assert tasks.recorded("fetch_token", lambda counts: {"ok": True}, broken) == {"ok": True}


def test_added_in_run_carries_over_retries_of_the_same_run_only() -> None:
    total, state = carry_added({}, "run-1", 3)
    assert total == 3
    total, state = carry_added(state, "run-1", 2)  # the retry added the rest
    assert total == 5
    total, state = carry_added({**state, "token_alerted_on": "2026-11-30"}, "run-2", 0)
    assert total == 0 and state["token_alerted_on"] == "2026-11-30"


def test_events_of_a_clean_run_are_none() -> None:
    records = {
        "fetch_token": ok("fetch_token", token_expires_in_days=90),
        "resolve_members": ok("resolve_members"),
        "add_missing_users": ok("add_missing_users", added=2, added_in_run=2),
    }
    assert run_events(records, expiry_warning_days=14) == []
    assert added_in_run(records) == 2


def test_each_failure_is_one_event_of_its_kind() -> None:
    token = ok("fetch_token")
    members = ok("resolve_members")
    partial = {
        **ok("add_missing_users"),
        "outcome": "partial",
        "failed": 2,
        "added_in_run": 5,
        "error": "2 …",
    }
    guard = {**ok("add_missing_users"), "outcome": "guard_stop", "to_add": 900, "error": "Refusing …"}
    broken = {**ok("resolve_members"), "outcome": "failed", "error": "Entra group 'X' not found"}
    cases = [
        ({"fetch_token": token, "resolve_members": members, "add_missing_users": partial}, "users_failed"),
        ({"fetch_token": token, "resolve_members": members, "add_missing_users": guard}, "guard_stop"),
        ({"fetch_token": token, "resolve_members": broken, "add_missing_users": None}, "run_failed"),
        ({"fetch_token": token, "resolve_members": members, "add_missing_users": None}, "run_failed"),
    ]
    for records, kind in cases:
        (event,) = run_events(records, expiry_warning_days=14)
        assert event.kind == kind
    (event,) = run_events(cases[2][0], expiry_warning_days=14)
    assert event.reason == "Entra group 'X' not found" and "resolve_members" in event.what
    assert added_in_run(cases[0][0]) == 5  # the partially failed run still added five


def test_token_expiry_and_group_drift_are_events_beside_the_outcome() -> None:
    records = {
        "fetch_token": ok(
            "fetch_token", token_expires_in_days=3, token_expires_on="2026-12-03T00:00:00+00:00"
        ),
        "resolve_members": ok("resolve_members"),
        "add_missing_users": ok("add_missing_users", membership_drift=2, memberships_removed=0),
    }
    kinds = [event.kind for event in run_events(records, expiry_warning_days=14)]
    assert kinds == ["token_expiring", "membership_drift"]
    records["add_missing_users"]["memberships_removed"] = 2  # removed: nothing left to report
    assert [e.kind for e in run_events(records, expiry_warning_days=2)] == []


def test_a_dry_run_adds_nobody_and_the_asset_extra_carries_the_counts() -> None:
    dry = {"add_missing_users": {**ok("add_missing_users"), "dry_run": True, "to_add": 4, "added": 0}}
    assert added_in_run(dry) == 0
    real = {"add_missing_users": {**ok("add_missing_users"), "added": 4, "added_in_run": 4, "to_add": 4}}
    extra = asset_extra(real, workspace="adb-1.2.azuredatabricks.net", run_id="manual__1")
    assert extra == {
        "workspace": "adb-1.2.azuredatabricks.net",
        "run_id": "manual__1",
        "added_in_run": 4,
        "outcome": "success",
        "added": 4,
        "to_add": 4,
    }


class _TaskInstance:
    """Stands in for the running task instance: hands out the counts records of this run."""

    def __init__(self, records: dict[str, dict[str, Any] | None]) -> None:
        self.records = records

    def xcom_pull(self, task_ids: str, key: str) -> Any:
        assert key == "counts"
        return self.records.get(task_ids)


def test_report_attaches_the_asset_event_to_the_alias_for_a_partially_failed_run() -> None:
    """A run that added five and then failed for two users still announces the five (Airflow's own outlet
    accessor records the event; the end-to-end tests show it reaches the asset)."""
    from airflow.sdk.execution_time.context import OutletEventAccessors

    from entra_provisioning import reporting
    from entra_provisioning.config import parse_config
    from tests.unit.test_factory import generated_config

    (ws,) = parse_config(generated_config(1)).workspaces
    partial = {**ok("add_missing_users"), "outcome": "partial", "added": 0, "added_in_run": 5, "failed": 2}
    records = {"fetch_token": ok("fetch_token"), "resolve_members": ok("resolve_members")}
    outlets = OutletEventAccessors()
    context = {
        "ti": _TaskInstance({**records, "add_missing_users": partial}),
        "run_id": "manual__1",
        "outlet_events": outlets,
    }
    result = reporting.report(ws, context)
    # "metrics": 0, as metrics are off in the unit tests' Airflow configuration.
    # "xcoms_deleted"/"runs_pruned": 0, as there is no state Variable to remember runs in outside a task.
    assert result == {
        "events": ["users_failed"],
        "added_in_run": 5,
        "asset_event": True,
        "metrics": 0,
        "xcoms_deleted": 0,
        "runs_pruned": 0,
    }
    (event,) = outlets[reporting.users_added_alias(ws)].asset_alias_events
    assert event.dest_asset_key.name == "entra_provisioning__ws-0000__users"
    assert event.extra["added_in_run"] == 5 and event.extra["outcome"] == "partial"

    nobody = {**ok("add_missing_users"), "added": 0, "added_in_run": 0}
    outlets = OutletEventAccessors()
    context = {
        "ti": _TaskInstance({**records, "add_missing_users": nobody}),
        "run_id": "m2",
        "outlet_events": outlets,
    }
    assert reporting.report(ws, context)["asset_event"] is False
    assert outlets[reporting.users_added_alias(ws)].asset_alias_events == []
