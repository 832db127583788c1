"""``notify:`` in the workspaces file: its shape, the merge with ``defaults:``, and located problems; the JSON
Schema agrees with the loader on what it can check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from entra_provisioning.config import ConfigError, NotifyConfig, parse_config, parse_config_report
from entra_provisioning.run_events import EVENT_KINDS

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "config" / "workspaces.schema.json").read_text())

ENTRY: dict[str, Any] = {
    "name": "analytics",
    "databricks_instance": "https://adb-6234138917436195.15.azuredatabricks.net",
    "entra_groups": ["Databricks-Group-Test"],
    "pat_secret_url": "https://kv-test.vault.azure.net/secrets/dbx-pat",
}


def doc(*entries: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {**top, "workspaces": [{**ENTRY, **e} for e in entries]}


def problems(document: dict[str, Any]) -> list[str]:
    try:
        report = parse_config_report(yaml.safe_dump(document, sort_keys=False), "ws.yaml")
    except ConfigError as exc:
        return [p.render("ws.yaml") for p in exc.problems]
    return [p.render("ws.yaml") for p in report.problems]


def schema_errors(document: dict[str, Any]) -> list[str]:
    return [e.message for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(document)]


def test_no_notify_means_no_alerts() -> None:
    (ws,) = parse_config(yaml.safe_dump(doc({}))).workspaces
    assert ws.notify is None


def test_one_address_gets_every_event_through_smtp_default() -> None:
    (ws,) = parse_config(yaml.safe_dump(doc({"notify": {"email": "ops@contoso.com"}}))).workspaces
    assert ws.notify == NotifyConfig(
        email=("ops@contoso.com",), smtp_conn_id="smtp_default", from_email=None, events=EVENT_KINDS
    )


def test_an_entry_is_merged_key_by_key_over_defaults_and_null_turns_it_off() -> None:
    defaults = {"notify": {"email": ["dbx-platform@contoso.com"], "smtp_conn_id": "smtp_corp"}}
    text = yaml.safe_dump(
        doc(
            {"notify": {"events": ["guard_stop", "run_failed"]}},
            {"name": "b"},
            {"name": "c", "notify": None},
            {"name": "d", "notify": {"email": ["team-d@contoso.com", "lead@contoso.com"]}},
            defaults=defaults,
        )
    )
    a, b, c, d = parse_config(text).workspaces
    assert a.notify == NotifyConfig(
        ("dbx-platform@contoso.com",), "smtp_corp", None, ("guard_stop", "run_failed")
    )
    assert b.notify == NotifyConfig(("dbx-platform@contoso.com",), "smtp_corp", None, EVENT_KINDS)
    assert c.notify is None
    # A list is replaced, not joined.
    assert d.notify is not None and d.notify.email == ("team-d@contoso.com", "lead@contoso.com")
    assert d.notify.smtp_conn_id == "smtp_corp"


def test_defaults_may_leave_the_recipients_to_each_entry() -> None:
    text = yaml.safe_dump(
        doc(
            {"notify": {"email": "team@contoso.com"}},
            defaults={"notify": {"from_email": "airflow@contoso.com"}},
        )
    )
    (ws,) = parse_config(text).workspaces
    assert ws.notify is not None and ws.notify.from_email == "airflow@contoso.com"
    assert ws.notify.email == ("team@contoso.com",)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            doc({"notify": {"email": ["ops@contoso.com", "not an address"]}}),
            "ws.yaml: workspaces[0] (name 'analytics'): field 'notify.email': each item must be an e-mail "
            "address (name@domain, no spaces, commas or angle brackets), got ['not an address']",
        ),
        (
            doc({"notify": {"email": "a@contoso.com, b@contoso.com"}}),
            "field 'notify.email': each item must be an e-mail address",
        ),
        (
            doc({"notify": {"email": "ops@contoso.com", "events": ["guard_stop", "run_failure"]}}),
            "field 'notify.events': each item must be one of run_failed, users_failed, guard_stop, "
            "token_expiring, membership_drift, got ['run_failure']",
        ),
        (
            doc({"notify": {"email": "ops@contoso.com", "events": []}}),
            "field 'notify': 'events' must name at least one event (to send no alerts, set notify to null)",
        ),
        (
            doc({"notify": {"events": ["guard_stop"]}}),
            "field 'notify': needs at least one recipient in 'email' (to send no alerts, set notify to null)",
        ),
        (
            doc({"notify": {"emails": ["ops@contoso.com"]}}),
            "field 'notify.emails': unknown key (did you mean 'email'?)",
        ),
        (
            doc({"notify": ["ops@contoso.com"]}),
            "field 'notify': must be a mapping with keys ['email', 'events', 'from_email', 'smtp_conn_id'], "
            "got list",
        ),
        (doc({"notify": {"email": "ops@contoso.com", "smtp_conn_id": " "}}), "field 'notify.smtp_conn_id'"),
        (doc({"notify": {"email": "ops@contoso.com", "from_email": "Airflow <a@b.c>"}}), "notify.from_email"),
        (doc({}, defaults={"notify": {"events": ["nope"]}}), "ws.yaml: field 'defaults.notify.events'"),
    ],
)
def test_a_bad_notify_is_a_located_problem(document: dict[str, Any], expected: str) -> None:
    found = problems(document)
    assert any(expected in p for p in found), found


def test_schema_and_loader_agree_on_what_the_schema_can_check() -> None:
    good = [
        doc({"notify": {"email": "ops@contoso.com"}}),
        doc({"notify": None}),
        doc({"notify": {"email": ["a@contoso.com"], "events": ["token_expiring"], "from_email": None}}),
        doc({"notify": {"events": ["guard_stop"]}}, defaults={"notify": {"email": "ops@contoso.com"}}),
    ]
    for document in good:
        assert schema_errors(document) == [], document
        assert problems(document) == [], document
    bad = [
        doc({"notify": {"email": "not an address"}}),
        doc({"notify": {"email": "ops@contoso.com", "events": ["nope"]}}),
        doc({"notify": {"email": "ops@contoso.com", "events": []}}),
        doc({"notify": {"email": "ops@contoso.com", "colour": "blue"}}),
        doc({"notify": "ops@contoso.com"}),
    ]
    for document in bad:
        assert schema_errors(document), document
        assert problems(document), document
