"""The identities both sides speak of: who Entra says should exist, who Databricks has, what a create did.

Small value types with no behaviour beyond their fields. The hooks produce and consume them; the pure
decision (:mod:`entra_provisioning.plan`, :mod:`entra_provisioning.summary`) reasons about them. Neither
side has to import the other to share them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

__all__ = [
    "USER_NAME_ATTRIBUTES",
    "CreateOutcome",
    "ExistingGroup",
    "ExistingServicePrincipal",
    "ExistingUser",
    "Member",
    "ServicePrincipalMember",
    "is_object_id",
]

#: Graph attributes a Databricks ``userName`` may be taken from.
USER_NAME_ATTRIBUTES: tuple[str, ...] = ("userPrincipalName", "mail")


def is_object_id(value: str) -> bool:
    """Whether a configured group is an Entra object id (a GUID in its 36-character form)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


@dataclass(frozen=True, slots=True)
class Member:
    """An Entra user who should exist in the workspace.

    :param object_id: Entra object id; sent to Databricks as ``externalId``.
    :param user_name: The Databricks ``userName``: stripped and lower-cased.
    :param display_name: Graph ``displayName``, or the ``userName`` when Graph has none, so a create
        always has something readable to send.
    :param groups: Configured groups (as written in config) the user was found in, sorted.
    """

    object_id: str
    user_name: str
    display_name: str
    groups: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ExistingUser:
    """A user already in the Databricks workspace, as the SCIM list returns it.

    :param id: Databricks SCIM id.
    :param user_name: SCIM ``userName``.
    :param external_id: SCIM ``externalId`` (the Entra object id when this package created the user).
    """

    id: str
    user_name: str
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    """What the SCIM creates did.

    :param added: ``userName`` of each user created (201).
    :param existed: ``userName`` of each create answered 409: the user existed after all (e.g. added by
        someone else since the list, or a retried create whose first attempt landed).
    :param failed: ``{userName: reason}`` for each create that failed for good.
    """

    added: list[str] = field(default_factory=list)
    existed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    #: Account target only: ``userName`` of each user created in the account (``added`` then lists who was
    #: given access to the workspace, whether created now or already in the account).
    created: list[str] = field(default_factory=list)
    #: ``userName`` (or ``applicationId``) → Databricks id of each principal created or found on create,
    #: for the group memberships that follow.
    ids: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServicePrincipalMember:
    """An Entra service principal found in the configured groups, to exist in Databricks as a service
    principal (``include_service_principals``).

    :param object_id: Entra object id of the service principal.
    :param application_id: Its ``appId``: the Databricks ``applicationId``.
    :param display_name: Graph ``displayName`` (the ``appId`` when Graph has none).
    :param groups: Configured groups it was found in, sorted.
    """

    object_id: str
    application_id: str
    display_name: str
    groups: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ExistingServicePrincipal:
    """A Databricks service principal as the SCIM list returns it."""

    id: str
    application_id: str
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class ExistingGroup:
    """A Databricks group as the SCIM list returns it.

    :param id: Databricks SCIM id.
    :param display_name: Its name.
    :param external_id: Its ``externalId``; a group this package mirrors carries the Entra group's object id.
    :param member_ids: Databricks ids of its direct members (users, service principals, groups).
    """

    id: str
    display_name: str
    external_id: str | None = None
    member_ids: tuple[str, ...] = ()
