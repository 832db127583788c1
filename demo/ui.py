"""``make ui``: ``airflow standalone`` with the demo DAGs against the local sandbox, to click through.

Starts the sandbox with the demo tenant, writes a workspaces file for it, and runs ``airflow standalone``
(scheduler, dag-processor, api-server and triggerer on a throwaway SQLite home under ``.tmp/ui``) with
the same environment ``make demo`` uses. Prints the URL and an admin password once the UI answers.
Ctrl-C (or SIGTERM) stops Airflow and then the sandbox.

Options: ``--port`` (default 8080, or ``$UI_PORT``), ``--ready-timeout`` (seconds, default 300).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from types import FrameType

from demo.sandbox_airflow import DEMO_WORKSPACES, REPO, airflow_env, workspaces_yaml
from entra_provisioning.config import DAG_ID_PREFIX

WORK = REPO / ".tmp" / "ui"
ADMIN_USER = "admin"
#: The demo's Graph pool (settings.graph_pool): every resolve_members runs in it, two workspaces at a time.
GRAPH_POOL = {"graph_pool": "entra_graph", "graph_pool_slots": 2}


def standalone_env(
    endpoints: dict, airflow_home: Path, config_file: Path, port: int, password_file: Path
) -> dict[str, str]:
    """``make demo``'s environment plus what the UI needs: loopback-only API, a known admin login."""
    env = airflow_env(endpoints, airflow_home, config_file)
    env.update(
        {
            # standalone starts its components as ``airflow …`` from PATH: make it this virtualenv's.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
            # The demo DAGs have no schedule: unpaused, they run only when someone presses Trigger.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        }
    )
    return env


def create_graph_pool(env: dict[str, str], config_file: Path) -> subprocess.CompletedProcess[str]:
    """``python -m entra_provisioning pool --create`` for the demo's file, in Airflow's environment (as
    docker-compose's airflow-init does): a task whose pool is missing would never be scheduled."""
    return subprocess.run(
        [sys.executable, "-m", "entra_provisioning", "pool", "--create", str(config_file)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    wanted = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with suppress(httpx.HTTPError, ValueError):
            health = httpx.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5).json()
            if all((health.get(part) or {}).get("status") == "healthy" for part in wanted):
                return True
        time.sleep(2)
    return False


def _stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGINT to standalone's process group (as Ctrl-C would), then SIGTERM, then SIGKILL, ``grace`` s apart."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        if proc.poll() is not None:
            break
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left
    with suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    from sandbox.client import SandboxProcess

    parser = argparse.ArgumentParser(prog="make ui", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=int(os.environ.get("UI_PORT") or 8080))
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    # Ctrl-C must work even when started from a shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    airflow_home, config_file = WORK / "airflow", WORK / "workspaces.yaml"
    password_file, log_file = WORK / "passwords.json", WORK / "standalone.log"
    password = secrets.token_urlsafe(12)
    password_file.write_text(json.dumps({ADMIN_USER: password}) + "\n")

    print("Starting the sandbox (Entra ID, Key Vault, Graph, Databricks SCIM on 127.0.0.1) …")
    with SandboxProcess(WORK / "sandbox") as box:
        config_file.write_text(workspaces_yaml(box.endpoints, settings=GRAPH_POOL))
        env = standalone_env(box.endpoints, airflow_home, config_file, args.port, password_file)
        print(f"Starting airflow standalone (home {airflow_home}, log {log_file}) …")
        with log_file.open("wb") as log:
            proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("airflow")), "standalone"],
                env=env,
                cwd=WORK,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so that stopping it reaches every component it started
            )
        try:
            if not _wait_ready(args.port, proc, args.ready_timeout):
                print(f"Airflow did not become ready; the end of {log_file}:", file=sys.stderr)
                print(log_file.read_text(errors="replace")[-4000:], file=sys.stderr)
                return 1
            # Once standalone has migrated the database; the demo DAGs run only when triggered.
            pool = create_graph_pool(env, config_file)
            if pool.returncode != 0:
                print(f"Could not create the Graph pool:\n{pool.stdout}{pool.stderr}", file=sys.stderr)
                return 1
            print(pool.stdout.strip())
            dags = ", ".join(f"{DAG_ID_PREFIX}{ws.name}" for ws in DEMO_WORKSPACES)
            print(
                f"\nAirflow is ready: http://127.0.0.1:{args.port}\n"
                f"  user {ADMIN_USER}, password {password}\n"
                f"  DAGs: {dags} (each DAG's Docs tab shows the workspace, groups and vault; Trigger opens\n"
                f"  the form with dry_run and the guard override; the summary is the add_missing_users XCom)\n"
                f"  Overview of every workspace: Browse → Entra provisioning "
                f"(http://127.0.0.1:{args.port}/plugin/entra-provisioning)\n"
                f"  Sandbox control API: {box.endpoints['control']}/control/state\n"
                f"Press Ctrl-C to stop Airflow and the sandbox.",
                flush=True,
            )
            while proc.poll() is None:
                time.sleep(1)
            print(f"airflow standalone exited with {proc.returncode}; see {log_file}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nStopping Airflow …", flush=True)
            return 0
        finally:
            _stop(proc)
            print("Stopping the sandbox …", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
