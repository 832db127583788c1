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


@dataclass
class ScimGroup:
    id: str
    display_name: str
    external_id: str | None = None
    member_ids: list[str] = field(default_factory=list)


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
        }


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
    tokens: dict[str, PatToken] = field(default_factory=dict)  # sha256(token) -> owner
    version: int = 0  # bumped on every change, so cached orderings know when to rebuild
    pending_until: float = 0.0  # latest visible_at of a user still hidden from lists
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def new_id(self) -> str:
        while True:
            candidate = str(self._rng.randrange(10**15, 10**16))
            if candidate not in self.users and candidate not in self.groups:
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
    ) -> ScimUser:
        key = user_name.lower()
        if key in self.by_user_name:
            raise SeedError(f"{self.kind} {self.name}: duplicate userName {user_name!r}")
        user = ScimUser(
            id=self.new_id(),
            user_name=key,
            display_name=display_name,
            external_id=external_id,
            emails=emails if emails is not None else [{"value": key, "type": "work", "primary": True}],
            entitlements=entitlements or [],
            name=name,
            active=active,
            visible_at=visible_at,
        )
        self.users[user.id] = user
        self.by_user_name[key] = user.id
        self.version += 1
        return user


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
        ident = Identity(
            name=name,
            kind=kind,
            client_id=str(entry.get("client_id") or stable_id("client", name)),
            object_id=str(entry.get("object_id") or stable_id("principal", name)),
            client_secret=entry.get("client_secret"),
            graph_access=bool(entry.get("graph_access", True)),
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


def _load_directory(entry: Mapping[str, Any], *, kind: str, name: str, ident: str) -> ScimDirectory:
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
    for i, raw in enumerate(_as_list(entry.get("groups"), f"{where}.groups")):
        group = ScimGroup(
            id=directory.new_id(), display_name=str(_require(raw, "displayName", f"{where}.groups[{i}]"))
        )
        for member in _as_list(raw.get("members"), f"{where}.groups[{i}].members"):
            uid = directory.by_user_name.get(str(member).lower())
            if uid is None:
                raise SeedError(f"{where}.groups[{i}]: unknown member {member!r}")
            group.member_ids.append(uid)
        directory.groups[group.id] = group
    return directory


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
        workspaces[name] = _load_directory(entry, kind="workspace", name=name, ident=ident)
    account = None
    raw_account = seed.get("account")
    if raw_account:
        account_id = str(raw_account.get("account_id") or stable_id("account", tenant.domain))
        account = _load_directory(raw_account, kind="account", name="account", ident=account_id)
    settings = dict(seed.get("settings") or {})
    raw_graph = dict(seed.get("graph") or {})
    graph_limits = (
        Limits.from_seed(raw_graph["limits"], default_page_cap=999) if raw_graph.get("limits") else None
    )
    return World(
        tenant=tenant,
        vaults=vaults,
        workspaces=workspaces,
        account=account,
        token_lifetime=int(settings.get("token_lifetime_seconds", 3600)),
        identity_header=str(settings.get("identity_header", "sandbox-identity-header")),
        graph_limits=graph_limits,
    )


def read_seed_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML seed, with libyaml when available (large generated seeds)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as handle:
        data = yaml.load(handle, Loader=loader)
    if not isinstance(data, dict):
        raise SeedError(f"{path}: the seed must be a YAML mapping")
    return data
