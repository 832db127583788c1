"""Graph fidelity: the official msgraph-sdk GraphServiceClient against the sandbox, plus refusals."""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlparse

import httpx
import pytest

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
USER_FIELDS = ["id", "userPrincipalName", "mail", "displayName", "accountEnabled", "userType"]


def _graph_client(sandbox, credential):
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph_core import GraphClientFactory

    host = urlparse(sandbox.graph_url).hostname
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[GRAPH_SCOPE], allowed_hosts=[host])
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(verify=ssl.create_default_context(cafile=sandbox.ca_file))
    )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = sandbox.graph_url
    return GraphServiceClient(request_adapter=adapter)


def _secret_credential(sandbox):
    from azure.identity.aio import ClientSecretCredential

    reader = sandbox.identity("graph-reader")
    return ClientSecretCredential(
        sandbox.tenant_id,
        reader["client_id"],
        reader["client_secret"],
        authority=sandbox.authority_host,
        disable_instance_discovery=True,
    )


async def _find_group(client, name: str):
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.groups.groups_request_builder import GroupsRequestBuilder

    escaped = name.replace("'", "''")
    query = GroupsRequestBuilder.GroupsRequestBuilderGetQueryParameters(
        filter=f"displayName eq '{escaped}'", select=["id", "displayName"], count=True
    )
    config = RequestConfiguration(query_parameters=query)
    config.headers.add("ConsistencyLevel", "eventual")
    return await client.groups.get(request_configuration=config)


async def _transitive_users(client, group_id: str, top: int):
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.groups.item.transitive_members.graph_user.graph_user_request_builder import (
        GraphUserRequestBuilder,
    )
    from msgraph_core import PageIterator

    query = GraphUserRequestBuilder.GraphUserRequestBuilderGetQueryParameters(
        select=USER_FIELDS, top=top, count=True
    )
    config = RequestConfiguration(query_parameters=query)
    config.headers.add("ConsistencyLevel", "eventual")
    first = await client.groups.by_group_id(group_id).transitive_members.graph_user.get(
        request_configuration=config
    )
    users = []
    pages = 0

    def collect(user) -> bool:
        users.append(user)
        return True

    iterator = PageIterator(first, client.request_adapter)
    await iterator.iterate(collect)
    pages = len({u.id for u in users})
    return first, users, pages


def test_graph_service_client_finds_groups_and_pages_transitive_users(sandbox_env):
    sandbox_clean = sandbox_env

    async def run():
        credential = _secret_credential(sandbox_clean)
        try:
            client = _graph_client(sandbox_clean, credential)
            found = await _find_group(client, "Analysts & Friends's Club")
            assert [g.display_name for g in found.value] == ["Analysts & Friends's Club"]
            assert found.odata_count == 1
            dupes = await _find_group(client, "Duplicate Name")
            assert len(dupes.value) == 2
            large = (await _find_group(client, "Large Team")).value[0]
            first, users, distinct = await _transitive_users(client, large.id, top=40)
            return first, users, distinct
        finally:
            await credential.close()

    first, users, distinct = asyncio.run(run())
    assert first.odata_count == len(users) == distinct
    assert len(users) > 200  # several pages of 40
    assert first.odata_next_link.startswith(sandbox_clean.endpoints["graph"]["origin"] + "/v1.0/")
    by_upn = {u.user_principal_name: u for u in users}
    guest = by_upn["jane_fabrikam.com#EXT#@contoso.onmicrosoft.com"]
    assert guest.user_type == "Guest" and guest.mail == "jane@fabrikam.com"
    assert by_upn["kim_partner.example#EXT#@contoso.onmicrosoft.com"].account_enabled is False
    assert by_upn["grace@contoso.onmicrosoft.com"].mail is None
    pages = [
        e
        for e in sandbox_clean.control.log(system="graph")
        if e["endpoint"] == "graph.groups.transitiveMembers"
    ]
    assert len(pages) >= 6 and all(e["status"] == 200 for e in pages)


def test_managed_identity_token_works_for_graph(sandbox_env):
    from azure.identity.aio import ManagedIdentityCredential

    async def run():
        credential = ManagedIdentityCredential()
        try:
            client = _graph_client(sandbox_env, credential)
            return await client.groups.by_group_id(sandbox_env.control.tenant()["groups"][0]["id"]).get()
        finally:
            await credential.close()

    group = asyncio.run(run())
    assert group.display_name == "Data Engineers"


# ------------------------------------------------------------------------------------ raw wire checks


@pytest.fixture
def graph(sandbox_clean):
    """(httpx client with a Graph token, base url, tenant dump)."""
    reader = sandbox_clean.identity("graph-reader")
    with httpx.Client(verify=sandbox_clean.ca_file) as http:
        token = http.post(
            sandbox_clean.endpoints["identity"]["token_endpoint"],
            data={
                "grant_type": "client_credentials",
                "client_id": reader["client_id"],
                "client_secret": reader["client_secret"],
                "scope": GRAPH_SCOPE,
            },
        ).json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        yield http, sandbox_clean.graph_url, sandbox_clean.control.tenant()


def _group_id(tenant, name):
    return next(g["id"] for g in tenant["groups"] if g["displayName"] == name)


def test_transitive_members_terminate_on_cycle_and_type_non_users(graph):
    http, base, tenant = graph
    engineers = _group_id(tenant, "Data Engineers")
    body = http.get(f"{base}/groups/{engineers}/transitiveMembers").json()
    types = sorted({m["@odata.type"] for m in body["value"]})
    assert types == [
        "#microsoft.graph.device",
        "#microsoft.graph.group",
        "#microsoft.graph.servicePrincipal",
        "#microsoft.graph.user",
    ]
    ids = [m["id"] for m in body["value"]]
    assert len(ids) == len(set(ids))
    assert engineers not in ids
    direct = http.get(f"{base}/groups/{engineers}/members").json()["value"]
    assert len(direct) < len(ids)
    users = http.get(f"{base}/groups/{engineers}/transitiveMembers/microsoft.graph.user").json()["value"]
    assert {u["userPrincipalName"].split("@")[0] for u in users} == {"alice", "bob", "carol", "dave", "frank"}
    assert "accountEnabled" not in users[0]  # not in Graph's default projection
    selected = http.get(
        f"{base}/groups/{engineers}/transitiveMembers/microsoft.graph.user",
        params={"$select": "id,accountEnabled,userType"},
    ).json()["value"]
    assert set(selected[0]) == {"id", "accountEnabled", "userType"}


def test_default_page_is_100_and_next_link_is_absolute(graph):
    http, base, tenant = graph
    large = _group_id(tenant, "Large Team")
    first = http.get(f"{base}/groups/{large}/transitiveMembers/microsoft.graph.user").json()
    assert len(first["value"]) == 100
    assert first["@odata.nextLink"].startswith(base + "/groups/")
    second = http.get(first["@odata.nextLink"]).json()
    assert len(second["value"]) == 100
    assert not {u["id"] for u in first["value"]} & {u["id"] for u in second["value"]}


def test_graph_refusals(graph, sandbox_clean):
    http, base, tenant = graph
    large = _group_id(tenant, "Large Team")
    too_big = http.get(f"{base}/groups/{large}/transitiveMembers", params={"$top": "1000"})
    assert too_big.status_code == 400
    assert set(too_big.json()["error"]) >= {"code", "message", "innerError"}
    assert http.get(f"{base}/groups/{large}/transitiveMembers", params={"$top": "999"}).status_code == 200
    no_header = http.get(f"{base}/groups", params={"$count": "true"})
    assert no_header.status_code == 400
    with_header = http.get(
        f"{base}/groups", params={"$count": "true"}, headers={"ConsistencyLevel": "eventual"}
    )
    assert with_header.status_code == 200 and "@odata.count" in with_header.json()
    bad_filter = http.get(f"{base}/groups", params={"$filter": "displayName eq 'unterminated"})
    assert bad_filter.status_code == 400
    assert http.get(f"{base}/groups", params={"$filter": "displayName eq 'x' and"}).status_code == 400
    advanced = http.get(f"{base}/groups", params={"$filter": "displayName ne 'x'"})
    assert advanced.status_code == 400
    bad_select = http.get(f"{base}/groups", params={"$select": "nonsense"})
    assert bad_select.status_code == 400
    missing = http.get(f"{base}/groups/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "Request_ResourceNotFound"
    with httpx.Client(verify=sandbox_clean.ca_file) as anon:
        no_token = anon.get(f"{base}/groups")
        assert no_token.status_code == 401
        assert no_token.json()["error"]["code"] == "InvalidAuthenticationToken"
        vault_resource = sandbox_clean.endpoints["vaults"]["kv-demo"]["resource"]
        vault_token = anon.get(
            sandbox_clean.endpoints["identity"]["msi_endpoint"],
            params={"resource": vault_resource, "api-version": "2019-08-01"},
            headers={"X-IDENTITY-HEADER": sandbox_clean.endpoints["identity"]["identity_header"]},
        ).json()["access_token"]
        wrong_audience = anon.get(f"{base}/groups", headers={"Authorization": f"Bearer {vault_token}"})
        assert wrong_audience.status_code == 401


def test_filter_unescapes_doubled_quotes(graph):
    http, base, _ = graph
    body = http.get(
        f"{base}/groups", params={"$filter": "displayName eq 'Analysts & Friends''s Club'"}
    ).json()
    assert [g["displayName"] for g in body["value"]] == ["Analysts & Friends's Club"]


def test_graph_rate_limit_answers_429_in_graph_shape(graph, sandbox_clean):
    http, base, _ = graph
    sandbox_clean.control.set_graph_limits(rates={"graph.groups.list": 1}, retry_after_seconds=2)
    statuses = [http.get(f"{base}/groups") for _ in range(3)]
    throttled = next(r for r in statuses if r.status_code == 429)
    assert throttled.headers["retry-after"] == "2"
    assert throttled.json()["error"]["code"] == "TooManyRequests"
