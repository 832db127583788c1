"""The pure decision: who Entra says should exist, who Databricks has, and what to do about it.

Nothing in this module performs I/O. The hooks fetch Graph directory objects and SCIM users; the
functions here turn them into a :class:`Resolution` (who should be provisioned, who is skipped and why)
and a :class:`Plan` (who to add, who is already there, what drifted). Keeping the decision pure is what
lets it be tested exhaustively without a network and re-run identically from XCom.

Provisioning is add-only: nothing computed here ever leads to removing or changing a Databricks user.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from entra_provisioning.errors import PermanentError
from entra_provisioning.identities import USER_NAME_ATTRIBUTES, ExistingUser, Member, ServicePrincipalMember

__all__ = [
    "PLAIN_RECORD_VERSION",
    "RECORD_VERSION",
    "USER_NAME_ATTRIBUTES",
    "AccountPlan",
    "ExistingUser",
    "GuardExceeded",
    "Member",
    "Plan",
    "RecordVersionError",
    "RenamedUser",
    "Resolution",
    "SkipReason",
    "SkippedMember",
    "WorkspaceAccess",
    "build_account_plan",
    "build_plan",
    "check_guard",
    "map_user_name",
    "resolve_members",
]

#: Bumped whenever the compact record layout changes, so a task never misreads an older XCom.
#: 2: the groups' Entra object ids and display names, and service principals.
#: 3: the version 2 record, JSON-encoded, zlib-compressed and base64-encoded under ``"z"`` (about a
#: fifth of the bytes in the metadata database). :meth:`Resolution.from_record` still reads version 2, so a
#: run retried after an upgrade reads the XCom its earlier attempt stored.
RECORD_VERSION = 3
#: The row layout inside a version 3 record (and the whole of a version 2 one).
PLAIN_RECORD_VERSION = 2
#: zlib's default level: levels above it save under 2 % more on the record and take twice the time.
_COMPRESSION_LEVEL = 6

_USER_ODATA_TYPE = "microsoft.graph.user"
_SP_ODATA_TYPE = "microsoft.graph.serviceprincipal"
#: How a service principal skipped for want of its ``appId`` is described (Graph returns a member
#: service principal's appId only to an app holding Application.Read.All).
NO_APP_ID_DETAIL = (
    "#microsoft.graph.servicePrincipal without appId (the Graph app needs Application.Read.All)"
)
# B2B guests get a UPN such as ``jane_contoso.com#EXT#@tenant.onmicrosoft.com``: it is not an address
# anyone can sign in to Databricks with, so their ``mail`` is used instead.
_GUEST_UPN_MARKER = "#ext#"


class SkipReason(StrEnum):
    """Why a Graph directory object is not provisioned."""

    #: ``accountEnabled`` is ``False``.
    DISABLED = "disabled"
    #: No plausible e-mail-shaped value in the configured attribute (or ``mail`` for ``#EXT#`` guests).
    NO_USER_NAME = "no_user_name"
    #: A device, service principal, group or any other non-user object.
    NOT_A_USER = "not_a_user"
    #: Another Entra object (earlier by object id) already maps to the same ``userName``.
    DUPLICATE_USER_NAME = "duplicate_user_name"


# In a member row, the display name when it merely repeats the userName; an int cannot collide with a
# real display name, which is always a string.
_SAME_AS_USER_NAME = 0

# Records store reasons by position to stay small; the order is part of the record format.
_REASONS: tuple[SkipReason, ...] = tuple(SkipReason)


@dataclass(frozen=True, slots=True)
class SkippedMember:
    """A Graph directory object that is deliberately not provisioned.

    :param object_id: Entra object id.
    :param reason: Why it is skipped.
    :param display_name: Graph ``displayName`` (may be empty), to let a human recognise the object.
    :param groups: Configured groups it was found in, sorted.
    :param detail: Short, reason-specific context: the ``@odata.type`` of a non-user, the rejected value
        for ``no_user_name``, the ``userName`` for ``disabled`` and ``duplicate_user_name``.
    """

    object_id: str
    reason: SkipReason
    display_name: str
    groups: tuple[str, ...]
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Resolution:
    """Who the configured groups resolve to, with what was skipped and why.

    :param groups: The configured groups, in config order.
    :param members: Users to provision, unique by object id and by ``userName``, sorted by ``userName``.
    :param skipped: Objects not provisioned, one per object id, sorted by reason then object id.
    :param empty_groups: Configured groups that returned no directory objects at all, in config order.
    :param user_name_attribute: The Graph attribute ``userName`` was taken from.
    :param group_objects: ``(Entra object id, display name)`` of each configured group, in ``groups``
        order (empty when not known).
    :param service_principals: Service principals to provision (``include_service_principals``), unique
        by object id and by ``appId``, sorted by ``appId``.
    :param service_principals_without_app_id: Of the skipped, service principals Graph returned without
        their ``appId``.
    :raises ValueError: If ``groups`` has duplicates, or an entry names a group not in ``groups``: the
        compact record refers to groups by position, so it could not represent either.
    """

    groups: tuple[str, ...]
    members: tuple[Member, ...]
    skipped: tuple[SkippedMember, ...] = ()
    empty_groups: tuple[str, ...] = ()
    user_name_attribute: str = "userPrincipalName"
    group_objects: tuple[tuple[str, str], ...] = ()
    service_principals: tuple[ServicePrincipalMember, ...] = ()
    service_principals_without_app_id: int = 0

    def __post_init__(self) -> None:
        known = set(self.groups)
        if len(known) != len(self.groups):
            raise ValueError(f"Resolution.groups has duplicates: {list(self.groups)!r}")
        if self.group_objects and len(self.group_objects) != len(self.groups):
            raise ValueError("Resolution.group_objects must give one (id, name) per configured group")
        entries: list[Member | SkippedMember | ServicePrincipalMember] = [
            *self.members,
            *self.skipped,
            *self.service_principals,
        ]
        for entry in entries:
            unknown = [group for group in entry.groups if group not in known]
            if unknown:
                raise ValueError(f"{entry.object_id} names groups not in Resolution.groups: {unknown!r}")
        unknown_empty = [group for group in self.empty_groups if group not in known]
        if unknown_empty:
            raise ValueError(f"empty_groups not in Resolution.groups: {unknown_empty!r}")

    def skipped_counts(self) -> dict[str, int]:
        """Count skipped objects per reason.

        :return: ``{reason: count}`` with every :class:`SkipReason` present (zero when none), so summaries
            have the same shape on every run.
        """
        counts = dict.fromkeys((reason.value for reason in SkipReason), 0)
        for entry in self.skipped:
            counts[entry.reason.value] += 1
        return counts

    def to_record(self, *, compress: bool = True) -> dict[str, Any]:
        """Serialise to a compact, JSON-safe dict for XCom.

        The stored record (version 3) is ``{"version": 3, "z": "<base64>"}``: the plain (version 2) record
        below, JSON-encoded, zlib-compressed and base64-encoded. A members list compresses well (shared
        domains, group indexes, repeated name parts), and the metadata database keeps one per run.

        In the plain record, members become ``[object_id, user_name, display_name, [group_index, ...]]`` rows against one
        ``groups`` table, and ``display_name`` is stored as ``0`` when it equals ``user_name``; this keeps
        100,000 members to roughly 100 bytes each once JSON-encoded.

        :param compress: ``False`` returns the plain version 2 record (to read its layout, or for a reader
            that predates version 3).
        :return: A dict of only str, int and list values; :meth:`from_record` restores it exactly.
        """
        plain = self._plain_record()
        if not compress:
            return plain
        # ASCII-escaped: any str survives, lone surrogates included (zlib takes the escapes in its stride).
        encoded = json.dumps(plain, separators=(",", ":")).encode("ascii")
        packed = base64.b64encode(zlib.compress(encoded, _COMPRESSION_LEVEL)).decode("ascii")
        return {"version": RECORD_VERSION, "z": packed}

    def _plain_record(self) -> dict[str, Any]:
        index = {group: position for position, group in enumerate(self.groups)}
        reason_index = {reason: position for position, reason in enumerate(_REASONS)}
        return {
            "version": PLAIN_RECORD_VERSION,
            "user_name_attribute": self.user_name_attribute,
            "groups": list(self.groups),
            "empty_groups": [index[group] for group in self.empty_groups],
            "members": [
                [
                    member.object_id,
                    member.user_name,
                    _SAME_AS_USER_NAME if member.display_name == member.user_name else member.display_name,
                    [index[group] for group in member.groups],
                ]
                for member in self.members
            ],
            "skipped": [
                [
                    entry.object_id,
                    reason_index[entry.reason],
                    entry.display_name,
                    entry.detail,
                    [index[group] for group in entry.groups],
                ]
                for entry in self.skipped
            ],
            "group_objects": [list(pair) for pair in self.group_objects],
            "service_principals": [
                [sp.object_id, sp.application_id, sp.display_name, [index[group] for group in sp.groups]]
                for sp in self.service_principals
            ],
            "service_principals_without_app_id": self.service_principals_without_app_id,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Resolution:
        """Rebuild a :class:`Resolution` from :meth:`to_record` output.

        :param record: The dict produced by :meth:`to_record` (typically pulled from XCom).
        :return: A resolution equal to the one that was serialised.
        :raises ValueError: If the record was written by an incompatible version of this package.
        """
        record = _plain(record)
        groups = tuple(record["groups"])
        # Most members share one combination of groups: one tuple per combination, not per member.
        combinations: dict[tuple[int, ...], tuple[str, ...]] = {}

        def groups_of(group_indexes: list[int]) -> tuple[str, ...]:
            key = tuple(group_indexes)
            found = combinations.get(key)
            if found is None:
                found = combinations[key] = tuple(groups[position] for position in key)
            return found

        members = tuple(
            Member(
                object_id=object_id,
                user_name=user_name,
                display_name=user_name if display_name == _SAME_AS_USER_NAME else display_name,
                groups=groups_of(group_indexes),
            )
            for object_id, user_name, display_name, group_indexes in record["members"]
        )
        skipped = tuple(
            SkippedMember(
                object_id=object_id,
                reason=_REASONS[reason_position],
                display_name=display_name,
                groups=groups_of(group_indexes),
                detail=detail,
            )
            for object_id, reason_position, display_name, detail, group_indexes in record["skipped"]
        )
        return cls(
            groups=groups,
            members=members,
            skipped=skipped,
            empty_groups=tuple(groups[position] for position in record["empty_groups"]),
            user_name_attribute=record["user_name_attribute"],
            group_objects=tuple((str(oid), str(name)) for oid, name in record["group_objects"]),
            service_principals=tuple(
                ServicePrincipalMember(object_id, app_id, display_name, groups_of(group_indexes))
                for object_id, app_id, display_name, group_indexes in record["service_principals"]
            ),
            service_principals_without_app_id=int(record["service_principals_without_app_id"]),
        )


def _plain(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The version 2 (row) layout of a version 2 or 3 record."""
    version = record.get("version")
    if version == PLAIN_RECORD_VERSION:
        return record
    if version == RECORD_VERSION:
        try:
            inner = json.loads(zlib.decompress(base64.b64decode(record["z"], validate=True)))
        except (KeyError, TypeError, ValueError, zlib.error) as exc:
            raise RecordVersionError(
                f"Resolution record version {RECORD_VERSION} cannot be decoded ({type(exc).__name__}: {exc}); "
                "clear the upstream resolve_members task so it runs again."
            ) from None
        if isinstance(inner, Mapping) and inner.get("version") == PLAIN_RECORD_VERSION:
            return inner
        version = (
            f"{RECORD_VERSION} holding {inner.get('version') if isinstance(inner, Mapping) else inner!r}"
        )
    raise RecordVersionError(
        f"Resolution record version {version!r} is not supported (expected {RECORD_VERSION} or "
        f"{PLAIN_RECORD_VERSION}); clear the upstream resolve_members task so it runs again with this version."
    )


def _fold(value: str) -> str:
    # Case-insensitive keys without a copy of every string that is lower-case already (object ids and
    # userNames nearly always are): at 100,000 members each needless copy is several MB.
    return value if value.islower() else value.lower()


def _text(value: Any) -> str:
    # Graph sends null for unset attributes; anything that is not a string is treated as unset rather
    # than stringified, so ``None`` never becomes the userName "none".
    return value.strip() if isinstance(value, str) else ""


def _check_attribute(user_name_attribute: str) -> None:
    if user_name_attribute not in USER_NAME_ATTRIBUTES:
        raise ValueError(
            f"user_name_attribute must be one of {', '.join(USER_NAME_ATTRIBUTES)}; "
            f"got {user_name_attribute!r}"
        )


def _is_plausible_user_name(value: str) -> bool:
    local, at, domain = value.partition("@")
    return bool(at and local and domain) and "@" not in domain and not any(c.isspace() for c in value)


def map_user_name(obj: Mapping[str, Any], user_name_attribute: str = "userPrincipalName") -> str | None:
    """Map one Graph user to its Databricks ``userName``.

    The configured attribute is used, stripped and lower-cased. A UPN containing ``#EXT#`` (a B2B guest,
    or a guest later converted to a member, which keeps its UPN) is not the address the person signs in
    with, so such users fall back to ``mail`` whatever their ``userType``.

    :param obj: A Graph user as a dict from Graph's JSON.
    :param user_name_attribute: ``"userPrincipalName"`` or ``"mail"``.
    :return: The ``userName``, or ``None`` when the value is missing or not e-mail shaped (exactly one
        ``@`` with text on both sides and no whitespace).
    :raises ValueError: If ``user_name_attribute`` is not one of :data:`USER_NAME_ATTRIBUTES`.
    """
    _check_attribute(user_name_attribute)
    value = _fold(_text(obj.get(user_name_attribute)))
    if user_name_attribute == "userPrincipalName" and _GUEST_UPN_MARKER in value:
        value = _fold(_text(obj.get("mail")))
    return value if _is_plausible_user_name(value) else None


def _is_user(obj: Mapping[str, Any]) -> bool:
    # The hook queries the ``microsoft.graph.user`` cast, whose items may omit @odata.type entirely.
    odata_type = obj.get("@odata.type")
    if odata_type is None:
        return True
    return isinstance(odata_type, str) and odata_type.strip().lstrip("#").lower() == _USER_ODATA_TYPE


def resolve_members(
    members_by_group: Mapping[str, Iterable[Mapping[str, Any]]],
    user_name_attribute: str = "userPrincipalName",
    *,
    include_service_principals: bool = False,
    group_objects: Iterable[tuple[str, str]] = (),
) -> Resolution:
    """Turn each configured group's Graph directory objects into the members to provision.

    Objects are de-duplicated by Entra object id across and within groups (the first occurrence, in
    config order, supplies the attributes) and remember every group they came from. Each distinct
    object is then either a :class:`Member` or a :class:`SkippedMember`; the checks run in this order:

    1. ``not_a_user``: ``@odata.type`` is present and is not ``#microsoft.graph.user``.
    2. ``disabled``: ``accountEnabled`` is exactly ``False``. Missing or null counts as enabled: only what
       Entra states is acted on, and a Databricks account for a disabled identity grants nothing, since
       sign-in still goes through Entra.
    3. ``no_user_name``: see :func:`map_user_name`.
    4. ``duplicate_user_name``: among the remaining objects, taken in object id order, the first to claim a
       ``userName`` keeps it; later ones are skipped. Because disabled objects were already removed, an
       enabled account always wins over a disabled one with the same name.

    :param members_by_group: For each configured group, keyed as written in config, the directory
        objects Graph returned (dicts from Graph's JSON). Each iterable is consumed once.
    :param user_name_attribute: ``"userPrincipalName"`` (default) or ``"mail"``.
    :param include_service_principals: keep service principals (with an ``appId``; enabled) as
        :class:`ServicePrincipalMember` instead of skipping them as ``not_a_user``. One without ``appId``
        is skipped as ``not_a_user`` with :data:`NO_APP_ID_DETAIL` and counted.
    :param group_objects: ``(object id, display name)`` of each configured group, in config order.
    :return: The resolution, sorted deterministically regardless of input order.
    :raises ValueError: If ``user_name_attribute`` is unsupported or an object has no ``id``.
    """
    _check_attribute(user_name_attribute)
    groups = tuple(members_by_group)
    empty_groups: list[str] = []
    # Entra object ids are GUIDs; keying on the lower-cased form tolerates sources that upper-case them.
    # What the plan needs of each distinct object, taken at first sight, so that the caller may drop the
    # Graph dicts as they are consumed: (object id, display name, userName, skip reason, detail).
    first_seen: dict[str, tuple[str, str, str, SkipReason | None, str]] = {}
    # Each object's groups, sorted, as one shared tuple per combination of groups (a set per object
    # would cost ~200 bytes each, 20 MB at 100,000 members).
    source_groups: dict[str, tuple[str, ...]] = {}
    combinations: dict[tuple[str, ...], tuple[str, ...]] = {}
    for group, objects in members_by_group.items():
        seen_any = False
        alone = combinations.setdefault((group,), (group,))
        for obj in objects:
            seen_any = True
            object_id = _text(obj.get("id"))
            if not object_id:
                raise ValueError(f"Group {group!r} returned a directory object without an id: {obj!r}")
            key = _fold(object_id)
            previous = source_groups.get(key)
            if previous is None:
                user_name, reason, detail = _classify(obj, user_name_attribute, include_service_principals)
                first_seen[key] = (object_id, _text(obj.get("displayName")), user_name, reason, detail)
                source_groups[key] = alone
            elif group not in previous:
                combined = tuple(sorted((*previous, group)))
                source_groups[key] = combinations.setdefault(combined, combined)
        if not seen_any:
            empty_groups.append(group)

    members: list[Member] = []
    skipped: list[SkippedMember] = []
    service_principals: list[ServicePrincipalMember] = []
    claimed: set[str] = set()
    claimed_apps: set[str] = set()
    without_app_id = 0
    for key in sorted(first_seen):
        object_id, display_name, user_name, reason, detail = first_seen[key]
        in_groups = source_groups[key]
        if user_name.startswith(_SP_KEY):
            app_id = user_name[len(_SP_KEY) :]
            if app_id.lower() in claimed_apps:
                skipped.append(
                    SkippedMember(object_id, SkipReason.DUPLICATE_USER_NAME, display_name, in_groups, app_id)
                )
            else:
                claimed_apps.add(app_id.lower())
                service_principals.append(
                    ServicePrincipalMember(object_id, app_id, display_name or app_id, in_groups)
                )
            continue
        if detail == NO_APP_ID_DETAIL:
            without_app_id += 1
        if reason is None and user_name in claimed:
            reason, detail = SkipReason.DUPLICATE_USER_NAME, user_name
        if reason is not None:
            skipped.append(SkippedMember(object_id, reason, display_name, in_groups, detail))
            continue
        claimed.add(user_name)
        members.append(Member(object_id, user_name, display_name or user_name, in_groups))

    members.sort(key=lambda member: member.user_name)
    skipped.sort(key=lambda entry: (_REASONS.index(entry.reason), entry.object_id.lower()))
    service_principals.sort(key=lambda sp: sp.application_id.lower())
    return Resolution(
        groups=groups,
        members=tuple(members),
        skipped=tuple(skipped),
        empty_groups=tuple(empty_groups),
        user_name_attribute=user_name_attribute,
        group_objects=tuple(group_objects),
        service_principals=tuple(service_principals),
        service_principals_without_app_id=without_app_id,
    )


#: Marks a kept service principal in resolve_members' first-sight table: the "userName" slot holds its appId.
_SP_KEY = "\x00sp:"


def _is_service_principal(obj: Mapping[str, Any]) -> bool:
    odata_type = obj.get("@odata.type")
    return isinstance(odata_type, str) and odata_type.strip().lstrip("#").lower() == _SP_ODATA_TYPE


def _classify(
    obj: Mapping[str, Any], user_name_attribute: str, include_service_principals: bool = False
) -> tuple[str, SkipReason | None, str]:
    # Returns (userName or "", skip reason or None, detail for the skip); duplicates need the whole set
    # of members, so resolve_members checks those itself. A kept service principal returns its appId
    # behind _SP_KEY.
    if include_service_principals and _is_service_principal(obj):
        app_id = _text(obj.get("appId"))
        if obj.get("accountEnabled") is False:
            return "", SkipReason.DISABLED, app_id or _text(obj.get("displayName"))
        if not app_id:
            return "", SkipReason.NOT_A_USER, NO_APP_ID_DETAIL
        return _SP_KEY + app_id, None, ""
    if not _is_user(obj):
        return "", SkipReason.NOT_A_USER, str(obj.get("@odata.type"))
    user_name = map_user_name(obj, user_name_attribute) or ""
    if obj.get("accountEnabled") is False:
        return user_name, SkipReason.DISABLED, user_name
    if not user_name:
        return "", SkipReason.NO_USER_NAME, _rejected_value(obj, user_name_attribute)
    return user_name, None, ""


def _rejected_value(obj: Mapping[str, Any], user_name_attribute: str) -> str:
    # Say which attribute was looked at, so "no_user_name" is actionable in the directory.
    value = _text(obj.get(user_name_attribute))
    if user_name_attribute == "userPrincipalName" and _GUEST_UPN_MARKER in value.lower():
        return f"mail={_text(obj.get('mail'))!r} (guest UPN {value})"
    return f"{user_name_attribute}={value!r}"


@dataclass(frozen=True, slots=True)
class RenamedUser:
    """An Entra user whose Databricks account carries an older ``userName``.

    Databricks cannot change a ``userName``, so the member is added (or found) under the new name and
    the old account is left in place for an administrator to clean up by hand.

    :param object_id: Entra object id (equal to the old account's ``externalId``).
    :param new_user_name: The ``userName`` Entra maps the user to now.
    :param old_user_id: Databricks SCIM id of the old account.
    :param old_user_name: ``userName`` of the old account.
    """

    object_id: str
    new_user_name: str
    old_user_id: str
    old_user_name: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What a run should do. Every existing user lands in exactly one of: matched by a member (not
    listed), ``renamed`` (as the old account) or ``drift``.

    :param to_add: Members with no Databricks user of the same ``userName``, sorted by ``userName``.
    :param already_present: Members whose ``userName`` already exists, sorted by ``userName``.
    :param drift: Existing users matching no member and not explained as a rename: reported, never touched.
    :param renamed: Old accounts of members that Entra now maps to another ``userName``.
    """

    to_add: tuple[Member, ...]
    already_present: tuple[Member, ...]
    drift: tuple[ExistingUser, ...]
    renamed: tuple[RenamedUser, ...]


def build_plan(
    resolution_or_members: Resolution | Iterable[Member],
    existing_users: Iterable[ExistingUser],
) -> Plan:
    """Compare the members Entra wants with the users Databricks has.

    ``userName`` comparison is case-insensitive, as in Databricks. Existing users listed more than once
    (SCIM pages can shift while listing) count once, by id. An existing user is a *rename* of a member
    when its ``externalId`` equals the member's object id (case-insensitively), its ``userName`` differs,
    and no member claims its ``userName``; that last condition keeps a name since reused by someone else
    from ever being suggested for cleanup.

    :param resolution_or_members: A :class:`Resolution`, or members directly.
    :param existing_users: Users from the workspace SCIM list.
    :return: The plan; the same inputs in any order give an equal plan.
    :raises ValueError: If two members share a ``userName`` case-insensitively (a :class:`Resolution`
        never does); adding both would send two creates for one account.
    """
    members = (
        resolution_or_members.members
        if isinstance(resolution_or_members, Resolution)
        else tuple(resolution_or_members)
    )
    by_name: dict[str, Member] = {}
    for member in members:
        name = _fold(member.user_name)
        if name in by_name:
            raise ValueError(
                f"Members {by_name[name].object_id} and {member.object_id} share userName {name!r}"
            )
        by_name[name] = member

    unique_existing: dict[str, ExistingUser] = {}
    for user in existing_users:
        unique_existing.setdefault(user.id, user)
    present_names = {_fold(user.user_name) for user in unique_existing.values()}

    to_add: list[Member] = []
    already_present: list[Member] = []
    for name, member in by_name.items():
        (already_present if name in present_names else to_add).append(member)

    drift: list[ExistingUser] = []
    renamed: list[RenamedUser] = []
    unmatched = [user for user in unique_existing.values() if _fold(user.user_name) not in by_name]
    # Only needed when an unmatched user carries an externalId, which is rare: skip building it otherwise.
    by_object_id = (
        {_fold(member.object_id): member for member in members}
        if any(user.external_id for user in unmatched)
        else {}
    )
    for user in unmatched:
        owner = by_object_id.get(_fold(user.external_id)) if user.external_id else None
        if owner is None:
            drift.append(user)
        else:
            # The owner's userName necessarily differs: had it matched, the ``continue`` above would apply.
            renamed.append(RenamedUser(owner.object_id, owner.user_name, user.id, user.user_name))

    def by_user_name(member: Member) -> str:
        # Unique: two members whose userNames fold to the same key were refused above.
        return _fold(member.user_name)

    return Plan(
        to_add=tuple(sorted(to_add, key=by_user_name)),
        already_present=tuple(sorted(already_present, key=by_user_name)),
        drift=tuple(sorted(drift, key=lambda user: (user.user_name.lower(), user.user_name, user.id))),
        renamed=tuple(sorted(renamed, key=lambda entry: (entry.new_user_name.lower(), entry.old_user_id))),
    )


class RecordVersionError(PermanentError, ValueError):
    """An XCom record written by another version of this package: only re-running its task helps.

    A :class:`ValueError` too, as it was before the error taxonomy.
    """


class GuardExceeded(PermanentError):
    """The plan would add more users than a run is allowed to.

    :param to_add: Number of users the plan would add.
    :param limit: The ``max_new_users_per_run`` in force.
    :param already_present: Number of members already in the workspace, for context in the message.
    """

    def __init__(self, to_add: int, limit: int, already_present: int) -> None:
        self.to_add = to_add
        self.limit = limit
        self.already_present = already_present
        super().__init__(
            f"Refusing to add {to_add} new users: max_new_users_per_run is {limit} "
            f"({already_present} members are already present). Nothing was written. "
            "If this many additions is expected, trigger the DAG manually and set "
            f"'max_new_users_per_run' in the trigger form to at least {to_add}, or pass the DAG run conf "
            f'{{"max_new_users_per_run": {to_add}}}. A dry run lists who would be added without adding them.'
        )


def check_guard(plan: Plan | AccountPlan, max_new_users: int | None, extra: int = 0) -> None:
    """Stop a run that would add suspiciously many users, before any write.

    A sudden jump usually means a misconfigured group (e.g. "All Employees"), so the limit is a
    deliberate brake rather than a rate limit.

    :param plan: The computed plan.
    :param max_new_users: Most users one run may add. ``None`` means no limit; ``0`` means nothing may
        be added (any addition fails the run), which is useful to freeze a workspace while keeping the
        drift report. Reaching the limit exactly is allowed.
    :param extra: Other principals the run adds (service principals), counted with the users.
    :raises GuardExceeded: If ``len(plan.to_add) + extra`` is greater than ``max_new_users``.
    :raises ValueError: If ``max_new_users`` is negative.
    """
    if max_new_users is None:
        return
    if max_new_users < 0:
        raise ValueError(f"max_new_users must be None or >= 0, got {max_new_users}")
    if len(plan.to_add) + extra > max_new_users:
        raise GuardExceeded(len(plan.to_add) + extra, max_new_users, len(plan.already_present))


# ------------------------------------------------------------------------------------ account target


@dataclass(frozen=True, slots=True)
class WorkspaceAccess:
    """Who has access to one workspace, as the account's permission assignments say.

    :param direct: Account principal id → permissions of its direct assignment (users, groups and
        service principals alike; any permission counts, ``ADMIN`` included).
    :param via_group: Ids of account users who are members (transitively) of an assigned group.
    """

    direct: Mapping[str, tuple[str, ...]]
    via_group: frozenset[str] = frozenset()

    def has_access(self, principal_id: str) -> bool:
        return principal_id in self.direct or principal_id in self.via_group


@dataclass(frozen=True, slots=True)
class AccountPlan:
    """What an account-target run should do for one workspace. Add-only, and never a change to an
    existing assignment: a principal with any direct assignment (``ADMIN`` too) is never assigned again.

    :param to_add: Members without access to the workspace, sorted by ``userName``: each gets a ``USER``
        assignment (the guard counts these).
    :param to_create: The members of ``to_add`` the account lacks: created first.
    :param to_assign: ``(member, account user id)`` for the members of ``to_add`` already in the account.
    :param already_present: Members with access already (direct or through a group).
    :param access_direct: Of ``already_present``, those with a direct assignment.
    :param access_via_group: Of ``already_present``, those with access only through an assigned group.
    :param drift: Account users with access to the workspace matching no member (and no rename).
    :param renamed: Account users whose ``externalId`` is a member's object id under another ``userName``
        (only where the account carries ``externalId``, e.g. set by automatic identity management).
    """

    to_add: tuple[Member, ...]
    to_create: tuple[Member, ...]
    to_assign: tuple[tuple[Member, str], ...]
    already_present: tuple[Member, ...]
    access_direct: tuple[Member, ...]
    access_via_group: tuple[Member, ...]
    drift: tuple[ExistingUser, ...]
    renamed: tuple[RenamedUser, ...]


def build_account_plan(
    resolution_or_members: Resolution | Iterable[Member],
    account_users: Iterable[ExistingUser],
    access: WorkspaceAccess,
    *,
    access_through_mirrored_groups: bool = False,
) -> AccountPlan:
    """Compare the members Entra wants with the account's users and the workspace's assignments.

    ``userName`` comparison is case-insensitive. Account users listed more than once count once, by id.
    Drift and renames are judged among account users *with access to this workspace* (drift) and among
    all account users (renames), the account holding users of many workspaces.

    :param access_through_mirrored_groups: members get access through the mirrored groups' assignments
        (``mirror_groups`` without ``assign_users_directly``): nobody is assigned directly, and ``to_add``
        holds only the members to create.
    :return: The plan; the same inputs in any order give an equal plan.
    """
    workspace_plan = build_plan(resolution_or_members, account_users)
    unique: dict[str, ExistingUser] = {}
    for user in account_users:
        unique.setdefault(user.id, user)
    id_by_name = {_fold(user.user_name): user.id for user in unique.values()}

    to_create = workspace_plan.to_add
    to_assign: list[tuple[Member, str]] = []
    already: list[Member] = []
    direct: list[Member] = []
    via_group: list[Member] = []
    for member in workspace_plan.already_present:
        principal_id = id_by_name[_fold(member.user_name)]
        if principal_id in access.direct:
            direct.append(member)
            already.append(member)
        elif principal_id in access.via_group:
            via_group.append(member)
            already.append(member)
        else:
            to_assign.append((member, principal_id))
    if access_through_mirrored_groups:
        to_assign = []
    to_add = sorted([*to_create, *(member for member, _ in to_assign)], key=lambda m: _fold(m.user_name))
    return AccountPlan(
        to_add=tuple(to_add),
        to_create=to_create,
        to_assign=tuple(to_assign),
        already_present=tuple(already),
        access_direct=tuple(direct),
        access_via_group=tuple(via_group),
        drift=tuple(user for user in workspace_plan.drift if access.has_access(user.id)),
        renamed=workspace_plan.renamed,
    )
