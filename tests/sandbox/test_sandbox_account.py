"""Databricks account fidelity: Entra and OAuth M2M tokens, permission assignments, identity federation.

Driven with databricks-sdk's AccountClient / WorkspaceClient unmodified; only the host, the account id and
the credential point at the sandbox. Raw httpx checks pin the wire shapes the SDK hides.
"""

from __future__ import annotations

import time

import httpx
import pytest

DATABRICKS_SCOPE = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/.default"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
GAMMA = "3141592653589793"
M2M_APP_ID = "7a1d0c55-0000-4000-8000-0000000000a4"
M2M_SECRET = "dose-demo-m2m-runner-secret"
NOT_FOUND = "Principal not found in account."


def _mi_token(scope: str = DATABRICKS_SCOPE) -> str:
    """An Entra token from the sandbox's managed-identity endpoint (IDENTITY_ENDPOINT set by sandbox_env)."""
    from azure.identity import ManagedIdentityCredential

    return ManagedIdentityCredential().get_token(scope).token


def _secret_token(sandbox, name: str, scope: str = DATABRICKS_SCOPE) -> str:
    from azure.identity import ClientSecretCredential

    ident = sandbox.identity(name)
    credential = ClientSecretCredential(
        sandbox.tenant_id,
        ident["client_id"],
        ident["client_secret"],
        authority=sandbox.authority_host,
        disable_instance_discovery=True,
    )
    return credential.get_token(scope).token


def _account(sandbox, token: str | None = None, **auth):
    from databricks.sdk import AccountClient

    if not auth:
        auth = {"token": token or _mi_token()}
    return AccountClient(host=sandbox.account_host, account_id=sandbox.account_id, **auth)


def _workspace(sandbox, workspace: str = "ws-gamma", token: str | None = None, **auth):
    from databricks.sdk import WorkspaceClient

    if not auth:
        auth = {"token": token or _mi_token()}
    return WorkspaceClient(host=sandbox.workspace_host(workspace), **auth)


def _assignments(a) -> dict[str, tuple[str, list[str]]]:
    """principal name -> (principal_id as str, permissions) for ws-gamma."""
    out = {}
    for pa in a.workspace_assignment.list(workspace_id=int(GAMMA)):
        p = pa.principal
        name = p.user_name or p.group_name or p.service_principal_name
        out[name] = (str(p.principal_id), [perm.value for perm in pa.permissions or []])
    return out


def _account_user_id(sandbox, user_name: str) -> str:
    return next(u["id"] for u in sandbox.control.account_users() if u["userName"] == user_name)


def _group_id(sandbox, name: str) -> str:
    return next(g["id"] for g in sandbox.control.account_groups() if g["displayName"] == name)


# ------------------------------------------------------------------------------------ auth


def test_entra_token_of_a_registered_sp_drives_the_account_api(sandbox_env):
    a = _account(sandbox_env)
    assignments = _assignments(a)
    mi = sandbox_env.identity("airflow-mi")["client_id"]
    assert assignments[mi][1] == ["ADMIN"]
    assert assignments["alice.archer@contoso.com"][1] == ["USER"]
    assert assignments["Gamma Readers"][1] == ["USER"]
    assert assignments["olga.owner@contoso.com"][1] == ["ADMIN"]
    assert assignments["alice.archer@contoso.com"][0] == _account_user_id(
        sandbox_env, "alice.archer@contoso.com"
    )
    levels = a.workspace_assignment.get(workspace_id=int(GAMMA))
    assert [p.permission_level.value for p in levels.permissions] == ["USER", "ADMIN"]
    created = a.users.create(user_name="Entra.Made@Contoso.com")
    assert created.user_name == "entra.made@contoso.com"
    assert "entra.made@contoso.com" in {u.user_name for u in a.users.list()}
    sps = {sp["applicationId"]: sp for sp in sandbox_env.control.account_service_principals()}
    assert sps[mi]["admin"] is True and sps[mi]["displayName"] == "airflow-mi"


def test_me_with_an_sp_token_is_user_shaped_and_shows_admins(sandbox_env):
    me = _workspace(sandbox_env).current_user.me()
    mi = sandbox_env.identity("airflow-mi")["client_id"]
    assert me.user_name == mi and me.display_name == "airflow-mi" and me.id
    assert "admins" in {g.display for g in me.groups or []}
    # The same id as the account's service principal: it comes from the account.
    account_sp = next(s for s in sandbox_env.control.account_service_principals() if s["applicationId"] == mi)
    assert me.id == account_sp["id"]


def test_unregistered_sp_gets_403_and_bad_tokens_get_401(sandbox_env):
    from databricks.sdk.errors import PermissionDenied, Unauthenticated

    outsider = _secret_token(sandbox_env, "outsider")  # a valid Databricks-audience token, not registered
    with pytest.raises(PermissionDenied):
        list(_account(sandbox_env, outsider).users.list())
    with pytest.raises(PermissionDenied):
        _workspace(sandbox_env, token=outsider).current_user.me()
    # airflow-mi is registered on the account and ws-gamma, not on ws-alpha.
    with pytest.raises(PermissionDenied):
        _workspace(sandbox_env, "ws-alpha").current_user.me()
    with pytest.raises(Unauthenticated):
        list(_account(sandbox_env, _mi_token(GRAPH_SCOPE)).users.list())  # wrong audience
    url = sandbox_env.endpoints["account"]["scim"] + "/Users"
    with httpx.Client(verify=sandbox_env.ca_file) as http:
        denied = http.get(url, headers={"Authorization": f"Bearer {outsider}"})
        assert denied.status_code == 403 and denied.json()["error_code"] == "PERMISSION_DENIED"
        wrong = http.get(url, headers={"Authorization": f"Bearer {_mi_token(GRAPH_SCOPE)}"})
        assert wrong.status_code == 401 and wrong.json()["error_code"] == "UNAUTHENTICATED"
        good = _mi_token()
        assert http.get(url, headers={"Authorization": f"Bearer {good}"}).status_code == 200
        sandbox_env.control.expire_tokens()
        expired = http.get(url, headers={"Authorization": f"Bearer {good}"})
        assert expired.status_code == 401 and expired.json()["error_code"] == "UNAUTHENTICATED"


def test_non_admin_sp_is_refused_by_the_account_and_duplicates_conflict(sandbox_env):
    outsider = sandbox_env.identity("outsider")["client_id"]
    base = sandbox_env.endpoints["account"]["scim"]
    with httpx.Client(verify=sandbox_env.ca_file) as http:
        admin = {"Authorization": f"Bearer {_mi_token()}"}
        made = http.post(f"{base}/ServicePrincipals", headers=admin, json={"applicationId": outsider})
        assert made.status_code == 201 and made.json()["applicationId"] == outsider
        again = http.post(
            f"{base}/ServicePrincipals", headers=admin, json={"applicationId": outsider.upper()}
        )
        assert again.status_code == 409 and again.json()["status"] == "409"
        listed = http.get(
            f"{base}/ServicePrincipals", headers=admin, params={"filter": f'applicationId eq "{outsider}"'}
        ).json()
        assert [r["id"] for r in listed["Resources"]] == [made.json()["id"]]
        # Registered now, but not an account admin: 403 like a non-admin PAT (SCIM error shape).
        token = _secret_token(sandbox_env, "outsider")
        refused = http.get(f"{base}/Users", headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 403 and refused.json()["status"] == "403"


def test_oauth_m2m_account_token_works_on_the_account_only(sandbox_env):
    from databricks.sdk.errors import PermissionDenied, Unauthenticated

    # The SDK discovers the token endpoint from /.well-known/databricks-config, unmodified.
    a = _account(sandbox_env, client_id=M2M_APP_ID, client_secret=M2M_SECRET)
    assert "alice.archer@contoso.com" in {u.user_name for u in a.users.list()}
    assert [e["status"] for e in sandbox_env.control.log(endpoint="databricks.oidc.token")] == [200]
    endpoints = sandbox_env.endpoints
    with httpx.Client(verify=sandbox_env.ca_file) as http:
        answer = http.post(
            endpoints["account"]["oidc_token_endpoint"],
            data={"grant_type": "client_credentials", "scope": "all-apis"},
            auth=(M2M_APP_ID, M2M_SECRET),
        )
        assert answer.status_code == 200
        body = answer.json()
        assert body["token_type"] == "Bearer" and body["scope"] == "all-apis" and body["expires_in"] > 0
        account_token = body["access_token"]
        bad = http.post(
            endpoints["account"]["oidc_token_endpoint"],
            data={"grant_type": "client_credentials", "client_id": M2M_APP_ID, "client_secret": "nope"},
        )
        assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
        # Give m2m-runner access to ws-gamma: it is then registered there, yet the account's token is not
        # valid on the workspace; a token from the workspace's own endpoint is.
        sp_id = next(
            s["id"]
            for s in sandbox_env.control.account_service_principals()
            if s["applicationId"] == M2M_APP_ID
        )
        a.workspace_assignment.update(int(GAMMA), int(sp_id), permissions=[_perm("USER")])
        gamma_users = endpoints["workspaces"]["ws-gamma"]["scim"] + "/Users"
        refused = http.get(gamma_users, headers={"Authorization": f"Bearer {account_token}"})
        assert refused.status_code == 401 and refused.json()["error_code"] == "UNAUTHENTICATED"
        ws_token = http.post(
            endpoints["workspaces"]["ws-gamma"]["oidc_token_endpoint"],
            data={"grant_type": "client_credentials", "scope": "all-apis"},
            auth=(M2M_APP_ID, M2M_SECRET),
        ).json()["access_token"]
        assert http.get(gamma_users, headers={"Authorization": f"Bearer {ws_token}"}).status_code == 200
        on_account = http.get(
            endpoints["account"]["scim"] + "/Users", headers={"Authorization": f"Bearer {ws_token}"}
        )
        assert on_account.status_code == 401
    w = _workspace(sandbox_env, client_id=M2M_APP_ID, client_secret=M2M_SECRET)
    me = w.current_user.me()
    assert me.user_name == M2M_APP_ID and "admins" not in {g.display for g in me.groups or []}
    with pytest.raises(PermissionDenied):  # a USER-level service principal is no workspace admin
        w.users.create(user_name="not.allowed@contoso.com")
    with pytest.raises(Unauthenticated):
        _workspace(sandbox_env, token=account_token).current_user.me()


# ------------------------------------------------------------------------------------ assignments


def _perm(level: str):
    from databricks.sdk.service.iam import WorkspacePermission

    return WorkspacePermission(level)


def test_put_replaces_permissions_and_an_empty_or_missing_list_deletes(sandbox_env):
    a = _account(sandbox_env)
    olga, _ = _assignments(a)["olga.owner@contoso.com"]
    gamma_admins = next(
        g for g in sandbox_env.control.workspace_groups("ws-gamma") if g["displayName"] == "admins"
    )
    assert olga in gamma_admins["member_ids"]

    result = a.workspace_assignment.update(int(GAMMA), int(olga), permissions=[_perm("USER")])
    assert [p.value for p in result.permissions] == ["USER"]
    assert result.principal.user_name == "olga.owner@contoso.com" and result.principal.principal_id == int(
        olga
    )
    assert _assignments(a)["olga.owner@contoso.com"][1] == ["USER"]  # replaced, not merged with ADMIN
    gamma_admins = next(
        g for g in sandbox_env.control.workspace_groups("ws-gamma") if g["displayName"] == "admins"
    )
    assert olga not in gamma_admins["member_ids"]

    both = a.workspace_assignment.update(int(GAMMA), int(olga), permissions=[_perm("USER"), _perm("ADMIN")])
    assert [p.value for p in both.permissions] == ["ADMIN"]  # ADMIN wins, as the SDK documents

    a.workspace_assignment.update(int(GAMMA), int(olga), permissions=[])
    assert "olga.owner@contoso.com" not in _assignments(a)
    assert "olga.owner@contoso.com" not in sandbox_env.control.workspace_user_names("ws-gamma")

    alice, _ = _assignments(a)["alice.archer@contoso.com"]
    a.workspace_assignment.update(int(GAMMA), int(alice))  # no permissions field at all
    assert "alice.archer@contoso.com" not in _assignments(a)
    assert [e["status"] for e in sandbox_env.control.log(endpoint="account.assignments.put")] == [200] * 4
    assert {x["name"] for x in sandbox_env.control.account_assignments("ws-gamma")} == {
        sandbox_env.identity("airflow-mi")["client_id"],
        "Gamma Readers",
        "dave.diaz@contoso.com",
    }


def test_unknown_principal_workspace_and_the_assignable_delay(sandbox_env):
    from databricks.sdk.errors import NotFound

    a = _account(sandbox_env)
    with pytest.raises(NotFound, match=NOT_FOUND):
        a.workspace_assignment.update(int(GAMMA), 1234567890123456, permissions=[_perm("USER")])
    with pytest.raises(NotFound, match="Workspace 42 does not exist"):
        a.workspace_assignment.list(workspace_id=42)
    created = a.users.create(user_name="fresh.hire@contoso.com")
    with pytest.raises(NotFound, match=NOT_FOUND):  # not assignable yet (assignable_delay_ms: 300)
        a.workspace_assignment.update(int(GAMMA), int(created.id), permissions=[_perm("USER")])
    time.sleep(0.35)
    done = a.workspace_assignment.update(int(GAMMA), int(created.id), permissions=[_perm("USER")])
    assert done.principal.user_name == "fresh.hire@contoso.com"
    assert "fresh.hire@contoso.com" in {u.user_name for u in _workspace(sandbox_env).users.list()}
    a.workspace_assignment.delete(int(GAMMA), int(created.id))
    with pytest.raises(NotFound):
        a.workspace_assignment.delete(int(GAMMA), int(created.id))
    statuses = [e["status"] for e in sandbox_env.control.log(endpoint="account.assignments.put")]
    assert statuses == [404, 404, 200]


def test_assignment_puts_are_rate_limited_by_endpoint_name(sandbox_env):
    sandbox_env.control.set_account_limits(rates={"account.assignments.put": 1}, retry_after_seconds=1)
    url = f"{sandbox_env.endpoints['account']['assignments']}/{GAMMA}/permissionassignments/principals/"
    alice = _account_user_id(sandbox_env, "alice.archer@contoso.com")
    with httpx.Client(verify=sandbox_env.ca_file) as http:
        http.headers["Authorization"] = f"Bearer {_mi_token()}"
        statuses = [http.put(url + alice, json={"permissions": ["USER"]}).status_code for _ in range(3)]
        listed = http.get(f"{sandbox_env.endpoints['account']['assignments']}/{GAMMA}/permissionassignments")
    assert statuses[0] == 200 and 429 in statuses
    assert listed.status_code == 200  # other endpoints keep their own budget
    assert any(
        e["fault"] == "rate_limit" for e in sandbox_env.control.log(endpoint="account.assignments.put")
    )


# ------------------------------------------------------------------------------------ identity federation


def test_group_based_access_shows_in_the_federated_workspace_with_account_ids(sandbox_env):
    from databricks.sdk.service.iam import Patch, PatchOp

    a = _account(sandbox_env)
    w = _workspace(sandbox_env)
    listed = {u.user_name: u.id for u in w.users.list()}
    carol = _account_user_id(sandbox_env, "carol.chen@contoso.com")
    assert listed["carol.chen@contoso.com"] == carol  # through Gamma Readers, with the account's id
    assert listed["olga.owner@contoso.com"] == _account_user_id(sandbox_env, "olga.owner@contoso.com")
    assert "yann.contractor@contoso.com" not in listed

    # A user in a group nested in an assigned group gets access too.
    gina = a.users.create(user_name="gina.gamma@contoso.com")
    inner = a.groups.create(display_name="Gamma Inner", members=[_ref(gina.id)])
    readers = _group_id(sandbox_env, "Gamma Readers")
    a.groups.patch(readers, operations=[Patch(op=PatchOp.ADD, path="members", value=[{"value": inner.id}])])
    members = {m.value: m.ref for m in a.groups.get(readers).members}
    assert members[inner.id] == f"Groups/{inner.id}" and members[carol] == f"Users/{carol}"
    listed = {u.user_name: u.id for u in w.users.list()}
    assert listed["gina.gamma@contoso.com"] == gina.id

    # Removing the group's assignment removes those who had access only through it.
    a.workspace_assignment.delete(int(GAMMA), int(readers))
    after = {u.user_name for u in w.users.list()}
    assert "carol.chen@contoso.com" not in after and "gina.gamma@contoso.com" not in after
    assert "alice.archer@contoso.com" in after  # direct assignment


def test_group_access_survives_losing_a_direct_assignment(sandbox_env):
    a = _account(sandbox_env)
    carol = _account_user_id(sandbox_env, "carol.chen@contoso.com")
    a.workspace_assignment.update(int(GAMMA), int(carol), permissions=[_perm("USER")])
    a.workspace_assignment.delete(int(GAMMA), int(carol))
    assert "carol.chen@contoso.com" in {u.user_name for u in _workspace(sandbox_env).users.list()}


def _ref(value: str):
    from databricks.sdk.service.iam import ComplexValue

    return ComplexValue(value=value)


def test_workspace_create_on_a_federated_workspace_creates_the_account_user(sandbox_env):
    a = _account(sandbox_env)
    w = _workspace(sandbox_env)
    made = w.users.create(user_name="New.Fed@Contoso.com", display_name="New Fed")
    account_id = _account_user_id(sandbox_env, "new.fed@contoso.com")
    assert made.id == account_id and made.user_name == "new.fed@contoso.com"
    assert _assignments(a)["new.fed@contoso.com"] == (account_id, ["USER"])
    # An existing account user without access is reused, not duplicated.
    existing = a.users.create(user_name="acct.only@contoso.com")
    assert "acct.only@contoso.com" not in {u.user_name for u in w.users.list()}
    reused = w.users.create(user_name="acct.only@contoso.com")
    assert reused.id == existing.id
    assert [u["userName"] for u in sandbox_env.control.account_users()].count("acct.only@contoso.com") == 1
    # Non-federated workspaces keep their own store.
    local = _workspace(sandbox_env, "ws-beta", token=sandbox_env.pat("ws-beta")).users.create(
        user_name="beta.only@contoso.com"
    )
    assert "beta.only@contoso.com" not in {u["userName"] for u in sandbox_env.control.account_users()}
    assert local.id not in {u["id"] for u in sandbox_env.control.account_users()}


# ------------------------------------------------------------------------------------ paging, endpoints


def test_account_users_are_served_100_per_page(sandbox_env):
    for i in range(150):
        sandbox_env.control.add_account_user(f"page{i:03d}@contoso.com")
    total = len(sandbox_env.control.account_users())
    names = [u.user_name for u in _account(sandbox_env).users.list()]
    assert len(names) == len(set(names)) == total
    pages = sandbox_env.control.log(system="account", endpoint="scim.users.list")
    assert len(pages) == 3  # 100 + the rest + the empty page that ends the SDK's loop
    with httpx.Client(verify=sandbox_env.ca_file) as http:
        page = http.get(
            sandbox_env.endpoints["account"]["scim"] + "/Users",
            params={"count": 1000},
            headers={"Authorization": f"Bearer {_mi_token()}"},
        ).json()
    assert page["itemsPerPage"] == 100 and page["totalResults"] == total


def test_endpoints_describe_federation_oidc_and_assignments(sandbox):
    ep = sandbox.endpoints
    assert ep["workspaces"]["ws-gamma"]["identity_federated"] is True
    assert ep["workspaces"]["ws-gamma"]["workspace_id"] == GAMMA
    assert ep["workspaces"]["ws-alpha"]["identity_federated"] is False
    host, account_id = ep["account"]["host"], ep["account"]["account_id"]
    assert ep["account"]["oidc_token_endpoint"] == f"{host}/oidc/accounts/{account_id}/v1/token"
    assert ep["account"]["assignments"] == f"{host}/api/2.0/accounts/{account_id}/workspaces"
    assert (
        ep["workspaces"]["ws-gamma"]["oidc_token_endpoint"]
        == ep["workspaces"]["ws-gamma"]["host"] + "/oidc/v1/token"
    )
