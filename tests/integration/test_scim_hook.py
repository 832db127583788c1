"""DatabricksScimHook over real HTTPS against the sandbox's workspace and account SCIM APIs."""

from __future__ import annotations

import pytest

from entra_provisioning import USER_AGENT
from entra_provisioning.hooks.scim import SCIM_RETRY_POLICY, DatabricksScimHook, ScimAuthError
from entra_provisioning.plan import Member


def member(name: str, oid: str | None = None) -> Member:
    return Member(
        object_id=oid or f"oid-{name}", user_name=name, display_name=name.split("@")[0], groups=("g",)
    )


def hook(sandbox, workspace: str = "ws-alpha", **kwargs) -> DatabricksScimHook:
    kwargs.setdefault("max_creates_per_second", 200)
    return DatabricksScimHook(sandbox.workspace_host(workspace), sandbox.pat(workspace), **kwargs)


def test_check_admin_and_token_goes_to_that_workspace_only(sandbox_env) -> None:
    with hook(sandbox_env) as scim:
        assert scim.check_admin() == "admin@contoso.com"
    token = sandbox_env.pat("ws-alpha")
    assert sandbox_env.hosts_for_token(token) == {sandbox_env.workspace_host("ws-alpha").split("//")[1]}
    # Every request says who sent it, so Databricks' audit and support logs can tell our traffic apart.
    agents = {entry["user_agent"] for entry in sandbox_env.control.log(system="workspace:ws-alpha")}
    assert agents == {USER_AGENT}


def test_invalid_token_and_non_admin_are_refused_clearly(sandbox_env) -> None:
    with (
        DatabricksScimHook(sandbox_env.workspace_host(), "dapi-not-a-real-token") as scim,
        pytest.raises(ScimAuthError, match="invalid or expired") as info,
    ):
        scim.check_admin()
    assert "dapi-not-a-real-token" not in str(info.value)
    with (
        DatabricksScimHook(sandbox_env.workspace_host(), sandbox_env.pat(admin=False)) as scim,
        pytest.raises(ScimAuthError, match="not a workspace admin"),
    ):
        scim.check_admin()


def test_list_follows_server_capped_pages(sandbox_env) -> None:
    sandbox_env.control.set_workspace_limits("ws-alpha", page_cap=2)
    for i in range(5):
        sandbox_env.control.add_workspace_user("ws-alpha", f"extra{i}@contoso.com")
    with hook(sandbox_env) as scim:
        users = scim.list_users()
    names = {u.user_name for u in users}
    assert {f"extra{i}@contoso.com" for i in range(5)} <= names
    assert "bob.baker@contoso.com" in names  # seeded mixed-case, stored lower-case
    assert len(users) == len(sandbox_env.control.workspace_users("ws-alpha"))
    lists = sandbox_env.control.counts()["workspace:ws-alpha"]["scim.users.list"]
    assert sum(lists.values()) >= 4  # at least ceil(8 users / 2)


def test_create_adds_new_users_and_treats_409_as_already_there(sandbox_env) -> None:
    new = [member(f"new{i}@contoso.com") for i in range(6)]
    existing_other_case = member("ALICE.ARCHER@contoso.com".lower())
    with hook(sandbox_env) as scim:
        results = scim.create_users([*new, existing_other_case])
    assert results.added == sorted(m.user_name for m in new)
    assert results.existed == ["alice.archer@contoso.com"]
    assert results.failed == {}
    stored = {u["userName"]: u for u in sandbox_env.control.workspace_users("ws-alpha")}
    assert stored["new0@contoso.com"]["externalId"] == "oid-new0@contoso.com"
    assert stored["new0@contoso.com"]["displayName"] == "new0"


def test_one_bad_user_does_not_stop_the_others(sandbox_env) -> None:
    with hook(sandbox_env) as scim:
        results = scim.create_users([member("good1@contoso.com"), member("   "), member("good2@contoso.com")])
    assert results.added == ["good1@contoso.com", "good2@contoso.com"]
    (reason,) = results.failed.values()
    assert reason.startswith("HTTP 400")


def test_rate_limited_creates_honour_retry_after_and_all_land(sandbox_env) -> None:
    sandbox_env.control.set_workspace_limits(
        "ws-alpha", rates={"scim.users.create": 5}, retry_after_seconds=1
    )
    people = [member(f"burst{i}@contoso.com") for i in range(12)]
    with hook(sandbox_env, max_concurrency=4, max_creates_per_second=100) as scim:
        results = scim.create_users(people)
    assert len(results.added) == 12 and not results.failed
    assert scim.throttled_responses > 0
    creates = sandbox_env.control.counts()["workspace:ws-alpha"]["scim.users.create"]
    assert creates.get("201") == 12 and creates.get("429", 0) == scim.throttled_responses


def test_concurrency_limit_answered_as_500_request_limit_exceeded_is_retried(sandbox_env) -> None:
    sandbox_env.control.set_workspace_limits("ws-alpha", max_concurrent=1, concurrent_limit_status=500)
    sandbox_env.control.set_faults(
        [{"system": "workspace:ws-alpha", "endpoint": "scim.users.create", "latency_ms": 30}]
    )
    people = [member(f"conc{i}@contoso.com") for i in range(8)]
    # The real policy's back-off: a refusal without Retry-After is what the back-off itself has to space out.
    with hook(sandbox_env, max_concurrency=4, retry_policy=SCIM_RETRY_POLICY) as scim:
        results = scim.create_users(people)
    assert len(results.added) == 8 and not results.failed
    statuses = sandbox_env.control.counts()["workspace:ws-alpha"]["scim.users.create"]
    assert statuses.get("500", 0) > 0 and statuses["201"] == 8


def test_pacing_keeps_a_client_under_the_server_limit(sandbox_env) -> None:
    sandbox_env.control.set_workspace_limits("ws-alpha", rates={"scim.users.create": 20})
    with hook(sandbox_env, max_concurrency=4, max_creates_per_second=15) as scim:
        results = scim.create_users([member(f"paced{i}@contoso.com") for i in range(20)])
    assert len(results.added) == 20
    assert scim.throttled_responses == 0


def test_account_api_lists_with_100_per_page_and_creates(sandbox_env) -> None:
    host, account = sandbox_env.account_host, sandbox_env.account_id
    with DatabricksScimHook(host, sandbox_env.pat("account"), account_id=account) as scim:
        results = scim.create_users([member(f"acct{i}@contoso.com") for i in range(3)])
        users = scim.list_users()
    assert len(results.added) == 3
    assert {"acct0@contoso.com", "alice.archer@contoso.com"} <= {u.user_name for u in users}
