"""Graph is retried in one layer, ours: kiota's RetryHandler must not sleep or resend underneath it.

Before this layer was the only one, a Retry-After between our 120 s ceiling and kiota's 180 s limit was
slept through by kiota (up to three times per request) before our code saw the 429: minutes per call,
and up to 4 requests per attempt.
"""

from __future__ import annotations

import time

import pytest

from entra_provisioning import USER_AGENT, tasks
from entra_provisioning.hooks.entra import EntraGroupsHook, GraphUnavailableError
from entra_provisioning.retry import RetryPolicy

from .conftest import workspace

BETWEEN_CEILINGS = 150  # above our 120 s ceiling, below kiota's 180 s


@pytest.mark.parametrize("seconds", [BETWEEN_CEILINGS, 7200])
@pytest.mark.parametrize(
    ("endpoint", "what"),
    [
        ("graph.groups.list", "looking up Entra group 'Data Engineers'"),
        ("graph.groups.transitiveMembers", "listing members of Entra group 'Data Engineers'"),
    ],
)
def test_a_retry_after_over_our_ceiling_fails_within_seconds(
    connected, endpoint: str, what: str, seconds: int
) -> None:
    connected.control.set_faults(
        [{"system": "graph", "endpoint": endpoint, "rate_429": 1.0, "retry_after": seconds}]
    )
    started = time.monotonic()
    with pytest.raises(GraphUnavailableError) as info:
        tasks.resolve_members(workspace(connected, groups=("Data Engineers",)))
    assert time.monotonic() - started < 15
    assert str(info.value) == (
        f"Microsoft Graph asked to retry {what} after {seconds} s, more than the 120 s ceiling; "
        "failing so that Airflow can retry the task later"
    )
    # One request: nobody resent it underneath us.
    assert len(connected.control.log(endpoint=endpoint)) == 1


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("endpoint", ["graph.groups.list", "graph.groups.transitiveMembers"])
def test_each_attempt_is_exactly_one_request(connected, endpoint: str, status: int) -> None:
    connected.control.set_faults(
        [{"system": "graph", "endpoint": endpoint, f"rate_{status}": 1.0, "retry_after": 0}]
    )
    hook = EntraGroupsHook(retry_policy=RetryPolicy(attempts=3, backoff_base=0.01, backoff_max=0.01))
    with pytest.raises(GraphUnavailableError, match=rf"\(HTTP {status}: Injected .*, 3 attempts\)"):
        hook.members_by_group(["Data Engineers"])
    assert len(connected.control.log(endpoint=endpoint)) == 3
    assert hook.retries == 2


def test_graph_requests_say_who_sent_them(connected) -> None:
    EntraGroupsHook().members_by_group(["Data Engineers"])
    agents = {entry["user_agent"] for entry in connected.control.log(system="graph")}
    assert agents and all(agent.startswith(f"{USER_AGENT} ") or agent == USER_AGENT for agent in agents)
