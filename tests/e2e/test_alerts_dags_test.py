"""Alerts through real Airflow: ``airflow dags test`` runs a workspace DAG against the sandbox, and its
``report`` task mails a real SMTP server on 127.0.0.1 through an Airflow ``smtp`` connection given as an
``AIRFLOW_CONN_*`` variable, the way an operator would configure it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import yaml

from demo.sandbox_airflow import latest_xcom
from sandbox.smtp import ReceivedMail, SmtpSink

NAME = "alerts"
DAG = f"entra_provisioning__{NAME}"
BASE_URL = "https://airflow.contoso.example"
RECIPIENTS = ("dbx-platform@contoso.example", "oncall@contoso.example")

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def alerting(airflow_sandbox) -> Iterator[tuple[Any, SmtpSink]]:
    """The module's Airflow with one more workspace, ``alerts`` (alpha's workspace and groups), whose
    ``notify`` mails the loopback SMTP server through the ``smtp_alerts`` connection."""
    with SmtpSink() as smtp:
        airflow_sandbox.env["AIRFLOW_CONN_SMTP_ALERTS"] = smtp.connection(
            from_email="airflow@contoso.example"
        )
        airflow_sandbox.env["AIRFLOW__API__BASE_URL"] = BASE_URL
        set_entry(airflow_sandbox)
        yield airflow_sandbox, smtp


def set_entry(airflow_sandbox, **options: Any) -> None:
    """(Re)write the workspaces file with the ``alerts`` entry, plus ``options``."""
    document = yaml.safe_load(airflow_sandbox.config_file.read_text())
    alpha = next(e for e in document["workspaces"] if e["name"] == "alpha")
    entry = {
        **alpha,
        "name": NAME,
        "notify": {"email": list(RECIPIENTS), "smtp_conn_id": "smtp_alerts"},
        **options,
    }
    document["workspaces"] = [e for e in document["workspaces"] if e["name"] != NAME] + [entry]
    airflow_sandbox.config_file.write_text(yaml.safe_dump(document, sort_keys=False))


def run(airflow_sandbox, conf: dict[str, Any] | None = None) -> tuple[Any, str, dict[str, Any]]:
    """``airflow dags test`` the alerts DAG: the process, the run id and what its report task returned."""
    args = ["dags", "test", DAG] + (["--conf", json.dumps(conf)] if conf else [])
    result = airflow_sandbox.run(*args)
    ((run_id,),) = airflow_sandbox.query(
        "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", DAG
    )
    report = latest_xcom(airflow_sandbox.home, DAG, "report")
    assert report is not None, result.stdout[-3000:] + result.stderr[-3000:]
    return result, run_id, report


def run_link(run_id: str) -> str:
    return f"{BASE_URL}/dags/{DAG}/runs/{quote(run_id, safe='')}"


def test_a_clean_run_sends_nothing(alerting) -> None:
    airflow_sandbox, smtp = alerting
    airflow_sandbox.sandbox.reset()
    before = len(smtp.mails)
    result, _, report = run(airflow_sandbox)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert airflow_sandbox.counts(DAG)["added_in_run"] == 4  # it did real work, and nothing went wrong
    assert report["events"] == [] and report["alerts_sent"] == []
    assert len(smtp.mails) == before


def test_a_guard_stop_sends_exactly_one_message(alerting) -> None:
    airflow_sandbox, smtp = alerting
    airflow_sandbox.sandbox.reset()
    before = len(smtp.mails)
    result, run_id, report = run(airflow_sandbox, {"max_new_users_per_run": 1})
    assert result.returncode != 0  # the run failed, as a guard stop does
    assert report["events"] == ["guard_stop"] and report["alerts_sent"] == ["guard_stop"]
    (mail,) = smtp.wait_for(before + 1, timeout=10)[before:]
    assert mail.mail_from == "airflow@contoso.example" and mail.recipients == RECIPIENTS
    assert mail.subject == f"[Entra provisioning] {NAME}: guard stopped the run before any write"
    host = urlsplit(airflow_sandbox.sandbox.workspace_host("ws-alpha")).netloc
    assert f"{NAME} ({host})" in mail.body
    # 4 users to add; the guard also counts the service principal, so the reason says 5.
    assert "The guard stopped the run before any write: 4 user(s) to add" in mail.body
    assert "Refusing to add 5 new users" in mail.body  # the one-line reason of the counts record
    assert f'<a href="{run_link(run_id)}">' in mail.body
    assert len(smtp.mails) == before + 1


def test_the_token_warning_goes_out_once_on_a_day_of_two_runs(alerting) -> None:
    airflow_sandbox, smtp = alerting
    before = len(smtp.mails)
    # ws-alpha's PAT secret expires in 90 days: inside a 365-day warning window.
    set_entry(airflow_sandbox, secret_expiry_warning_days=365)
    first, run_id, report = run(airflow_sandbox, {"dry_run": True})
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert report["alerts_sent"] == ["token_expiring"]
    (mail,) = smtp.wait_for(before + 1, timeout=10)[before:]
    assert mail.subject == f"[Entra provisioning] {NAME}: token secret expires soon"
    days = airflow_sandbox.counts(DAG, "fetch_token")["token_expires_in_days"]
    assert 80 < days <= 90
    assert f"The workspace&#x27;s token secret expires in {days} day(s)" in mail.body
    assert f'<a href="{run_link(run_id)}">' in mail.body

    second, second_id, report = run(airflow_sandbox, {"dry_run": True})
    assert second.returncode == 0 and second_id != run_id
    assert report["events"] == ["token_expiring"]
    assert report["alerts_sent"] == [] and report["alerts_already_sent"] == ["token_expiring"]
    assert len(smtp.mails) == before + 1
    state = json.loads(
        airflow_sandbox.run("variables", "get", f"{DAG}__state").stdout.strip().splitlines()[-1]
    )
    assert state["alerted"]["run_id"] == run_id and state["token_alerted_on"]


def test_no_token_is_in_any_message(alerting) -> None:
    """Every message the runs above sent (the guard stop's and the token warning): no PAT, no Entra token."""
    airflow_sandbox, smtp = alerting
    mails: list[ReceivedMail] = smtp.mails
    assert [m.subject.rsplit(": ", 1)[1] for m in mails] == [
        "guard stopped the run before any write",
        "token secret expires soon",
    ]
    pat = airflow_sandbox.sandbox.pat("ws-alpha")
    for mail in mails:
        for text in (mail.body, mail.raw.decode(errors="replace")):
            assert pat not in text and "sbx-at." not in text
