"""Odd but legal directory data through the real hooks and task bodies: quotes and non-ASCII in names,
userNames differing only in case, #EXT# guests, missing mail; quoting in Graph and SCIM filters."""

from __future__ import annotations

from collections import Counter
from urllib.parse import unquote

from entra_provisioning import tasks
from entra_provisioning.hooks.entra import EntraGroupsHook
from entra_provisioning.hooks.scim import DatabricksScimHook

from .conftest import seed_with, workspace

ODD_GROUP = "Team O'Neil's \"Quotes\" & Zoë"
TENANT = "contoso.onmicrosoft.com"
ODD_USERS = [
    # Quotes and non-ASCII in display names.
    {
        "userPrincipalName": f"zoe.oconnor@{TENANT}",
        "displayName": 'Zoë O\'Connor "Z" 山田',
        "mail": "Zoe.OConnor@contoso.com",
    },
    {"userPrincipalName": f"o'neil@{TENANT}", "displayName": "Seán O'Neil", "mail": "sean.oneil@contoso.com"},
    # Two people whose mail differs only in case: one Databricks userName, the first object id keeps it.
    {"userPrincipalName": f"twin.a@{TENANT}", "displayName": "Twin A", "mail": "Twin@Contoso.com"},
    {"userPrincipalName": f"twin.b@{TENANT}", "displayName": "Twin B", "mail": "twin@contoso.COM"},
    # A guest: #EXT# UPN, provisioned under mail.
    {
        "userPrincipalName": f"ann_partner.example#EXT#@{TENANT}",
        "displayName": "Ann (Partner)",
        "mail": "Ann@Partner.example",
    },
    # A guest without mail: skipped (no usable userName).
    {"userPrincipalName": f"bo_nomail.example#EXT#@{TENANT}", "displayName": "Bo", "mail": None},
    # A member without mail: fine under userPrincipalName, skipped under mail.
    {"userPrincipalName": f"Mixed.Case@{TENANT}", "displayName": "Mixed Case", "mail": None},
]


def odd_seed(sandbox):
    group = {"displayName": ODD_GROUP, "members": [u["userPrincipalName"] for u in ODD_USERS]}
    return seed_with(sandbox, ODD_USERS, [group])


def provision(sandbox, attribute: str) -> tuple[dict, dict[str, dict]]:
    ws = workspace(sandbox, groups=(ODD_GROUP,), user_name_attribute=attribute)
    before = sandbox.control.workspace_user_names("ws-beta")
    summary = tasks.add_missing_users(ws, tasks.fetch_token(ws), tasks.resolve_members(ws), {})
    users = sandbox.control.workspace_users("ws-beta")
    assert Counter(u["userName"] for u in users).most_common(1)[0][1] == 1  # nobody twice
    return summary, {u["userName"]: u for u in users if u["userName"] not in before}


def test_odd_values_by_user_principal_name(connected) -> None:
    connected.control.reset(odd_seed(connected))
    summary, added = provision(connected, "userPrincipalName")
    assert set(added) == {
        f"zoe.oconnor@{TENANT}",
        f"o'neil@{TENANT}",
        f"twin.a@{TENANT}",
        f"twin.b@{TENANT}",
        "ann@partner.example",  # guest → mail, lower-cased
        f"mixed.case@{TENANT}",  # lower-cased, mail not needed
    }
    assert added[f"zoe.oconnor@{TENANT}"]["displayName"] == 'Zoë O\'Connor "Z" 山田'
    assert added[f"o'neil@{TENANT}"]["displayName"] == "Seán O'Neil"
    assert summary["added"] == 6
    assert summary["skipped"]["no_user_name"] == 1  # the guest without mail


def test_odd_values_by_mail(connected) -> None:
    connected.control.reset(odd_seed(connected))
    summary, added = provision(connected, "mail")
    assert set(added) == {
        "zoe.oconnor@contoso.com",
        "sean.oneil@contoso.com",
        "twin@contoso.com",
        "ann@partner.example",
    }
    assert summary["skipped"]["duplicate_user_name"] == 1  # the second twin
    assert summary["skipped"]["no_user_name"] == 2  # the guest and the member without mail
    assert summary["added"] == 4


def test_a_quote_in_a_group_name_is_doubled_in_the_graph_filter(connected) -> None:
    connected.control.reset(odd_seed(connected))
    members = EntraGroupsHook().members_by_group([ODD_GROUP])[ODD_GROUP]
    assert len(members) == len(ODD_USERS)
    (lookup,) = connected.control.log(endpoint="graph.groups.list")
    assert "$filter=displayName eq 'Team O''Neil''s \"Quotes\" & Zoë'" in unquote(lookup["path"])


def test_scim_filter_values_with_quotes_match_exactly_and_cannot_inject(connected) -> None:
    odd = 'q"uote\\back@contoso.com'
    connected.control.add_workspace_user("ws-beta", odd, displayName="Quote")
    with DatabricksScimHook(connected.workspace_host("ws-beta"), connected.pat("ws-beta")) as scim:
        found = scim.find_user(odd)
        assert found is not None and found["userName"] == odd
        # An injection attempt is one literal userName, not a filter that matches everyone.
        assert scim.find_user('nobody@contoso.com" or userName pr or userName eq "x') is None
        assert scim.find_user('carol.chen@contoso.com" or "1" eq "1') is None
        assert scim.find_user("CAROL.CHEN@contoso.com")["userName"] == "carol.chen@contoso.com"
    statuses = {e["status"] for e in connected.control.log(endpoint="scim.users.list")}
    assert statuses == {200}  # every filter was well-formed


def test_scim_filter_escaping_round_trips_any_user_name(connected) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    pieces = st.sampled_from([*"ab\"\\'()[]éü.+-_", " or ", " eq ", " pr ", '" or "1" eq "1'])
    local = st.lists(pieces, min_size=1, max_size=8).map("".join)
    made: set[str] = set()
    with DatabricksScimHook(connected.workspace_host("ws-beta"), connected.pat("ws-beta")) as scim:

        @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(local.map(lambda text: f"{text.strip() or 'x'}@contoso.com"))
        def round_trip(name: str) -> None:
            key = name.lower()
            if key not in made:
                connected.control.add_workspace_user("ws-beta", name)
                made.add(key)
            found = scim.find_user(name)
            assert found is not None and found["userName"] == key
            # A name that differs only by a trailing quote or backslash matches nobody.
            assert scim.find_user(name + '"') is None
            assert scim.find_user(name + "\\") is None

        round_trip()
    assert {e["status"] for e in connected.control.log(endpoint="scim.users.list")} == {200}
