"""A production-shaped Airflow on loopback: PostgreSQL metadata, CeleryExecutor over Redis, one process
per component, all pointed at the sandbox.

The end-to-end test in ``tests/e2e/test_distributed.py`` drives it. The topology is the one
``docker-compose.yaml`` describes (``COMPONENTS`` is checked against the compose file by a unit test),
only with the PostgreSQL and Redis of the machine instead of containers:

- a fresh database ``entra_prov_e2e_<random>`` per run, dropped at the end;
- a Redis database number and a Celery queue of its own, so concurrent runs on one Redis never
  pick up each other's tasks;
- ``airflow scheduler``, ``dag-processor``, ``api-server``, ``triggerer`` and ``celery worker`` as separate
  process groups, each logging to its own file; task logs are files under ``logs/``.

Every wait is bounded, and :meth:`AirflowCluster.stop` ends every process group it started (SIGTERM,
then SIGKILL), whatever happened before.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

#: The Airflow components, each one process: (name, ``airflow`` sub-command). docker-compose.yaml runs the
#: same set, one container each (plus postgres, redis and the one-shot init).
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("scheduler", ("scheduler",)),
    ("dag-processor", ("dag-processor",)),
    ("api-server", ("api-server",)),
    ("triggerer", ("triggerer",)),
    ("worker", ("celery", "worker")),
)

#: Set to ``1`` (``.ci/run`` does) to turn "PostgreSQL or Redis is not reachable" from a skip into a failure.
REQUIRE_SERVICES_ENV = "ENTRA_PROVISIONING_REQUIRE_SERVICES"

POSTGRES_HOST = os.environ.get("ENTRA_PROVISIONING_E2E_PGHOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("ENTRA_PROVISIONING_E2E_PGPORT", "5432"))
POSTGRES_USER = os.environ.get("ENTRA_PROVISIONING_E2E_PGUSER", "postgres")
REDIS_HOST = os.environ.get("ENTRA_PROVISIONING_E2E_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("ENTRA_PROVISIONING_E2E_REDIS_PORT", "6379"))
#: Redis database for the Celery broker; the queue name is unique per run on top of it.
REDIS_DB = int(os.environ.get("ENTRA_PROVISIONING_E2E_REDIS_DB", "11"))

ADMIN_USER = "admin"


def services_problem(
    *,
    postgres: tuple[str, int] | None = None,
    redis: tuple[str, int] | None = None,
    timeout: float = 3.0,
) -> str | None:
    """Why PostgreSQL or Redis cannot be used (``None`` when both answer)."""
    pg_host, pg_port = postgres or (POSTGRES_HOST, POSTGRES_PORT)
    redis_host, redis_port = redis or (REDIS_HOST, REDIS_PORT)
    try:
        import psycopg2

        psycopg2.connect(
            host=pg_host, port=pg_port, user=POSTGRES_USER, dbname="postgres", connect_timeout=int(timeout)
        ).close()
    except Exception as exc:
        return f"PostgreSQL is not reachable at {pg_host}:{pg_port} as {POSTGRES_USER}: {str(exc).strip()}"
    try:
        with socket.create_connection((redis_host, redis_port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        return f"Redis is not reachable at {redis_host}:{redis_port}: {exc}"
    if not answer.startswith(b"+PONG"):
        return f"Redis at {redis_host}:{redis_port} answered PING with {answer!r}"
    return None


def services_required() -> bool:
    return os.environ.get(REQUIRE_SERVICES_ENV, "") == "1"


def services_verdict(problem: str | None) -> tuple[str, str] | None:
    """What a test needing the services should do: ``None`` (run), or ``("skip" | "fail", reason)``.

    Unreachable services skip the test on a developer's machine, but fail it when
    ``ENTRA_PROVISIONING_REQUIRE_SERVICES=1`` (CI), so CI can never pass without running it.
    """
    if problem is None:
        return None
    if services_required():
        return "fail", f"{problem} ({REQUIRE_SERVICES_ENV}=1, so this is a failure, not a skip)"
    return "skip", f"the distributed Airflow test needs PostgreSQL and Redis on loopback: {problem}"


@dataclass(frozen=True)
class Endpoints:
    """Where the cluster's PostgreSQL and Redis listen (the machine's by default; the fault tests give
    private ones, see :mod:`demo.services`)."""

    pg_host: str = POSTGRES_HOST
    pg_port: int = POSTGRES_PORT
    pg_user: str = POSTGRES_USER
    redis_host: str = REDIS_HOST
    redis_port: int = REDIS_PORT
    redis_db: int = REDIS_DB


MACHINE_SERVICES = Endpoints()


@contextmanager
def fresh_database(prefix: str = "entra_prov_e2e_", services: Endpoints = MACHINE_SERVICES) -> Iterator[str]:
    """Create an empty PostgreSQL database with a random name; drop it (and its sessions) afterwards."""
    import psycopg2

    name = f"{prefix}{secrets.token_hex(6)}"

    def admin_execute(sql: str) -> None:
        conn = psycopg2.connect(
            host=services.pg_host,
            port=services.pg_port,
            user=services.pg_user,
            dbname="postgres",
            connect_timeout=5,
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    admin_execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        # FORCE ends the sessions a killed component may have left behind (PostgreSQL 13+).
        admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ComponentDied(RuntimeError):
    """An Airflow component exited while we waited for it: waiting longer cannot help."""


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout: float,
    interval: float = 1.0,
    context: Callable[[], str] = str,
) -> Any:
    """Call ``check`` until it returns something truthy; raise ``TimeoutError`` after ``timeout`` s.

    Errors from ``check`` count as "not yet" (the thing waited for may not answer yet), except
    :class:`ComponentDied`. ``context()`` is appended to the timeout message (e.g. log tails).
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = check()
        except ComponentDied:
            raise
        except Exception as exc:
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{detail}{context()}")
        time.sleep(interval)


@dataclass
class Component:
    name: str
    argv: list[str]
    log_file: Path
    process: subprocess.Popen[bytes]
    _log: IO[bytes] = field(repr=False)

    def alive(self) -> bool:
        return self.process.poll() is None


class AirflowCluster:
    """Airflow on PostgreSQL + Celery/Redis, one process group per component, under ``workdir``.

    ``base_env`` is the environment for ``airflow`` commands without the metadata/executor settings
    (``demo.sandbox_airflow.airflow_env`` gives it: sandbox trust, connections, DAG folder, config file).
    """

    def __init__(
        self,
        base_env: Mapping[str, str],
        workdir: Path,
        database: str,
        services: Endpoints = MACHINE_SERVICES,
        worker_concurrency: int = 2,
    ) -> None:
        self.workdir = workdir
        self.services = services
        #: Task slots of the Celery worker (``celery worker --concurrency``).
        self.worker_concurrency = worker_concurrency
        self.database = database
        self.logs = workdir / "logs"
        self.process_logs = workdir / "process-logs"
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.queue = f"entra_e2e_{secrets.token_hex(4)}"
        self.password = secrets.token_urlsafe(18)
        self.components: list[Component] = []
        self._token: str | None = None
        pg = f"{services.pg_user}@{services.pg_host}:{services.pg_port}/{database}"
        db_url = f"postgresql+psycopg2://{pg}"
        passwords_file = workdir / "simple_auth_manager_passwords.json"
        self.env = dict(base_env)
        for leaked in ("PYTEST_CURRENT_TEST", "AIRFLOW__CORE__UNIT_TEST_MODE"):
            self.env.pop(leaked, None)
        self.env.update(
            {
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__BROKER_URL": (
                    f"redis://{services.redis_host}:{services.redis_port}/{services.redis_db}"
                ),
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{pg}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__BASE_URL": self.api_url,
                # Every component must sign and accept the same tokens (task JWTs, log-server requests).
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            }
        )
        workdir.mkdir(parents=True, exist_ok=True)
        self.process_logs.mkdir(exist_ok=True)
        # The simple auth manager reads the admin's password from this file (it would otherwise generate
        # one and print it); the test signs in with it through /auth/token, as the UI's login does.
        passwords_file.write_text(json.dumps({ADMIN_USER: self.password}) + "\n")

    # ------------------------------------------------------------------ lifecycle
    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """One ``airflow`` CLI command against this cluster (output captured, never raises on failure)."""
        return subprocess.run(
            [self._airflow_executable(), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.workdir,
        )

    def migrate(self, timeout: float = 300) -> None:
        result = self.airflow("db", "migrate", timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(
                f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )

    def start(self) -> None:
        """Start every component as its own process group (session), logging to its own file."""
        for name, _command in COMPONENTS:
            self.components.append(self._launch(name))

    def _launch(self, name: str) -> Component:
        command = dict(COMPONENTS)[name]
        argv = [self._airflow_executable(), *command]
        if name == "api-server":
            argv += ["--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1"]
        if name == "worker":
            argv += ["--queues", self.queue, "--concurrency", str(self.worker_concurrency)]
            argv += ["--without-gossip", "--without-mingle"]
        log_file = self.process_logs / f"{name}.log"
        log = log_file.open("ab")
        process = subprocess.Popen(
            argv,
            env=self.env,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return Component(name, argv, log_file, process, log)

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL, grace: float = 30.0) -> None:
        """Send ``sig`` to the component's whole process tree, then wait until it is gone (SIGKILL after
        ``grace`` s).

        The tree, not only the process group: the task SDK's supervisor puts each task process in a group
        of its own, so a ``killpg`` of the worker leaves the task running (and creating users) as an
        orphan. A pod eviction kills every process of the pod; so does this.
        """
        component = self.component(name)
        tree = self._tree(component)
        self._signal_group(component, sig)
        if sig == signal.SIGKILL:
            self._kill_all(tree)
        try:
            component.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self._signal_group(component, signal.SIGKILL)
            component.process.wait(timeout=10)
        # Nothing of it may outlive it (an orphaned task supervisor would keep heartbeating).
        self._signal_group(component, signal.SIGKILL)
        self._kill_all(tree + self._tree(component))
        component._log.close()

    @staticmethod
    def _tree(component: Component) -> list[Any]:
        """The component's process and every descendant (whatever their process group)."""
        import psutil

        try:
            root = psutil.Process(component.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    @staticmethod
    def _kill_all(processes: list[Any]) -> None:
        import psutil

        for process in processes:
            with suppress(psutil.Error):
                process.kill()

    def relaunch(self, name: str) -> Component:
        """Start a new process for a component that was killed or died (what ``restart: always`` does)."""
        old = self.component(name)
        if old.alive():
            raise RuntimeError(f"{name} is still running")
        new = self._launch(name)
        self.components[self.components.index(old)] = new
        return new

    def revive(self) -> list[str]:
        """Relaunch every component that exited; returns their names (with the exit codes)."""
        revived = []
        for component in list(self.components):
            if not component.alive():
                revived.append(f"{component.name} (exit {component.process.returncode})")
                with suppress(OSError):
                    component._log.close()
                self.relaunch(component.name)
        return revived

    def stop(self, grace: float = 20.0) -> dict[str, int | None]:
        """SIGTERM every process group, SIGKILL what is still there after ``grace`` s; exit codes by name."""
        trees = [self._tree(component) for component in self.components]
        for component in self.components:
            self._signal_group(component, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for component in self.components:
            with suppress(subprocess.TimeoutExpired):
                component.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for component in self.components:
            # The group too: Celery's pool children and the task supervisors live in it.
            self._signal_group(component, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                component.process.wait(timeout=10)
            component._log.close()
        # Task processes run in process groups of their own: nothing may outlive the cluster.
        for tree in trees:
            self._kill_all(tree)
        self._forget_queue()
        return {c.name: c.process.returncode for c in self.components}

    def _forget_queue(self) -> None:
        """Drop this run's Celery queue and its bindings from Redis (they would otherwise pile up)."""
        import redis

        with suppress(redis.RedisError):
            client = redis.Redis(
                host=self.services.redis_host,
                port=self.services.redis_port,
                db=self.services.redis_db,
                socket_timeout=5,
            )
            try:
                client.delete(
                    self.queue, f"_kombu.binding.{self.queue}", f"_kombu.binding_permanent.{self.queue}"
                )
            finally:
                client.close()

    @staticmethod
    def _signal_group(component: Component, sig: signal.Signals) -> None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(component.process.pid, sig)

    @staticmethod
    def _airflow_executable() -> str:
        return str(Path(sys.executable).with_name("airflow"))

    def check_alive(self) -> None:
        dead = [f"{c.name} (exit {c.process.returncode})" for c in self.components if not c.alive()]
        if dead:
            raise ComponentDied(f"Airflow component(s) exited: {', '.join(dead)}{self.log_tails()}")

    def log_tails(self, chars: int = 2500) -> str:
        """The end of every component's log, for failure messages."""
        parts = []
        for component in self.components:
            text = component.log_file.read_text(errors="replace") if component.log_file.exists() else ""
            parts.append(f"\n----- {component.name} ({component.log_file}) -----\n{text[-chars:]}")
        return "".join(parts)

    def wait_ready(self, dag_ids: list[str], timeout: float = 240) -> None:
        """Until the API answers, the scheduler, triggerer and dag-processor report healthy, the Celery
        worker is ready, and every DAG in ``dag_ids`` is parsed."""

        def healthy() -> bool:
            self.check_alive()
            health = self._http("GET", "/api/v2/monitor/health", auth=False)
            wanted = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            return all((health.get(part) or {}).get("status") == "healthy" for part in wanted)

        def worker_ready() -> bool:
            self.check_alive()
            worker = next(c for c in self.components if c.name == "worker")
            return b" ready." in worker.log_file.read_bytes()

        def parsed() -> bool:
            self.check_alive()
            return all(
                self.api("GET", f"/api/v2/dags/{dag_id}").get("dag_id") == dag_id for dag_id in dag_ids
            )

        started = time.monotonic()
        for what, check in (
            ("healthy components", healthy),
            ("the Celery worker", worker_ready),
            ("the DAGs", parsed),
        ):
            left = timeout - (time.monotonic() - started)
            wait_for(what, check, max(left, 1.0), interval=2.0, context=self.log_tails)

    # ------------------------------------------------------------------ REST API (what the UI calls)
    def token(self) -> str:
        """A JWT from ``POST /auth/token`` with the admin's user name and password."""
        if self._token is None:
            body = self._http(
                "POST", "/auth/token", {"username": ADMIN_USER, "password": self.password}, auth=False
            )
            self._token = str(body["access_token"])
        return self._token

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return self._http(method, path, body, auth=True)

    def _http(self, method: str, path: str, body: Any = None, *, auth: bool) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {self.token()}"} if auth else {}
        response = httpx.request(method, self.api_url + path, json=body, headers=headers, timeout=30)
        if response.status_code >= 400:
            raise ApiError(method, path, response.status_code, response.text)
        return response.json() if response.content else None

    def unpause(self, dag_id: str, paused: bool = False) -> None:
        result = self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})
        assert result["is_paused"] is paused, result

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """Trigger a run as the UI's trigger form does; returns its run id."""
        run = self.api(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": dict(conf or {})}
        )
        return str(run["dag_run_id"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=id")["dag_runs"])

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 240) -> dict[str, Any]:
        """Until the run finishes; raises if it does not succeed (with the component logs' tails)."""

        def finished() -> dict[str, Any] | None:
            self.check_alive()
            run = self.run(dag_id, run_id)
            return run if run["state"] in ("success", "failed") else None

        run = wait_for(f"run {run_id} of {dag_id}", finished, timeout, interval=2.0, context=self.log_tails)
        if run["state"] != "success":
            raise AssertionError(
                f"run {run_id} of {dag_id} ended {run['state']}{self.task_log_tails(dag_id, run_id)}"
            )
        return dict(run)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """A task's XCom, read (and decoded) through the REST API."""
        entry = self.api(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
            "?deserialize=true",
        )
        value = entry["value"]
        return json.loads(value) if isinstance(value, str) else value

    def summary(self, dag_id: str, run_id: str) -> Any:
        """The run summary: the ``add_missing_users`` return value."""
        return self.xcom(dag_id, run_id, "add_missing_users")

    # ------------------------------------------------------------------ evidence
    def task_log_files(self) -> list[Path]:
        return sorted(p for p in self.logs.rglob("*") if p.is_file())

    def task_log_tails(self, dag_id: str, run_id: str, chars: int = 3000) -> str:
        parts = []
        for path in self.task_log_files():
            if f"dag_id={dag_id}" in str(path) and f"run_id={run_id}" in str(path):
                parts.append(f"\n----- {path} -----\n{path.read_text(errors='replace')[-chars:]}")
        return "".join(parts) or self.log_tails()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows from this cluster's metadata database."""
        import psycopg2

        conn = psycopg2.connect(
            host=self.services.pg_host,
            port=self.services.pg_port,
            user=self.services.pg_user,
            dbname=self.database,
            connect_timeout=5,
        )
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        finally:
            conn.close()


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, text: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {text[:2000]}")
        self.status = status
