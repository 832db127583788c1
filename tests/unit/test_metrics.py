"""The run's metrics: which values a run's counts records become, their names, and the backend choice."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from entra_provisioning import metrics
from entra_provisioning.metrics import COUNTER, GAUGE, Metric, metrics_backend, run_metrics, stat_name
from entra_provisioning.plan import SkipReason

REPO = Path(__file__).resolve().parents[2]
SKIPPED = {"disabled": 2, "no_user_name": 2, "not_a_user": 1, "duplicate_user_name": 0}


def records(**add: Any) -> dict[str, dict[str, Any] | None]:
    """A real run's three records (alpha's first run in the sandbox), ``add`` overriding the last one."""
    return {
        "fetch_token": {"outcome": "success", "token_expires_in_days": 29},
        "resolve_members": {
            "outcome": "success",
            "members_resolved": 6,
            "skipped": dict(SKIPPED),
            "throttled": 2,
        },
        "add_missing_users": {
            "outcome": "success",
            "dry_run": False,
            "members_resolved": 6,
            "skipped": dict(SKIPPED),
            "to_add": 4,
            "added": 4,
            "added_in_run": 4,
            "failed": 0,
            "drift": 2,
            "throttled": 1,
            **add,
        },
    }


def as_dict(points: list[Metric]) -> dict[tuple[str, str, tuple[tuple[str, str], ...]], int]:
    result = {(m.kind, m.name, m.tags): m.value for m in points}
    assert len(result) == len(points), "a metric is sent twice in one run"
    return result


def ws(*extra: tuple[str, str], name: str = "alpha") -> tuple[tuple[str, str], ...]:
    return (*extra, ("workspace", name))


def test_a_real_run_sends_its_state_as_gauges_and_what_happened_as_counters() -> None:
    sent = as_dict(run_metrics(records(), workspace="alpha"))
    assert sent == {
        (GAUGE, "members_resolved", ws()): 6,
        (GAUGE, "skipped", ws(("reason", "disabled"))): 2,
        (GAUGE, "skipped", ws(("reason", "duplicate_user_name"))): 0,
        (GAUGE, "skipped", ws(("reason", "no_user_name"))): 2,
        (GAUGE, "skipped", ws(("reason", "not_a_user"))): 1,
        (GAUGE, "users_to_add", ws()): 4,
        (GAUGE, "drift", ws()): 2,
        (GAUGE, "users_added", ws()): 4,
        (GAUGE, "users_failed", ws()): 0,
        (GAUGE, "token_expires_in_days", ws()): 29,
        (COUNTER, "users_added_total", ws()): 4,
        (COUNTER, "users_failed_total", ws()): 0,
        (COUNTER, "throttled_requests_total", ws(("service", "graph"))): 2,
        (COUNTER, "throttled_requests_total", ws(("service", "databricks"))): 1,
    }


def test_a_dry_run_sends_what_it_found_but_nothing_added_or_failed() -> None:
    sent = as_dict(run_metrics(records(dry_run=True, added=0, added_in_run=0), workspace="alpha"))
    names = {name for _, name, _ in sent}
    assert not names & {"users_added", "users_failed", "users_added_total", "users_failed_total"}
    assert sent[(GAUGE, "users_to_add", ws())] == 4  # what a real run would add
    assert sent[(GAUGE, "drift", ws())] == 2


def test_added_counts_every_attempt_of_the_run_and_failed_the_last_one() -> None:
    # The first attempt added 3 and failed on 2; the retry added 1 more and failed on 1.
    sent = as_dict(
        run_metrics(records(outcome="partial", added=1, added_in_run=4, failed=1), workspace="alpha")
    )
    assert sent[(COUNTER, "users_added_total", ws())] == sent[(GAUGE, "users_added", ws())] == 4
    assert sent[(COUNTER, "users_failed_total", ws())] == sent[(GAUGE, "users_failed", ws())] == 1


def test_what_a_failed_run_did_not_learn_is_not_sent_as_zero() -> None:
    # Graph failed for good: no add_missing_users record, resolve_members knows only its throttling.
    failed = {
        "fetch_token": {"outcome": "success", "token_expires_in_days": None},
        "resolve_members": {"outcome": "failed", "throttled": 7},
        "add_missing_users": None,
    }
    assert as_dict(run_metrics(failed, workspace="alpha")) == {
        (COUNTER, "throttled_requests_total", ws(("service", "graph"))): 7
    }
    assert run_metrics({}, workspace="alpha") == []


def test_a_guard_stop_sends_the_plan_without_a_failure_count() -> None:
    stopped = records(outcome="guard_stop", to_add=900, added=None, added_in_run=0, failed=None)
    sent = as_dict(run_metrics(stopped, workspace="alpha"))
    assert sent[(GAUGE, "users_to_add", ws())] == 900
    assert sent[(GAUGE, "users_added", ws())] == 0
    assert (GAUGE, "users_failed", ws()) not in sent and (COUNTER, "users_failed_total", ws()) not in sent


def test_an_expired_token_is_a_negative_gauge_and_booleans_are_not_counts() -> None:
    sent = as_dict(run_metrics(records(failed=True), workspace="alpha"))
    assert (GAUGE, "users_failed", ws()) not in sent
    expired = records()
    expired["fetch_token"] = {"token_expires_in_days": -3}
    assert as_dict(run_metrics(expired, workspace="alpha"))[(GAUGE, "token_expires_in_days", ws())] == -3


def test_members_and_skips_come_from_resolve_members_or_else_from_add_missing_users() -> None:
    only_add = records()
    only_add["resolve_members"] = None
    sent = as_dict(run_metrics(only_add, workspace="alpha"))
    assert sent[(GAUGE, "members_resolved", ws())] == 6
    assert sent[(GAUGE, "skipped", ws(("reason", "disabled")))] == 2


def test_names_with_tags_keep_the_workspace_out_of_the_name() -> None:
    point = Metric(GAUGE, "skipped", 2, ws(("reason", "not_a_user"), name="team-a_1"))
    assert stat_name(point, tagged=True) == (
        "entra_provisioning.skipped",
        {"reason": "not_a_user", "workspace": "team-a_1"},
    )
    assert stat_name(point, tagged=False) == ("entra_provisioning.skipped.not_a_user.team-a_1", None)


def test_a_dot_in_a_tag_value_cannot_add_a_level_to_a_plain_name() -> None:
    point = Metric(COUNTER, "users_added_total", 1, ws(name="a.b c"))
    assert stat_name(point, tagged=False) == ("entra_provisioning.users_added_total.a_b_c", None)


def test_every_name_passes_airflows_own_stat_name_check() -> None:
    """The longest workspace name the config allows (63 characters of a slug), every metric, both forms:
    Airflow's validator (what its StatsD logger runs before sending) accepts each."""
    from airflow.sdk._shared.observability.metrics.validators import stat_name_default_handler

    longest = "w" + "-_9" * 20 + "zz"
    assert re.fullmatch(r"^[a-z0-9][a-z0-9_-]{0,62}$", longest) and len(longest) == 63
    every_reason = {reason.value: 1 for reason in SkipReason}
    points = run_metrics(records(skipped=every_reason), workspace=longest)
    assert {m.name for m in points} == {spec.name for spec in metrics.METRICS}
    for point in points:
        for tagged in (True, False):
            name, _ = stat_name(point, tagged=tagged)
            assert stat_name_default_handler(f"airflow.{name}") == f"airflow.{name}"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, (None, False)),
        ({"statsd_on": True}, ("statsd", False)),
        ({"statsd_on": True, "statsd_influxdb_enabled": True}, ("statsd", True)),
        ({"statsd_datadog_enabled": True}, ("dogstatsd", True)),
        ({"statsd_datadog_enabled": True, "statsd_datadog_metrics_tags": False}, ("dogstatsd", False)),
        # Airflow's order: DogStatsD wins over StatsD, StatsD over OpenTelemetry.
        ({"statsd_datadog_enabled": True, "statsd_on": True}, ("dogstatsd", True)),
        ({"otel_on": True}, ("otel", True)),
        ({"otel_on": True, "statsd_on": True}, ("statsd", False)),
    ],
)
def test_the_backend_and_whether_it_keeps_tags(options: dict[str, bool], expected: tuple) -> None:
    assert metrics_backend(options.get) == expected


def test_the_sdk_picks_the_backend_in_the_order_we_assume(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our order must be the SDK's own, or names would be formed for a backend that is not the one used."""
    from airflow.sdk.observability.metrics import stats_utils

    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
    monkeypatch.setenv("AIRFLOW__METRICS__OTEL_ON", "True")
    assert stats_utils.get_stats_factory().__module__.endswith("statsd_logger")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_DATADOG_ENABLED", "True")
    assert stats_utils.get_stats_factory().__module__.endswith("datadog_logger")


def test_the_readme_lists_every_metric_with_its_type() -> None:
    readme = (REPO / "README.md").read_text()
    section = re.split(r"\n##+ ", readme.split("\n### Metrics\n", 1)[1], maxsplit=1)[0]
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `entra_provisioning\.(\w+)` \| (gauge|counter) \|", section, re.MULTILINE)
    }
    assert rows == {spec.name: spec.kind for spec in metrics.METRICS}


def test_report_sends_nothing_while_metrics_are_off_and_a_failure_never_fails_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from types import SimpleNamespace

    from entra_provisioning import reporting, run_state

    ws: Any = SimpleNamespace(name="alpha", dag_id="entra_provisioning__alpha")
    for option in ("STATSD_ON", "STATSD_DATADOG_ENABLED", "OTEL_ON"):
        monkeypatch.setenv(f"AIRFLOW__METRICS__{option}", "False")
    saved: list[dict[str, Any]] = []
    monkeypatch.setattr(run_state, "save", lambda dag_id, state: saved.append(state))
    caplog.set_level("INFO", logger=reporting.__name__)
    assert reporting.send_metrics(ws, records(), "manual__1") == 0
    assert "Metrics are off in Airflow's [metrics] section: 14 metric(s) not sent" in caplog.text

    def broken(points: Any) -> str:
        raise OSError("no route to host")

    monkeypatch.setattr(metrics, "emit", broken)
    assert reporting.send_metrics(ws, records(), "manual__1") == 0
    assert "Metrics not sent (OSError: no route to host)" in caplog.text
    assert saved == []  # nothing went out, so nothing is recorded as sent


def test_a_retried_report_sends_the_gauges_again_but_never_the_counters_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from entra_provisioning import reporting, run_state

    ws: Any = SimpleNamespace(name="alpha", dag_id="entra_provisioning__alpha")
    variable: dict[str, Any] = {"run_id": "manual__1", "added_in_run": 4}
    sent: list[list[Metric]] = []

    def emit(points: Any) -> str:
        sent.append(list(points))
        return "statsd"

    monkeypatch.setattr(metrics, "emit", emit)
    monkeypatch.setattr(run_state, "load", lambda dag_id: dict(variable))
    monkeypatch.setattr(run_state, "save", lambda dag_id, state: variable.update(state))

    assert reporting.send_metrics(ws, records(), "manual__1") == 14
    assert variable == {"run_id": "manual__1", "added_in_run": 4, "metrics_run_id": "manual__1"}
    # report's retry (a mail outage failed the first attempt after the metrics went out).
    assert reporting.send_metrics(ws, records(), "manual__1", retry=True) == 10
    assert {p.kind for p in sent[1]} == {GAUGE} and len(sent[0]) == 14
    # The retry of another run's report, whose first attempt died before sending: everything goes out.
    assert reporting.send_metrics(ws, records(), "manual__2", retry=True) == 14
    assert variable["metrics_run_id"] == "manual__2"


def test_the_state_remembers_the_latest_run_whose_counters_went_out() -> None:
    from entra_provisioning.run_state import counters_due, record_counters

    state = {"alerted": {"run_id": "r1", "events": ["guard_stop"]}}
    assert counters_due(state, "r1")
    recorded = record_counters(state, "r1")
    assert recorded == {**state, "metrics_run_id": "r1"} and not counters_due(recorded, "r1")
    assert counters_due(recorded, "r2")
