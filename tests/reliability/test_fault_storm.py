"""Fault storms: throttling, server errors and dropped connections on Graph, Key Vault and SCIM at once.

The three real task bodies run in-process against the sandbox (the way Airflow would call them, minus the
scheduler). The sandbox's state and request log are the truth the run's summary is checked against.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from entra_provisioning import tasks
from entra_provisioning.hooks import entra
from entra_provisioning.hooks.key_vault import KeyVaultSecretHook, KeyVaultUnavailableError
from entra_provisioning.hooks.scim import DatabricksScimHook, ScimThrottleCeilingError
from entra_provisioning.plan import Resolution

from .conftest import seed_with, team, workspace

STORM_TEAM = "Storm Team"
STORM_SIZE = 24


def storm_rules(system: str) -> list[dict[str, object]]:
    """Each system's first requests fail once each way (so every fault kind surely happens whatever the
    request order), then ~30% are throttled (Retry-After: 1 s, the sandbox's smallest), 5% get server
    errors and 4% have their connection dropped."""
    return [
        {"system": system, "rate_429": 1.0, "retry_after": 1, "max_faults": 1},
        {"system": system, "rate_500": 1.0, "max_faults": 1},
        {"system": system, "rate_drop": 1.0, "max_faults": 1},
        {
            "system": system,
            "rate_429": 0.30,
            "retry_after": 1,
            "rate_500": 0.025,
            "rate_503": 0.025,
            "rate_drop": 0.04,
        },
    ]


def statuses(counts: dict, system: str, endpoint: str) -> Counter[str]:
    return Counter(counts.get(system, {}).get(endpoint, {}))


def test_fault_storm_creates_every_user_exactly_once_and_the_summary_tells_the_truth(connected) -> None:
    users, group = team(STORM_TEAM, STORM_SIZE)
    connected.control.reset(seed_with(connected, users, [group]))
    before = connected.control.workspace_user_names("ws-beta")
    connected.control.set_faults(
        [*storm_rules("graph"), *storm_rules("vault:kv-demo"), *storm_rules("workspace:ws-beta")],
        seed=20240501,
    )
    # Creates paced under the workspace's own write limit, so throttling comes from the storm alone.
    ws = workspace(connected, groups=(STORM_TEAM,), scim_max_creates_per_second=15.0)

    started = time.monotonic()
    facts = tasks.fetch_token(ws)
    members = tasks.resolve_members(ws)
    summary = tasks.add_missing_users(ws, facts, members, {})
    elapsed = time.monotonic() - started

    expected = {u["userPrincipalName"] for u in users}
    after_users = connected.control.workspace_users("ws-beta")
    names = [u["userName"] for u in after_users]
    # Every expected user exists, exactly once; nobody else was added and nobody removed.
    assert Counter(names) == Counter(set(names))
    assert set(names) == before | expected

    counts = connected.control.counts()
    creates = statuses(counts, "workspace:ws-beta", "scim.users.create")
    # The storm really blew on every system: throttling, server errors and drops all happened.
    for system in ("graph", "vault:kv-demo", "workspace:ws-beta"):
        seen = Counter[str]()
        for by_status in counts[system].values():
            seen.update(by_status)
        assert seen["429"] and seen["500"] and seen["dropped"], (system, seen)
    assert sum(creates[s] for s in ("429", "500", "503", "dropped")) > 0  # creates themselves were hit

    # No create succeeded twice: one 201 per new user, and no 409 (nobody else created them).
    assert creates["201"] == STORM_SIZE
    assert creates["409"] == 0
    # Retries are bounded: at most the policy's attempts of POSTs per user, and the run ends in bounded time.
    assert sum(creates.values()) <= STORM_SIZE * DatabricksScimHook.default_retry_policy.attempts
    assert elapsed < 180
    # One retry layer per system: Graph's two logical calls (group look-up, one member page) cost at most
    # the policy's attempts each (kiota's own retries are off); each of the two Key Vault reads costs at
    # most its attempts plus the one unauthenticated challenge request (azure-core's retries are off).
    graph_requests = sum(n for ep in counts["graph"].values() for n in ep.values())
    vault_requests = sum(n for ep in counts["vault:kv-demo"].values() for n in ep.values())
    assert graph_requests <= 2 * entra.EntraGroupsHook.default_retry_policy.attempts
    assert vault_requests <= 2 * (1 + KeyVaultSecretHook.default_retry_policy.attempts)
    # Through every retry, the PAT went to the configured workspace and nowhere else.
    workspace_origin = connected.workspace_host("ws-beta").split("//", 1)[1]
    assert connected.hosts_for_token(connected.pat("ws-beta")) == {workspace_origin}

    # The summary equals the sandbox's truth.
    assert summary["to_add"] == STORM_SIZE
    assert summary["added"] == creates["201"] == len(set(names) - before)
    assert sorted(summary["added_user_names"]) == sorted(expected)
    assert summary["existed_on_create"] == 0
    assert summary["failed"] == 0
    assert summary["already_present"] == 0
    assert summary["members_resolved"] == STORM_SIZE


def test_graph_server_errors_are_retried_and_a_lasting_outage_is_left_to_airflow(connected) -> None:
    ws = workspace(connected, groups=("Data Engineers",))
    # Two 500s (which msgraph-sdk's own middleware does not retry), then Graph recovers.
    connected.control.set_faults(
        [{"system": "graph", "endpoint": "graph.groups.transitiveMembers", "rate_500": 1.0, "max_faults": 2}]
    )
    record = tasks.resolve_members(ws)
    assert len(Resolution.from_record(record).members) == 4  # five people, one of them disabled
    statuses_seen = [e["status"] for e in connected.control.log(endpoint="graph.groups.transitiveMembers")]
    assert statuses_seen == [500, 500, 200]

    # A lasting outage: bounded attempts, then an error Airflow's retries handle (not AirflowFailException).
    connected.control.set_faults(
        [{"system": "graph", "endpoint": "graph.groups.transitiveMembers", "rate_500": 1.0}]
    )
    connected.control.clear_log()
    with pytest.raises(entra.GraphUnavailableError) as info:
        tasks.resolve_members(ws)
    assert str(info.value) == (
        "Microsoft Graph kept failing while listing members of Entra group 'Data Engineers' "
        f"(HTTP 500: Injected server error., {entra.EntraGroupsHook.default_retry_policy.attempts} attempts); Airflow will retry the task"
    )
    assert (
        len(connected.control.log(endpoint="graph.groups.transitiveMembers"))
        == entra.EntraGroupsHook.default_retry_policy.attempts
    )


HOURS = 7200


def test_scim_retry_after_beyond_the_ceiling_fails_the_task_instead_of_sleeping(connected) -> None:
    ws = workspace(connected, groups=("Data Engineers",))
    facts = tasks.fetch_token(ws)
    members = tasks.resolve_members(ws)
    before = connected.control.workspace_user_names("ws-beta")
    connected.control.set_faults(
        [
            {
                "system": "workspace:ws-beta",
                "endpoint": "scim.users.create",
                "rate_429": 1.0,
                "retry_after": HOURS,
            }
        ]
    )
    started = time.monotonic()
    with pytest.raises(ScimThrottleCeilingError) as info:
        tasks.add_missing_users(ws, facts, members, {})
    assert time.monotonic() - started < 30
    assert str(info.value) == (
        f"Databricks asked to retry after {HOURS} s, more than the 120 s ceiling; "
        "failing so that Airflow can retry the task later"
    )
    # Nothing was created.
    assert connected.control.workspace_user_names("ws-beta") == before


def test_scim_ceiling_applies_to_the_token_check_too(connected) -> None:
    connected.control.set_faults(
        [{"system": "workspace:ws-beta", "endpoint": "scim.me", "rate_429": 1.0, "retry_after": HOURS}]
    )
    started = time.monotonic()
    with pytest.raises(ScimThrottleCeilingError, match=f"retry after {HOURS} s"):
        tasks.fetch_token(workspace(connected))
    assert time.monotonic() - started < 30


def test_key_vault_retry_after_beyond_the_ceiling_fails_the_task_instead_of_sleeping(connected) -> None:
    connected.control.set_faults(
        [{"system": "vault:kv-demo", "endpoint": "vault.secrets.get", "rate_429": 1.0, "retry_after": HOURS}]
    )
    started = time.monotonic()
    with pytest.raises(KeyVaultUnavailableError) as info:
        tasks.fetch_token(workspace(connected))
    assert time.monotonic() - started < 30
    assert str(info.value) == (
        f"Key Vault asked to retry reading secret 'ws-beta-pat' in {connected.vault_url()} after {HOURS} s, "
        "more than the 120 s ceiling; failing so that Airflow can retry the task later"
    )


def test_creates_applied_but_never_answered_count_once_as_added(connected) -> None:
    # The server stores the user, then the connection drops before the 201: the retry is answered 409,
    # which is our own earlier create, not someone else's user.
    users, group = team("Lost Answers", 16)
    connected.control.reset(seed_with(connected, users, [group]))
    before = connected.control.workspace_user_names("ws-beta")
    connected.control.set_faults(
        [{"system": "workspace:ws-beta", "endpoint": "scim.users.create", "rate_drop_after": 0.25}], seed=7
    )
    # Paced under the workspace's 20 creates/s, so that retries of lost answers are not also throttled:
    # this test is about the accounting of lost answers, and six lost attempts in a row for one user
    # (a failure the task reports) would only blur it.
    ws = workspace(connected, groups=("Lost Answers",), scim_max_creates_per_second=10.0)
    summary = tasks.add_missing_users(ws, tasks.fetch_token(ws), tasks.resolve_members(ws), {})

    names = [u["userName"] for u in connected.control.workspace_users("ws-beta")]
    assert Counter(names) == Counter(set(names))
    created = set(names) - before
    assert created == {u["userPrincipalName"] for u in users}
    creates = connected.control.log(endpoint="scim.users.create")
    lost = sum(1 for e in creates if e["fault"] == "drop_after")
    assert lost > 0  # some answers really were lost after the write
    answered_201 = sum(1 for e in creates if e["status"] == 201)
    assert answered_201 < len(created)  # so the 201s alone undercount what this run created
    # The summary matches the sandbox's truth: everyone this run created is "added", nobody "existed".
    assert summary["added"] == len(created) == 16
    assert summary["existed_on_create"] == 0
    assert summary["failed"] == 0


def test_a_refused_retry_after_does_not_park_the_other_create_workers(connected) -> None:
    # Creates share one pacer: a 429 pushes every worker back by its Retry-After. A Retry-After over the
    # ceiling fails the task; it must not first push the shared schedule hours ahead, or a worker already
    # past its abort check would sleep that long before noticing.
    connected.control.set_faults(
        [{"system": "workspace:ws-beta", "endpoint": "scim.me", "rate_429": 1.0, "retry_after": HOURS}]
    )
    with DatabricksScimHook(connected.workspace_host("ws-beta"), connected.pat("ws-beta")) as scim:
        with pytest.raises(ScimThrottleCeilingError):
            scim.me()
        started = time.monotonic()
        scim.pacer.wait()  # what the next create would do
        assert time.monotonic() - started < 1.0
