"""The distributed e2e test's service check: skip on a developer's machine, fail in CI."""

from __future__ import annotations

import socket

import pytest

from demo.distributed import REQUIRE_SERVICES_ENV, services_problem, services_verdict


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


def test_unreachable_postgres_is_named() -> None:
    port = _closed_port()
    problem = services_problem(postgres=("127.0.0.1", port), timeout=2)
    assert problem is not None and f"PostgreSQL is not reachable at 127.0.0.1:{port}" in problem


def test_unreachable_redis_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg2

    class _Conn:
        def close(self) -> None:
            pass

    monkeypatch.setattr(psycopg2, "connect", lambda **_: _Conn())  # PostgreSQL "answers"
    port = _closed_port()
    problem = services_problem(redis=("127.0.0.1", port), timeout=2)
    assert problem is not None and f"Redis is not reachable at 127.0.0.1:{port}" in problem


def test_skip_locally_fail_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_SERVICES_ENV, raising=False)
    assert services_verdict(None) is None
    action, reason = services_verdict("Redis is not reachable") or ("", "")
    assert action == "skip" and "Redis is not reachable" in reason

    monkeypatch.setenv(REQUIRE_SERVICES_ENV, "1")
    assert services_verdict(None) is None
    action, reason = services_verdict("Redis is not reachable") or ("", "")
    assert action == "fail" and REQUIRE_SERVICES_ENV in reason


def test_ci_requires_the_services() -> None:
    """.ci/run starts PostgreSQL and Redis when they are down and turns the skip into a failure."""
    from pathlib import Path

    script = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert f"export {REQUIRE_SERVICES_ENV}=1" in script
    assert "pg_ctlcluster --skip-systemctl-redirect" in script and "redis-server --daemonize yes" in script
    assert script.rstrip().endswith("make test")
