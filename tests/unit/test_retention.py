"""XCom retention: which runs' return_value XComs report deletes, and how it deletes them."""

from __future__ import annotations

import sys
import types
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from entra_provisioning import reporting, retention, run_state
from entra_provisioning.config import Settings

DAY = 86_400
NOW = 1_800_000_000


def runs(*ages_in_days: float) -> list[tuple[str, int]]:
    """Runs named r0, r1, … started that many days before NOW."""
    return [(f"r{i}", int(NOW - age * DAY)) for i, age in enumerate(ages_in_days)]


def test_runs_older_than_the_age_are_due_oldest_first() -> None:
    history = runs(40, 31, 29, 2, 1, 0)
    assert retention.expired(history, NOW, 30) == ["r0", "r1"]


def test_the_latest_three_runs_are_kept_whatever_their_age() -> None:
    history = runs(90, 80, 70, 60)
    assert retention.expired(history, NOW, 30) == ["r0"]
    assert retention.expired(history[:3], NOW, 30) == []


def test_order_of_the_list_does_not_decide_which_are_latest() -> None:
    history = list(reversed(runs(90, 80, 70, 60, 50)))
    assert retention.expired(history, NOW, 30) == ["r0", "r1"]


@pytest.mark.parametrize("days", [0, None])
def test_zero_or_null_turns_retention_off(days: int | None) -> None:
    assert not retention.enabled(days)
    assert retention.expired(runs(400, 300, 200, 100), NOW, days) == []


def test_one_report_deletes_at_most_the_limit_oldest_first() -> None:
    history = runs(*[100 - i for i in range(10)])
    assert retention.expired(history, NOW, 1, limit=4) == ["r0", "r1", "r2", "r3"]


def test_a_run_exactly_at_the_age_is_kept() -> None:
    assert retention.expired(runs(30, 0, 0, 0), NOW, 30) == []


def test_remember_adds_a_run_once_and_keeps_the_list_bounded() -> None:
    first = retention.remember([], "a", 10)
    assert first == [["a", 10]]
    again = retention.remember(retention.runs_of(first), "a", 99)  # a retried report
    assert again == [["a", 10]]
    many = [(f"r{i}", i) for i in range(retention.MAX_TRACKED_RUNS)]
    bounded = retention.remember(many, "new", retention.MAX_TRACKED_RUNS)
    assert len(bounded) == retention.MAX_TRACKED_RUNS
    assert bounded[0] == ["r1", 1] and bounded[-1] == ["new", retention.MAX_TRACKED_RUNS]


def test_forget_removes_only_the_runs_done() -> None:
    assert retention.forget(runs(3, 2, 1), ["r1"]) == [["r0", NOW - 3 * DAY], ["r2", NOW - DAY]]


def test_malformed_entries_in_the_variable_are_dropped() -> None:
    value = [["ok", 5], ["bool", True], ["short"], [1, 2], "text", ["float", 7.9]]
    assert retention.runs_of(value) == [("ok", 5), ("float", 7)]
    assert retention.runs_of({"not": "a list"}) == []


def test_the_default_is_thirty_days() -> None:
    assert Settings().xcom_retention_days == 30


class FakeXCom:
    """The SDK's XCom class as report uses it: values by (dag, run, task, key)."""

    store: ClassVar[dict[tuple[str, str, str, str], Any]] = {}
    failing_run: ClassVar[str | None] = None

    @classmethod
    def get_all(cls, *, key: str, dag_id: str, task_id: str, run_id: str) -> list[Any] | None:
        value = cls.store.get((dag_id, run_id, task_id, key))
        return None if value is None else [value]

    @classmethod
    def delete(cls, key: str, task_id: str, dag_id: str, run_id: str) -> None:
        if run_id == cls.failing_run:
            raise RuntimeError("api-server said 500")
        cls.store.pop((dag_id, run_id, task_id, key), None)


@pytest.fixture
def fake_airflow(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    module = types.ModuleType("airflow.sdk.execution_time.xcom")
    module.XCom = FakeXCom  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "airflow.sdk.execution_time.xcom", module)
    FakeXCom.store = {}
    FakeXCom.failing_run = None
    variable: dict[str, Any] = {"metrics_run_id": "keep-me"}
    monkeypatch.setattr(run_state, "load", lambda dag_id: dict(variable))
    monkeypatch.setattr(run_state, "save", lambda dag_id, state: variable.update(state))
    monkeypatch.setattr(reporting.time, "time", lambda: NOW)
    return variable


def _ws() -> Any:
    return types.SimpleNamespace(dag_id="entra_provisioning__alpha")


def _seed(run_ids: list[str]) -> None:
    for run_id in run_ids:
        for task in retention.PURGED_TASKS:
            FakeXCom.store[("entra_provisioning__alpha", run_id, task, "return_value")] = {"run": run_id}
            FakeXCom.store[("entra_provisioning__alpha", run_id, task, "counts")] = {"v": 1}


def test_report_deletes_old_return_values_and_keeps_counts(fake_airflow: dict[str, Any]) -> None:
    _seed(["old1", "old2", "new1", "new2", "now"])
    # old2 failed before add_missing_users stored anything: nothing to delete there, and no error.
    del FakeXCom.store[("entra_provisioning__alpha", "old2", "add_missing_users", "return_value")]
    fake_airflow["runs"] = [["old1", NOW - 40 * DAY], ["old2", NOW - 35 * DAY], ["new1", NOW - 2 * DAY]]
    fake_airflow["runs"].append(["new2", NOW - DAY])
    started = datetime.fromtimestamp(NOW, UTC)

    result = reporting.prune_xcoms(_ws(), "now", started, 30)

    assert result == {"xcoms_deleted": 7, "runs_pruned": 2}
    left = {(run, task, key) for (_, run, task, key) in FakeXCom.store}
    assert not {run for run, _, key in left if key == "return_value"} & {"old1", "old2"}
    assert {(run, key) for run, _, key in left if run.startswith("old")} == {
        ("old1", "counts"),
        ("old2", "counts"),
    }
    assert all(
        (run, task, "return_value") in left
        for run in ("new1", "new2", "now")
        for task in retention.PURGED_TASKS
    )
    assert fake_airflow["runs"] == [["new1", NOW - 2 * DAY], ["new2", NOW - DAY], ["now", NOW]]
    assert fake_airflow["metrics_run_id"] == "keep-me"  # the rest of the state Variable is untouched


def test_a_run_whose_xcoms_cannot_be_deleted_is_kept_for_the_next_report(
    fake_airflow: dict[str, Any],
) -> None:
    _seed(["old1", "old2"])
    FakeXCom.failing_run = "old1"
    fake_airflow["runs"] = [
        ["old1", NOW - 50 * DAY],
        ["old2", NOW - 40 * DAY],
        ["a", NOW - 3],
        ["b", NOW - 2],
    ]

    result = reporting.prune_xcoms(_ws(), "now", datetime.fromtimestamp(NOW, UTC), 30)

    assert result == {"xcoms_deleted": 4, "runs_pruned": 1}
    assert [run for run, _ in fake_airflow["runs"]] == ["old1", "a", "b", "now"]


def test_with_retention_off_report_deletes_nothing_but_remembers_the_run(
    fake_airflow: dict[str, Any],
) -> None:
    _seed(["old1"])
    fake_airflow["runs"] = [["old1", NOW - 400 * DAY], ["a", NOW - 3], ["b", NOW - 2], ["c", NOW - 1]]

    assert reporting.prune_xcoms(_ws(), "now", datetime.fromtimestamp(NOW, UTC), 0) == {
        "xcoms_deleted": 0,
        "runs_pruned": 0,
    }
    assert ("entra_provisioning__alpha", "old1", "resolve_members", "return_value") in FakeXCom.store
    assert fake_airflow["runs"][-1] == ["now", NOW]


def test_a_broken_state_variable_never_fails_report(
    monkeypatch: pytest.MonkeyPatch, fake_airflow: dict[str, Any]
) -> None:
    def broken(dag_id: str, state: dict[str, Any]) -> None:
        raise RuntimeError("api-server down")

    monkeypatch.setattr(run_state, "save", broken)
    assert reporting.prune_xcoms(_ws(), "now", datetime.fromtimestamp(NOW, UTC), 30) == {
        "xcoms_deleted": 0,
        "runs_pruned": 0,
    }
