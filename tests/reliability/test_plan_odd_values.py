"""Property tests of the pure decision over odd Graph data: quotes, non-ASCII, case twins, #EXT#,
missing or null attributes, non-user objects. Whatever Graph sends, the plan never sends two creates for
one account, never proposes someone already present, and its record survives XCom exactly."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entra_provisioning.plan import ExistingUser, Resolution, build_plan, resolve_members

ODD = st.sampled_from(
    ["O'Brien", 'Q"uote', "Zoë", "山田", "#EXT#", "#ext#", " ", "", "\t", "@", "A", "a", "\\", "é"]
)
text = st.lists(ODD, max_size=4).map("".join)
address = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.one_of(text, st.sampled_from(["ann", "Ann", "ANN", "o'neil", "jane_fabrikam.com#EXT#"])),
    st.sampled_from(
        ["contoso.com", "Contoso.COM", "contoso.onmicrosoft.com", "partner.example", "ü.example"]
    ),
)
maybe = st.one_of(st.none(), address, text)
ids = st.sampled_from([f"0000000{i}-aaaa-4aaa-8aaa-00000000000{i}" for i in range(8)]).flatmap(
    lambda oid: st.sampled_from([oid, oid.upper()])
)


@st.composite
def graph_object(draw: st.DrawFn) -> dict:
    obj: dict = {"id": draw(ids)}
    for key, values in (
        (
            "@odata.type",
            st.sampled_from(
                ["#microsoft.graph.user", "#microsoft.graph.servicePrincipal", "#Microsoft.Graph.User", None]
            ),
        ),
        ("userPrincipalName", maybe),
        ("mail", maybe),
        ("displayName", st.one_of(st.none(), text)),
        ("accountEnabled", st.sampled_from([True, False, None])),
        ("userType", st.sampled_from(["Member", "Guest", None])),
    ):
        if draw(st.booleans()) or key == "userPrincipalName":
            obj[key] = draw(values)
    return obj


groups = st.dictionaries(
    st.sampled_from(["G1", "Team O'Neil's", 'Zoë "Q"']),
    st.lists(graph_object(), max_size=8),
    min_size=1,
    max_size=3,
)
existing = st.lists(
    st.builds(
        ExistingUser,
        id=st.sampled_from([str(i) for i in range(6)]),
        user_name=st.one_of(address, text),
        external_id=st.one_of(st.none(), ids),
    ),
    max_size=6,
    unique_by=lambda user: user.id,  # one SCIM id is one user (repeats from shifting pages are the same user)
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(groups, st.sampled_from(["userPrincipalName", "mail"]), existing)
def test_any_graph_data_gives_a_sound_plan(by_group: dict, attribute: str, users: list[ExistingUser]) -> None:
    resolution = resolve_members(by_group, attribute)

    names = [m.user_name for m in resolution.members]
    assert len({n.lower() for n in names}) == len(names)  # one account per userName, whatever the case
    for name in names:
        local, at, domain = name.partition("@")
        assert name == name.strip().lower() and at and local and domain and "@" not in domain
        assert not any(c.isspace() for c in name)
    # Every distinct object (ids compared case-insensitively) is either provisioned or skipped, once.
    seen = {str(o["id"]).lower() for objects in by_group.values() for o in objects}
    decided = [m.object_id.lower() for m in resolution.members] + [
        s.object_id.lower() for s in resolution.skipped
    ]
    assert sorted(decided) == sorted(seen)
    assert set(resolution.empty_groups) == {g for g, objects in by_group.items() if not objects}

    # The XCom record is JSON and restores the same resolution.
    record = json.loads(json.dumps(resolution.to_record()))
    assert Resolution.from_record(record) == resolution

    plan = build_plan(resolution, users)
    present = {u.user_name.lower() for u in users}
    assert not {m.user_name.lower() for m in plan.to_add} & present  # never re-create someone present
    assert sorted(m.user_name for m in (*plan.to_add, *plan.already_present)) == sorted(names)
    assert {u.user_name.lower() for u in plan.drift}.isdisjoint(names)  # drift is nobody we want
