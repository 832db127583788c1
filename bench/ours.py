"""Our code path, timed: the task bodies of ``tasks.py``, each in its own process as Airflow runs them.

Airflow runs every task instance in a process of its own and hands XComs between them as JSON. This
module does the same without a scheduler: ``fetch_token``, ``resolve_members`` and ``add_missing_users``
each run as ``python -m bench.ours --task …`` in a fresh process, and a task's return value goes to the
next one as a JSON file (what the XCom table would hold). Each process prints one JSON line: its wall
and CPU time, its import time, its RSS once Airflow, the SDKs and our package are imported (the import
baseline) and its peak RSS (``ru_maxrss``).

What is timed in each process is the task's work: reading its upstream XComs, the task body and writing
its XCom (``json.dumps``). For ``resolve_members`` that is the Graph group look-up and transitive
members (msgraph-sdk, through the Airflow msgraph connection) and member resolution; for
``add_missing_users`` the Key Vault read of the pinned token version, the SCIM user list, the plan, the
guard and the creates (for an account-target entry: a token from the managed identity's Databricks
connection, the account's user list, the workspace's permission assignments, the assigned groups'
members, the plan, then creates and assignments). The modules a task imports lazily are imported before the clock starts (an
Airflow worker pays that once per task process too; it is reported as ``import_seconds``).
``fetch_token`` runs first, untimed, and its requests are cleared from the sandbox log: it is a fixed
cost per run (Key Vault, ``/Me`` and a one-user list), the same whatever the tenant size.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

TASKS = ("fetch_token", "resolve_members", "add_missing_users")

#: What each task body imports lazily on its first call (hooks, SDKs, the Azure provider). Imported
#: before the clock starts; a module missing after a hook rewrite is simply skipped.
_LAZY_IMPORTS: dict[str, tuple[str, ...]] = {
    "fetch_token": (),
    "resolve_members": (
        "httpx",
        "tenacity",
        "msgraph",
        "kiota_abstractions.base_request_configuration",
        "airflow.providers.microsoft.azure.hooks.msgraph",
        "entra_provisioning.hooks.entra",
    ),
    "add_missing_users": (
        "httpx",
        "tenacity",
        "azure.identity",
        "azure.keyvault.secrets",
        "airflow.providers.microsoft.azure.utils",
        "entra_provisioning.hooks.key_vault",
        "entra_provisioning.hooks.scim",
        # The account target's token source (a Databricks connection).
        "entra_provisioning.hooks.databricks_auth",
    ),
}

#: A task runner: (task, scim_concurrency, scim_max_creates_per_second, XCom directory, more entry keys).
Runner = Callable[[str, int, float, Path, Mapping[str, Any]], dict[str, Any]]


def _max_rss_kb() -> int:
    # Linux reports ru_maxrss in KiB.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _current_rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _xcom_file(xcom_dir: Path, task: str) -> Path:
    return xcom_dir / f"{task}.json"


def run_task(
    task: str,
    endpoints: Mapping[str, Any],
    concurrency: int,
    creates_per_second: float,
    xcom_dir: Path,
    *,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one task body as its Airflow task process would; its XCom goes to ``xcom_dir/<task>.json``.

    :param options: more keys of the bench entry (``target: account``, account paces).
    """
    from demo.sandbox_airflow import connections_env
    from sandbox.client import env_for

    # The sandbox's trust and identity variables and the Airflow connections, as an operator sets them;
    # restored afterwards so that an in-process caller (the smoke test) keeps its own environment.
    wanted = {**env_for(dict(endpoints)), **connections_env(endpoints)}
    saved = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        return _run_task(task, endpoints, concurrency, creates_per_second, xcom_dir, options=options or {})
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run_task(
    task: str,
    endpoints: Mapping[str, Any],
    concurrency: int,
    creates_per_second: float,
    xcom_dir: Path,
    *,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    import_started = time.perf_counter()
    import airflow.sdk  # noqa: F401  (what every Airflow task process has loaded)

    from bench.world import workspaces_yaml
    from entra_provisioning import tasks
    from entra_provisioning.config import parse_config

    for module in _LAZY_IMPORTS[task]:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    (ws,) = parse_config(
        workspaces_yaml(endpoints, concurrency, creates_per_second, options), "bench.yaml"
    ).workspaces
    import_seconds = time.perf_counter() - import_started
    rss_after_import = _current_rss_kb()

    cpu_started = _cpu_seconds()
    started = time.perf_counter()
    summary: dict[str, Any] | None = None
    if task == "fetch_token":
        value: dict[str, Any] = tasks.fetch_token(ws)
    elif task == "resolve_members":
        value = tasks.resolve_members(ws)
    elif task == "add_missing_users":
        # Airflow's task runner pulls both upstream XComs as JSON before the body runs.
        token_facts = json.loads(_xcom_file(xcom_dir, "fetch_token").read_text(encoding="utf-8"))
        members = json.loads(_xcom_file(xcom_dir, "resolve_members").read_text(encoding="utf-8"))
        value = tasks.add_missing_users(ws, token_facts, members, {})
        del members
        summary = value
    else:
        raise ValueError(f"unknown task {task!r}")
    # ... and pushes the return value as JSON.
    pushed = json.dumps(value)
    _xcom_file(xcom_dir, task).write_text(pushed, encoding="utf-8")
    finished = time.perf_counter()
    cpu = _cpu_seconds() - cpu_started
    out: dict[str, Any] = {
        "task": task,
        "seconds": finished - started,
        "cpu_seconds": cpu,
        "import_seconds": import_seconds,
        "rss_after_import_kb": rss_after_import,
        # ru_maxrss is updated lazily by the kernel; the current RSS can be a little above it.
        "max_rss_kb": max(_max_rss_kb(), _current_rss_kb()),
        "xcom_bytes": len(pushed),
    }
    if summary is not None:
        out["summary"] = summary
    return out


def task_in_fresh_process(endpoints_file: str, env: Mapping[str, str], timeout: float) -> Runner:
    """A runner that starts ``python -m bench.ours --task …`` for each task, as Airflow would."""

    def runner(
        task: str, concurrency: int, creates_per_second: float, xcom_dir: Path, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        args = [
            sys.executable,
            "-m",
            "bench.ours",
            "--task",
            task,
            "--endpoints",
            endpoints_file,
            "--concurrency",
            str(concurrency),
            "--creates-per-second",
            str(creates_per_second),
            "--xcom-dir",
            str(xcom_dir),
            "--options",
            json.dumps(dict(options)),
        ]
        done = subprocess.run(
            args, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"bench.ours --task {task} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    return runner


def task_in_this_process(endpoints: Mapping[str, Any]) -> Runner:
    """A runner that calls :func:`run_task` here: the same code path, for the smoke test."""

    def runner(
        task: str, concurrency: int, creates_per_second: float, xcom_dir: Path, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        return run_task(task, endpoints, concurrency, creates_per_second, xcom_dir, options=options)

    return runner


def run(
    runner: Runner,
    concurrency: int,
    creates_per_second: float,
    clear_log: Callable[[], None],
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Provision the bench workspace once, one task after the other; return the figures.

    :param options: more keys of the bench entry (``target: account`` and the account paces).
    """
    with tempfile.TemporaryDirectory(prefix="bench-xcom-") as tmp:
        xcom_dir = Path(tmp)
        per_task: dict[str, dict[str, Any]] = {}
        for task in TASKS:
            per_task[task] = runner(task, concurrency, creates_per_second, xcom_dir, dict(options or {}))
            if task == "fetch_token":
                clear_log()
    resolve, add = per_task["resolve_members"], per_task["add_missing_users"]
    summary = add.pop("summary")
    return {
        "seconds": resolve["seconds"] + add["seconds"],
        "resolve_seconds": resolve["seconds"],
        "add_seconds": add["seconds"],
        "cpu_seconds": resolve["cpu_seconds"] + add["cpu_seconds"],
        "summary": summary,
        "tasks": per_task,
        # The larger of the two timed tasks' peaks: what a worker slot must hold for this run.
        "max_rss_kb": max(resolve["max_rss_kb"], add["max_rss_kb"]),
        "rss_before_work_kb": max(resolve["rss_after_import_kb"], add["rss_after_import_kb"]),
        "concurrency": concurrency,
        "creates_per_second": creates_per_second,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--endpoints", required=True, help="the sandbox's endpoints.json")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--creates-per-second", type=float, required=True)
    parser.add_argument("--xcom-dir", type=Path, required=True, help="where task XComs are read/written")
    parser.add_argument("--options", default="{}", help="more keys of the bench entry, as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with open(args.endpoints, encoding="utf-8") as handle:
        endpoints = json.load(handle)
    result = run_task(
        args.task,
        endpoints,
        args.concurrency,
        args.creates_per_second,
        args.xcom_dir,
        options=json.loads(args.options),
    )
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
