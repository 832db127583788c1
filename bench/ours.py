"""Our code path, timed: the task bodies of ``tasks.py`` called directly, without an Airflow scheduler.

Run as ``python -m bench.ours`` in a fresh process (one per scenario), so that its peak RSS is the
provisioning work's alone. It prints one JSON line: wall times, the run summary and ``ru_maxrss``.

What is timed is exactly what ``resolve_members`` and ``add_missing_users`` do: Graph group look-up and
transitive members (msgraph-sdk, through the Airflow msgraph connection), member resolution, the XCom
record's JSON round trip, the Key Vault read of the pinned token version, the SCIM user list, the plan,
the guard and the creates. ``fetch_token`` runs first, untimed, and its requests are cleared from the
sandbox log: it is a fixed cost per run (Key Vault, ``/Me`` and a one-user list), the same whatever the
tenant size.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from typing import Any


def _rss_kb() -> int:
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


def run(endpoints: dict[str, Any], concurrency: int, creates_per_second: float) -> dict[str, Any]:
    """Provision the bench workspace once with the product's task bodies; return figures."""
    from demo.sandbox_airflow import connections_env
    from sandbox.client import env_for

    # The sandbox's trust and identity variables and the Airflow connections, as an operator sets them;
    # restored afterwards so that an in-process caller (the smoke test) keeps its own environment.
    wanted = {**env_for(endpoints), **connections_env(endpoints)}
    saved = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        return _run(endpoints, concurrency, creates_per_second)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run(endpoints: dict[str, Any], concurrency: int, creates_per_second: float) -> dict[str, Any]:
    from bench.world import workspaces_yaml
    from entra_provisioning import tasks
    from entra_provisioning.config import parse_config
    from sandbox.client import ControlClient

    (ws,) = parse_config(workspaces_yaml(endpoints, concurrency, creates_per_second), "bench.yaml").workspaces
    control = ControlClient(endpoints["control"], endpoints["ca_file"])
    try:
        token_facts = tasks.fetch_token(ws)
        rss_before_kb = _current_rss_kb()
        control.clear_log()
        cpu_started = _cpu_seconds()
        started = time.perf_counter()
        record = tasks.resolve_members(ws)
        # Airflow stores the record as a JSON XCom between the two tasks.
        record = json.loads(json.dumps(record))
        resolved = time.perf_counter()
        summary = tasks.add_missing_users(ws, token_facts, record, {})
        finished = time.perf_counter()
        cpu = _cpu_seconds() - cpu_started
    finally:
        control.close()
    return {
        "seconds": finished - started,
        "resolve_seconds": resolved - started,
        "add_seconds": finished - resolved,
        "cpu_seconds": cpu,
        "summary": summary,
        "rss_before_work_kb": rss_before_kb,
        "max_rss_kb": _rss_kb(),
        "concurrency": concurrency,
        "creates_per_second": creates_per_second,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoints", required=True, help="the sandbox's endpoints.json")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--creates-per-second", type=float, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with open(args.endpoints, encoding="utf-8") as handle:
        endpoints = json.load(handle)
    result = run(endpoints, args.concurrency, args.creates_per_second)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
