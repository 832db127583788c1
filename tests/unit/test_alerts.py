"""Alerts without a mail server: the message of each event, the once-per-run and once-a-day decisions, and
the delivery loop (which event is sent, recorded, retried) with stand-in notifiers."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest

from entra_provisioning import alerts, notifiers, run_state
from entra_provisioning.config import NotifyConfig, WorkspaceConfig
from entra_provisioning.run_events import EVENT_KINDS, Event, run_events

RUN_ID = "manual__2026-03-01T10:00:00+00:00"
DAG_ID = "entra_provisioning__analytics"
LINK = alerts.run_url("https://airflow.example.com/", DAG_ID, RUN_ID)
TODAY = "2026-03-01"
PAT = "dapi0123456789abcdef0123456789abcdef"
JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2dyYXBoIn0.c2lnbmF0dXJl"


def message(event: Event) -> alerts.AlertMessage:
    return alerts.build_message(
        event,
        workspace="analytics",
        host="adb-6234138917436195.15.azuredatabricks.net",
        dag_id=DAG_ID,
        run_id=RUN_ID,
        link=LINK,
    )


# ------------------------------------------------------------------------------------------ messages


def test_the_run_link_is_airflow_3s_run_page_with_the_run_id_quoted() -> None:
    assert LINK == (
        "https://airflow.example.com/dags/entra_provisioning__analytics/runs/"
        "manual__2026-03-01T10%3A00%3A00%2B00%3A00"
    )
    # Unset [api] base_url: Airflow's own links fall back to localhost:8080 as well.
    assert alerts.run_url(None, "d", "r") == "http://localhost:8080/dags/d/runs/r"
    assert alerts.run_url("https://h/airflow", "d", "a/b") == "https://h/airflow/dags/d/runs/a%2Fb"


def records_for(kind: str) -> dict[str, Any]:
    """The counts records of a run that produces ``kind`` (and nothing else)."""
    ok = {"outcome": "success", "error": None}
    add = {**ok, "added": 0, "failed": 0}
    token = {**ok, "token_expires_in_days": 90}
    if kind == "run_failed":
        return {"fetch_token": {"outcome": "failed", "error": "Key Vault: secret x does not exist"}}
    if kind == "users_failed":
        add = {"outcome": "partial", "error": "2 user(s) could not be added", "failed": 2, "added_in_run": 3}
    if kind == "guard_stop":
        add = {"outcome": "guard_stop", "error": "Refusing to add 9 new users", "to_add": 9}
    if kind == "token_expiring":
        token = {**ok, "token_expires_in_days": 3, "token_expires_on": "2026-03-04T00:00:00+00:00"}
    if kind == "membership_drift":
        add = {**add, "membership_drift": 2, "memberships_removed": 0}
    return {"fetch_token": token, "resolve_members": ok, "add_missing_users": add}


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_each_event_names_workspace_what_reason_and_link(kind: str) -> None:
    (event,) = run_events(records_for(kind), expiry_warning_days=14)
    assert event.kind == kind
    msg = message(event)
    assert msg.kind == kind
    assert msg.subject == f"[Entra provisioning] analytics: {alerts.TITLES[kind]}"
    assert "\n" not in msg.subject and len(msg.subject) <= 80
    for part in (msg.text, msg.html):
        assert "analytics" in part and "adb-6234138917436195.15.azuredatabricks.net" in part
        assert LINK in part
    assert f"What happened: {event.what}" in msg.text
    assert event.reason and f"Reason: {event.reason}" in msg.text
    assert f'<a href="{LINK}">' in msg.html


def test_a_missing_reason_says_where_to_look() -> None:
    msg = message(Event("run_failed", "The run failed: fetch_token left no record", None))
    assert "Reason: not recorded (see the task logs of the run)" in msg.text


def test_text_is_escaped_for_html_and_jinja_stays_literal() -> None:
    event = Event("run_failed", "The run failed in resolve_members", "group '<b>{{ 7 * 7 }}</b>' & {% x %}")
    msg = message(event)
    assert "&lt;b&gt;{{ 7 * 7 }}&lt;/b&gt;" in msg.html and "&amp; {% x %}" in msg.html
    assert "<b>{{" not in msg.html
    assert "group '<b>{{ 7 * 7 }}</b>' & {% x %}" in msg.text
    assert "49" not in msg.text + msg.html


def test_a_multi_line_reason_stays_on_one_line() -> None:
    msg = message(Event("run_failed", "The run failed in add_missing_users", "first\nsecond\r\nthird"))
    assert "Reason: first second third\n" in msg.text


@pytest.mark.parametrize(
    "secret",
    [PAT, "dapi-alpha-admin-0001", JWT, "dose0123456789abcdef"],
)
def test_anything_shaped_like_a_token_is_blanked(secret: str) -> None:
    event = Event("run_failed", f"The run failed with {secret}", f"answered 401 for Bearer {secret} at host")
    msg = message(event)
    for part in (msg.subject, msg.text, msg.html):
        assert secret not in part
    assert alerts.REDACTED in msg.text
    assert "at host" in msg.text  # only the token goes


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "Refusing to add 5 new users: max_new_users_per_run is 1 (dave.diaz@contoso.com, bearer of news)"
    assert alerts.redact(text) == text.replace("bearer of", f"bearer {alerts.REDACTED}")
    assert alerts.redact("user dapper@contoso.com and update") == "user dapper@contoso.com and update"


# ------------------------------------------------------------------------------------------ dedupe


def test_alerts_due_within_one_run() -> None:
    kinds = ["guard_stop", "membership_drift"]
    assert run_state.alerts_due({}, RUN_ID, kinds, TODAY) == (kinds, [])
    state = run_state.record_alert({"run_id": RUN_ID, "added_in_run": 0}, RUN_ID, "guard_stop", TODAY)
    assert state["alerted"] == {"run_id": RUN_ID, "events": ["guard_stop"]}
    assert state["added_in_run"] == 0 and "token_alerted_on" not in state  # other keys are kept
    assert run_state.alerts_due(state, RUN_ID, kinds, TODAY) == (["membership_drift"], ["guard_stop"])
    # Recording the same event twice keeps one entry.
    assert run_state.record_alert(state, RUN_ID, "guard_stop", TODAY)["alerted"]["events"] == ["guard_stop"]


def test_a_new_run_alerts_again_and_forgets_the_old_runs_list() -> None:
    state = run_state.record_alert({}, RUN_ID, "guard_stop", TODAY)
    assert run_state.alerts_due(state, "scheduled__later", ["guard_stop"], TODAY) == (["guard_stop"], [])
    later = run_state.record_alert(state, "scheduled__later", "run_failed", TODAY)
    assert later["alerted"] == {"run_id": "scheduled__later", "events": ["run_failed"]}


def test_the_token_warning_goes_out_once_a_day_whatever_the_run() -> None:
    state = run_state.record_alert({}, RUN_ID, "token_expiring", TODAY)
    assert state["token_alerted_on"] == TODAY
    assert run_state.alerts_due(state, "scheduled__2", ["token_expiring", "run_failed"], TODAY) == (
        ["run_failed"],
        ["token_expiring"],
    )
    assert run_state.alerts_due(state, "scheduled__3", ["token_expiring"], "2026-03-02") == (
        ["token_expiring"],
        [],
    )


def test_a_damaged_state_means_nothing_was_sent() -> None:
    for state in ({"alerted": "garbage"}, {"alerted": {"run_id": RUN_ID}}, {"alerted": None}):
        assert run_state.alerts_due(state, RUN_ID, ["guard_stop"], TODAY) == (["guard_stop"], [])
        assert run_state.record_alert(state, RUN_ID, "guard_stop", TODAY)["alerted"]["events"] == [
            "guard_stop"
        ]


# ------------------------------------------------------------------------------------------ delivery


class FakeNotifier:
    def __init__(self, outbox: list[tuple[str, str]], message: alerts.AlertMessage, fail: set[str]) -> None:
        self.outbox, self.message, self.fail = outbox, message, fail

    def notify(self, context: Any) -> None:
        if self.message.kind in self.fail:
            raise ConnectionRefusedError(111, "Connection refused")
        self.outbox.append((self.message.kind, self.message.subject))


class Harness:
    """deliver() with an in-memory state Variable and a stand-in e-mail channel."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.state: dict[str, Any] = {"run_id": RUN_ID, "added_in_run": 4}
        self.saves: list[dict[str, Any]] = []
        self.outbox: list[tuple[str, str]] = []
        self.fail = fail or set()
        self.save_fails = False

    def save(self, state: dict[str, Any]) -> None:
        if self.save_fails:
            raise OSError("api-server unreachable")
        self.state = state
        self.saves.append(state)

    def deliver(
        self, kinds: list[str], notify: NotifyConfig | None = None, run_id: str = RUN_ID, today: str = TODAY
    ) -> notifiers.Delivery:
        def email(cfg: NotifyConfig, msg: alerts.AlertMessage) -> FakeNotifier | None:
            return FakeNotifier(self.outbox, msg, self.fail) if cfg.email else None

        return notifiers.deliver(
            [Event(kind, f"{kind} happened", "because") for kind in kinds],
            notify=notify or NotifyConfig(email=("ops@contoso.com",)),
            message_for=message,
            run_id=run_id,
            today=today,
            context={},
            load_state=lambda: dict(self.state),
            save_state=self.save,
            channels={"email": email},
        )


def test_each_event_is_sent_once_and_recorded_right_after() -> None:
    box = Harness()
    delivery = box.deliver(["guard_stop", "token_expiring"])
    assert delivery.sent == ["guard_stop", "token_expiring"] and not delivery.failed
    assert [kind for kind, _ in box.outbox] == ["guard_stop", "token_expiring"]
    # One save per message, each after its send: the first save holds only the first event.
    assert [s["alerted"]["events"] for s in box.saves] == [["guard_stop"], ["guard_stop", "token_expiring"]]
    assert box.state["added_in_run"] == 4 and box.state["token_alerted_on"] == TODAY

    again = box.deliver(["guard_stop", "token_expiring"])  # report retried, or run again
    assert again.sent == [] and again.already_sent == ["guard_stop", "token_expiring"]
    assert len(box.outbox) == 2


def test_a_failed_send_loses_no_other_event_and_the_retry_sends_only_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    box = Harness(fail={"run_failed"})
    with caplog.at_level(logging.ERROR, logger="entra_provisioning.notifiers"):
        delivery = box.deliver(["run_failed", "token_expiring"])
    assert delivery.sent == ["token_expiring"]
    assert list(delivery.failed) == ["run_failed"]
    assert "ConnectionRefusedError" in delivery.failed["run_failed"]
    assert "Could not send alert run_failed" in caplog.text
    assert box.state["alerted"]["events"] == ["token_expiring"]

    box.fail.clear()  # the mail server is back: the retry of report
    retry = box.deliver(["run_failed", "token_expiring"])
    assert retry.sent == ["run_failed"] and retry.already_sent == ["token_expiring"]
    assert [kind for kind, _ in box.outbox] == ["token_expiring", "run_failed"]


def test_only_the_configured_events_are_sent() -> None:
    box = Harness()
    notify = NotifyConfig(email=("ops@contoso.com",), events=("run_failed", "guard_stop"))
    delivery = box.deliver(["guard_stop", "membership_drift"], notify=notify)
    assert delivery.sent == ["guard_stop"] and delivery.not_wanted == ["membership_drift"]
    assert [kind for kind, _ in box.outbox] == ["guard_stop"]


def test_no_event_no_state_read_no_message() -> None:
    box = Harness()
    box.state = {"poison": True}
    delivery = box.deliver([])
    assert delivery.as_dict() == {
        "alerts_sent": [],
        "alerts_already_sent": [],
        "alerts_not_wanted": [],
        "alerts_failed": [],
    }
    assert box.outbox == [] and box.saves == []


def test_a_state_that_cannot_be_saved_is_logged_and_the_rest_still_goes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    box = Harness()
    box.save_fails = True
    with caplog.at_level(logging.ERROR, logger="entra_provisioning.notifiers"):
        delivery = box.deliver(["guard_stop", "membership_drift"])
    assert delivery.sent == ["guard_stop", "membership_drift"] and not delivery.failed
    assert "was sent but could not be recorded" in caplog.text


def test_a_channel_without_recipients_sends_and_records_nothing() -> None:
    box = Harness()
    delivery = box.deliver(["guard_stop"], notify=NotifyConfig(email=()))
    assert delivery.sent == [] and box.outbox == [] and box.saves == []


# ---------------------------------------------------------------------------- the report's decision


class FakeTI:
    def __init__(self, try_number: int, max_tries: int) -> None:
        self.try_number, self.max_tries = try_number, max_tries


def workspace(**notify: Any) -> WorkspaceConfig:
    return WorkspaceConfig(
        name="analytics",
        databricks_instance="https://adb-6234138917436195.15.azuredatabricks.net",
        entra_groups=("g",),
        pat_secret_url="https://kv.vault.azure.net/secrets/p",
        schedule=None,
        notify=NotifyConfig(**{"email": ("ops@contoso.com",), **notify}),
    )


@pytest.fixture
def failing_channel(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """send_alerts with the state Variable in memory and an e-mail channel that always fails."""
    state: dict[str, Any] = {}
    monkeypatch.setattr(run_state, "load", lambda dag_id: dict(state))
    monkeypatch.setattr(run_state, "save", lambda dag_id, new: state.update(new))

    class Down:
        def notify(self, context: Any) -> None:
            raise TimeoutError("timed out")

    monkeypatch.setattr(notifiers, "CHANNELS", {"email": lambda cfg, msg: Down()})
    return state


def test_report_fails_for_a_retry_while_one_remains(failing_channel: dict[str, Any]) -> None:
    events = [Event("guard_stop", "stopped", "Refusing to add 9 new users")]
    context = {"run_id": RUN_ID, "ti": FakeTI(try_number=1, max_tries=1)}
    with pytest.raises(notifiers.AlertsNotSentError) as info:
        notifiers.send_alerts(workspace(), events, context)
    assert str(info.value) == (
        "1 alert(s) for workspace analytics could not be sent (guard_stop): TimeoutError: timed out. "
        "The retry of report sends only these."
    )
    assert "alerted" not in failing_channel  # nothing recorded: the retry sends it


def test_the_last_attempt_gives_up_without_failing(
    failing_channel: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    events = [Event("guard_stop", "stopped", "Refusing to add 9 new users")]
    context = {"run_id": RUN_ID, "ti": FakeTI(try_number=2, max_tries=1)}
    with caplog.at_level(logging.ERROR, logger="entra_provisioning.notifiers"):
        delivery = notifiers.send_alerts(workspace(), events, context)
    assert list(delivery.failed) == ["guard_stop"]
    assert "Giving up on 1 alert(s) for workspace analytics (guard_stop)" in caplog.text


def test_a_workspace_without_notify_sends_nothing() -> None:
    ws = replace(workspace(), notify=None)
    delivery = notifiers.send_alerts(ws, [Event("guard_stop", "x", "y")], {"run_id": RUN_ID})
    assert delivery.sent == [] and delivery.failed == {}


def test_the_dags_docs_say_who_is_alerted_without_listing_addresses() -> None:
    from entra_provisioning.factory import doc_md

    text = doc_md(workspace(email=("a@contoso.com", "b@contoso.com"), smtp_conn_id="smtp_corp"))
    assert "| Alerts | e-mail to 2 recipient(s) through `smtp_corp`: `run_failed`, `users_failed`" in text
    assert "a@contoso.com" not in text
    assert "| Alerts | none (no `notify`) |" in doc_md(replace(workspace(), notify=None))


def test_report_sends_the_runs_events_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """The report task with ``notify``: the asset event as before, then the alerts, listed in its result."""
    from airflow.sdk.execution_time.context import OutletEventAccessors

    from entra_provisioning import reporting

    state: dict[str, Any] = {}
    monkeypatch.setattr(run_state, "load", lambda dag_id: dict(state))
    monkeypatch.setattr(run_state, "save", lambda dag_id, new: state.update(new))
    outbox: list[tuple[str, str]] = []
    monkeypatch.setattr(notifiers, "CHANNELS", {"email": lambda cfg, msg: FakeNotifier(outbox, msg, set())})
    records = records_for("users_failed")

    class TI(FakeTI):
        def xcom_pull(self, task_ids: str, key: str) -> Any:
            return records.get(task_ids)

    context = {"ti": TI(1, 1), "run_id": RUN_ID, "outlet_events": OutletEventAccessors()}
    result = reporting.report(workspace(events=("users_failed", "token_expiring")), context)
    assert result["events"] == ["users_failed"] and result["asset_event"] is True
    assert result["alerts_sent"] == ["users_failed"] and result["alerts_failed"] == []
    assert outbox == [("users_failed", "[Entra provisioning] analytics: some users could not be added")]
    assert reporting.report(workspace(), context)["alerts_already_sent"] == ["users_failed"]
    assert len(outbox) == 1
