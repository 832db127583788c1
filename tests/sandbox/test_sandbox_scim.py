"""Databricks SCIM fidelity: databricks-sdk WorkspaceClient / AccountClient, plus refusals."""

from __future__ import annotations

import time

import httpx
import pytest


def _workspace(sandbox, token=None, workspace="ws-alpha"):
    from databricks.sdk import WorkspaceClient

    return WorkspaceClient(host=sandbox.workspace_host(workspace), token=token or sandbox.pat(workspace))


def _account(sandbox, token=None):
    from databricks.sdk import AccountClient

    return AccountClient(
        host=sandbox.account_host, account_id=sandbox.account_id, token=token or sandbox.pat("account")
    )


def test_workspace_client_lists_and_creates_users(sandbox_env):
    w = _workspace(sandbox_env)
    before = {u.user_name for u in w.users.list(attributes="userName")}
    assert "bob.baker@contoso.com" in before  # stored lower-case
    assert w.current_user.me().user_name == "admin@contoso.com"
    from databricks.sdk.service.iam import ComplexValue

    created = w.users.create(
        user_name="New.Person@Contoso.com",
        display_name="New Person",
        external_id="entra-object-id-1",
        entitlements=[ComplexValue(value="workspace-access")],
    )
    assert created.user_name == "new.person@contoso.com"
    assert created.id and created.external_id == "entra-object-id-1"
    assert w.users.get(created.id).display_name == "New Person"
    after = {u.user_name for u in w.users.list(attributes="userName")}
    assert after == before | {"new.person@contoso.com"}
    assert "new.person@contoso.com" in sandbox_env.control.workspace_user_names("ws-alpha")
    filtered = list(w.users.list(filter='userName eq "NEW.person@contoso.com"'))
    assert [u.id for u in filtered] == [created.id]


def test_workspace_client_conflict_is_case_insensitive(sandbox_env):
    from databricks.sdk.errors import ResourceConflict

    w = _workspace(sandbox_env)
    with pytest.raises(ResourceConflict):
        w.users.create(user_name="ALICE.archer@contoso.com")


def test_workspace_client_pages_through_a_small_page_cap(sandbox_env):
    sandbox_env.control.set_workspace_limits("ws-alpha", page_cap=2)
    for i in range(5):
        sandbox_env.control.add_workspace_user("ws-alpha", f"paged{i}@contoso.com")
    names = [u.user_name for u in _workspace(sandbox_env).users.list(attributes="userName")]
    assert len(names) == len(set(names)) == 9
    pages = sandbox_env.control.log(system="workspace:ws-alpha", endpoint="scim.users.list")
    assert len(pages) >= 5


def test_account_client_users(sandbox_env):
    a = _account(sandbox_env)
    created = a.users.create(user_name="Acct.User@Contoso.com", display_name="Acct User")
    assert created.user_name == "acct.user@contoso.com"
    names = {u.user_name for u in a.users.list()}
    assert {"alice.archer@contoso.com", "acct.user@contoso.com", "account-admin@contoso.com"} <= names


def test_account_api_serves_at_most_100_per_page(sandbox_clean):
    seeded = len(sandbox_clean.control.account_users())
    for i in range(120):
        sandbox_clean.control.add_account_user(f"bulk{i:03d}@contoso.com")
    url = sandbox_clean.endpoints["account"]["scim"] + "/Users"
    with httpx.Client(verify=sandbox_clean.ca_file) as http:
        page = http.get(
            url, params={"count": 500}, headers={"Authorization": f"Bearer {sandbox_clean.pat('account')}"}
        ).json()
    assert page["itemsPerPage"] == 100 and page["totalResults"] == seeded + 120 and page["startIndex"] == 1
    assert page["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:ListResponse"]


# ------------------------------------------------------------------------------------ raw wire checks


@pytest.fixture
def scim(sandbox_clean):
    base = sandbox_clean.endpoints["workspaces"]["ws-alpha"]["scim"]
    with httpx.Client(verify=sandbox_clean.ca_file) as http:
        http.headers["Authorization"] = f"Bearer {sandbox_clean.pat('ws-alpha')}"
        yield http, base, sandbox_clean


def test_filters_and_projection(scim):
    http, base, _ = scim
    co = http.get(f"{base}/Users", params={"filter": 'userName co "baker"'}).json()
    assert [u["userName"] for u in co["Resources"]] == ["bob.baker@contoso.com"]
    sw = http.get(f"{base}/Users", params={"filter": 'userName sw "ZED"', "attributes": "userName"}).json()
    assert sw["Resources"] == [{"id": sw["Resources"][0]["id"], "userName": "zed.unmanaged@contoso.com"}]
    excluded = http.get(f"{base}/Users", params={"excludedAttributes": "emails,groups"}).json()
    assert all("emails" not in u and "groups" not in u for u in excluded["Resources"])
    escaped = http.get(f"{base}/Users", params={"filter": r'displayName eq "Say \"hi\""'})
    assert escaped.status_code == 200 and escaped.json()["totalResults"] == 0
    none = http.get(f"{base}/Users", params={"filter": 'userName eq "nobody@x.com"'}).json()
    assert none["totalResults"] == 0 and "Resources" not in none


def test_scim_refusals(scim):
    http, base, sandbox = scim
    bad = http.get(f"{base}/Users", params={"filter": "userName eq unquoted"})
    assert bad.status_code == 400
    body = bad.json()
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"] and body["status"] == "400"
    assert http.get(f"{base}/Users", params={"filter": 'userName zz "a"'}).status_code == 400
    dup = http.post(
        f"{base}/Users",
        json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "BOB.BAKER@contoso.com"},
    )
    assert dup.status_code == 409
    assert dup.json()["status"] == "409" and "detail" in dup.json()
    with httpx.Client(verify=sandbox.ca_file) as anon:
        assert anon.get(f"{base}/Users").status_code == 401
        unknown = anon.get(f"{base}/Users", headers={"Authorization": "Bearer dapi-not-a-real-token"})
        assert unknown.status_code == 401
        other_ws = anon.get(f"{base}/Users", headers={"Authorization": f"Bearer {sandbox.pat('ws-beta')}"})
        assert other_ws.status_code == 401  # a PAT belongs to one workspace
        user = {"Authorization": f"Bearer {sandbox.pat('ws-alpha', admin=False)}"}
        assert anon.get(f"{base}/Me", headers=user).json()["userName"] == "alice.archer@contoso.com"
        denied = anon.post(f"{base}/Users", headers=user, json={"userName": "x@contoso.com"})
        assert denied.status_code == 403
        account_user = {"Authorization": "Bearer dapi-account-user-0001"}
        acct = sandbox.endpoints["account"]["scim"]
        assert anon.get(f"{acct}/Users", headers=account_user).status_code == 403


def test_groups_and_patch_members(scim):
    http, base, _ = scim
    created = http.post(f"{base}/Groups", json={"displayName": "analysts"})
    assert created.status_code == 201
    gid = created.json()["id"]
    alice = http.get(f"{base}/Users", params={"filter": 'userName eq "alice.archer@contoso.com"'}).json()
    uid = alice["Resources"][0]["id"]
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": uid}]}],
    }
    assert http.patch(f"{base}/Groups/{gid}", json=patch).status_code in (200, 204)
    group = http.get(f"{base}/Groups/{gid}").json()
    assert [m["value"] for m in group["members"]] == [uid]
    listed = http.get(f"{base}/Groups", params={"filter": 'displayName eq "analysts"'}).json()
    assert listed["totalResults"] == 1
    remove = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "remove", "path": f'members[value eq "{uid}"]'}],
    }
    assert http.patch(f"{base}/Groups/{gid}", json=remove).status_code in (200, 204)
    assert http.get(f"{base}/Groups/{gid}").json()["members"] == []
    spc = http.get(f"{base}/ServiceProviderConfig").json()
    assert spc["bulk"]["supported"] is False and spc["patch"]["supported"] is True


def test_rate_limit_and_concurrency_limit(scim):
    http, base, sandbox = scim
    sandbox.control.set_workspace_limits("ws-alpha", rates={"scim.users.create": 2}, retry_after_seconds=1)
    statuses = [
        http.post(f"{base}/Users", json={"userName": f"burst{i}@contoso.com"}).status_code for i in range(6)
    ]
    assert 429 in statuses and statuses[0] == 201
    limited = [e for e in sandbox.control.log(endpoint="scim.users.create") if e["status"] == 429]
    assert limited and limited[0]["fault"] == "rate_limit"


def test_created_users_can_be_invisible_to_lists_for_a_while(scim):
    http, base, sandbox = scim
    sandbox.control.set_workspace_limits("ws-alpha", visibility_delay_ms=400)
    assert http.post(f"{base}/Users", json={"userName": "late@contoso.com"}).status_code == 201
    query = {"filter": 'userName eq "late@contoso.com"'}
    assert http.get(f"{base}/Users", params=query).json()["totalResults"] == 0
    assert http.post(f"{base}/Users", json={"userName": "LATE@contoso.com"}).status_code == 409
    time.sleep(0.5)
    assert http.get(f"{base}/Users", params=query).json()["totalResults"] == 1
