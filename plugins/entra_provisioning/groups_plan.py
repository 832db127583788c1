"""The pure decision of group mirroring: which Databricks groups to create, which memberships to add,
which are stale (membership drift) and, when opted in, which to remove.

No I/O, like :mod:`entra_provisioning.plan`. Principals are named by a *key*: a user by its folded
``userName``, a service principal by ``app:`` and its folded ``applicationId``. The caller maps Databricks
member ids to keys (from the users and service principals it listed) and, after creating principals,
keys to ids.

Membership changes are add-only unless ``remove_stale_members`` is on, and even then only in groups whose
``externalId`` is the configured Entra group's object id: a group of that name with another ``externalId``
(or none) belongs to someone else and is never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from entra_provisioning.errors import PermanentError
from entra_provisioning.identities import ExistingGroup
from entra_provisioning.plan import Resolution

__all__ = [
    "GroupAction",
    "GroupMirror",
    "GroupNameClash",
    "GroupsPlan",
    "MembershipGuardExceeded",
    "check_removal_guard",
    "group_display_name",
    "member_key",
    "plan_groups",
    "service_principal_key",
]


def member_key(user_name: str) -> str:
    """The key of a user: its ``userName``, case-folded as Databricks compares it."""
    return user_name.lower()


def service_principal_key(application_id: str) -> str:
    """The key of a service principal: ``app:`` and its ``applicationId``, folded."""
    return "app:" + application_id.lower()


def group_display_name(template: str, display_name: str, object_id: str) -> str:
    """The Databricks name of a mirrored group (``group_name``: ``{display_name}``, ``{object_id}``)."""
    return template.format(display_name=display_name, object_id=object_id).strip()


class GroupAction(StrEnum):
    """What the run does with one configured group."""

    #: No Databricks group of that name: create it (``externalId`` = the Entra group's object id).
    CREATE = "create"
    #: Ours already (its ``externalId`` is the Entra group's object id): add what is missing.
    UPDATE = "update"
    #: A group of that name with another ``externalId`` or none: someone else's, never touched.
    FOREIGN = "foreign"


@dataclass(frozen=True, slots=True)
class GroupMirror:
    """One configured Entra group and its Databricks counterpart.

    :param entra_group: The group as configured.
    :param entra_object_id: Its Entra object id (the Databricks group's ``externalId``).
    :param name: The Databricks ``displayName``.
    :param action: See :class:`GroupAction`.
    :param existing: The Databricks group found by that name, if any.
    :param to_add: Keys of the Entra group's members (users, and service principals when included) that
        are not members of the Databricks group yet, sorted.
    :param stale: Databricks ids of members of *our* group whose principal is no longer in the Entra
        group: membership drift, sorted. Members we cannot name (nested groups, principals of no list)
        are never stale.
    :param stale_keys: The keys of ``stale``, for reports.
    """

    entra_group: str
    entra_object_id: str
    name: str
    action: GroupAction
    existing: ExistingGroup | None
    to_add: tuple[str, ...]
    stale: tuple[str, ...]
    stale_keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GroupsPlan:
    """Every configured group's mirror, in config order, and the memberships to remove (opted in)."""

    groups: tuple[GroupMirror, ...]
    remove_stale: bool

    @property
    def to_create(self) -> tuple[GroupMirror, ...]:
        return tuple(g for g in self.groups if g.action is GroupAction.CREATE)

    @property
    def foreign(self) -> tuple[GroupMirror, ...]:
        return tuple(g for g in self.groups if g.action is GroupAction.FOREIGN)

    @property
    def memberships_to_add(self) -> int:
        return sum(len(g.to_add) for g in self.groups if g.action is not GroupAction.FOREIGN)

    @property
    def membership_drift(self) -> int:
        return sum(len(g.stale) for g in self.groups)

    @property
    def removals(self) -> int:
        """Memberships this run removes: the stale ones, when ``remove_stale_members`` is on."""
        return self.membership_drift if self.remove_stale else 0


class GroupNameClash(PermanentError):
    """Two configured Entra groups map to one Databricks group name."""


class MembershipGuardExceeded(PermanentError):
    """More stale memberships would be removed than ``max_membership_removals_per_run`` allows."""


def plan_groups(
    resolution: Resolution,
    template: str,
    found: Mapping[str, ExistingGroup | None],
    key_of_id: Mapping[str, str],
    *,
    include_service_principals: bool = False,
    remove_stale: bool = False,
) -> GroupsPlan:
    """Decide, for every configured group, what its Databricks mirror needs.

    :param resolution: Who the groups resolve to; must carry ``group_objects``.
    :param template: ``group_name``.
    :param found: The Databricks group found by each mirrored name (folded), or ``None``.
    :param key_of_id: Databricks principal id → key, for the users and service principals listed.
    :raises GroupNameClash: when two configured groups map to one name (case-insensitively).
    :raises ValueError: when the resolution does not carry the groups' object ids.
    """
    if len(resolution.group_objects) != len(resolution.groups):
        raise ValueError("group mirroring needs the groups' Entra object ids (resolution.group_objects)")
    names: dict[str, str] = {}
    wanted: dict[str, set[str]] = {group: set() for group in resolution.groups}
    for member in resolution.members:
        for group in member.groups:
            wanted[group].add(member_key(member.user_name))
    if include_service_principals:
        for sp in resolution.service_principals:
            for group in sp.groups:
                wanted[group].add(service_principal_key(sp.application_id))

    mirrors: list[GroupMirror] = []
    for group, (object_id, display_name) in zip(resolution.groups, resolution.group_objects, strict=True):
        name = group_display_name(template, display_name, object_id)
        folded = name.lower()
        if folded in names:
            raise GroupNameClash(
                f"Entra groups {names[folded]!r} and {group!r} both map to the Databricks group name {name!r} "
                "(display names are not unique); give group_name a template with {object_id}, or configure "
                "one of them by another group"
            )
        names[folded] = group
        existing = found.get(folded)
        if existing is None:
            action = GroupAction.CREATE
        elif (existing.external_id or "").lower() == object_id.lower():
            action = GroupAction.UPDATE
        else:
            action = GroupAction.FOREIGN
        current = {key_of_id[i] for i in existing.member_ids if i in key_of_id} if existing else set()
        to_add = tuple(sorted(wanted[group] - current))
        stale_pairs = (
            sorted(
                (key_of_id[i], i)
                for i in existing.member_ids
                if i in key_of_id and key_of_id[i] not in wanted[group]
            )
            if existing is not None and action is GroupAction.UPDATE
            else []
        )
        mirrors.append(
            GroupMirror(
                entra_group=group,
                entra_object_id=object_id,
                name=name,
                action=action,
                existing=existing,
                to_add=to_add if action is not GroupAction.FOREIGN else (),
                stale=tuple(i for _, i in stale_pairs),
                stale_keys=tuple(k for k, _ in stale_pairs),
            )
        )
    return GroupsPlan(groups=tuple(mirrors), remove_stale=remove_stale)


def check_removal_guard(plan: GroupsPlan, limit: int) -> None:
    """Stop a run before any write when it would remove more memberships than ``limit``.

    :raises MembershipGuardExceeded: naming the count, the limit and the groups.
    """
    if plan.removals > limit:
        where = ", ".join(f"{g.name} ({len(g.stale)})" for g in plan.groups if g.stale)
        raise MembershipGuardExceeded(
            f"Refusing to remove {plan.removals} stale group memberships: max_membership_removals_per_run is "
            f"{limit} ({where}). Nothing was written. Check the Entra groups first; a dry run lists the "
            "memberships it would remove. If they are right, raise max_membership_removals_per_run for one run."
        )


def keys_of(ids_by_key: Mapping[str, str], keys: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(ids, keys without an id)`` of ``keys``: principals whose create failed have no id to add."""
    ids: list[str] = []
    missing: list[str] = []
    for key in keys:
        found = ids_by_key.get(key)
        (ids.append(found) if found else missing.append(key))
    return ids, missing
