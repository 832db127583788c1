"""Crash and retry: add_missing_users is SIGKILLed after k creates, then retried as Airflow would.

The killed attempt runs the real task body in a child process (same code, same sandbox); the retry runs
it again. Nothing is lost or doubled, because every attempt lists what exists before it writes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

from demo.sandbox_airflow import REPO, connections_env
from entra_provisioning import tasks
from entra_provisioning.config import WorkspaceConfig

from .conftest import seed_with, team, workspace

TEAM = "Crash Team"
SIZE = 30
KILL_AFTER = 8

# The child rebuilds the entry and runs the task body exactly as the DAG's task would.
CHILD = """
import json, sys
from entra_provisioning.config import WorkspaceConfig
from entra_provisioning import tasks
args = json.load(sys.stdin)
raw = args["workspace"]
raw["entra_groups"] = tuple(raw["entra_groups"]); raw["tags"] = tuple(raw["tags"])
print(json.dumps(tasks.add_missing_users(WorkspaceConfig(**raw), args["facts"], args["members"], {})))
"""


def creates_201(sandbox) -> int:
    counts = sandbox.control.counts().get("workspace:ws-beta", {})
    return int((counts.get("scim.users.create") or {}).get("201", 0))


def test_killed_mid_way_then_retried_adds_everyone_exactly_once(connected, tmp_path) -> None:
    users, group = team(TEAM, SIZE)
    connected.control.reset(seed_with(connected, users, [group]))
    expected = {u["userPrincipalName"] for u in users}
    before = connected.control.workspace_user_names("ws-beta")
    # Slow, steady creates so the kill lands mid-way.
    ws: WorkspaceConfig = workspace(
        connected, groups=(TEAM,), scim_concurrency=2, scim_max_creates_per_second=6.0
    )
    facts = tasks.fetch_token(ws)
    members = tasks.resolve_members(ws)

    env = {**os.environ, **connected.env, **connections_env(connected.endpoints)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "plugins"), str(REPO)])
    payload = json.dumps({"workspace": dataclasses.asdict(ws), "facts": facts, "members": members})
    output = (tmp_path / "child.log").open("wb")  # a file, not a pipe: a full pipe would stall the child
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=output, stderr=output, env=env, cwd=REPO
    )
    try:
        assert child.stdin is not None
        child.stdin.write(payload.encode())
        child.stdin.close()
        deadline = time.monotonic() + 120
        while creates_201(connected) < KILL_AFTER:
            assert child.poll() is None, "the first attempt ended before it could be killed"
            assert time.monotonic() < deadline, "the first attempt never reached k creates"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        output.close()
    time.sleep(0.5)  # let any request the dead process had in flight finish on the server

    first = connected.control.workspace_user_names("ws-beta") - before
    assert KILL_AFTER <= len(first) < SIZE  # killed mid-way: some created, not all
    assert first <= expected

    # Airflow's retry: the same task body, same inputs.
    summary = tasks.add_missing_users(ws, facts, members, {})

    names = [u["userName"] for u in connected.control.workspace_users("ws-beta")]
    assert Counter(names) == Counter(set(names))  # nobody twice
    assert set(names) == before | expected  # everybody
    assert creates_201(connected) == SIZE  # one successful create per user across both attempts
    # The retry's summary: the first attempt's users are already present, the rest were added by it.
    assert summary["already_present"] == len(first)
    assert summary["to_add"] == SIZE - len(first)
    assert summary["added"] == SIZE - len(first)
    assert set(summary["added_user_names"]) == expected - first
    assert summary["existed_on_create"] == 0
    assert summary["failed"] == 0
