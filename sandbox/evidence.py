"""The request log: what reached which origin, with which (hashed) credential, and how it was answered.

Raw bearer tokens are never kept: only their SHA-256, so the log itself cannot leak a secret. Leak tests
compute the same fingerprint of a token they know and ask which hosts it was presented to.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter, deque
from typing import Any


def fingerprint(token: str) -> str:
    """SHA-256 hex digest of a credential, the only form in which the sandbox records it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class RequestLog:
    """Bounded list of recent requests plus unbounded aggregate counters."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=max_entries)
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._token_hosts: dict[str, Counter[str]] = {}
        self._seq = 0

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._counts.clear()
            self._token_hosts.clear()

    def note_token(self, token_sha256: str, origin: str) -> None:
        with self._lock:
            self._token_hosts.setdefault(token_sha256, Counter())[origin] += 1

    def record(
        self,
        *,
        system: str,
        endpoint: str,
        method: str,
        path: str,
        origin: str,
        host_header: str | None,
        status: int | str,
        duration_ms: float,
        token_sha256: str | None,
        fault: str | None,
        user_agent: str | None = None,
    ) -> None:
        with self._lock:
            self._seq += 1
            self._entries.append(
                {
                    "seq": self._seq,
                    "ts": time.time(),
                    "system": system,
                    "endpoint": endpoint,
                    "method": method,
                    "path": path,
                    "origin": origin,
                    "host": host_header,
                    "status": status,
                    "duration_ms": round(duration_ms, 3),
                    "token_sha256": token_sha256,
                    "fault": fault,
                    "user_agent": user_agent,
                }
            )
            self._counts[(system, endpoint, str(status))] += 1

    def entries(
        self, *, since: int = 0, system: str | None = None, endpoint: str | None = None, limit: int = 10_000
    ) -> list[dict[str, Any]]:
        with self._lock:
            out = [
                e
                for e in self._entries
                if e["seq"] > since
                and (system is None or e["system"] == system)
                and (endpoint is None or e["endpoint"] == endpoint)
            ]
        return out[-limit:] if limit >= 0 else out

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """``{system: {endpoint: {status: n}}}`` since the last clear."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        with self._lock:
            for (system, endpoint, status), n in sorted(self._counts.items()):
                out.setdefault(system, {}).setdefault(endpoint, {})[status] = n
        return out

    def token_hosts(self) -> dict[str, dict[str, int]]:
        """``{sha256(token): {"127.0.0.1:port": times presented}}``."""
        with self._lock:
            return {fp: dict(hosts) for fp, hosts in self._token_hosts.items()}

    @property
    def last_seq(self) -> int:
        return self._seq
