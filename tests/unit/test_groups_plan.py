"""Group mirroring's pure decision, and the resolution of service principals, without I/O."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entra_provisioning.groups_plan import (
    GroupAction,
    GroupNameClash,
    MembershipGuardExceeded,
    check_removal_guard,
    group_display_name,
    keys_of,
    member_key,
    plan_groups,
    service_principal_key,
)
from entra_provisioning.identities import ExistingGroup, Member, ServicePrincipalMember
from entra_provisioning.plan import NO_APP_ID_DETAIL, Resolution, SkipReason, resolve_members

GID = {"Eng": "11111111-0000-4000-8000-000000000001", "Ops": "11111111-0000-4000-8000-000000000002"}


def member(name: str, *groups: str) -> Member:
    return Member(f"oid-{name}", f"{name}@x.com", name, tuple(sorted(groups)))


def resolution(
    members: list[Member],
    sps: tuple[ServicePrincipalMember, ...] = (),
    groups: tuple[str, ...] = ("Eng", "Ops"),
) -> Resolution:
    return Resolution(
        groups=groups,
        members=tuple(sorted(members, key=lambda m: m.user_name)),
        group_objects=tuple((GID[g], g) for g in groups),
        service_principals=sps,
    )


def test_names_come_from_the_template() -> None:
    assert group_display_name("{display_name}", "Data Eng", "oid") == "Data Eng"
    assert group_display_name("aad-{display_name} ({object_id})", "Data Eng", "oid") == "aad-Data Eng (oid)"


def test_missing_groups_are_created_with_every_member_to_add() -> None:
    res = resolution([member("ann", "Eng"), member("bob", "Eng", "Ops")])
    plan = plan_groups(res, "{display_name}", {}, {})
    eng, ops = plan.groups
    assert (eng.action, eng.name, eng.entra_object_id, eng.to_add) == (
        GroupAction.CREATE,
        "Eng",
        GID["Eng"],
        ("ann@x.com", "bob@x.com"),
    )
    assert ops.to_add == ("bob@x.com",)
    assert plan.memberships_to_add == 3 and plan.membership_drift == 0


def test_our_group_gets_only_what_is_missing_and_reports_who_left() -> None:
    existing = ExistingGroup("g1", "Eng", GID["Eng"].upper(), ("u-ann", "u-zed", "nested-group"))
    key_of_id = {"u-ann": member_key("ann@x.com"), "u-zed": member_key("zed@x.com")}
    res = resolution([member("ann", "Eng"), member("bob", "Eng")], groups=("Eng",))
    plan = plan_groups(res, "{display_name}", {"eng": existing}, key_of_id)
    (eng,) = plan.groups
    assert eng.action is GroupAction.UPDATE
    assert eng.to_add == ("bob@x.com",)
    assert (eng.stale, eng.stale_keys) == (("u-zed",), ("zed@x.com",))  # the nested group is never stale
    assert plan.removals == 0  # not opted in
    assert plan_groups(res, "{display_name}", {"eng": existing}, key_of_id, remove_stale=True).removals == 1


@pytest.mark.parametrize("external_id", [None, "someone-else"])
def test_a_group_with_another_or_no_external_id_is_foreign_and_untouched(external_id: str | None) -> None:
    existing = ExistingGroup("g1", "Eng", external_id, ("u-zed",))
    res = resolution([member("ann", "Eng")], groups=("Eng",))
    (eng,) = plan_groups(
        res, "{display_name}", {"eng": existing}, {"u-zed": "zed@x.com"}, remove_stale=True
    ).groups
    assert eng.action is GroupAction.FOREIGN and eng.to_add == () and eng.stale == ()


def test_two_groups_mapping_to_one_name_are_refused() -> None:
    res = Resolution(
        groups=("Eng", GID["Ops"]), members=(), group_objects=((GID["Eng"], "Team"), (GID["Ops"], "team"))
    )
    with pytest.raises(GroupNameClash, match="both map to the Databricks group name 'team'"):
        plan_groups(res, "{display_name}", {}, {})
    assert len(plan_groups(res, "{display_name} {object_id}", {}, {}).groups) == 2


def test_service_principals_are_members_when_included() -> None:
    sp = ServicePrincipalMember("oid-sp", "APP-1", "etl", ("Eng",))
    res = resolution([member("ann", "Eng")], (sp,), groups=("Eng",))
    assert plan_groups(res, "{display_name}", {}, {}).groups[0].to_add == ("ann@x.com",)
    (eng,) = plan_groups(res, "{display_name}", {}, {}, include_service_principals=True).groups
    assert eng.to_add == ("ann@x.com", service_principal_key("app-1"))


def test_the_removal_guard_stops_before_any_write() -> None:
    existing = ExistingGroup("g1", "Eng", GID["Eng"], ("a", "b", "c"))
    res = resolution([], groups=("Eng",))
    plan = plan_groups(
        res, "{display_name}", {"eng": existing}, {"a": "a@x", "b": "b@x", "c": "c@x"}, remove_stale=True
    )
    check_removal_guard(plan, 3)
    with pytest.raises(MembershipGuardExceeded, match="Refusing to remove 3 stale group memberships"):
        check_removal_guard(plan, 2)


def test_keys_without_an_id_are_returned_apart() -> None:
    assert keys_of({"a": "1", "b": "2"}, ["a", "x", "b"]) == (["1", "2"], ["x"])


@settings(max_examples=200, deadline=None)
@given(
    wanted=st.sets(st.sampled_from([f"u{i}" for i in range(10)])),
    current=st.sets(st.sampled_from([f"u{i}" for i in range(10)] + ["nested", "unknown"])),
    ours=st.booleans(),
    remove=st.booleans(),
)
def test_membership_changes_hold_for_any_membership(
    wanted: set[str], current: set[str], ours: bool, remove: bool
) -> None:
    """After adding ``to_add`` and removing ``stale`` (when opted in) an *owned* group holds exactly the wanted
    principals plus the members we cannot name; a foreign group is never changed; nothing is added twice."""
    key_of_id = {f"id-{n}": f"{n}@x.com" for n in [f"u{i}" for i in range(10)]}
    existing = ExistingGroup(
        "g", "Eng", GID["Eng"] if ours else None, tuple(sorted(f"id-{n}" for n in current))
    )
    res = resolution([member(n, "Eng") for n in sorted(wanted)], groups=("Eng",))
    (eng,) = plan_groups(res, "{display_name}", {"eng": existing}, key_of_id, remove_stale=remove).groups
    if not ours:
        assert eng.action is GroupAction.FOREIGN and eng.to_add == () and eng.stale == ()
        return
    after_keys = {key_of_id[i] for i in existing.member_ids if i in key_of_id} | set(eng.to_add)
    if remove:
        after_keys -= set(eng.stale_keys)
        assert after_keys == {f"{n}@x.com" for n in wanted}
    assert not set(eng.to_add) & {key_of_id[i] for i in existing.member_ids if i in key_of_id}
    assert {f"{n}@x.com" for n in wanted} <= after_keys


def test_resolution_keeps_service_principals_only_when_asked_and_counts_missing_app_ids() -> None:
    objects = [
        {
            "@odata.type": "#microsoft.graph.user",
            "id": "u1",
            "userPrincipalName": "ann@x.com",
            "accountEnabled": True,
        },
        {
            "@odata.type": "#microsoft.graph.servicePrincipal",
            "id": "s1",
            "appId": "APP-1",
            "displayName": "etl",
        },
        {"@odata.type": "#microsoft.graph.servicePrincipal", "id": "s2", "appId": None, "displayName": None},
        {
            "@odata.type": "#microsoft.graph.servicePrincipal",
            "id": "s3",
            "appId": "app-1",
            "displayName": "dup",
        },
    ]
    plain = resolve_members({"Eng": objects})
    assert plain.service_principals == () and plain.skipped_counts()["not_a_user"] == 3
    res = resolve_members(
        {"Eng": objects}, include_service_principals=True, group_objects=[(GID["Eng"], "Eng")]
    )
    assert [(sp.application_id, sp.display_name) for sp in res.service_principals] == [("APP-1", "etl")]
    assert res.service_principals_without_app_id == 1
    reasons = {(s.object_id, s.reason, s.detail) for s in res.skipped}
    assert ("s2", SkipReason.NOT_A_USER, NO_APP_ID_DETAIL) in reasons
    assert ("s3", SkipReason.DUPLICATE_USER_NAME, "app-1") in reasons
    # The record round-trips the new parts exactly.
    assert Resolution.from_record(res.to_record()) == res
