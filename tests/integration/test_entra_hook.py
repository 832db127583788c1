"""EntraGroupsHook with msgraph-sdk and the provider's msgraph connection against the sandbox's Graph."""

from __future__ import annotations

import pytest

from entra_provisioning.hooks.entra import AmbiguousGroupError, EntraGroupsHook, GroupNotFoundError
from entra_provisioning.plan import SkipReason, resolve_members


def upns(objects) -> set[str]:
    return {o["userPrincipalName"] for o in objects if o["@odata.type"] == "#microsoft.graph.user"}


def test_nested_groups_with_a_cycle_are_expanded_once(connected) -> None:
    members = EntraGroupsHook().members_by_group(["Data Engineers"])["Data Engineers"]
    # Data Engineers ⊃ Data Platform Core ⊃ Data Engineers: both groups' people, each once, no groups.
    assert upns(members) == {
        "alice@contoso.onmicrosoft.com",
        "bob@contoso.onmicrosoft.com",
        "carol@contoso.onmicrosoft.com",
        "dave@contoso.onmicrosoft.com",
        "frank@contoso.onmicrosoft.com",
    }
    types = sorted(o["@odata.type"] for o in members if o["@odata.type"] != "#microsoft.graph.user")
    assert types == ["#microsoft.graph.device", "#microsoft.graph.servicePrincipal"]
    assert len({o["id"] for o in members}) == len(members)


def test_every_page_is_followed(connected) -> None:
    hook = EntraGroupsHook(page_size=100)
    members = hook.members_by_group(["Large Team"])["Large Team"]
    assert len(members) > 200
    assert hook.pages_read >= 3
    pages = connected.control.counts()["graph"]
    assert sum(pages["graph.groups.transitiveMembers"].values()) == hook.pages_read


def test_guests_disabled_and_mailless_users_are_mapped_or_skipped(connected) -> None:
    objects = EntraGroupsHook().members_by_group(["Data Scientists"])
    resolution = resolve_members(objects)
    names = {m.user_name for m in resolution.members}
    assert "jane@fabrikam.com" in names  # guest: #EXT# UPN → mail
    reasons = {s.reason for s in resolution.skipped}
    assert SkipReason.DISABLED in reasons  # kim, a disabled guest
    assert SkipReason.NO_USER_NAME in reasons  # lee, a guest without mail


def test_group_by_object_id_and_awkward_names(connected) -> None:
    tenant = connected.control.tenant()
    group = next(g for g in tenant["groups"] if g["displayName"] == "Data Scientists")
    by_id = EntraGroupsHook().members_by_group([group["id"]])[group["id"]]
    by_name = EntraGroupsHook().members_by_group(["Data Scientists"])["Data Scientists"]
    assert {o["id"] for o in by_id} == {o["id"] for o in by_name}
    quoted = EntraGroupsHook().members_by_group(["Analysts & Friends's Club"])["Analysts & Friends's Club"]
    assert "o'brien@contoso.onmicrosoft.com" in upns(quoted)


def test_missing_ambiguous_and_empty_groups(connected) -> None:
    with pytest.raises(GroupNotFoundError, match="'No Such Group'"):
        EntraGroupsHook().members_by_group(["No Such Group"])
    with pytest.raises(AmbiguousGroupError, match=r"2 Entra groups have the display name 'Duplicate Name'"):
        EntraGroupsHook().members_by_group(["Duplicate Name"])
    with pytest.raises(GroupNotFoundError, match="object id"):
        EntraGroupsHook().members_by_group(["00000000-0000-4000-8000-000000000000"])
    assert EntraGroupsHook().members_by_group(["Empty Group"]) == {"Empty Group": []}


def test_members_stream_page_by_page_as_they_are_consumed(connected) -> None:
    hook = EntraGroupsHook(page_size=100)
    with hook.stream_members_by_group(["Large Team", "Data Engineers"]) as streams:
        # Both groups were looked up on entry; no member page was read yet.
        assert hook.pages_read == 0
        assert len(connected.control.log(endpoint="graph.groups.list")) == 2
        large = streams["Large Team"]
        first = [next(large)]
        assert hook.pages_read == 1  # a page is fetched only when the previous one is used up
        rest = list(large)
        assert hook.pages_read >= 3
        nested = list(streams["Data Engineers"])
    assert len({o["id"] for o in first + rest}) == 1 + len(rest) > 200
    assert upns(nested) >= {"alice@contoso.onmicrosoft.com", "frank@contoso.onmicrosoft.com"}
    pages = connected.control.counts()["graph"]["graph.groups.transitiveMembers"]
    assert sum(pages.values()) == hook.pages_read
