"""A StatsD server stand-in on loopback: it receives UDP datagrams and keeps every line, parsed.

Tests point Airflow's ``[metrics]`` at it (:meth:`StatsdListener.airflow_env`) and read back what arrived.
Lines follow the StatsD protocol, ``<name>:<value>|<type>[|@<rate>][|#<tags>]``, one or more per datagram
(a client's pipeline joins them with newlines). Two tag dialects are understood: DogStatsD's ``|#k:v,k2:v2``
and the InfluxDB style Airflow writes into the name, ``<name>,k=v,k2=v2``.

Gauges follow StatsD's rule: a value written with a sign (``+3``, ``-3``) changes the gauge, an unsigned
one sets it, which is why clients send a negative gauge as ``0|g`` followed by ``-3|g``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Sample", "StatsdListener", "counter_total", "gauge_value", "gauge_values", "parse_line"]

_TYPES = frozenset({"c", "g", "ms", "h", "s", "d"})


@dataclass(frozen=True)
class Sample:
    """One StatsD line. ``delta`` is true for a gauge change (a signed value), false for a gauge set."""

    name: str
    value: float
    kind: str
    rate: float = 1.0
    tags: Mapping[str, str] = field(default_factory=dict)
    delta: bool = False


def parse_line(line: str) -> Sample:
    """Parse one StatsD line; ``ValueError`` names what is wrong with it."""
    head, *fields = line.strip().split("|")
    name_part, sep, raw_value = head.rpartition(":")
    if not sep or not name_part or not raw_value:
        raise ValueError(f"not <name>:<value>: {line!r}")
    if not fields or fields[0] not in _TYPES:
        raise ValueError(f"no known metric type in {line!r}")
    kind = fields[0]
    name, *influx_tags = name_part.split(",")
    tags: dict[str, str] = {}
    for pair in influx_tags:
        key, eq, tag_value = pair.partition("=")
        if not eq or not key:
            raise ValueError(f"bad InfluxDB-style tag {pair!r} in {line!r}")
        tags[key] = tag_value
    rate = 1.0
    for extra in fields[1:]:
        if extra.startswith("@"):
            rate = float(extra[1:])
            if not 0 < rate <= 1:
                raise ValueError(f"sample rate out of range in {line!r}")
        elif extra.startswith("#"):
            for pair in filter(None, extra[1:].split(",")):
                key, _, tag_value = pair.partition(":")
                tags[key] = tag_value
        else:
            raise ValueError(f"unknown field {extra!r} in {line!r}")
    value = float(raw_value)  # raises ValueError for a non-number
    return Sample(name, value, kind, rate, tags, delta=kind == "g" and raw_value[0] in "+-")


def gauge_values(samples: Iterable[Sample], name: str, tags: Mapping[str, str] | None = None) -> list[float]:
    """Every value the gauge ``name`` (with exactly ``tags``) was set to, in order; a signed change folds
    into the value it changes."""
    values: list[float] = []
    current = 0.0
    for sample in samples:
        if sample.kind != "g" or sample.name != name or dict(sample.tags) != dict(tags or {}):
            continue
        current = current + sample.value if sample.delta else sample.value
        if sample.delta and values:
            values[-1] = current  # "0|g" then "-3|g" is one negative value, not two
        else:
            values.append(current)
    return values


def gauge_value(samples: Iterable[Sample], name: str, tags: Mapping[str, str] | None = None) -> float | None:
    """The gauge's value after all ``samples`` (``None``: it never arrived)."""
    values = gauge_values(samples, name, tags)
    return values[-1] if values else None


def counter_total(samples: Iterable[Sample], name: str, tags: Mapping[str, str] | None = None) -> float:
    """The sum a StatsD server would count for ``name`` (with exactly ``tags``), sample rates undone."""
    return sum(
        s.value / s.rate
        for s in samples
        if s.kind == "c" and s.name == name and dict(s.tags) == dict(tags or {})
    )


class StatsdListener:
    """A UDP StatsD server on ``host`` (loopback) and a free port, receiving in a thread until closed."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Every Airflow component may send here at once: a large buffer keeps bursts from being dropped.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self._sock.bind((host, 0))
        self._sock.settimeout(0.2)
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        self._lock = threading.Lock()
        self._samples: list[Sample] = []
        #: Lines that did not parse, kept so a test can show them.
        self.malformed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="statsd-listener", daemon=True)
        self._thread.start()

    def __enter__(self) -> StatsdListener:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def airflow_env(self, prefix: str = "airflow") -> dict[str, str]:
        """Airflow's ``[metrics]`` settings that send StatsD here."""
        return {
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": self.host,
            "AIRFLOW__METRICS__STATSD_PORT": str(self.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": prefix,
        }

    def samples(self, since: int = 0) -> list[Sample]:
        """What arrived so far (from index ``since``: pass an earlier ``len(samples())``)."""
        with self._lock:
            return self._samples[since:]

    def wait_for(
        self, what: str, check: Callable[[list[Sample]], Any], timeout: float = 30.0, since: int = 0
    ) -> Any:
        """Until ``check(samples)`` is truthy; ``TimeoutError`` (naming ``what``) after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            result = check(self.samples(since))
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"timed out after {timeout:.0f} s waiting for {what} on StatsD port {self.port} "
                    f"({len(self.samples(since))} sample(s) arrived)"
                )
            time.sleep(0.2)

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            parsed: list[Sample] = []
            bad: list[str] = []
            for line in data.decode("utf-8", errors="replace").splitlines():
                if not line.strip():
                    continue
                try:
                    parsed.append(parse_line(line))
                except ValueError:
                    bad.append(line)
            with self._lock:
                self._samples.extend(parsed)
                self.malformed.extend(bad)
