"""Unit tests of the pure decision: member resolution, the plan and the guard."""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entra_provisioning.errors import ProvisioningError
from entra_provisioning.plan import (
    PLAIN_RECORD_VERSION,
    RECORD_VERSION,
    ExistingUser,
    GuardExceeded,
    Member,
    Plan,
    RecordVersionError,
    RenamedUser,
    Resolution,
    SkippedMember,
    SkipReason,
    build_plan,
    check_guard,
    map_user_name,
    resolve_members,
)

USER = "#microsoft.graph.user"


def user(
    object_id: str,
    upn: str | None = None,
    *,
    mail: str | None = None,
    display_name: str | None = None,
    enabled: bool | None = True,
    user_type: str = "Member",
    odata_type: str | None = USER,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": object_id,
        "userPrincipalName": upn,
        "mail": mail,
        "displayName": display_name,
        "accountEnabled": enabled,
        "userType": user_type,
    }
    if odata_type is not None:
        obj["@odata.type"] = odata_type
    return obj


def member(user_name: str, object_id: str | None = None, groups: tuple[str, ...] = ("g",)) -> Member:
    return Member(object_id or f"id-{user_name}", user_name, user_name, groups)


def skipped_by_id(resolution: Resolution) -> dict[str, SkippedMember]:
    return {entry.object_id: entry for entry in resolution.skipped}


# --- userName mapping -------------------------------------------------------------------------------


def test_upn_is_stripped_and_lower_cased() -> None:
    assert map_user_name(user("1", "  Alice.Smith@Contoso.COM ")) == "alice.smith@contoso.com"


def test_mail_attribute_is_used_when_configured() -> None:
    obj = user("1", "alice@contoso.onmicrosoft.com", mail="Alice@Contoso.com")
    assert map_user_name(obj, "mail") == "alice@contoso.com"


def test_guest_ext_upn_maps_to_mail() -> None:
    guest = user(
        "1", "jane_fabrikam.com#EXT#@contoso.onmicrosoft.com", mail="Jane@Fabrikam.com", user_type="Guest"
    )
    assert map_user_name(guest) == "jane@fabrikam.com"


def test_ext_marker_is_case_insensitive_and_applies_to_converted_guests() -> None:
    # A guest converted to a member keeps its #EXT# UPN, which is still not a usable sign-in name.
    converted = user("1", "bob_x.org#ext#@contoso.onmicrosoft.com", mail="bob@x.org", user_type="Member")
    assert map_user_name(converted) == "bob@x.org"


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "no-at-sign", "@contoso.com", "alice@", "a@b@c.com", "alice smith@contoso.com", 42],
)
def test_implausible_values_map_to_none(value: Any) -> None:
    assert map_user_name(user("1", value)) is None


def test_unknown_attribute_is_rejected() -> None:
    with pytest.raises(ValueError, match="user_name_attribute"):
        map_user_name(user("1", "a@b.c"), "onPremisesSamAccountName")
    with pytest.raises(ValueError, match="user_name_attribute"):
        resolve_members({"g": []}, "employeeId")


# --- resolve_members: skips -------------------------------------------------------------------------


def test_guest_with_ext_upn_is_resolved_via_mail() -> None:
    guest = user(
        "1", "jane_f.com#EXT#@t.onmicrosoft.com", mail="jane@f.com", display_name="Jane", user_type="Guest"
    )
    resolution = resolve_members({"g": [guest]})
    assert resolution.members == (Member("1", "jane@f.com", "Jane", ("g",)),)
    assert resolution.skipped == ()


def test_guest_without_mail_is_skipped_no_user_name() -> None:
    guest = user("1", "jane_f.com#EXT#@t.onmicrosoft.com", mail=None, user_type="Guest")
    resolution = resolve_members({"g": [guest]})
    assert resolution.members == ()
    entry = skipped_by_id(resolution)["1"]
    assert entry.reason is SkipReason.NO_USER_NAME
    assert "guest UPN" in entry.detail
    assert resolution.skipped_counts()["no_user_name"] == 1


def test_disabled_user_is_skipped() -> None:
    resolution = resolve_members({"g": [user("1", "a@x.com", enabled=False), user("2", "b@x.com")]})
    assert [m.user_name for m in resolution.members] == ["b@x.com"]
    assert skipped_by_id(resolution)["1"].reason is SkipReason.DISABLED
    assert skipped_by_id(resolution)["1"].detail == "a@x.com"


def test_missing_account_enabled_counts_as_enabled() -> None:
    resolution = resolve_members({"g": [user("1", "a@x.com", enabled=None)]})
    assert [m.user_name for m in resolution.members] == ["a@x.com"]


@pytest.mark.parametrize(
    "odata_type",
    ["#microsoft.graph.device", "#microsoft.graph.servicePrincipal", "#microsoft.graph.group", "#x.y"],
)
def test_non_users_are_skipped(odata_type: str) -> None:
    # Devices carry accountEnabled too; the type check must win so they are not counted as "disabled".
    obj = user("1", "looks-like@user.com", enabled=False, odata_type=odata_type)
    resolution = resolve_members({"g": [obj]})
    assert resolution.members == ()
    entry = skipped_by_id(resolution)["1"]
    assert entry.reason is SkipReason.NOT_A_USER
    assert entry.detail == odata_type


def test_missing_odata_type_means_user() -> None:
    resolution = resolve_members({"g": [user("1", "a@x.com", odata_type=None)]})
    assert [m.user_name for m in resolution.members] == ["a@x.com"]


def test_user_odata_type_is_matched_leniently() -> None:
    resolution = resolve_members({"g": [user("1", "a@x.com", odata_type="microsoft.graph.User")]})
    assert [m.user_name for m in resolution.members] == ["a@x.com"]


def test_same_user_name_keeps_first_object_id_and_skips_other() -> None:
    objects = [user("b-2", "Alice@X.com"), user("a-1", "alice@x.com"), user("c-3", "ALICE@x.com ")]
    resolution = resolve_members({"g": objects})
    assert [(m.object_id, m.user_name) for m in resolution.members] == [("a-1", "alice@x.com")]
    skipped = skipped_by_id(resolution)
    assert {skipped["b-2"].reason, skipped["c-3"].reason} == {SkipReason.DUPLICATE_USER_NAME}
    assert skipped["b-2"].detail == "alice@x.com"
    # Input order must not matter.
    assert resolve_members({"g": list(reversed(objects))}) == resolution


def test_enabled_account_wins_name_over_disabled_one() -> None:
    resolution = resolve_members({"g": [user("a", "x@y.com", enabled=False), user("b", "X@y.com")]})
    assert [m.object_id for m in resolution.members] == ["b"]
    assert skipped_by_id(resolution)["a"].reason is SkipReason.DISABLED


def test_skip_counts_cover_every_reason() -> None:
    resolution = resolve_members(
        {
            "g": [
                user("1", "a@x.com", enabled=False),
                user("2", None),
                user("3", "d@x.com", odata_type="#microsoft.graph.device"),
                user("4", "dup@x.com"),
                user("5", "DUP@x.com"),
                user("6", "ok@x.com"),
            ]
        }
    )
    assert resolution.skipped_counts() == {
        "disabled": 1,
        "no_user_name": 1,
        "not_a_user": 1,
        "duplicate_user_name": 1,
    }
    assert [entry.reason for entry in resolution.skipped] == list(SkipReason)


def test_no_skips_still_reports_every_reason_as_zero() -> None:
    assert resolve_members({"g": [user("1", "a@x.com")]}).skipped_counts() == dict.fromkeys(
        ["disabled", "no_user_name", "not_a_user", "duplicate_user_name"], 0
    )


# --- resolve_members: groups ------------------------------------------------------------------------


def test_duplicates_across_groups_keep_all_source_groups_sorted() -> None:
    alice = user("1", "alice@x.com", display_name="Alice")
    resolution = resolve_members({"zeta": [alice], "alpha": [alice, user("2", "bob@x.com")], "mid": [alice]})
    assert resolution.members == (
        Member("1", "alice@x.com", "Alice", ("alpha", "mid", "zeta")),
        Member("2", "bob@x.com", "bob@x.com", ("alpha",)),
    )
    assert resolution.groups == ("zeta", "alpha", "mid")


def test_object_listed_twice_in_one_group_counts_once() -> None:
    alice = user("1", "alice@x.com")
    resolution = resolve_members({"g": [alice, dict(alice)]})
    assert len(resolution.members) == 1
    assert resolution.skipped == ()


def test_object_id_case_differences_are_the_same_object() -> None:
    resolution = resolve_members({"g1": [user("ABC-1", "alice@x.com")], "g2": [user("abc-1", "alice@x.com")]})
    assert [(m.object_id, m.groups) for m in resolution.members] == [("ABC-1", ("g1", "g2"))]


def test_skipped_entries_also_remember_groups_and_are_deduplicated() -> None:
    dev = user("d", None, odata_type="#microsoft.graph.device")
    resolution = resolve_members({"b": [dev], "a": [dev]})
    assert resolution.skipped == (
        SkippedMember("d", SkipReason.NOT_A_USER, "", ("a", "b"), "#microsoft.graph.device"),
    )
    assert resolution.skipped_counts()["not_a_user"] == 1


def test_empty_groups_are_reported_in_config_order() -> None:
    dev = user("d", None, odata_type="#microsoft.graph.device")
    resolution = resolve_members(
        {"z-empty": [], "only-devices": [dev], "a-empty": iter(()), "g": [user("1", "a@x.com")]}
    )
    # A group whose members were all skipped is not empty: it returned objects.
    assert resolution.empty_groups == ("z-empty", "a-empty")
    assert [m.user_name for m in resolution.members] == ["a@x.com"]


def test_generators_are_accepted() -> None:
    resolution = resolve_members({"g": (user(str(i), f"u{i}@x.com") for i in range(3))})
    assert [m.user_name for m in resolution.members] == ["u0@x.com", "u1@x.com", "u2@x.com"]


def test_object_without_id_is_an_error_naming_the_group() -> None:
    with pytest.raises(ValueError, match="'eng'"):
        resolve_members({"eng": [{"userPrincipalName": "a@x.com"}]})


def test_display_name_falls_back_to_user_name() -> None:
    resolution = resolve_members(
        {"g": [user("1", "a@x.com", display_name="  "), user("2", "b@x.com", display_name=" Bee ")]}
    )
    assert [m.display_name for m in resolution.members] == ["a@x.com", "Bee"]


def test_members_are_sorted_by_user_name() -> None:
    resolution = resolve_members({"g": [user("1", "c@x.com"), user("2", "a@x.com"), user("3", "b@x.com")]})
    assert [m.user_name for m in resolution.members] == ["a@x.com", "b@x.com", "c@x.com"]


def test_mail_mode_skips_users_without_mail() -> None:
    resolution = resolve_members(
        {"g": [user("1", "a@x.com", mail=None), user("2", "b@x.com", mail="B@Y.com")]}, "mail"
    )
    assert [m.user_name for m in resolution.members] == ["b@y.com"]
    assert skipped_by_id(resolution)["1"].detail == "mail=''"
    assert resolution.user_name_attribute == "mail"


# --- Resolution record ------------------------------------------------------------------------------


def sample_resolution() -> Resolution:
    return resolve_members(
        {
            "Data Engineers": [user("1", "a@x.com", display_name="A"), user("2", "b@x.com")],
            "Analysts": [user("1", "a@x.com", display_name="A"), user("3", None, display_name="No Name")],
            "Empty": [],
        }
    )


def test_record_round_trip_is_exact() -> None:
    resolution = sample_resolution()
    record = resolution.to_record()
    assert Resolution.from_record(json.loads(json.dumps(record))) == resolution


def test_record_is_compact_rows_against_a_groups_table() -> None:
    record = sample_resolution().to_record(compress=False)
    assert record["version"] == PLAIN_RECORD_VERSION == 2
    assert record["groups"] == ["Data Engineers", "Analysts", "Empty"]
    assert record["empty_groups"] == [2]
    # display_name equal to userName is stored as 0, real names as text; groups by index.
    assert record["members"] == [["1", "a@x.com", "A", [1, 0]], ["2", "b@x.com", 0, [0]]]
    assert record["skipped"] == [["3", 1, "No Name", "userPrincipalName=''", [1]]]


def test_real_empty_display_name_survives_round_trip() -> None:
    resolution = Resolution(groups=("g",), members=(Member("1", "a@x.com", "", ("g",)),))
    assert Resolution.from_record(resolution.to_record()).members[0].display_name == ""


def test_stored_record_is_the_plain_record_compressed() -> None:
    resolution = sample_resolution()
    record = resolution.to_record()
    assert set(record) == {"version", "z"} and record["version"] == RECORD_VERSION == 3
    inner = json.loads(zlib.decompress(base64.b64decode(record["z"])))
    assert inner == resolution.to_record(compress=False)


def test_a_version_2_record_from_before_the_upgrade_is_still_read() -> None:
    # What an older release stored in XCom: a run retried after the upgrade must read it. Written out by
    # hand (not by to_record) so that a change of the plain layout cannot pass unnoticed.
    stored_by_older_release = {
        "version": 2,
        "user_name_attribute": "userPrincipalName",
        "groups": ["Data Engineers", "Analysts", "Empty"],
        "empty_groups": [2],
        "members": [["1", "a@x.com", "A", [1, 0]], ["2", "b@x.com", 0, [0]]],
        "skipped": [["3", 1, "No Name", "userPrincipalName=''", [1]]],
        "group_objects": [],
        "service_principals": [],
        "service_principals_without_app_id": 0,
    }
    assert Resolution.from_record(json.loads(json.dumps(stored_by_older_release))) == sample_resolution()


@pytest.mark.parametrize(
    "record",
    [
        {"version": 3, "z": "not base64!"},
        {"version": 3, "z": base64.b64encode(b"not zlib").decode()},
        {"version": 3},
        {"version": 3, "z": base64.b64encode(zlib.compress(b'{"version": 7}')).decode()},
    ],
)
def test_an_undecodable_version_3_record_is_refused_with_the_remedy(record: dict[str, Any]) -> None:
    with pytest.raises(RecordVersionError, match="resolve_members"):
        Resolution.from_record(record)


def test_record_of_unknown_version_is_refused() -> None:
    record = sample_resolution().to_record()
    record["version"] = 99
    with pytest.raises(ValueError, match="version 99"):
        Resolution.from_record(record)


def test_resolution_rejects_groups_missing_from_table() -> None:
    with pytest.raises(ValueError, match=r"not in Resolution\.groups"):
        Resolution(groups=("a",), members=(Member("1", "a@x.com", "A", ("b",)),))
    with pytest.raises(ValueError, match="duplicates"):
        Resolution(groups=("a", "a"), members=())


def test_record_for_100k_members_stays_small() -> None:
    groups = {
        f"group-{g}": [
            user(
                f"{i:08x}-aaaa-bbbb-cccc-{g:012x}",
                f"first.last{i}@contoso.com",
                display_name=f"First Last {i}",
            )
            for i in range(g * 25_000, (g + 1) * 25_000)
        ]
        for g in range(4)
    }
    resolution = resolve_members(groups)
    assert len(resolution.members) == 100_000
    plain = json.dumps(resolution.to_record(compress=False), separators=(",", ":"))
    # ~95 bytes per member: 36-char object id, ~28-char userName, display name, group index.
    assert len(plain) < 10_000_000
    encoded = json.dumps(resolution.to_record(), separators=(",", ":"))
    # Compressed: these names are very regular, so far smaller (bench/xcom_size.py measures realistic ones).
    assert len(encoded) < len(plain) / 3
    assert Resolution.from_record(json.loads(encoded)) == resolution


# --- build_plan -------------------------------------------------------------------------------------


def test_plan_compares_user_names_case_insensitively() -> None:
    plan = build_plan([member("alice@x.com"), member("bob@x.com")], [ExistingUser("10", "Alice@X.COM", None)])
    assert [m.user_name for m in plan.to_add] == ["bob@x.com"]
    assert [m.user_name for m in plan.already_present] == ["alice@x.com"]
    assert plan.drift == ()


def test_plan_accepts_a_resolution() -> None:
    resolution = sample_resolution()
    plan = build_plan(resolution, [ExistingUser("10", "b@x.com")])
    assert [m.user_name for m in plan.to_add] == ["a@x.com"]
    assert [m.user_name for m in plan.already_present] == ["b@x.com"]


def test_to_add_is_sorted_by_user_name() -> None:
    plan = build_plan([member("c@x.com"), member("a@x.com"), member("b@x.com")], [])
    assert [m.user_name for m in plan.to_add] == ["a@x.com", "b@x.com", "c@x.com"]


def test_drift_lists_existing_users_in_no_group() -> None:
    existing = [
        ExistingUser("10", "alice@x.com"),
        ExistingUser("11", "zed@x.com"),
        ExistingUser("12", "Admin@x.com"),
    ]
    plan = build_plan([member("alice@x.com")], existing)
    assert [u.user_name for u in plan.drift] == ["Admin@x.com", "zed@x.com"]
    assert plan.renamed == ()


def test_existing_users_listed_twice_count_once() -> None:
    existing = [
        ExistingUser("10", "old@x.com"),
        ExistingUser("10", "old@x.com"),
        ExistingUser("11", "a@x.com"),
    ] * 2
    plan = build_plan([member("a@x.com")], existing)
    assert plan.drift == (ExistingUser("10", "old@x.com"),)


def test_renamed_member_is_added_and_old_account_listed() -> None:
    existing = [ExistingUser("10", "alice.old@x.com", "OBJ-1")]
    plan = build_plan([member("alice.new@x.com", object_id="obj-1")], existing)
    assert [m.user_name for m in plan.to_add] == ["alice.new@x.com"]
    assert plan.renamed == (RenamedUser("obj-1", "alice.new@x.com", "10", "alice.old@x.com"),)
    # The old account is explained by the rename, so it is not drift as well.
    assert plan.drift == ()


def test_rename_reported_even_when_new_name_already_exists() -> None:
    existing = [ExistingUser("10", "alice.old@x.com", "obj-1"), ExistingUser("11", "alice.new@x.com", None)]
    plan = build_plan([member("alice.new@x.com", object_id="obj-1")], existing)
    assert plan.to_add == ()
    assert [r.old_user_id for r in plan.renamed] == ["10"]


def test_old_name_reused_by_another_member_is_not_a_rename() -> None:
    # bob now holds the name alice used to have: the account is bob's and must never be offered for cleanup.
    existing = [ExistingUser("10", "shared@x.com", "alice-id")]
    members = [member("alice@x.com", object_id="alice-id"), member("shared@x.com", object_id="bob-id")]
    plan = build_plan(members, existing)
    assert plan.renamed == ()
    assert plan.drift == ()
    assert [m.user_name for m in plan.already_present] == ["shared@x.com"]


def test_same_external_id_same_name_is_not_a_rename() -> None:
    plan = build_plan([member("a@x.com", object_id="o")], [ExistingUser("10", "A@x.com", "o")])
    assert plan.renamed == ()
    assert len(plan.already_present) == 1


def test_external_id_of_unknown_object_is_drift() -> None:
    plan = build_plan([member("a@x.com", object_id="o")], [ExistingUser("10", "gone@x.com", "someone-else")])
    assert [u.id for u in plan.drift] == ["10"]
    assert plan.renamed == ()


def test_members_sharing_a_user_name_are_rejected() -> None:
    with pytest.raises(ValueError, match="share userName"):
        build_plan([member("a@x.com", object_id="1"), member("A@x.com", object_id="2")], [])


def test_plan_is_independent_of_input_order() -> None:
    members = [member(f"u{i}@x.com") for i in range(5)]
    existing = [ExistingUser(str(i), f"U{i}@x.com") for i in range(2, 8)]
    assert build_plan(members, existing) == build_plan(reversed(members), reversed(existing))


# --- check_guard ------------------------------------------------------------------------------------


def plan_adding(n: int, present: int = 0) -> Plan:
    return build_plan(
        [member(f"u{i}@x.com") for i in range(n + present)],
        [ExistingUser(str(i), f"u{i}@x.com") for i in range(n, n + present)],
    )


def test_guard_allows_under_and_at_the_limit() -> None:
    check_guard(plan_adding(4), 5)
    check_guard(plan_adding(5), 5)


def test_guard_fails_over_the_limit_with_an_actionable_message() -> None:
    with pytest.raises(GuardExceeded) as caught:
        check_guard(plan_adding(6, present=3), 5)
    error = caught.value
    assert isinstance(error, ProvisioningError)
    assert (error.to_add, error.limit, error.already_present) == (6, 5, 3)
    message = str(error)
    assert "6 new users" in message
    assert "max_new_users_per_run is 5" in message
    assert "3 members are already present" in message
    assert "trigger form" in message
    assert '{"max_new_users_per_run": 6}' in message


def test_guard_none_means_no_limit() -> None:
    check_guard(plan_adding(10_000), None)


def test_guard_zero_allows_nothing() -> None:
    check_guard(plan_adding(0, present=3), 0)
    with pytest.raises(GuardExceeded, match="Refusing to add 1 new users"):
        check_guard(plan_adding(1), 0)


def test_guard_rejects_negative_limit() -> None:
    with pytest.raises(ValueError, match="max_new_users"):
        check_guard(plan_adding(0), -1)


# --- properties -------------------------------------------------------------------------------------

# A tiny alphabet makes userName collisions (including by case) and cross-group duplicates frequent.
names = st.text(alphabet="aAbB", min_size=1, max_size=3)
domains = st.sampled_from(["x.com", "X.com", "y.org"])
user_names = st.builds(lambda local, domain: f"{local}@{domain}", names, domains)
object_ids = st.text(alphabet="0123abcdAB-", min_size=1, max_size=4)
graph_objects = st.fixed_dictionaries(
    {
        "id": object_ids,
        "userPrincipalName": st.one_of(
            st.none(),
            user_names,
            st.builds(lambda n: f"{n}_f.com#EXT#@t.onmicrosoft.com", names),
            st.just("bad"),
        ),
        "mail": st.one_of(st.none(), user_names),
        "displayName": st.one_of(st.none(), st.text(max_size=5)),
        "accountEnabled": st.sampled_from([True, True, True, False, None]),
        "userType": st.sampled_from(["Member", "Guest"]),
    },
    optional={
        "@odata.type": st.sampled_from([USER, USER, "#microsoft.graph.device", "#microsoft.graph.group"])
    },
)
group_maps = st.dictionaries(st.text(min_size=1, max_size=4), st.lists(graph_objects, max_size=8), max_size=4)
existing_lists = st.lists(
    st.builds(
        ExistingUser,
        st.text(alphabet="0123", min_size=1, max_size=2),
        user_names,
        st.one_of(st.none(), object_ids),
    ),
    max_size=12,
)


@given(group_maps, st.sampled_from(["userPrincipalName", "mail"]))
@settings(max_examples=300)
def test_property_resolution_accounts_for_every_object(
    members_by_group: dict[str, list[dict[str, Any]]], attr: str
) -> None:
    resolution = resolve_members(members_by_group, attr)
    distinct_ids = {obj["id"].lower() for objects in members_by_group.values() for obj in objects}
    resolved_ids = [m.object_id.lower() for m in resolution.members] + [
        s.object_id.lower() for s in resolution.skipped
    ]
    assert sorted(resolved_ids) == sorted(distinct_ids)
    member_names = [m.user_name for m in resolution.members]
    assert len(set(member_names)) == len(member_names)
    assert all(name == name.strip().lower() and "#ext#" not in name for name in member_names)
    assert sum(resolution.skipped_counts().values()) == len(resolution.skipped)


@given(group_maps, st.sampled_from(["userPrincipalName", "mail"]))
@settings(max_examples=300)
def test_property_record_round_trip(members_by_group: dict[str, list[dict[str, Any]]], attr: str) -> None:
    resolution = resolve_members(members_by_group, attr)
    record = json.loads(json.dumps(resolution.to_record()))
    assert Resolution.from_record(record) == resolution


@st.composite
def direct_resolutions(draw: st.DrawFn) -> Resolution:
    # Built directly, so arbitrary text (unicode, empty, equal to the userName) reaches the record.
    groups = draw(st.lists(st.text(max_size=4), unique=True, max_size=4))
    group_subsets = (
        st.lists(st.sampled_from(groups), unique=True).map(lambda gs: tuple(sorted(gs)))
        if groups
        else st.just(())
    )
    text = st.text(max_size=6)
    members = draw(st.lists(st.builds(Member, text, text, text, group_subsets), max_size=6))
    skipped = draw(
        st.lists(
            st.builds(SkippedMember, text, st.sampled_from(list(SkipReason)), text, group_subsets, text),
            max_size=6,
        )
    )
    empty = tuple(g for g in groups if draw(st.booleans()))
    return Resolution(
        tuple(groups),
        tuple(members),
        tuple(skipped),
        empty,
        draw(st.sampled_from(["userPrincipalName", "mail"])),
    )


@given(direct_resolutions())
@settings(max_examples=300)
def test_property_record_round_trip_arbitrary_text(resolution: Resolution) -> None:
    assert Resolution.from_record(json.loads(json.dumps(resolution.to_record()))) == resolution


@given(group_maps, existing_lists)
@settings(max_examples=300)
def test_property_plan_invariants(
    members_by_group: dict[str, list[dict[str, Any]]], existing: list[ExistingUser]
) -> None:
    resolution = resolve_members(members_by_group)
    plan = build_plan(resolution, existing)
    # Duplicates by id are one account, and the first listing is the one that counts.
    unique_existing = {u.id: u for u in reversed(existing)}
    existing_names = {u.user_name.lower() for u in unique_existing.values()}
    member_names = {m.user_name.lower() for m in resolution.members}
    to_add = {m.object_id for m in plan.to_add}
    present = {m.object_id for m in plan.already_present}

    # (a) to_add and already_present partition the members.
    assert to_add | present == {m.object_id for m in resolution.members}
    assert not to_add & present
    assert len(plan.to_add) + len(plan.already_present) == len(resolution.members)
    # (b) nothing to add already exists, case-insensitively; everything present does.
    assert not {m.user_name.lower() for m in plan.to_add} & existing_names
    assert {m.user_name.lower() for m in plan.already_present} <= existing_names
    # (c) drift and renamed old accounts share no userName with any member.
    assert not {u.user_name.lower() for u in plan.drift} & member_names
    assert not {r.old_user_name.lower() for r in plan.renamed} & member_names
    # Every distinct existing account is matched, drift, or a renamed old account: never lost or doubled.
    matched = {i for i, u in unique_existing.items() if u.user_name.lower() in member_names}
    drift_ids = [u.id for u in plan.drift]
    renamed_ids = [r.old_user_id for r in plan.renamed]
    assert sorted([*matched, *drift_ids, *renamed_ids]) == sorted(unique_existing)
    assert [m.user_name for m in plan.to_add] == sorted(m.user_name for m in plan.to_add)
