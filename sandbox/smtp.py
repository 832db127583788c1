"""A real SMTP server on loopback that keeps what it is sent: the mail server the alerts tests talk to.

It is ``aiosmtpd`` (a full SMTP implementation) on its own event loop in a thread, bound to 127.0.0.1 on
a port the OS picks, so Airflow's SMTP provider speaks real SMTP to it (EHLO, MAIL, RCPT, DATA) from this
process or from an ``airflow`` subprocess. It can be told to refuse messages, to test a mail outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

__all__ = ["ReceivedMail", "SmtpSink"]


@dataclass(frozen=True)
class ReceivedMail:
    """One message the server accepted: the envelope and the parsed message."""

    mail_from: str
    recipients: tuple[str, ...]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def body(self) -> str:
        """The text of every text part, decoded (the alerts are one HTML part)."""
        parts = [self.message] if not self.message.is_multipart() else list(self.message.walk())
        texts = []
        for part in parts:
            if part.get_content_maintype() == "text":
                texts.append(str(part.get_content()))
        return "\n".join(texts)

    @property
    def raw(self) -> bytes:
        return self.message.as_bytes()


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.sink.refusing:
            return "554 5.7.1 refused by the test server"
        content = envelope.original_content or envelope.content
        data = content if isinstance(content, bytes) else str(content).encode()
        message = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.sink._lock:
            self.sink._mails.append(
                ReceivedMail(str(envelope.mail_from), tuple(str(r) for r in envelope.rcpt_tos), message)
            )
        return "250 OK"


class SmtpSink:
    """``with SmtpSink() as smtp:`` serves SMTP on ``127.0.0.1:smtp.port`` until the block ends."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = 0
        self.refusing = False
        self._mails: list[ReceivedMail] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None

    def start(self, timeout: float = 10.0) -> SmtpSink:
        import logging

        from aiosmtpd.smtp import SMTP

        # aiosmtpd logs every SMTP command at INFO; the messages themselves are what tests look at.
        logging.getLogger("mail.log").setLevel(logging.WARNING)

        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="smtp-sink", daemon=True)
        self._thread.start()
        handler = _Handler(self)
        # A short idle timeout: a client that hangs cannot keep the server's connection open for minutes.
        created = asyncio.run_coroutine_threadsafe(
            loop.create_server(lambda: SMTP(handler, timeout=30), self.host, 0), loop
        )
        self._server = created.result(timeout)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, server = self._loop, self._server
        if loop is None:
            return
        if server is not None:

            async def close() -> None:
                server.close()
                await asyncio.wait_for(server.wait_closed(), timeout)

            # A client still connected makes this time out; stopping the loop ends it anyway.
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)
        loop.close()
        self._loop = self._thread = self._server = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def mails(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._mails)

    def clear(self) -> None:
        with self._lock:
            self._mails.clear()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[ReceivedMail]:
        """The mails received, once there are at least ``count`` (or whatever came when ``timeout`` ends)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mails = self.mails
            if len(mails) >= count:
                return mails
            time.sleep(0.1)
        return self.mails

    def connection(self, from_email: str = "airflow-alerts@example.com", **extra: Any) -> str:
        """An Airflow ``smtp`` connection to this server, as the JSON an ``AIRFLOW_CONN_*`` variable holds:
        plain SMTP on loopback (no TLS), no login, the sender in the extra as the provider reads it."""
        return json.dumps(
            {
                "conn_type": "smtp",
                "host": self.host,
                "port": self.port,
                "extra": {
                    "disable_tls": True,
                    "disable_ssl": True,
                    "from_email": from_email,
                    "timeout": 10,
                    "retry_limit": 0,
                    **extra,
                },
            }
        )
