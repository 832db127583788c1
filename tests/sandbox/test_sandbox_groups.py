"""Groups, service principals and entitlements: databricks-sdk (WorkspaceClient / AccountClient) and
msgraph-sdk unmodified against the sandbox, plus raw httpx checks of the wire shapes the SDKs hide."""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlparse

import httpx
import pytest

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ETL_APP_ID = "0a6f2a13-c15d-5cce-a92e-8d98ae5df6f7"  # etl-runner-app's appId in the demo seed
NEW_APP_ID = "4c2b9e70-0000-4000-8000-0000000000c1"


def _workspace(sandbox, workspace="ws-alpha"):
    from databricks.sdk import WorkspaceClient

    return WorkspaceClient(host=sandbox.workspace_host(workspace), token=sandbox.pat(workspace))


def _account(sandbox):
    from databricks.sdk import AccountClient

    return AccountClient(
        host=sandbox.account_host, account_id=sandbox.account_id, token=sandbox.pat("account")
    )


def _ref(value: str):
    from databricks.sdk.service.iam import ComplexValue

    return ComplexValue(value=value)


def _ws_user_id(sandbox, user_name: str, workspace: str = "ws-alpha") -> str:
    user = sandbox.control.workspace_user(workspace, user_name)
    assert user is not None
    return str(user["id"])


def _member_ids(group) -> list[str]:
    return sorted(m.value for m in group.members or [])


# ------------------------------------------------------------------------------------ workspace groups


def test_workspace_group_create_get_list_and_uniqueness(sandbox_env):
    from databricks.sdk.errors import ResourceConflict

    w = _workspace(sandbox_env)
    alice = _ws_user_id(sandbox_env, "alice.archer@contoso.com")
    sp = w.service_principals.create(
        application_id=NEW_APP_ID,
        display_name="mirror-runner",
        entitlements=[_ref("workspace-access")],
        external_id="entra-sp-object-id",
    )
    assert sp.application_id == NEW_APP_ID and sp.external_id == "entra-sp-object-id"
    assert [e.value for e in sp.entitlements or []] == ["workspace-access"]
    found = list(w.service_principals.list(filter=f'applicationId eq "{NEW_APP_ID.upper()}"'))
    assert [s.id for s in found] == [sp.id]

    created = w.groups.create(
        display_name="Data Engineers", external_id="entra-group-1", members=[_ref(alice), _ref(sp.id)]
    )
    assert created.id and created.external_id == "entra-group-1"
    got = w.groups.get(created.id)
    assert _member_ids(got) == sorted([alice, sp.id])
    refs = {m.value: m.ref for m in got.members or []}
    assert refs == {alice: f"Users/{alice}", sp.id: f"ServicePrincipals/{sp.id}"}
    assert got.meta is not None and got.meta.resource_type == "WorkspaceGroup"

    by_external = list(w.groups.list(filter='externalId eq "entra-group-1"'))
    assert [g.id for g in by_external] == [created.id]
    by_name = list(
        w.groups.list(filter='displayName eq "Data Engineers"', attributes="id,displayName,externalId")
    )
    assert [(g.id, g.external_id, g.members or None) for g in by_name] == [
        (created.id, "entra-group-1", None)
    ]
    slim = list(w.groups.list(filter='displayName eq "Data Engineers"', excluded_attributes="members"))
    assert not slim[0].members and slim[0].display_name == "Data Engineers"
    assert list(w.groups.list(filter='externalId eq "no-such-id"')) == []

    with pytest.raises(ResourceConflict):
        w.groups.create(display_name="data ENGINEERS")  # display names are unique, case-insensitively
    assert (
        len(
            [
                g
                for g in sandbox_env.control.workspace_groups("ws-alpha")
                if g["displayName"] == "Data Engineers"
            ]
        )
        == 1
    )
    state = sandbox_env.control.workspace_group("ws-alpha", "Data Engineers")
    assert state is not None and state["externalId"] == "entra-group-1" and state["external"] is False
    kinds = {m["kind"]: m["name"] for m in state["members"]}
    assert kinds == {"user": "alice.archer@contoso.com", "service_principal": NEW_APP_ID}
    sps = {s["applicationId"]: s for s in sandbox_env.control.workspace_service_principals("ws-alpha")}
    assert sps[NEW_APP_ID]["entitlements"] == [{"value": "workspace-access"}]
    assert sps[NEW_APP_ID]["group_ids"] == [created.id]


def test_patch_add_and_remove_in_every_form(sandbox_env):
    from databricks.sdk.service.iam import Patch, PatchOp, PatchSchema

    w = _workspace(sandbox_env)
    alice = _ws_user_id(sandbox_env, "alice.archer@contoso.com")
    bob = _ws_user_id(sandbox_env, "bob.baker@contoso.com")
    zed = _ws_user_id(sandbox_env, "zed.unmanaged@contoso.com")
    group = w.groups.create(display_name="patched")
    schemas = [PatchSchema.URN_IETF_PARAMS_SCIM_API_MESSAGES_2_0_PATCH_OP]
    # The form databricks-sdk's own example uses: no path, value {"members": [...]}.
    w.groups.patch(
        group.id, operations=[Patch(op=PatchOp.ADD, value={"members": [{"value": alice}]})], schemas=schemas
    )
    # path "members", value a list.
    w.groups.patch(
        group.id,
        operations=[Patch(op=PatchOp.ADD, path="members", value=[{"value": bob}, {"value": zed}])],
        schemas=schemas,
    )
    assert _member_ids(w.groups.get(group.id)) == sorted([alice, bob, zed])
    # Adding an existing member again changes nothing.
    w.groups.patch(
        group.id, operations=[Patch(op=PatchOp.ADD, path="members", value=[{"value": bob}])], schemas=schemas
    )
    assert len(w.groups.get(group.id).members or []) == 3
    w.groups.patch(
        group.id, operations=[Patch(op=PatchOp.REMOVE, path=f'members[value eq "{bob}"]')], schemas=schemas
    )
    w.groups.patch(
        group.id,
        operations=[Patch(op=PatchOp.REMOVE, value={"members": [{"value": zed}]})],
        schemas=schemas,
    )
    assert _member_ids(w.groups.get(group.id)) == [alice]
    state = sandbox_env.control.workspace_group("ws-alpha", "patched")
    assert state is not None and state["member_ids"] == [alice]


def test_patch_is_all_or_nothing(sandbox_env):
    base = sandbox_env.endpoints["workspaces"]["ws-alpha"]["scim"]
    alice = _ws_user_id(sandbox_env, "alice.archer@contoso.com")
    headers = {"Authorization": f"Bearer {sandbox_env.pat('ws-alpha')}"}
    with httpx.Client(verify=sandbox_env.ca_file, headers=headers) as http:
        gid = http.post(f"{base}/Groups", json={"displayName": "atomic"}).json()["id"]
        body = {
            "schemas": [PATCH_SCHEMA],
            "Operations": [
                {"op": "add", "path": "members", "value": [{"value": alice}]},
                {"op": "add", "path": "members", "value": [{"value": "9999999999999999"}]},
            ],
        }
        assert http.patch(f"{base}/Groups/{gid}", json=body).status_code == 404
        assert http.get(f"{base}/Groups/{gid}").json()["members"] == []


def test_patch_batch_limit_refuses_limit_plus_one_and_applies_nothing(sandbox_env):
    from databricks.sdk.errors import InvalidParameterValue
    from databricks.sdk.service.iam import Patch, PatchOp

    assert sandbox_env.control.workspace_limits("ws-beta")["patch_members_max"] == 1000  # the default
    sandbox_env.control.set_workspace_limits("ws-alpha", patch_members_max=3)
    ids = [
        sandbox_env.control.add_workspace_user("ws-alpha", f"batch{i}@contoso.com")["id"] for i in range(4)
    ]
    w = _workspace(sandbox_env)
    group = w.groups.create(display_name="batched")

    def add(members: list[str]) -> None:
        w.groups.patch(
            group.id, operations=[Patch(op=PatchOp.ADD, value={"members": [{"value": m} for m in members]})]
        )

    with pytest.raises(InvalidParameterValue) as refused:
        add(ids)
    assert "3" in str(refused.value) and "patch_members_max" in str(refused.value)
    assert not w.groups.get(group.id).members  # nothing of it was applied
    add(ids[:3])  # exactly the limit is accepted
    assert _member_ids(w.groups.get(group.id)) == sorted(ids[:3])
    # Removals count too, across operations: four selectors are one too many.
    removes = [Patch(op=PatchOp.REMOVE, path=f'members[value eq "{m}"]') for m in ids]
    with pytest.raises(InvalidParameterValue):
        w.groups.patch(group.id, operations=removes)
    assert _member_ids(w.groups.get(group.id)) == sorted(ids[:3])
    base = sandbox_env.endpoints["workspaces"]["ws-alpha"]["scim"]
    raw = httpx.patch(
        f"{base}/Groups/{group.id}",
        json={
            "schemas": [PATCH_SCHEMA],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": i} for i in ids]}],
        },
        headers={"Authorization": f"Bearer {sandbox_env.pat('ws-alpha')}"},
        verify=sandbox_env.ca_file,
    )
    assert raw.status_code == 400 and raw.json()["error_code"] == "INVALID_PARAMETER_VALUE"


# ------------------------------------------------------------------------------------ external groups


def test_external_account_group_reads_but_refuses_patch_with_500(sandbox_env):
    from databricks.sdk.errors import InternalError
    from databricks.sdk.service.iam import Patch, PatchOp

    a = _account(sandbox_env)
    (found,) = list(a.groups.list(filter='displayName eq "All Engineers"'))
    assert found.external_id == "5e7d3c1a-0000-4000-8000-00000000e001"
    before = _member_ids(a.groups.get(found.id))
    assert len(before) == 2
    olga = next(
        u["id"] for u in sandbox_env.control.account_users() if u["userName"] == "olga.owner@contoso.com"
    )
    with pytest.raises(InternalError) as refused:
        a.groups.patch(found.id, operations=[Patch(op=PatchOp.ADD, value={"members": [{"value": olga}]})])
    assert refused.value.error_code == "INTERNAL_ERROR"
    with pytest.raises(InternalError):
        a.groups.patch(
            found.id, operations=[Patch(op=PatchOp.REMOVE, path=f'members[value eq "{before[0]}"]')]
        )
    assert _member_ids(a.groups.get(found.id)) == before
    state = sandbox_env.control.account_group("All Engineers")
    assert state is not None and state["external"] is True and sorted(state["member_ids"]) == before
    patches = sandbox_env.control.log(system="account", endpoint="scim.groups.patch")
    assert [e["status"] for e in patches] == [500, 500]  # the SDK does not retry it


def test_external_workspace_group_added_at_run_time(sandbox_env):
    alice = _ws_user_id(sandbox_env, "alice.archer@contoso.com")
    made = sandbox_env.control.add_workspace_group(
        "ws-alpha", "AIM Synced", external_id="entra-aim-1", external=True, members=["bob.baker@contoso.com"]
    )
    base = sandbox_env.endpoints["workspaces"]["ws-alpha"]["scim"]
    headers = {"Authorization": f"Bearer {sandbox_env.pat('ws-alpha')}"}
    with httpx.Client(verify=sandbox_env.ca_file, headers=headers) as http:
        view = http.get(f"{base}/Groups/{made['id']}").json()
        assert (
            view["externalId"] == "entra-aim-1"
            and [m["value"] for m in view["members"]] == made["member_ids"]
        )
        assert "external" not in view  # nothing in the SCIM view marks it
        body = {
            "schemas": [PATCH_SCHEMA],
            "Operations": [{"op": "add", "value": {"members": [{"value": alice}]}}],
        }
        refused = http.patch(f"{base}/Groups/{made['id']}", json=body)
        assert refused.status_code == 500 and refused.json()["error_code"] == "INTERNAL_ERROR"
        assert http.get(f"{base}/Groups/{made['id']}").json()["members"] == view["members"]
        taken = http.post(f"{base}/Groups", json={"displayName": "aim synced"})
        assert taken.status_code == 409 and taken.json()["status"] == "409"


def test_someone_elses_group_in_ws_beta_has_no_external_id(sandbox_env):
    from databricks.sdk.errors import ResourceConflict

    w = _workspace(sandbox_env, "ws-beta")
    (other,) = list(w.groups.list(filter='displayName eq "Analysts & Friends\'s Club"'))
    assert other.external_id is None
    assert [m.value for m in other.members or []] == [
        _ws_user_id(sandbox_env, "carol.chen@contoso.com", "ws-beta")
    ]
    with pytest.raises(ResourceConflict):
        w.groups.create(display_name="Analysts & Friends's Club", external_id="entra-analysts")
    # ws-alpha is untouched: only admins, as before.
    assert [g["displayName"] for g in sandbox_env.control.workspace_groups("ws-alpha")] == ["admins"]


# ------------------------------------------------------------------------------------ account groups and SPs


def test_account_group_with_a_service_principal_member(sandbox_env):
    a = _account(sandbox_env)
    sp = a.service_principals.create(application_id=NEW_APP_ID, display_name="acct-runner")
    assert [s.id for s in a.service_principals.list(filter=f'applicationId eq "{NEW_APP_ID}"')] == [sp.id]
    carol = next(
        u["id"] for u in sandbox_env.control.account_users() if u["userName"] == "carol.chen@contoso.com"
    )
    group = a.groups.create(
        display_name="Mirrored", external_id="entra-mirrored", members=[_ref(sp.id), _ref(carol)]
    )
    got = a.groups.get(group.id)
    refs = {m.value: m.ref for m in got.members or []}
    assert refs == {sp.id: f"ServicePrincipals/{sp.id}", carol: f"Users/{carol}"}
    assert [g.id for g in a.groups.list(filter='externalId eq "entra-mirrored"')] == [group.id]
    state = sandbox_env.control.account_group("Mirrored")
    assert state is not None and {m["kind"] for m in state["members"]} == {"service_principal", "user"}


def test_account_service_principals_page(sandbox_env):
    a = _account(sandbox_env)
    sandbox_env.control.set_account_limits(page_cap=2)
    for i in range(3):
        a.service_principals.create(
            application_id=f"5d000000-0000-4000-8000-00000000000{i}", display_name=f"p{i}"
        )
    listed = [s.application_id for s in a.service_principals.list()]
    assert len(listed) == len(set(listed)) == 5  # airflow-mi, m2m-runner and the three new ones
    assert len(sandbox_env.control.log(system="account", endpoint="scim.service_principals.list")) >= 3


def test_account_create_refuses_entitlements(sandbox_env):
    from databricks.sdk.errors import InvalidParameterValue

    a = _account(sandbox_env)
    with pytest.raises(InvalidParameterValue) as refused:
        a.users.create(user_name="entitled@contoso.com", entitlements=[_ref("workspace-access")])
    assert "workspace" in str(refused.value).lower()
    with pytest.raises(InvalidParameterValue):
        a.service_principals.create(application_id=NEW_APP_ID, entitlements=[_ref("workspace-access")])
    names = {u["userName"] for u in sandbox_env.control.account_users()}
    assert "entitled@contoso.com" not in names
    assert NEW_APP_ID not in {s["applicationId"] for s in sandbox_env.control.account_service_principals()}
    assert a.users.create(user_name="entitled@contoso.com").user_name == "entitled@contoso.com"


# ------------------------------------------------------------------------------------ entitlements


def test_workspace_user_entitlements_are_stored_and_checked(sandbox_env):
    from databricks.sdk.errors import InvalidParameterValue

    w = _workspace(sandbox_env)
    values = ["workspace-access", "databricks-sql-access", "workspace-consume", "allow-cluster-create"]
    created = w.users.create(user_name="entitled@contoso.com", entitlements=[_ref(v) for v in values])
    assert [e.value for e in w.users.get(created.id).entitlements or []] == values
    state = sandbox_env.control.workspace_user("ws-alpha", "Entitled@contoso.com")
    assert state is not None and [e["value"] for e in state["entitlements"]] == values
    with pytest.raises(InvalidParameterValue) as refused:
        w.users.create(user_name="bad.entitlement@contoso.com", entitlements=[_ref("can-do-anything")])
    assert "can-do-anything" in str(refused.value)
    assert sandbox_env.control.workspace_user("ws-alpha", "bad.entitlement@contoso.com") is None
    base = sandbox_env.endpoints["workspaces"]["ws-alpha"]["scim"]
    raw = httpx.post(
        f"{base}/Users",
        json={
            "userName": "raw@contoso.com",
            "entitlements": [{"value": "allow-instance-pool-create"}, {"value": "x"}],
        },
        headers={"Authorization": f"Bearer {sandbox_env.pat('ws-alpha')}"},
        verify=sandbox_env.ca_file,
    )
    assert raw.status_code == 400 and raw.json()["error_code"] == "INVALID_PARAMETER_VALUE"


# ------------------------------------------------------------------------------------ Graph: appId


def _graph_token(http: httpx.Client, sandbox, identity: str) -> str:
    ident = sandbox.identity(identity)
    return str(
        http.post(
            sandbox.endpoints["identity"]["token_endpoint"],
            data={
                "grant_type": "client_credentials",
                "client_id": ident["client_id"],
                "client_secret": ident["client_secret"],
                "scope": GRAPH_SCOPE,
            },
        ).json()["access_token"]
    )


def _engineers_id(sandbox) -> str:
    return next(g["id"] for g in sandbox.control.tenant()["groups"] if g["displayName"] == "Data Engineers")


def test_graph_app_id_needs_application_read_all_and_selection(sandbox_clean):
    assert sandbox_clean.identity("graph-reader")["graph_permissions"] == [
        "GroupMember.Read.All",
        "User.Read.All",
    ]
    assert "Application.Read.All" in sandbox_clean.identity("graph-reader-apps")["graph_permissions"]
    group = _engineers_id(sandbox_clean)
    base = sandbox_clean.graph_url

    def sp_member(token: str, rel: str, select: str | None) -> dict:
        params = {"$select": select} if select else {}
        body = http.get(
            f"{base}/groups/{group}/{rel}", params=params, headers={"Authorization": f"Bearer {token}"}
        ).json()
        return next(m for m in body["value"] if m["@odata.type"] == "#microsoft.graph.servicePrincipal")

    with httpx.Client(verify=sandbox_clean.ca_file) as http:
        apps = _graph_token(http, sandbox_clean, "graph-reader-apps")
        plain = _graph_token(http, sandbox_clean, "graph-reader")
        for rel in ("members", "transitiveMembers"):
            full = sp_member(apps, rel, None)
            assert full["appId"] == ETL_APP_ID and full["displayName"] == "etl-runner-app"
            assert sp_member(apps, rel, "id,displayName,appId")["appId"] == ETL_APP_ID
            assert "appId" not in sp_member(apps, rel, "id,displayName,userPrincipalName")
            # Without Application.Read.All: "limited information", id only, every other property null.
            limited = sp_member(plain, rel, "id,displayName,appId")
            assert limited["id"] and limited["appId"] is None and limited["displayName"] is None
            assert sp_member(plain, rel, None)["appId"] is None
            assert "appId" not in sp_member(plain, rel, "id,displayName")
        # Users are unaffected by the missing permission.
        users = http.get(
            f"{base}/groups/{group}/members/microsoft.graph.user",
            headers={"Authorization": f"Bearer {plain}"},
        ).json()["value"]
        assert users and all(u["userPrincipalName"] for u in users)


def test_msgraph_sdk_sees_app_id_only_with_the_permission(sandbox_env):
    sandbox_clean = sandbox_env  # the async credential reads SSL_CERT_FILE
    from azure.identity.aio import ClientSecretCredential
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.generated.models.service_principal import ServicePrincipal
    from msgraph_core import GraphClientFactory

    group = _engineers_id(sandbox_clean)

    async def app_ids(identity: str) -> list[str | None]:
        ident = sandbox_clean.identity(identity)
        credential = ClientSecretCredential(
            sandbox_clean.tenant_id,
            ident["client_id"],
            ident["client_secret"],
            authority=sandbox_clean.authority_host,
            disable_instance_discovery=True,
        )
        try:
            host = urlparse(sandbox_clean.graph_url).hostname
            auth = AzureIdentityAuthenticationProvider(credential, scopes=[GRAPH_SCOPE], allowed_hosts=[host])
            http = GraphClientFactory.create_with_default_middleware(
                client=httpx.AsyncClient(verify=ssl.create_default_context(cafile=sandbox_clean.ca_file))
            )
            adapter = GraphRequestAdapter(auth, client=http)
            adapter.base_url = sandbox_clean.graph_url
            client = GraphServiceClient(request_adapter=adapter)
            page = await client.groups.by_group_id(group).transitive_members.get()
            return [o.app_id for o in page.value or [] if isinstance(o, ServicePrincipal)]
        finally:
            await credential.close()

    assert asyncio.run(app_ids("graph-reader-apps")) == [ETL_APP_ID]
    assert asyncio.run(app_ids("graph-reader")) == [None]
