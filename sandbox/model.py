"""In-memory state of the sandbox: the Entra tenant, identities, vaults, Databricks workspaces and account.

Everything is built from a seed (a dict, normally read from YAML). Object ids are derived deterministically
from names so a seed always produces the same ids, which keeps test expectations and fault runs repeatable.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_NS = uuid.UUID("6f1c2a4e-0b7d-4c1e-9a55-2d3f8e7b9c10")

GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
VAULT_RESOURCE = "https://vault.azure.net"
DATABRICKS_RESOURCE = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d"

# What an identity gets when its seed entry names no graph_permissions (and does not set graph_access: false):
# enough to read groups and their users, as every identity of earlier seeds could.
DEFAULT_GRAPH_PERMISSIONS = ("GroupMember.Read.All", "User.Read.All")
# Application permissions that let an app read service principals, hence a member's appId (Graph's
# "limited information returned for inaccessible member objects": without one, a service principal in a
# member list comes back with its @odata.type and id only, every other property null).
SERVICE_PRINCIPAL_READ_PERMISSIONS = frozenset(
    {"Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
)
# Workspace entitlements the SCIM API knows (API names from the Databricks "Manage entitlements" page;
# workspace-consume is "Consumer access"). Anything else is refused with 400 INVALID_PARAMETER_VALUE.
WORKSPACE_ENTITLEMENTS = (
    "workspace-access",
    "databricks-sql-access",
    "allow-cluster-create",
    "allow-instance-pool-create",
    "workspace-consume",
)
# Default of limits.patch_members_max: members one group PATCH may add or remove. Databricks documents no
# limit; 1000 is our choice, so that a client that never splits its batches is caught by the sandbox.
DEFAULT_PATCH_MEMBERS_MAX = 1000


class SeedError(ValueError):
    """The seed is malformed; the message names the offending entry."""


def stable_id(kind: str, key: str) -> str:
    """A GUID derived from a kind and a natural key, so reseeding yields identical ids."""
    return str(uuid.uuid5(_NS, f"{kind}:{key.lower()}"))


_REL = re.compile(r"^([+-])(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: Any, now: float | None = None) -> int | None:
    """Accept epoch seconds, ISO-8601, a datetime, or a relative offset such as ``-1d`` / ``+30d``."""
    if value is None:
        return None
    now = time.time() if now is None else now
    if isinstance(value, bool):
        raise SeedError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp())
    if isinstance(value, dt.date):
        return int(dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp())
    text = str(value).strip()
    match = _REL.match(text)
    if match:
        sign = 1 if match.group(1) == "+" else -1
        return int(now + sign * float(match.group(2)) * _UNIT[match.group(3)])
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SeedError(f"not a time: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp())


# --------------------------------------------------------------------------------------------- Entra


@dataclass
class DirUser:
    id: str
    user_principal_name: str
    display_name: str
    mail: str | None
    account_enabled: bool = True
    user_type: str = "Member"
    given_name: str | None = None
    surname: str | None = None
    job_title: str | None = None

    def to_graph(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "businessPhones": [],
            "displayName": self.display_name,
            "givenName": self.given_name,
            "jobTitle": self.job_title,
            "mail": self.mail,
            "mobilePhone": None,
            "officeLocation": None,
            "preferredLanguage": None,
            "surname": self.surname,
            "userPrincipalName": self.user_principal_name,
            # Not in Graph's default user projection, but selectable; served when $select names them.
            "accountEnabled": self.account_enabled,
            "userType": self.user_type,
        }


@dataclass
class DirObject:
    """A directory object that is neither a user nor a group: a service principal or a device."""

    id: str
    odata_kind: str  # "servicePrincipal" | "device"
    display_name: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_graph(self) -> dict[str, Any]:
        return {"id": self.id, "displayName": self.display_name, **self.extra}


@dataclass
class DirGroup:
    id: str
    display_name: str
    description: str | None = None
    mail: str | None = None
    mail_nickname: str = ""
    mail_enabled: bool = False
    security_enabled: bool = True
    group_types: list[str] = field(default_factory=list)
    member_ids: list[str] = field(default_factory=list)

    def to_graph(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "displayName": self.display_name,
            "description": self.description,
            "mail": self.mail,
            "mailNickname": self.mail_nickname,
            "mailEnabled": self.mail_enabled,
            "securityEnabled": self.security_enabled,
            "groupTypes": list(self.group_types),
        }


@dataclass
class Identity:
    """A principal that can obtain tokens: a managed identity or an app registration (client secret)."""

    name: str
    kind: str  # "managedIdentity" | "servicePrincipal"
    client_id: str
    object_id: str
    client_secret: str | None = None
    graph_access: bool = True
    # Application permissions on Microsoft Graph. Only reading service principals (an appId) depends on
    # them; graph_access: false still refuses every Graph call with 403.
    graph_permissions: tuple[str, ...] = DEFAULT_GRAPH_PERMISSIONS

    @property
    def can_read_service_principals(self) -> bool:
        return bool(SERVICE_PRINCIPAL_READ_PERMISSIONS.intersection(self.graph_permissions))


@dataclass
class Tenant:
    id: str
    domain: str
    users: dict[str, DirUser] = field(default_factory=dict)
    groups: dict[str, DirGroup] = field(default_factory=dict)
    objects: dict[str, DirObject] = field(default_factory=dict)
    identities: dict[str, Identity] = field(default_factory=dict)
    _transitive: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def kind_of(self, object_id: str) -> str | None:
        if object_id in self.users:
            return "user"
        if object_id in self.groups:
            return "group"
        obj = self.objects.get(object_id)
        return obj.odata_kind if obj else None

    def transitive_member_ids(self, group_id: str) -> list[str]:
        """All members reachable through nested groups, each once, cycles tolerated. Cached per seed."""
        cached = self._transitive.get(group_id)
        if cached is not None:
            return cached
        seen: set[str] = set()
        visited_groups = {group_id}
        out: list[str] = []
        queue = [group_id]
        while queue:
            current = self.groups[queue.pop(0)]
            for member in current.member_ids:
                if member not in seen and member != group_id:
                    seen.add(member)
                    out.append(member)
                if member in self.groups and member not in visited_groups:
                    visited_groups.add(member)
                    queue.append(member)
        self._transitive[group_id] = out
        return out


# ------------------------------------------------------------------------------------------ Key Vault


@dataclass
class SecretVersion:
    version: str
    value: str
    enabled: bool = True
    exp: int | None = None
    nbf: int | None = None
    created: int = 0
    updated: int = 0
    content_type: str | None = None
    tags: dict[str, str] | None = None


@dataclass
class Secret:
    name: str
    versions: list[SecretVersion] = field(default_factory=list)  # oldest first; the last is current


@dataclass
class Vault:
    name: str
    access: set[str] = field(default_factory=set)  # object ids allowed to get secrets
    secrets: dict[str, Secret] = field(default_factory=dict)  # keyed by lower-cased name
    limits: Limits | None = None


# --------------------------------------------------------------------------------------------- SCIM


@dataclass
class ScimUser:
    id: str
    user_name: str  # stored lower-case
    display_name: str | None = None
    external_id: str | None = None
    emails: list[dict[str, Any]] = field(default_factory=list)
    entitlements: list[dict[str, Any]] = field(default_factory=list)
    name: dict[str, Any] | None = None
    active: bool = True
    visible_at: float = 0.0  # eventual consistency: hidden from lists until then
    created_at: float = 0.0  # seeded principals count as created long ago


@dataclass
class ScimGroup:
    id: str
    display_name: str
    external_id: str | None = None
    member_ids: list[str] = field(default_factory=list)  # user, group or service principal ids
    created_at: float = 0.0
    # Kept in sync by Databricks' automatic identity management: its membership cannot be changed here
    # (a PATCH answers 500). The SCIM view does not show it: iam.Group has no field that would.
    external: bool = False


@dataclass
class ScimServicePrincipal:
    """A Databricks service principal; ``application_id`` is the Entra appId (client id) on Azure."""

    id: str
    application_id: str
    display_name: str
    active: bool = True
    external_id: str | None = None
    entitlements: list[dict[str, Any]] = field(default_factory=list)
    account_admin: bool = False  # account directory only; workspace admin = member of the "admins" group
    oauth_secret: str | None = None  # Databricks OAuth M2M secret (never served back)
    created_at: float = 0.0


@dataclass
class PatToken:
    user_name: str
    admin: bool


@dataclass
class Limits:
    """Server-side limits of one Databricks workspace or of the account API."""

    page_cap: int = 10000
    max_concurrent: int | None = None
    concurrent_limit_status: int = 429  # 429, or 500 with REQUEST_LIMIT_EXCEEDED like the real service
    rates: dict[str, float] = field(default_factory=dict)  # endpoint name -> requests per second
    retry_after_seconds: int | None = None  # None: computed from the refill time
    visibility_delay_ms: float = 0.0
    non_admin_read: bool = True  # may a non-admin list/get users and groups?
    # Account only: a principal younger than this is "not found" by permission-assignment PUTs.
    assignable_delay_ms: float = 0.0
    # Members one group PATCH may add plus remove (None: no limit); more answers 400, nothing applied.
    patch_members_max: int | None = DEFAULT_PATCH_MEMBERS_MAX

    @classmethod
    def from_seed(cls, raw: Mapping[str, Any] | None, *, default_page_cap: int) -> Limits:
        raw = dict(raw or {})
        known = {
            "page_cap",
            "max_concurrent",
            "concurrent_limit_status",
            "rates",
            "retry_after_seconds",
            "visibility_delay_ms",
            "non_admin_read",
            "assignable_delay_ms",
            "patch_members_max",
        }
        unknown = set(raw) - known
        if unknown:
            raise SeedError(f"limits: unknown keys {sorted(unknown)}")
        status = int(raw.get("concurrent_limit_status", 429))
        if status not in (429, 500, 503):
            raise SeedError("limits.concurrent_limit_status must be 429, 500 or 503")
        return cls(
            page_cap=int(raw.get("page_cap", default_page_cap)),
            max_concurrent=None if raw.get("max_concurrent") is None else int(raw["max_concurrent"]),
            concurrent_limit_status=status,
            rates={str(k): float(v) for k, v in (raw.get("rates") or {}).items()},
            retry_after_seconds=None
            if raw.get("retry_after_seconds") is None
            else int(raw["retry_after_seconds"]),
            visibility_delay_ms=float(raw.get("visibility_delay_ms", 0.0)),
            non_admin_read=bool(raw.get("non_admin_read", True)),
            assignable_delay_ms=float(raw.get("assignable_delay_ms", 0.0)),
            patch_members_max=_optional_positive_int(
                raw.get("patch_members_max", DEFAULT_PATCH_MEMBERS_MAX), "limits.patch_members_max"
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "page_cap": self.page_cap,
            "max_concurrent": self.max_concurrent,
            "concurrent_limit_status": self.concurrent_limit_status,
            "rates": dict(self.rates),
            "retry_after_seconds": self.retry_after_seconds,
            "visibility_delay_ms": self.visibility_delay_ms,
            "non_admin_read": self.non_admin_read,
            "assignable_delay_ms": self.assignable_delay_ms,
            "patch_members_max": self.patch_members_max,
        }


def _optional_positive_int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or int(value) < 1:
        raise SeedError(f"{where} must be a positive integer or null")
    return int(value)


@dataclass
class ScimDirectory:
    """The SCIM store behind one workspace or behind the account API."""

    name: str
    kind: str  # "workspace" | "account"
    ident: str  # workspace id or account id
    limits: Limits
    users: dict[str, ScimUser] = field(default_factory=dict)
    by_user_name: dict[str, str] = field(default_factory=dict)
    groups: dict[str, ScimGroup] = field(default_factory=dict)
    service_principals: dict[str, ScimServicePrincipal] = field(default_factory=dict)
    by_application_id: dict[str, str] = field(default_factory=dict)  # lower-cased applicationId -> id
    tokens: dict[str, PatToken] = field(default_factory=dict)  # sha256(token) -> owner
    version: int = 0  # bumped on every change, so cached orderings know when to rebuild
    pending_until: float = 0.0  # latest visible_at of a user still hidden from lists
    identity_federated: bool = False  # workspace only: its identities come from the account
    # Account only: workspace_id -> principal id -> ["USER"] or ["ADMIN"], in assignment order.
    assignments: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # Federated workspace only: principal id -> the level last synced from the account's assignments.
    from_account: dict[str, str] = field(default_factory=dict)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def new_id(self) -> str:
        while True:
            candidate = str(self._rng.randrange(10**15, 10**16))
            if (
                candidate not in self.users
                and candidate not in self.groups
                and candidate not in self.service_principals
            ):
                return candidate

    def add_user(
        self,
        user_name: str,
        *,
        display_name: str | None = None,
        external_id: str | None = None,
        emails: list[dict[str, Any]] | None = None,
        entitlements: list[dict[str, Any]] | None = None,
        name: dict[str, Any] | None = None,
        active: bool = True,
        visible_at: float = 0.0,
        created_at: float = 0.0,
        user_id: str | None = None,
    ) -> ScimUser:
        key = user_name.lower()
        if key in self.by_user_name:
            raise SeedError(f"{self.kind} {self.name}: duplicate userName {user_name!r}")
        user = ScimUser(
            id=user_id or self.new_id(),
            user_name=key,
            display_name=display_name,
            external_id=external_id,
            emails=emails if emails is not None else [{"value": key, "type": "work", "primary": True}],
            entitlements=entitlements or [],
            name=name,
            active=active,
            visible_at=visible_at,
            created_at=created_at,
        )
        self.users[user.id] = user
        self.by_user_name[key] = user.id
        self.version += 1
        return user

    def add_service_principal(
        self,
        application_id: str,
        *,
        display_name: str | None = None,
        external_id: str | None = None,
        account_admin: bool = False,
        oauth_secret: str | None = None,
        entitlements: list[dict[str, Any]] | None = None,
        created_at: float = 0.0,
        sp_id: str | None = None,
    ) -> ScimServicePrincipal:
        key = application_id.lower()
        if key in self.by_application_id:
            raise SeedError(f"{self.kind} {self.name}: duplicate service principal {application_id!r}")
        sp = ScimServicePrincipal(
            id=sp_id or self.new_id(),
            application_id=application_id,
            display_name=display_name or application_id,
            external_id=external_id,
            entitlements=entitlements or [],
            account_admin=account_admin,
            oauth_secret=oauth_secret,
            created_at=created_at,
        )
        self.service_principals[sp.id] = sp
        self.by_application_id[key] = sp.id
        self.version += 1
        return sp

    def remove_principal(self, principal_id: str) -> bool:
        """Drop a user or service principal and its group memberships (and, on the account, assignments)."""
        user = self.users.pop(principal_id, None)
        sp = self.service_principals.pop(principal_id, None) if user is None else None
        if user is None and sp is None:
            return False
        if user is not None:
            self.by_user_name.pop(user.user_name, None)
        if sp is not None:
            self.by_application_id.pop(sp.application_id.lower(), None)
        self._forget_member(principal_id)
        return True

    def remove_group(self, group_id: str) -> bool:
        if self.groups.pop(group_id, None) is None:
            return False
        self._forget_member(group_id)
        return True

    def _forget_member(self, principal_id: str) -> None:
        for group in self.groups.values():
            if principal_id in group.member_ids:
                group.member_ids.remove(principal_id)
        for per_workspace in self.assignments.values():
            per_workspace.pop(principal_id, None)
        self.from_account.pop(principal_id, None)
        self.version += 1

    def group_named(self, display_name: str) -> ScimGroup | None:
        low = display_name.lower()
        return next((g for g in self.groups.values() if g.display_name.lower() == low), None)

    def ensure_group(self, display_name: str) -> ScimGroup:
        group = self.group_named(display_name)
        if group is None:
            group = ScimGroup(id=self.new_id(), display_name=display_name)
            self.groups[group.id] = group
            self.version += 1
        return group

    def transitive_members(self, group_id: str) -> set[str]:
        """Every user, service principal and group reachable from a group; cycles are tolerated."""
        seen: set[str] = set()
        queue = [group_id]
        while queue:
            group = self.groups.get(queue.pop())
            if group is None:
                continue
            for member in group.member_ids:
                if member not in seen:
                    seen.add(member)
                    if member in self.groups:
                        queue.append(member)
        return seen


WORKSPACE_PERMISSIONS = ("USER", "ADMIN")


def normalise_permissions(raw: Any) -> list[str]:
    """What a permission-assignment PUT keeps: ADMIN wins over USER, other values are ignored, and
    anything that is not a list counts as empty (the SDK documents this; an empty result deletes)."""
    if not isinstance(raw, list):
        return []
    values = {str(v) for v in raw}
    if "ADMIN" in values:
        return ["ADMIN"]
    if "USER" in values:
        return ["USER"]
    return []


def access_levels(account: ScimDirectory, workspace_id: str) -> dict[str, str]:
    """Users and service principals with access to a workspace, directly or through (nested) account
    groups: principal id -> ``USER`` or ``ADMIN`` (the highest level from any path)."""
    levels: dict[str, str] = {}

    def grant(principal_id: str, level: str) -> None:
        known = principal_id in account.users or principal_id in account.service_principals
        if known and levels.get(principal_id) != "ADMIN":
            levels[principal_id] = level

    for principal_id, permissions in account.assignments.get(workspace_id, {}).items():
        level = "ADMIN" if "ADMIN" in permissions else "USER"
        if principal_id in account.groups:
            for member in account.transitive_members(principal_id):
                grant(member, level)
        else:
            grant(principal_id, level)
    return levels


def sync_federated(world: World, workspace: ScimDirectory) -> bool:
    """Materialise an identity-federated workspace's account principals: everyone with access appears
    with the account's id, everyone who lost it disappears, and ADMIN means membership of ``admins``.

    Only principals that came from the account are touched, so users added behind the API's back stay.
    Returns whether anything changed (the version is bumped only then, keeping cached orderings valid).
    """
    account = world.account
    if not workspace.identity_federated or account is None:
        return False
    levels = access_levels(account, workspace.ident)
    changed = False
    for principal_id in [p for p in workspace.from_account if p not in levels]:
        workspace.remove_principal(principal_id)
        changed = True
    admins: ScimGroup | None = None
    for principal_id, level in levels.items():
        previous = workspace.from_account.get(principal_id)
        if previous == level:
            continue
        if previous is None and not _materialise(account, workspace, principal_id):
            continue
        workspace.from_account[principal_id] = level
        changed = True
        admins = admins or workspace.ensure_group("admins")
        if level == "ADMIN" and principal_id not in admins.member_ids:
            admins.member_ids.append(principal_id)
        elif level == "USER" and previous == "ADMIN" and principal_id in admins.member_ids:
            admins.member_ids.remove(principal_id)
    if changed:
        workspace.version += 1
    return changed


def _materialise(account: ScimDirectory, workspace: ScimDirectory, principal_id: str) -> bool:
    user = account.users.get(principal_id)
    if user is not None:
        if user.user_name in workspace.by_user_name or principal_id in workspace.users:
            return False  # a workspace-local user of that name (drift added behind the API's back)
        workspace.add_user(
            user.user_name,
            display_name=user.display_name,
            external_id=user.external_id,
            emails=[dict(e) for e in user.emails],
            name=user.name,
            active=user.active,
            created_at=time.time(),
            user_id=principal_id,
        )
        return True
    sp = account.service_principals[principal_id]
    if (
        sp.application_id.lower() in workspace.by_application_id
        or principal_id in workspace.service_principals
    ):
        return False
    workspace.add_service_principal(
        sp.application_id,
        display_name=sp.display_name,
        external_id=sp.external_id,
        oauth_secret=sp.oauth_secret,
        created_at=time.time(),
        sp_id=principal_id,
    )
    return True


def sync_all_federated(world: World) -> None:
    for workspace in world.workspaces.values():
        sync_federated(world, workspace)


@dataclass
class World:
    tenant: Tenant
    vaults: dict[str, Vault]
    workspaces: dict[str, ScimDirectory]
    account: ScimDirectory | None
    token_lifetime: int = 3600
    identity_header: str = "sandbox-identity-header"
    graph_limits: Limits | None = None
    # Fault knob: serve Graph's @odata.nextLink on this origin instead of Graph's own (None = Graph's).
    graph_next_link_origin: str | None = None


# ------------------------------------------------------------------------------------------- loader

_PREFIXES = {"group:": "group", "sp:": "servicePrincipal", "serviceprincipal:": "servicePrincipal"}


def _require(entry: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in entry or entry[key] in (None, ""):
        raise SeedError(f"{where}: missing {key!r}")
    return entry[key]


def _as_list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SeedError(f"{where}: expected a list")
    return value


def _load_tenant(seed: Mapping[str, Any]) -> Tenant:
    raw = dict(seed.get("tenant") or {})
    domain = str(raw.get("domain", "contoso.onmicrosoft.com"))
    tenant = Tenant(id=str(raw.get("id") or stable_id("tenant", domain)), domain=domain)

    for i, entry in enumerate(_as_list(seed.get("users"), "users")):
        where = f"users[{i}]"
        upn = str(_require(entry, "userPrincipalName", where))
        user_type = str(entry.get("userType", "Guest" if "#EXT#" in upn else "Member"))
        mail = entry.get("mail", upn)
        user = DirUser(
            id=str(entry.get("id") or stable_id("user", upn)),
            user_principal_name=upn,
            display_name=str(entry.get("displayName") or upn.split("@", maxsplit=1)[0]),
            mail=None if mail is None else str(mail),
            account_enabled=bool(entry.get("accountEnabled", True)),
            user_type=user_type,
            given_name=entry.get("givenName"),
            surname=entry.get("surname"),
            job_title=entry.get("jobTitle"),
        )
        if user.id in tenant.users:
            raise SeedError(f"{where}: duplicate user id {user.id}")
        tenant.users[user.id] = user

    for i, entry in enumerate(_as_list(seed.get("servicePrincipals"), "servicePrincipals")):
        name = str(_require(entry, "displayName", f"servicePrincipals[{i}]"))
        app_id = str(entry.get("appId") or stable_id("app", name))
        sp = DirObject(
            id=str(entry.get("id") or stable_id("sp", name)),
            odata_kind="servicePrincipal",
            display_name=name,
            extra={"appId": app_id, "servicePrincipalType": "Application", "accountEnabled": True},
        )
        tenant.objects[sp.id] = sp

    for i, entry in enumerate(_as_list(seed.get("devices"), "devices")):
        name = str(_require(entry, "displayName", f"devices[{i}]"))
        dev = DirObject(
            id=str(entry.get("id") or stable_id("device", name)),
            odata_kind="device",
            display_name=name,
            extra={
                "deviceId": stable_id("deviceid", name),
                "operatingSystem": entry.get("operatingSystem", "Windows"),
                "accountEnabled": True,
            },
        )
        tenant.objects[dev.id] = dev

    raw_groups = _as_list(seed.get("groups"), "groups")
    for i, entry in enumerate(raw_groups):
        name = str(_require(entry, "displayName", f"groups[{i}]"))
        nickname = re.sub(r"[^A-Za-z0-9]", "", name) or "group"
        group = DirGroup(
            id=str(entry.get("id") or stable_id("group", f"{name}#{i}" if entry.get("duplicate") else name)),
            display_name=name,
            description=entry.get("description"),
            mail=entry.get("mail"),
            mail_nickname=str(entry.get("mailNickname", nickname)),
            mail_enabled=bool(entry.get("mailEnabled", False)),
            security_enabled=bool(entry.get("securityEnabled", True)),
            group_types=list(entry.get("groupTypes") or []),
        )
        if group.id in tenant.groups:
            raise SeedError(
                f"groups[{i}]: duplicate group id {group.id} (set duplicate: true for same names)"
            )
        tenant.groups[group.id] = group

    users_by_upn = {u.user_principal_name.lower(): u.id for u in tenant.users.values()}
    groups_by_name: dict[str, str] = {}
    for g in tenant.groups.values():
        groups_by_name.setdefault(g.display_name.lower(), g.id)
    objects_by_name = {(o.odata_kind, o.display_name.lower()): o.id for o in tenant.objects.values()}

    def resolve(ref: str, where: str) -> str:
        low = ref.lower()
        for prefix, kind in _PREFIXES.items():
            if low.startswith(prefix):
                key = low[len(prefix) :]
                found = groups_by_name.get(key) if kind == "group" else objects_by_name.get((kind, key))
                if found:
                    return found
                raise SeedError(f"{where}: unknown {kind} {ref!r}")
        if low.startswith("device:"):
            found = objects_by_name.get(("device", low[len("device:") :]))
            if found:
                return found
            raise SeedError(f"{where}: unknown device {ref!r}")
        if ref in tenant.users or ref in tenant.groups or ref in tenant.objects:
            return ref
        if low in users_by_upn:
            return users_by_upn[low]
        if low in groups_by_name:
            return groups_by_name[low]
        raise SeedError(f"{where}: unknown member {ref!r}")

    for i, (entry, group) in enumerate(zip(raw_groups, tenant.groups.values(), strict=True)):
        seen: set[str] = set()
        for ref in _as_list(entry.get("members"), f"groups[{i}].members"):
            member = resolve(str(ref), f"groups[{i}] ({group.display_name})")
            if member not in seen:
                seen.add(member)
                group.member_ids.append(member)

    for i, entry in enumerate(_as_list(seed.get("identities"), "identities")):
        where = f"identities[{i}]"
        name = str(_require(entry, "name", where))
        kind = str(entry.get("type", "managedIdentity"))
        if kind not in ("managedIdentity", "servicePrincipal"):
            raise SeedError(f"{where}: type must be managedIdentity or servicePrincipal")
        raw_permissions = entry.get("graph_permissions")
        if raw_permissions is not None and (
            not isinstance(raw_permissions, list) or not all(isinstance(p, str) for p in raw_permissions)
        ):
            raise SeedError(f"{where}: graph_permissions must be a list of permission names")
        # Without graph_permissions an identity keeps what earlier seeds gave it: users and group members
        # when it has Graph access. With them, graph_access defaults to "has any permission".
        graph_access = bool(entry.get("graph_access", True if raw_permissions is None else raw_permissions))
        if raw_permissions is None:
            permissions = DEFAULT_GRAPH_PERMISSIONS if graph_access else ()
        else:
            permissions = tuple(raw_permissions)
        ident = Identity(
            name=name,
            kind=kind,
            client_id=str(entry.get("client_id") or stable_id("client", name)),
            object_id=str(entry.get("object_id") or stable_id("principal", name)),
            client_secret=entry.get("client_secret"),
            graph_access=graph_access,
            graph_permissions=permissions,
        )
        if kind == "servicePrincipal" and not ident.client_secret:
            raise SeedError(f"{where}: a servicePrincipal needs client_secret")
        tenant.identities[name] = ident
    return tenant


def _load_vaults(seed: Mapping[str, Any], tenant: Tenant) -> dict[str, Vault]:
    vaults: dict[str, Vault] = {}
    now = time.time()
    for i, entry in enumerate(_as_list(seed.get("vaults"), "vaults")):
        where = f"vaults[{i}]"
        vault = Vault(name=str(_require(entry, "name", where)))
        if entry.get("limits"):
            vault.limits = Limits.from_seed(entry["limits"], default_page_cap=25)
        for ref in _as_list(entry.get("access"), f"{where}.access"):
            ident = tenant.identities.get(str(ref))
            vault.access.add(ident.object_id if ident else str(ref))
        for j, raw_secret in enumerate(_as_list(entry.get("secrets"), f"{where}.secrets")):
            swhere = f"{where}.secrets[{j}]"
            name = str(_require(raw_secret, "name", swhere))
            if not re.fullmatch(r"[0-9A-Za-z-]{1,127}", name):
                raise SeedError(f"{swhere}: Key Vault secret names are 1-127 of [0-9a-zA-Z-]")
            secret = Secret(name=name)
            raw_versions = raw_secret.get("versions")
            if raw_versions is None:
                raw_versions = [raw_secret]
            for k, rv in enumerate(_as_list(raw_versions, f"{swhere}.versions")):
                created = parse_time(rv.get("created"), now) or int(now - 86400 * (len(raw_versions) - k))
                version = SecretVersion(
                    version=str(rv.get("version") or uuid.uuid5(_NS, f"{vault.name}/{name}/{k}").hex),
                    value=str(_require(rv, "value", f"{swhere}.versions[{k}]")),
                    enabled=bool(rv.get("enabled", True)),
                    exp=parse_time(rv.get("exp"), now),
                    nbf=parse_time(rv.get("nbf"), now),
                    created=created,
                    updated=parse_time(rv.get("updated"), now) or created,
                    content_type=rv.get("contentType"),
                    tags=rv.get("tags"),
                )
                secret.versions.append(version)
            vault.secrets[name.lower()] = secret
        vaults[vault.name] = vault
    return vaults


def _load_directory(
    entry: Mapping[str, Any], *, kind: str, name: str, ident: str, tenant: Tenant
) -> ScimDirectory:
    limits = Limits.from_seed(entry.get("limits"), default_page_cap=100 if kind == "account" else 10000)
    directory = ScimDirectory(name=name, kind=kind, ident=ident, limits=limits)
    directory._rng.seed(f"{kind}:{name}")
    where = f"{kind} {name}"
    for i, item in enumerate(_as_list(entry.get("users"), f"{where}.users")):
        raw: dict[str, Any] = {"userName": item} if isinstance(item, str) else dict(item)
        directory.add_user(
            str(_require(raw, "userName", f"{where}.users[{i}]")),
            display_name=raw.get("displayName"),
            external_id=raw.get("externalId"),
            entitlements=raw.get("entitlements"),
            active=bool(raw.get("active", True)),
        )
    from sandbox.evidence import fingerprint

    for i, raw in enumerate(_as_list(entry.get("tokens"), f"{where}.tokens")):
        token = str(_require(raw, "token", f"{where}.tokens[{i}]"))
        owner = str(_require(raw, "user", f"{where}.tokens[{i}]")).lower()
        admin = bool(raw.get("admin", False))
        if owner not in directory.by_user_name:
            directory.add_user(owner, display_name=owner.split("@")[0])
        directory.tokens[fingerprint(token)] = PatToken(user_name=owner, admin=admin)
    raw_groups = _as_list(entry.get("groups"), f"{where}.groups")
    created: list[ScimGroup] = []
    for i, raw in enumerate(raw_groups):  # ids first, so members may name groups defined later
        gwhere = f"{where}.groups[{i}]"
        group = ScimGroup(
            id=directory.new_id(),
            display_name=str(_require(raw, "displayName", gwhere)),
            external_id=None if raw.get("externalId") is None else str(raw["externalId"]),
            external=bool(raw.get("external", False)),
        )
        if directory.group_named(group.display_name) is not None:
            raise SeedError(f"{gwhere}: a group named {group.display_name!r} already exists in this {kind}")
        directory.groups[group.id] = group
        created.append(group)
    admin_sps: list[str] = []
    for i, raw in enumerate(_as_list(entry.get("service_principals"), f"{where}.service_principals")):
        swhere = f"{where}.service_principals[{i}]"
        app_id, display = _service_principal_names(raw, tenant, swhere)
        sp = directory.add_service_principal(
            app_id,
            display_name=display,
            account_admin=kind == "account" and bool(raw.get("admin", False)),
            oauth_secret=None if raw.get("oauth_secret") is None else str(raw["oauth_secret"]),
        )
        if raw.get("admin"):
            admin_sps.append(sp.id)
    for i, (raw, group) in enumerate(zip(raw_groups, created, strict=True)):
        for member in _as_list(raw.get("members"), f"{where}.groups[{i}].members"):
            ref = str(member)
            low = ref.lower()
            found: str | None
            if low.startswith("group:"):
                target = directory.group_named(ref[len("group:") :])
                found = target.id if target else None
            elif low.startswith("sp:"):
                found = directory.by_application_id.get(_sp_key(ref[len("sp:") :], tenant))
            else:
                found = directory.by_user_name.get(low)
            if found is None:
                raise SeedError(f"{where}.groups[{i}]: unknown member {member!r}")
            if found not in group.member_ids:
                group.member_ids.append(found)
    if kind == "workspace" and admin_sps:  # a workspace admin is a member of the workspace's admins group
        admins = directory.ensure_group("admins")
        admins.member_ids.extend(s for s in admin_sps if s not in admins.member_ids)
    return directory


def _sp_key(ref: str, tenant: Tenant) -> str:
    """A seed's service-principal reference (Entra identity name or application id), as a lookup key."""
    ident = tenant.identities.get(ref)
    return (ident.client_id if ident else ref).lower()


def _service_principal_names(raw: Mapping[str, Any], tenant: Tenant, where: str) -> tuple[str, str]:
    """``{identity: <Entra identity name>}`` or ``{application_id, display_name}`` -> (appId, name)."""
    if raw.get("identity"):
        ident = tenant.identities.get(str(raw["identity"]))
        if ident is None:
            raise SeedError(f"{where}: unknown identity {raw['identity']!r}")
        return ident.client_id, str(raw.get("display_name") or ident.name)
    app_id = str(_require(raw, "application_id", where))
    return app_id, str(raw.get("display_name") or app_id)


def _load_assignments(raw_account: Mapping[str, Any], world: World) -> None:
    """``account.assignments: {<workspace name>: [{user|group|service_principal: ..., permissions}]}``."""
    account = world.account
    assert account is not None
    raw = raw_account.get("assignments") or {}
    if not isinstance(raw, Mapping):
        raise SeedError("account.assignments: expected a mapping of workspace name -> list")
    for ws_name, entries in raw.items():
        workspace = world.workspaces.get(str(ws_name))
        if workspace is None:
            raise SeedError(f"account.assignments: unknown workspace {ws_name!r}")
        for i, item in enumerate(_as_list(entries, f"account.assignments.{ws_name}")):
            where = f"account.assignments.{ws_name}[{i}]"
            kinds = [k for k in ("user", "group", "service_principal") if k in item]
            if len(kinds) != 1:
                raise SeedError(f"{where}: exactly one of user, group, service_principal")
            ref = str(item[kinds[0]])
            found: str | None
            if kinds[0] == "user":
                found = account.by_user_name.get(ref.lower())
            elif kinds[0] == "group":
                group = account.group_named(ref)
                found = group.id if group else None
            else:
                found = account.by_application_id.get(_sp_key(ref, world.tenant))
            if found is None:
                raise SeedError(f"{where}: unknown account {kinds[0]} {ref!r}")
            permissions = normalise_permissions(item.get("permissions", ["USER"]))
            if not permissions:
                raise SeedError(f"{where}: permissions must contain USER or ADMIN")
            account.assignments.setdefault(workspace.ident, {})[found] = permissions


def _federate(world: World, workspace: ScimDirectory) -> None:
    """A federated workspace's seeded users and service principals are account principals with a direct
    assignment (USER, or ADMIN for ``admin: true`` service principals), as after a real migration."""
    account = world.account
    assert account is not None
    per_workspace = account.assignments.setdefault(workspace.ident, {})
    mapping: dict[str, str] = {}
    admins = workspace.group_named("admins")
    for uid, user in workspace.users.items():
        acct_id = account.by_user_name.get(user.user_name)
        if acct_id is None:
            acct_id = account.add_user(
                user.user_name, display_name=user.display_name, external_id=user.external_id
            ).id
        mapping[uid] = acct_id
        per_workspace.setdefault(acct_id, ["USER"])
    for sp_id, sp in workspace.service_principals.items():
        acct_id = account.by_application_id.get(sp.application_id.lower())
        if acct_id is None:
            acct_id = account.add_service_principal(
                sp.application_id, display_name=sp.display_name, oauth_secret=sp.oauth_secret
            ).id
        mapping[sp_id] = acct_id
        level = "ADMIN" if admins is not None and sp_id in admins.member_ids else "USER"
        if per_workspace.get(acct_id) != ["ADMIN"]:
            per_workspace[acct_id] = [level]
    for group in workspace.groups.values():
        group.member_ids = [mapping.get(m, m) for m in group.member_ids]
    # Re-created below with the account's ids; local tokens keep naming their owner by userName.
    workspace.users.clear()
    workspace.by_user_name.clear()
    workspace.service_principals.clear()
    workspace.by_application_id.clear()
    sync_federated(world, workspace)  # seeded members of admins stay there, whatever the assignment


def load_world(seed: Mapping[str, Any]) -> World:
    """Build the whole state from a seed mapping (already parsed YAML).

    :raises SeedError: with the path of the bad entry.
    """
    if not isinstance(seed, Mapping):
        raise SeedError("the seed must be a mapping")
    seed = dict(seed)
    if seed.get("generate"):
        from sandbox.generator import expand

        seed = expand(seed)
    tenant = _load_tenant(seed)
    vaults = _load_vaults(seed, tenant)
    workspaces: dict[str, ScimDirectory] = {}
    for i, entry in enumerate(_as_list(seed.get("workspaces"), "workspaces")):
        name = str(_require(entry, "name", f"workspaces[{i}]"))
        ident = str(entry.get("workspace_id") or (10**15 + int(stable_id("ws", name)[:8], 16)))
        workspaces[name] = _load_directory(entry, kind="workspace", name=name, ident=ident, tenant=tenant)
        workspaces[name].identity_federated = bool(entry.get("identity_federated", False))
    account = None
    raw_account = seed.get("account")
    if raw_account:
        account_id = str(raw_account.get("account_id") or stable_id("account", tenant.domain))
        account = _load_directory(
            raw_account, kind="account", name="account", ident=account_id, tenant=tenant
        )
    settings = dict(seed.get("settings") or {})
    raw_graph = dict(seed.get("graph") or {})
    graph_limits = (
        Limits.from_seed(raw_graph["limits"], default_page_cap=999) if raw_graph.get("limits") else None
    )
    world = World(
        tenant=tenant,
        vaults=vaults,
        workspaces=workspaces,
        account=account,
        token_lifetime=int(settings.get("token_lifetime_seconds", 3600)),
        identity_header=str(settings.get("identity_header", "sandbox-identity-header")),
        graph_limits=graph_limits,
    )
    if raw_account:
        _load_assignments(raw_account, world)
    for name, workspace in workspaces.items():
        if workspace.identity_federated:
            if account is None:
                raise SeedError(f"workspace {name}: identity_federated needs an account: section")
            _federate(world, workspace)
    return world


def read_seed_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML seed, with libyaml when available (large generated seeds)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as handle:
        data = yaml.load(handle, Loader=loader)
    if not isinstance(data, dict):
        raise SeedError(f"{path}: the seed must be a YAML mapping")
    return data
