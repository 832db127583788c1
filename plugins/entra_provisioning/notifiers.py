"""Sending a run's alerts through Airflow notifiers, each at most once: the ``report`` task's side.

Channels: ``email`` (the SMTP provider's ``SmtpNotifier`` over an Airflow ``smtp`` connection) is the one
today. Another Airflow notifier is one more entry of :data:`CHANNELS` (and a key of ``notify`` in the
field table): a function that builds the provider's notifier from the workspace's ``notify`` and the
already-written message.

Once per event per run. ``report`` only runs once the work has finished for good, so the events of a
run are computed once; what remains is ``report``'s own retry. Each message is recorded as sent in the
workspace's state Variable (:mod:`entra_provisioning.run_state`) right *after* the notifier returns,
one event at a time: a retried ``report`` sends only what was not recorded. Recording *before* sending
would lose an alert whenever the send fails or the worker dies mid-send; recording after can repeat one
only if the worker dies between the mail server's acceptance and the Variable write (or that write
fails), a window of milliseconds. A repeated alert is the lesser harm than a lost one.

A failure to send one event is logged and does not stop the others; :func:`deliver` reports it and the
``report`` task then fails *if Airflow will retry it* (the retry sends only the unsent ones). On the
last attempt it logs and succeeds instead, so that the run's asset event (emitted only when the task
succeeds) is never lost to a mail server outage.

Airflow and the SMTP provider are imported inside the functions: nothing here runs at DAG parse time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from entra_provisioning import alerts, run_state
from entra_provisioning.errors import TransientError
from entra_provisioning.run_events import Event
from entra_provisioning.run_record import one_line

if TYPE_CHECKING:
    from entra_provisioning.config import NotifyConfig, WorkspaceConfig

log = logging.getLogger(__name__)

__all__ = ["CHANNELS", "AlertsNotSentError", "Delivery", "deliver", "send_alerts"]


class Notifier(Protocol):
    """What :func:`deliver` needs of an Airflow notifier (``BaseNotifier``): its sending method."""

    def notify(self, context: Any) -> None: ...


#: Builds a channel's notifier for one message; ``None`` when the workspace's ``notify`` does not use the
#: channel (e.g. no e-mail recipients).
ChannelFactory = Callable[["NotifyConfig", alerts.AlertMessage], Notifier | None]


def _email(notify: NotifyConfig, message: alerts.AlertMessage) -> Notifier | None:
    if not notify.email:
        return None
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    # Subject and body are given, so SmtpNotifier renders neither (it renders only what it fills in from
    # the connection: the sender when from_email is None).
    return SmtpNotifier(
        to=list(notify.email),
        from_email=notify.from_email,
        subject=message.subject,
        html_content=message.html,
        smtp_conn_id=notify.smtp_conn_id,
    )


#: The channels, by the ``notify`` key that configures them.
CHANNELS: Mapping[str, ChannelFactory] = {"email": _email}


class AlertsNotSentError(TransientError):
    """Some alerts of a run could not be sent; the ``report`` task's retry sends only those."""


@dataclass
class Delivery:
    """What :func:`deliver` did with a run's events (event kinds, in the run's order)."""

    sent: list[str] = field(default_factory=list)
    already_sent: list[str] = field(default_factory=list)
    not_wanted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # kind -> one-line reason

    def as_dict(self) -> dict[str, Any]:
        return {
            "alerts_sent": list(self.sent),
            "alerts_already_sent": list(self.already_sent),
            "alerts_not_wanted": list(self.not_wanted),
            "alerts_failed": sorted(self.failed),
        }


def deliver(
    events: Sequence[Event],
    *,
    notify: NotifyConfig,
    message_for: Callable[[Event], alerts.AlertMessage],
    run_id: str,
    today: str,
    context: Any,
    load_state: Callable[[], dict[str, Any]],
    save_state: Callable[[dict[str, Any]], None],
    channels: Mapping[str, ChannelFactory] | None = None,
) -> Delivery:
    """Send each of ``events`` that ``notify`` wants and that was not sent already; record each one sent.

    :param today: the UTC date (ISO) the token warning's once-a-day rule counts in.
    :param context: the task's context, handed to each notifier's ``notify``.
    :param channels: the channel factories (default :data:`CHANNELS`).
    """
    channels = CHANNELS if channels is None else channels
    delivery = Delivery()
    wanted = [event for event in events if event.kind in notify.events]
    delivery.not_wanted = [event.kind for event in events if event.kind not in notify.events]
    if not wanted:
        return delivery
    state = load_state()
    due, delivery.already_sent = run_state.alerts_due(state, run_id, [e.kind for e in wanted], today)
    for kind in delivery.already_sent:
        log.info("Alert %s of run %s was sent already; not sending it again", kind, run_id)
    for event in (e for e in wanted if e.kind in due):
        message = message_for(event)
        # An event counts as sent when every configured channel took it (with one channel today, that is
        # the e-mail); a channel failing makes the retry send it again on all of them.
        try:
            used = 0
            for name, factory in channels.items():
                notifier = factory(notify, message)
                if notifier is None:
                    continue
                notifier.notify(context)
                used += 1
                log.info("Alert %s sent by %s: %s", event.kind, name, message.subject)
        except Exception as exc:
            reason = one_line(f"{type(exc).__name__}: {exc}")
            delivery.failed[event.kind] = reason
            log.error("Could not send alert %s (%s): %s", event.kind, message.subject, reason)
            continue
        if not used:
            log.warning("Alert %s not sent: notify has no channel with a recipient", event.kind)
            continue
        delivery.sent.append(event.kind)
        state = run_state.record_alert(state, run_id, event.kind, today)
        try:
            save_state(state)
        except Exception as exc:
            log.error(
                "Alert %s was sent but could not be recorded (%s: %s); a retry of report may send it again",
                event.kind,
                type(exc).__name__,
                exc,
            )
    return delivery


def send_alerts(ws: WorkspaceConfig, events: Sequence[Event], context: Mapping[str, Any]) -> Delivery:
    """Send the run's alerts for the workspace (its ``notify`` must be set).

    :raises AlertsNotSentError: when some could not be sent and Airflow will retry the ``report`` task.
    """
    from airflow.sdk.configuration import conf

    if ws.notify is None:
        return Delivery()
    run_id = str(context["run_id"])
    link = alerts.run_url(conf.get("api", "base_url", fallback=None), ws.dag_id, run_id)

    def message_for(event: Event) -> alerts.AlertMessage:
        return alerts.build_message(
            event, workspace=ws.name, host=ws.workspace_host, dag_id=ws.dag_id, run_id=run_id, link=link
        )

    delivery = deliver(
        events,
        notify=ws.notify,
        message_for=message_for,
        run_id=run_id,
        today=datetime.now(UTC).date().isoformat(),
        context=context,
        load_state=lambda: run_state.load(ws.dag_id),
        save_state=lambda state: run_state.save(ws.dag_id, state),
    )
    if delivery.failed:
        ti = context["ti"]
        will_retry = int(getattr(ti, "try_number", 1) or 1) <= int(getattr(ti, "max_tries", 0) or 0)
        kinds = ", ".join(sorted(delivery.failed))
        first = next(iter(delivery.failed.values()))
        if will_retry:
            message = (
                f"{len(delivery.failed)} alert(s) for workspace {ws.name} could not be sent ({kinds}): "
                f"{first}. The retry of report sends only these."
            )
            raise AlertsNotSentError(message)
        log.error(
            "Giving up on %d alert(s) for workspace %s (%s) after the last attempt of report: %s",
            len(delivery.failed),
            ws.name,
            kinds,
            first,
        )
    return delivery
