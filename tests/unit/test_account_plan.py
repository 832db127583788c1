"""The account target's pure decision: who to create, who to assign, who already has access, drift."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entra_provisioning.identities import CreateOutcome
from entra_provisioning.plan import (
    AccountPlan,
    ExistingUser,
    GuardExceeded,
    Member,
    Resolution,
    WorkspaceAccess,
    build_account_plan,
    check_guard,
)
from entra_provisioning.summary import ACCOUNT_FIELDS, build_summary


def member(name: str, object_id: str | None = None) -> Member:
    return Member(object_id or f"oid-{name}", f"{name}@x.com", name.title(), ("G",))


def account_user(user_id: str, name: str, external_id: str | None = None) -> ExistingUser:
    return ExistingUser(user_id, f"{name}@x.com", external_id)


MEMBERS = [member("ann"), member("bob"), member("cat"), member("dan"), member("eve")]
ACCOUNT = [
    account_user("1", "ann"),  # direct USER assignment
    account_user("2", "BOB"),  # ADMIN: has access; must never be assigned again (a PUT would downgrade)
    account_user("3", "cat"),  # access through an assigned group
    account_user("4", "dan"),  # in the account, no access
    account_user("5", "zed"),  # has access, in no group: drift
    account_user("6", "yan"),  # in the account, no access, in no group: not this workspace's business
]
ACCESS = WorkspaceAccess(
    direct={"1": ("USER",), "2": ("ADMIN",), "5": ("USER",), "90": ("USER",)}, via_group=frozenset({"3"})
)


def test_each_member_lands_where_it_belongs() -> None:
    plan = build_account_plan(MEMBERS, ACCOUNT, ACCESS)
    names = lambda ms: [m.user_name for m in ms]  # noqa: E731
    assert names(plan.to_create) == ["eve@x.com"]
    assert [(m.user_name, pid) for m, pid in plan.to_assign] == [("dan@x.com", "4")]
    assert names(plan.to_add) == ["dan@x.com", "eve@x.com"]
    assert names(plan.already_present) == ["ann@x.com", "bob@x.com", "cat@x.com"]
    assert names(plan.access_direct) == ["ann@x.com", "bob@x.com"]
    assert names(plan.access_via_group) == ["cat@x.com"]
    assert [u.user_name for u in plan.drift] == ["zed@x.com"]


def test_an_admin_is_never_in_the_assignments_to_make() -> None:
    """A PUT replaces a principal's permissions: assigning USER to an ADMIN would downgrade them."""
    plan = build_account_plan([member("bob")], [account_user("2", "bob")], WorkspaceAccess({"2": ("ADMIN",)}))
    assert plan.to_add == () and plan.to_assign == ()
    assert [m.user_name for m in plan.access_direct] == ["bob@x.com"]


def test_group_access_needs_no_direct_assignment() -> None:
    plan = build_account_plan(
        [member("cat")], [account_user("3", "cat")], WorkspaceAccess({}, frozenset({"3"}))
    )
    assert plan.to_add == () and [m.user_name for m in plan.access_via_group] == ["cat@x.com"]


def test_rename_is_found_through_the_accounts_external_id_when_it_has_one() -> None:
    renamed = member("ann.new", object_id="oid-ann")
    plan = build_account_plan(
        [renamed], [account_user("1", "ann", external_id="OID-ANN")], WorkspaceAccess({"1": ("USER",)})
    )
    assert [(r.old_user_name, r.new_user_name) for r in plan.renamed] == [("ann@x.com", "ann.new@x.com")]
    assert plan.drift == ()  # explained as a rename, not drift
    assert [m.user_name for m in plan.to_create] == ["ann.new@x.com"]


def test_guard_counts_every_principal_to_create_or_assign() -> None:
    plan = build_account_plan(MEMBERS, ACCOUNT, ACCESS)
    check_guard(plan, 2)
    with pytest.raises(GuardExceeded) as info:
        check_guard(plan, 1)
    assert info.value.to_add == 2 and info.value.already_present == 3


def test_account_summary_reports_each_count_separately() -> None:
    resolution = Resolution(("G",), tuple(sorted(MEMBERS, key=lambda m: m.user_name)))
    plan = build_account_plan(resolution, ACCOUNT, ACCESS)
    outcome = CreateOutcome(added=["dan@x.com", "eve@x.com"], created=["eve@x.com"])
    summary = build_summary(resolution, plan, outcome, dry_run=False)
    record = summary.to_dict()
    assert {k: record[k] for k in ACCOUNT_FIELDS} == {
        "target": "account",
        "to_create": 1,
        "created_in_account": 1,
        "access_direct": 2,
        "access_via_group": 1,
        "created_user_names": ["eve@x.com"],
    }
    assert (record["to_add"], record["added"], record["already_present"], record["drift"]) == (2, 2, 3, 1)
    table = summary.render_table()
    for line in ("created in the account", "assigned to the workspace", "through a group", "account target"):
        assert line in table
    dry = build_summary(resolution, plan, None, dry_run=True).render_table()
    assert "would assign (2):" in dry and "DRY RUN" in dry


names_st = st.sampled_from([f"u{i}" for i in range(12)])


@settings(max_examples=200, deadline=None)
@given(
    members=st.sets(names_st),
    account=st.sets(names_st),
    direct=st.dictionaries(names_st, st.sampled_from([("USER",), ("ADMIN",), ("USER", "ADMIN"), ()])),
    via_group=st.sets(names_st),
)
def test_partition_holds_for_any_membership(
    members: set[str], account: set[str], direct: dict[str, tuple[str, ...]], via_group: set[str]
) -> None:
    """Every member is in exactly one of to_add / already_present; nobody with access is assigned;
    creates are exactly the members missing from the account; drift has access and is no member."""
    ids = {name: f"id-{name}" for name in account}
    access = WorkspaceAccess(
        {ids[n]: p for n, p in direct.items() if n in ids}, frozenset(ids[n] for n in via_group if n in ids)
    )
    plan: AccountPlan = build_account_plan(
        [member(n) for n in sorted(members)], [account_user(ids[n], n) for n in sorted(account)], access
    )
    to_add = {m.user_name for m in plan.to_add}
    present = {m.user_name for m in plan.already_present}
    assert to_add.isdisjoint(present) and to_add | present == {f"{n}@x.com" for n in members}
    assert {m.user_name for m in plan.to_create} == {f"{n}@x.com" for n in members - account}
    for _, principal_id in plan.to_assign:
        assert not access.has_access(principal_id)
    assert {m.user_name for m in plan.to_create}.isdisjoint(m.user_name for m, _ in plan.to_assign)
    for user in plan.drift:
        assert access.has_access(user.id) and user.user_name.split("@")[0] not in members
    assert len(plan.access_direct) + len(plan.access_via_group) == len(plan.already_present)
