"""Private PostgreSQL and Redis servers for tests that stop, kill and restart them.

The fault tests (``tests/e2e/test_faults.py``) restart the metadata database and the Celery broker in the
middle of a run. They must never touch the machine's own servers on 5432/6379, which other work may be
using, so each test session starts its own on free loopback ports, with its data in a temporary directory,
and removes everything afterwards.

PostgreSQL refuses to run as root. When the test runs as root (CI containers do), ``initdb`` and
``pg_ctl`` run as the ``postgres`` user through ``runuser``, and the data directory is a fresh directory
under the system temp dir owned by that user (pytest's own temp dirs are private to root, so the
``postgres`` user could not reach a data directory inside one).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import IO

SERVER_USER = "postgres"


class ServiceError(RuntimeError):
    """A private server could not be created, started or stopped."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.2)


def postgres_binaries() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (the newest installed version), or ``None``."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    return None


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def missing_binaries() -> str | None:
    """Why private servers cannot be started here (``None`` when they can)."""
    if postgres_binaries() is None:
        return "PostgreSQL's initdb and pg_ctl are not installed"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root, and runuser (to start PostgreSQL as another user) is missing"
    return None


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on ``127.0.0.1:<port>``: trust authentication, no Unix socket,
    durability switched off (``fsync=off``: a test's data need not survive a power cut, only a restart).

    :meth:`stop` and :meth:`start` model a database outage (or a fail-over that keeps the data);
    :meth:`close` removes the cluster.
    """

    def __init__(self, log_dir: Path) -> None:
        binaries = postgres_binaries()
        if binaries is None:
            raise ServiceError("PostgreSQL's initdb and pg_ctl are not installed")
        self.bin = binaries
        self.port = free_port()
        self.user = SERVER_USER
        self.as_root = os.geteuid() == 0
        self.base = Path(tempfile.mkdtemp(prefix="entra-prov-pg-"))
        self.data = self.base / "data"
        self.log_file = log_dir / "postgres.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            shutil.chown(self.base, SERVER_USER, SERVER_USER)
        else:
            self.user = os.environ.get("USER") or "postgres"

    def _run(self, *argv: str, timeout: float = 60) -> None:
        command = [*(["runuser", "-u", SERVER_USER, "--"] if self.as_root else []), *argv]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise ServiceError(f"{' '.join(argv[:2])} failed: {result.stdout[-1500:]}{result.stderr[-1500:]}")

    def create(self) -> None:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
        )

    def start(self, timeout: float = 60) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off"
        options += " -c max_connections=300 -c full_page_writes=off -c synchronous_commit=off"
        # pg_ctl -l appends to the log; the server's log lives in the (postgres-owned) base directory and
        # is copied next to the test's other logs by close().
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.base / "server.log"),
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            timeout=timeout + 10,
        )

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """``fast`` ends every session (a restart or fail-over); ``immediate`` is a crash."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", timeout=timeout)

    def running(self) -> bool:
        return _listening(self.port)

    def close(self) -> None:
        with suppress(ServiceError, subprocess.TimeoutExpired):
            if self.running():
                self.stop("immediate")
        with suppress(OSError):
            shutil.copyfile(self.base / "server.log", self.log_file)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        try:
            self.create()
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PrivateRedis:
    """A ``redis-server`` child process on ``127.0.0.1:<port>`` with its data in ``directory``.

    ``persistent=True`` is the append-only file with an fsync per write (what the compose file
    recommends for the Celery broker): a restart keeps every queued message. ``False`` keeps nothing.
    """

    def __init__(self, directory: Path, *, persistent: bool = True) -> None:
        self.directory = directory
        self.port = free_port()
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self, *, persistent: bool | None = None, timeout: float = 30) -> None:
        if persistent is not None:
            self.persistent = persistent
        durability = (
            ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
            if self.persistent
            else ["--appendonly", "no", "--save", ""]
        )
        argv = [
            shutil.which("redis-server") or "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            *durability,
        ]
        self._log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        _wait("Redis answering", self._answers, timeout)

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise ServiceError(f"redis-server exited with {self.process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, *, crash: bool = False, timeout: float = 30) -> None:
        """SIGTERM (Redis writes what it persists, then exits) or, with ``crash``, SIGKILL."""
        if self.process is None:
            return
        with suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
        self.process = None

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(crash=True)
