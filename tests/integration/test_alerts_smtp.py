"""Alerts sent for real: the report's sending path, through the SMTP provider's ``SmtpNotifier`` and an Airflow
``smtp`` connection, to a real SMTP server on 127.0.0.1 (aiosmtpd)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from entra_provisioning import alerts, notifiers, run_state
from entra_provisioning.config import NotifyConfig, WorkspaceConfig
from entra_provisioning.run_events import Event
from sandbox.smtp import SmtpSink

RUN_ID = "manual__2026-03-01T10:00:00+00:00"
BASE_URL = "https://airflow.contoso.example"
PAT = "dapi0123456789abcdef0123456789abcdef"


class TI:
    def __init__(self, try_number: int = 1, max_tries: int = 1) -> None:
        self.try_number, self.max_tries = try_number, max_tries


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpSink]:
    """The mail server, the ``smtp_alerts`` connection to it, ``[api] base_url``, and the workspace's state
    Variable kept in memory (outside a task there is no api-server to hold it)."""
    state: dict[str, dict[str, Any]] = {}
    monkeypatch.setattr(run_state, "load", lambda dag_id: dict(state.get(dag_id, {})))
    monkeypatch.setattr(run_state, "save", lambda dag_id, new: state.__setitem__(dag_id, dict(new)))
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL)
    with SmtpSink() as sink:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_ALERTS", sink.connection(from_email="airflow@contoso.example"))
        yield sink


def workspace(**notify: Any) -> WorkspaceConfig:
    settings = {"email": ("ops@contoso.example", "lead@contoso.example"), "smtp_conn_id": "smtp_alerts"}
    return WorkspaceConfig(
        name="analytics",
        databricks_instance="https://adb-6234138917436195.15.azuredatabricks.net",
        entra_groups=("Databricks-Group-Test",),
        pat_secret_url="https://kv-test.vault.azure.net/secrets/dbx-pat",
        schedule=None,
        notify=NotifyConfig(**{**settings, **notify}),
    )


GUARD = Event(
    "guard_stop",
    "The guard stopped the run before any write: 9 user(s) to add",
    "Refusing to add 9 new users to group '{{ 7 * 7 }}' <script>x</script>",
)


def test_one_event_one_message_with_its_facts_and_jinja_left_alone(smtp: SmtpSink) -> None:
    delivery = notifiers.send_alerts(workspace(), [GUARD], {"run_id": RUN_ID, "ti": TI()})
    assert delivery.sent == ["guard_stop"]
    (mail,) = smtp.wait_for(1, timeout=10)
    assert mail.mail_from == "airflow@contoso.example"  # the connection's from_email extra
    assert mail.recipients == ("ops@contoso.example", "lead@contoso.example")
    assert mail.subject == "[Entra provisioning] analytics: guard stopped the run before any write"
    body = mail.body
    assert "analytics (adb-6234138917436195.15.azuredatabricks.net)" in body
    assert "The guard stopped the run before any write: 9 user(s) to add" in body
    link = f"{BASE_URL}/dags/entra_provisioning__analytics/runs/manual__2026-03-01T10%3A00%3A00%2B00%3A00"
    assert f'<a href="{link}">' in body
    # The reason as written: not rendered by Jinja, not interpreted as HTML.
    assert "{{ 7 * 7 }}" in body and "49" not in body
    assert "&lt;script&gt;" in body and "<script>" not in body
    assert len(smtp.mails) == 1


def test_calling_the_notifier_the_usual_way_would_have_rendered_the_reason(smtp: SmtpSink) -> None:
    """Why the report calls ``notify(context)``: ``notifier(context)`` renders the template fields first."""
    ws = workspace()
    assert ws.notify is not None
    message = alerts.build_message(
        GUARD, workspace=ws.name, host=ws.workspace_host, dag_id=ws.dag_id, run_id=RUN_ID, link="x"
    )
    notifier = notifiers.CHANNELS["email"](ws.notify, message)
    assert notifier is not None
    notifier({"run_id": RUN_ID})  # type: ignore[operator]
    (mail,) = smtp.wait_for(1, timeout=10)
    assert "group &#x27;49&#x27;" in mail.body and "{{" not in mail.body


def test_the_token_warning_goes_out_once_a_day_over_two_runs(smtp: SmtpSink) -> None:
    token = Event("token_expiring", "The workspace's token secret expires in 5 day(s)", "expires on …")
    first = notifiers.send_alerts(workspace(), [token], {"run_id": "scheduled__1", "ti": TI()})
    second = notifiers.send_alerts(workspace(), [token], {"run_id": "scheduled__2", "ti": TI()})
    assert first.sent == ["token_expiring"] and second.already_sent == ["token_expiring"]
    assert [m.subject for m in smtp.wait_for(1, timeout=10)] == [
        "[Entra provisioning] analytics: token secret expires soon"
    ]
    assert len(smtp.mails) == 1


def test_a_refusing_server_fails_report_for_a_retry_that_sends_only_what_is_missing(smtp: SmtpSink) -> None:
    drift = Event("membership_drift", "2 membership(s) of mirrored groups are no longer in Entra ID", "left")
    smtp.refusing = True
    with pytest.raises(
        notifiers.AlertsNotSentError, match=r"^2 alert\(s\) for workspace analytics could not"
    ):
        notifiers.send_alerts(workspace(), [GUARD, drift], {"run_id": RUN_ID, "ti": TI(1, 1)})
    assert smtp.mails == []

    smtp.refusing = False  # the retry of report, after the outage
    retry = notifiers.send_alerts(workspace(), [GUARD, drift], {"run_id": RUN_ID, "ti": TI(2, 1)})
    assert retry.sent == ["guard_stop", "membership_drift"]
    again = notifiers.send_alerts(workspace(), [GUARD, drift], {"run_id": RUN_ID, "ti": TI(3, 1)})
    assert again.sent == [] and again.already_sent == ["guard_stop", "membership_drift"]
    assert sorted(m.subject.split(": ", 1)[1] for m in smtp.wait_for(2, timeout=10)) == [
        "guard stopped the run before any write",
        "membership drift in mirrored groups",
    ]
    assert len(smtp.mails) == 2


def test_no_mail_server_at_all_is_a_clear_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    state: dict[str, Any] = {}
    monkeypatch.setattr(run_state, "load", lambda dag_id: dict(state))
    monkeypatch.setattr(run_state, "save", lambda dag_id, new: state.update(new))
    with SmtpSink() as sink:
        connection = sink.connection()  # a port that is closed once the server stops
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_ALERTS", connection)
    with pytest.raises(notifiers.AlertsNotSentError, match="ConnectionRefusedError"):
        notifiers.send_alerts(workspace(), [GUARD], {"run_id": RUN_ID, "ti": TI(1, 1)})
    assert state == {}


def test_a_token_in_a_reason_never_reaches_the_mail(smtp: SmtpSink) -> None:
    leaky = Event("run_failed", "The run failed in fetch_token", f"HTTP 401 for Authorization: Bearer {PAT}")
    notifiers.send_alerts(workspace(), [leaky], {"run_id": RUN_ID, "ti": TI()})
    (mail,) = smtp.wait_for(1, timeout=10)
    assert PAT not in mail.body and PAT.encode() not in mail.raw
    assert "Bearer [redacted]" in mail.body
