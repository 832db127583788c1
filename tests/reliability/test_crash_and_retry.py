"""Crash and retry: add_missing_users is SIGKILLed after k creates, then retried as Airflow would.

The killed attempt runs the real task body in a child process (same code, same sandbox); the retry runs
it again. Nothing is lost or doubled, because every attempt lists what exists before it writes.
"""

from __future__ import annotations

from collections import Counter

from entra_provisioning import tasks
from entra_provisioning.config import WorkspaceConfig

from .conftest import kill_add_missing_users_when, seed_with, team, workspace

TEAM = "Crash Team"
SIZE = 30
KILL_AFTER = 8


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

    kill_add_missing_users_when(
        connected, ws, facts, members, lambda: creates_201(connected) >= KILL_AFTER, tmp_path, "k creates"
    )

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
