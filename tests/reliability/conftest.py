"""Reliability and security tests: the real task bodies and hooks against the sandbox under stress."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from demo.sandbox_airflow import connections_env
from entra_provisioning.config import WorkspaceConfig


@pytest.fixture
def connected(sandbox_env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The sandbox (reset, no faults), its trust and identity environment, and the Airflow connections
    an operator would define. Afterwards the start seed is restored (a reset with a custom seed becomes
    the seed later resets reload) and faults and knobs are cleared, so nothing leaks into other tests."""
    for key, value in connections_env(sandbox_env.endpoints).items():
        monkeypatch.setenv(key, value)
    try:
        yield sandbox_env
    finally:
        sandbox_env.control.reset(sandbox_env.seed)


def workspace(
    sandbox: Any,
    *,
    ws: str = "ws-beta",
    groups: tuple[str, ...] = ("Large Team",),
    secret: str = "ws-beta-pat",
    **options: Any,
) -> WorkspaceConfig:
    """A validated-shape workspace entry pointing at the sandbox (fast pace: the sandbox is local)."""
    options.setdefault("scim_max_creates_per_second", 200.0)
    options.setdefault("max_new_users_per_run", None)
    return WorkspaceConfig(
        name="reliability",
        databricks_instance=sandbox.workspace_host(ws),
        entra_groups=groups,
        pat_secret_url=sandbox.secret_url(secret),
        schedule=None,
        **options,
    )


def seed_with(sandbox: Any, users: list[dict[str, Any]], groups: list[dict[str, Any]]) -> dict[str, Any]:
    """The sandbox's start seed plus extra Graph users and groups (everything else unchanged)."""
    seed = copy.deepcopy(sandbox.seed)
    seed["users"] = [*seed["users"], *users]
    seed["groups"] = [*seed["groups"], *groups]
    return seed


def team(
    name: str, size: int, domain: str = "contoso.onmicrosoft.com"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``size`` ordinary users and a group ``name`` holding them."""
    slug = name.lower().replace(" ", "-")
    users = [
        {"userPrincipalName": f"{slug}-{i:03d}@{domain}", "displayName": f"{name} {i}", "mail": None}
        for i in range(size)
    ]
    return users, {"displayName": name, "members": [u["userPrincipalName"] for u in users]}


# The child rebuilds the entry and runs the task body exactly as the DAG's task would.
_CHILD = """
import json, sys
from entra_provisioning.config import WorkspaceConfig
from entra_provisioning import tasks
args = json.load(sys.stdin)
raw = args["workspace"]
for key in ("entra_groups", "tags", "entitlements"):
    raw[key] = tuple(raw[key])
print(json.dumps(tasks.add_missing_users(WorkspaceConfig(**raw), args["facts"], args["members"], {})))
"""


def kill_add_missing_users_when(
    sandbox: Any, ws: WorkspaceConfig, facts: Any, members: Any, reached: Any, log_dir: Any, what: str
) -> None:
    """Run ``add_missing_users`` in a child process and SIGKILL it once ``reached()`` is true, as a worker
    killed mid-task would be; then let any request it had in flight finish on the server."""
    import dataclasses
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from demo.sandbox_airflow import REPO

    env = {**os.environ, **sandbox.env, **connections_env(sandbox.endpoints)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "plugins"), str(REPO)])
    payload = json.dumps({"workspace": dataclasses.asdict(ws), "facts": facts, "members": members})
    output = (log_dir / "child.log").open("wb")  # a file, not a pipe: a full pipe would stall the child
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=output, stderr=output, env=env, cwd=REPO
    )
    try:
        assert child.stdin is not None
        child.stdin.write(payload.encode())
        child.stdin.close()
        deadline = time.monotonic() + 120
        while not reached():
            assert child.poll() is None, "the first attempt ended before it could be killed"
            assert time.monotonic() < deadline, f"the first attempt never reached {what}"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        output.close()
    time.sleep(0.5)
