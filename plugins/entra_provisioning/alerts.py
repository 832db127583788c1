"""The text of an alert: one event of one run, told to a person. Pure: no Airflow, no I/O.

A message names the workspace, what happened, the one-line reason and a link to the run in the Airflow
UI, and nothing else: the events are built from the counts records, which hold no secret; as a second
line of defence anything shaped like a token is blanked before it is written into a message.

The text is final when it leaves here. Airflow's notifiers render their template fields with Jinja, so
the sending side hands it over without rendering (``notifier.notify(context)``, never ``notifier(context)``):
a failure reason containing ``{{`` is shown as it is, never evaluated.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from urllib.parse import quote

from entra_provisioning.run_events import Event

__all__ = ["SUBJECT_PREFIX", "TITLES", "AlertMessage", "build_message", "redact", "run_url"]

SUBJECT_PREFIX = "[Entra provisioning]"

#: The subject's account of each event kind: short, so the workspace name stays visible in a mail list.
TITLES = {
    "run_failed": "run failed",
    "users_failed": "some users could not be added",
    "guard_stop": "guard stopped the run before any write",
    "token_expiring": "token secret expires soon",
    "membership_drift": "membership drift in mirrored groups",
}

#: What Airflow's own links fall back to when ``[api] base_url`` is not set (``TaskInstance.log_url``).
AIRFLOW_DEFAULT_BASE_URL = "http://localhost:8080"

# Shapes of credentials that must never reach a mail: a Databricks PAT or OAuth secret, a JWT (Entra
# tokens), anything after "Bearer". Defence in depth: nothing upstream is meant to carry them.
_SECRET_SHAPES = (
    re.compile(r"\b(?:dapi|dose)[0-9A-Za-z-]{8,}"),
    re.compile(r"\beyJ[0-9A-Za-z_-]{4,}\.[0-9A-Za-z_-]{4,}\.[0-9A-Za-z_-]*"),
    re.compile(r"(?i)(?<=\bbearer )\S+"),
)
REDACTED = "[redacted]"


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """A message ready to send: a one-line subject, an HTML body (what e-mail notifiers take) and the same
    as plain text (for logs and for channels that take text)."""

    kind: str
    subject: str
    html: str
    text: str


def redact(text: str) -> str:
    """``text`` with anything shaped like a token replaced by ``[redacted]``."""
    for shape in _SECRET_SHAPES:
        text = shape.sub(REDACTED, text)
    return text


def run_url(base_url: str | None, dag_id: str, run_id: str) -> str:
    """The run's page in the Airflow 3 UI: ``<[api] base_url>/dags/<dag_id>/runs/<run_id>``.

    Run ids hold ``:`` and ``+`` (``manual__2025-01-01T00:00:00+00:00``), so both parts are quoted.
    """
    base = (base_url or AIRFLOW_DEFAULT_BASE_URL).rstrip("/")
    return f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def build_message(
    event: Event,
    *,
    workspace: str,
    host: str,
    dag_id: str,
    run_id: str,
    link: str,
) -> AlertMessage:
    """The message for one event of one run of one workspace.

    :param workspace: the entry's ``name``.
    :param host: the workspace's host (``adb-….azuredatabricks.net``), so the reader knows which one.
    :param link: the run's page (:func:`run_url`).
    """
    title = TITLES.get(event.kind, event.kind.replace("_", " "))
    subject = _one_line(redact(f"{SUBJECT_PREFIX} {workspace}: {title}"))
    what = _one_line(redact(event.what))
    reason = (
        _one_line(redact(event.reason)) if event.reason else "not recorded (see the task logs of the run)"
    )
    rows = [
        ("Workspace", f"{workspace} ({host})"),
        ("What happened", what),
        ("Reason", reason),
        ("Run", link),
        ("DAG and run", f"{dag_id}, {run_id}"),
    ]
    footer = (
        f"Event '{event.kind}'. Sent once per event per run by the report task of {dag_id}; "
        "the token warning at most once a day per workspace."
    )
    text = "\n".join(f"{label}: {value}" for label, value in rows) + f"\n\n{footer}\n"
    cells = []
    for label, value in rows:
        shown = (
            f'<a href="{html.escape(link, quote=True)}">{html.escape(link)}</a>'
            if label == "Run"
            else html.escape(value)
        )
        cells.append(f"<tr><th align='left'>{html.escape(label)}</th><td>{shown}</td></tr>")
    body = (
        f"<p><b>{html.escape(what)}</b></p>\n<table>\n"
        + "\n".join(cells)
        + f"\n</table>\n<p><small>{html.escape(footer)}</small></p>\n"
    )
    return AlertMessage(kind=event.kind, subject=subject, html=body, text=text)
