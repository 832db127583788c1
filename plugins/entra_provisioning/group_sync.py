"""Service principals and mirrored groups within one ``add_missing_users`` run (both targets).

The task layer's helper: it reads what the decision needs through the SCIM hook, lets the pure plans
decide (:mod:`entra_provisioning.groups_plan`), and applies the result after the users exist. Reads all
happen before the first write, so the guards can stop a run before anything is written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from entra_provisioning.config import WorkspaceConfig
from entra_provisioning.groups_plan import (
    GroupAction,
    GroupsPlan,
    check_removal_guard,
    group_display_name,
    keys_of,
    member_key,
    plan_groups,
    service_principal_key,
)
from entra_provisioning.identities import ExistingUser, ServicePrincipalMember
from entra_provisioning.plan import Resolution, WorkspaceAccess

log = logging.getLogger(__name__)

#: Most names kept in each list of the record (counts stay exact).
LIST_LIMIT = 200


@dataclass
class Extras:
    """What a run does beyond users: service principals and mirrored groups."""

    sps_to_create: tuple[ServicePrincipalMember, ...] = ()
    #: ``(service principal, Databricks id)`` of existing ones without access (account target only).
    sps_to_assign: tuple[tuple[ServicePrincipalMember, str], ...] = ()
    sps_present: int = 0
    groups: GroupsPlan | None = None
    #: Principal key → Databricks id, for everyone listed (users and service principals).
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def principals_to_add(self) -> int:
        """Service principals this run creates or assigns (the guard counts them with the users)."""
        return len(self.sps_to_create) + len(self.sps_to_assign)


@dataclass
class ExtrasOutcome:
    sps_added: list[str] = field(default_factory=list)
    sps_failed: dict[str, str] = field(default_factory=dict)
    groups_created: list[str] = field(default_factory=list)
    groups_assigned: list[str] = field(default_factory=list)
    memberships_added: int = 0
    memberships_removed: int = 0
    groups_failed: dict[str, str] = field(default_factory=dict)
    #: Of ``groups_failed``, those that failed on Databricks failing or throttling (worth a retry).
    groups_failed_transient: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def prepare(
    scim: Any,
    ws: WorkspaceConfig,
    resolution: Resolution,
    users: list[ExistingUser],
    access: WorkspaceAccess | None = None,
) -> Extras:
    """Read the service principals and the mirrored groups, and decide; raises a guard before any write."""
    if not (ws.include_service_principals or ws.mirror_groups):
        return Extras()  # nothing to read; and no id maps of 100,000 users for nothing
    extras = Extras(ids={member_key(u.user_name): u.id for u in users})
    key_of_id = {user.id: member_key(user.user_name) for user in users}
    if ws.include_service_principals and resolution.service_principals:
        existing = {sp.application_id.lower(): sp for sp in scim.list_service_principals()}
        for sp in existing.values():
            extras.ids[service_principal_key(sp.application_id)] = sp.id
            key_of_id[sp.id] = service_principal_key(sp.application_id)
        missing = tuple(
            sp for sp in resolution.service_principals if sp.application_id.lower() not in existing
        )
        extras.sps_to_create = missing
        extras.sps_present = len(resolution.service_principals) - len(missing)
        if ws.is_account and access is not None and not (ws.mirror_groups and not ws.assign_users_directly):
            extras.sps_to_assign = tuple(
                (sp, existing[sp.application_id.lower()].id)
                for sp in resolution.service_principals
                if sp.application_id.lower() in existing
                and not access.has_access(existing[sp.application_id.lower()].id)
            )
    if resolution.service_principals_without_app_id:
        log.warning(
            "%d service principal(s) in the groups came without their appId: the Graph app of connection %s "
            "needs the Application.Read.All application permission to read it; they are skipped",
            resolution.service_principals_without_app_id,
            ws.msgraph_conn_id,
        )
    if ws.mirror_groups:
        found = {}
        for object_id, display_name in resolution.group_objects:
            name = group_display_name(ws.group_name, display_name, object_id)
            found[name.lower()] = scim.find_group(name)
        extras.groups = plan_groups(
            resolution,
            ws.group_name,
            found,
            key_of_id,
            include_service_principals=ws.include_service_principals,
            remove_stale=ws.remove_stale_members,
        )
        check_removal_guard(extras.groups, ws.max_membership_removals_per_run)
        for mirror in extras.groups.groups:
            if mirror.stale:
                log.warning(
                    "Membership drift in Databricks group %r: %d member(s) no longer in Entra group %r%s: %s",
                    mirror.name,
                    len(mirror.stale),
                    mirror.entra_group,
                    " (removed this run)"
                    if ws.remove_stale_members
                    else " (kept; remove_stale_members is off)",
                    ", ".join(mirror.stale_keys[:20]),
                )
    return extras


def apply(
    scim: Any,
    ws: WorkspaceConfig,
    extras: Extras,
    created_ids: dict[str, str],
    access: WorkspaceAccess | None = None,
) -> ExtrasOutcome:
    """Create the service principals, the groups and the memberships (and, for the account target, the
    assignments of new service principals and of mirrored groups). One failing group never stops the others."""
    from entra_provisioning.hooks.scim import ScimError, ScimUnavailableError

    outcome = ExtrasOutcome()
    ids = dict(extras.ids)
    ids.update({member_key(name): i for name, i in created_ids.items()})
    if extras.sps_to_create:
        sp_ids, failed = scim.create_service_principals(extras.sps_to_create)
        outcome.sps_failed.update(failed)
        for app_id, sp_id in sp_ids.items():
            ids[service_principal_key(app_id)] = sp_id
            outcome.sps_added.append(app_id)
    if ws.is_account and access is not None and not (ws.mirror_groups and not ws.assign_users_directly):
        new = [
            (sp, ids[service_principal_key(sp.application_id)])
            for sp in extras.sps_to_create
            if service_principal_key(sp.application_id) in ids
        ]
        for sp, sp_id in [*extras.sps_to_assign, *new]:
            try:
                scim.assign_user(ws.workspace_id, sp_id)
            except (ScimError, ScimUnavailableError) as exc:
                outcome.sps_failed[sp.application_id] = f"not assigned to the workspace: {exc}"
    if extras.groups is None:
        return outcome
    for mirror in extras.groups.groups:
        if mirror.action is GroupAction.FOREIGN:
            owner = mirror.existing.external_id if mirror.existing else None
            outcome.groups_failed[mirror.name] = (
                f"a Databricks group of this name exists with {'externalId ' + repr(owner) if owner else 'no externalId'}, "
                f"not Entra group {mirror.entra_object_id}: it belongs to someone else and is left untouched"
            )
            continue
        group = mirror.existing
        if mirror.action is GroupAction.CREATE:
            group, reason = scim.create_group(mirror.name, mirror.entra_object_id)
            if group is None:
                outcome.groups_failed[mirror.name] = reason or "create failed"
                continue
            outcome.groups_created.append(mirror.name)
            if not ws.is_account:
                note = (
                    f"created workspace group {mirror.name!r}: on an identity-federated workspace it is a "
                    "workspace-local group (usable in this workspace, not in Unity Catalog); use target: "
                    "account for account groups"
                )
                log.warning("%s", note[0].upper() + note[1:])
                outcome.notes.append(note)
        assert group is not None
        add_ids, without_id = keys_of(ids, mirror.to_add)
        remove_ids = mirror.stale if extras.groups.remove_stale else ()
        changed = scim.patch_members(group.id, add_ids, remove_ids, batch_size=ws.group_patch_batch_size)
        outcome.memberships_added += len(changed.added)
        outcome.memberships_removed += len(changed.removed)
        if changed.failure:
            outcome.groups_failed[mirror.name] = changed.failure
            if changed.transient:
                outcome.groups_failed_transient.add(mirror.name)
        elif without_id:
            outcome.groups_failed[mirror.name] = (
                f"{len(without_id)} member(s) not added: they could not be created ({', '.join(without_id[:10])})"
            )
        if ws.is_account and access is not None and group.id not in access.direct:
            # The group's own assignment; never for a group that has one (a PUT replaces permissions).
            try:
                scim.assign_user(ws.workspace_id, group.id)
                outcome.groups_assigned.append(mirror.name)
            except (ScimError, ScimUnavailableError) as exc:
                outcome.groups_failed.setdefault(mirror.name, f"not assigned to the workspace: {exc}")
    return outcome


def record(
    extras: Extras, outcome: ExtrasOutcome | None, resolution: Resolution, ws: WorkspaceConfig
) -> dict[str, Any]:
    """The service-principal and group parts of the run's record (only for the options that are on)."""
    result: dict[str, Any] = {}
    if ws.include_service_principals:
        result["service_principals"] = {
            "resolved": len(resolution.service_principals),
            "already_present": extras.sps_present,
            "to_add": len(extras.sps_to_create),
            "to_assign": len(extras.sps_to_assign),
            "added": len(outcome.sps_added) if outcome else 0,
            "failed": len(outcome.sps_failed) if outcome else 0,
            "without_app_id": resolution.service_principals_without_app_id,
            "to_add_application_ids": [sp.application_id for sp in extras.sps_to_create][:LIST_LIMIT],
            "added_application_ids": sorted(outcome.sps_added)[:LIST_LIMIT] if outcome else [],
            "failed_application_ids": dict(sorted(outcome.sps_failed.items())[:LIST_LIMIT])
            if outcome
            else {},
        }
    if extras.groups is not None:
        plan = extras.groups
        drift = [f"{g.name}: {key}" for g in plan.groups for key in g.stale_keys]
        result["groups"] = {
            "mirrored": len(plan.groups),
            "to_create": [g.name for g in plan.to_create],
            "created": list(outcome.groups_created) if outcome else [],
            "assigned_to_workspace": list(outcome.groups_assigned) if outcome else [],
            "memberships_to_add": plan.memberships_to_add,
            "memberships_added": outcome.memberships_added if outcome else 0,
            "membership_drift": plan.membership_drift,
            "membership_drift_names": drift[:LIST_LIMIT],
            "memberships_to_remove": plan.removals,
            "memberships_removed": outcome.memberships_removed if outcome else 0,
            "foreign": [g.name for g in plan.foreign],
            "failed": dict(outcome.groups_failed) if outcome else {},
            "notes": list(outcome.notes) if outcome else [],
        }
    return result


def render(extra: dict[str, Any]) -> str:
    """The extra lines of the run summary's table, for the task log."""
    lines: list[str] = []
    sps = extra.get("service_principals")
    if sps:
        lines += [
            "",
            "service principals: "
            f"{sps['resolved']} resolved, {sps['already_present']} present, {sps['to_add']} to add, "
            f"{sps['added']} added, {sps['failed']} failed, {sps['without_app_id']} without appId",
        ]
        lines += [f"  failed {app}: {why}" for app, why in sps["failed_application_ids"].items()]
    groups = extra.get("groups")
    if groups:
        lines += [
            "",
            f"mirrored groups: {groups['mirrored']}, created {len(groups['created'])}, memberships added "
            f"{groups['memberships_added']} (of {groups['memberships_to_add']}), membership drift "
            f"{groups['membership_drift']}, removed {groups['memberships_removed']}",
        ]
        lines += [f"  created {name}" for name in groups["created"]]
        lines += [f"  assigned to the workspace: {name}" for name in groups["assigned_to_workspace"]]
        lines += [f"  drift {entry}" for entry in groups["membership_drift_names"]]
        lines += [f"  failed {name}: {why}" for name, why in groups["failed"].items()]
        lines += [f"  note: {note}" for note in groups["notes"]]
    return "\n".join(lines)
