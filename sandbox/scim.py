"""Databricks SCIM 2.0 stand-in: one app per workspace (``/api/2.0/preview/scim/v2``) and one for the
account API (``/api/2.0/accounts/{account_id}/scim/v2``).

Faithful points: PAT bearer auth (unknown token 401, non-admin 403 on admin endpoints), lower-cased and
case-insensitively unique userNames (409), 1-based ``startIndex``, server-side page caps (the account API
serves at most 100 per page), SCIM filter grammar with ``\\"`` escapes, ``attributes`` /
``excludedAttributes``, SCIM PatchOp for group members, per-endpoint rate limits (429 + ``Retry-After``) and
a concurrent-request limit answering 429 or 500 ``REQUEST_LIMIT_EXCEEDED``. Lists are ordered by id, so users
created while a client pages shift later pages, as they can on the real service.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.responses import Response

from sandbox.evidence import fingerprint
from sandbox.http import Ctx, SystemApp, json_response
from sandbox.hub import check_bearer
from sandbox.model import (
    DATABRICKS_RESOURCE,
    WORKSPACE_ENTITLEMENTS,
    WORKSPACE_PERMISSIONS,
    normalise_permissions,
    sync_all_federated,
    sync_federated,
)

if TYPE_CHECKING:
    from sandbox.hub import Hub
    from sandbox.model import Limits, ScimDirectory, ScimGroup, ScimServicePrincipal, ScimUser

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER_SCHEMAS = [
    "urn:ietf:params:scim:schemas:core:2.0:User",
    "urn:ietf:params:scim:schemas:extension:workspace:2.0:User",
]
GROUP_SCHEMAS = ["urn:ietf:params:scim:schemas:core:2.0:Group"]
SERVICE_PRINCIPAL_SCHEMAS = ["urn:ietf:params:scim:schemas:core:2.0:ServicePrincipal"]
WORKSPACE_PREFIX = "/api/2.0/preview/scim/v2"
ACCOUNT_PREFIX = "/api/2.0/accounts/{account_id}/scim/v2"
ASSIGNMENTS_PREFIX = "/api/2.0/accounts/{account_id}/workspaces/{workspace_id}/permissionassignments"
ACCOUNT_OIDC_PREFIX = "/oidc/accounts/{account_id}"
WORKSPACE_OIDC_PREFIX = "/oidc"
PRINCIPAL_NOT_FOUND = "Principal not found in account."  # the real text (databricks/cli#1121)
PERMISSION_DESCRIPTIONS = {  # wording ours; the levels are the SDK's WorkspacePermission values
    "USER": "Can access the workspace.",
    "ADMIN": "Can access the workspace and has workspace admin privileges.",
}

_STATUS_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "ENDPOINT_NOT_FOUND",
    405: "ENDPOINT_NOT_FOUND",
    409: "RESOURCE_ALREADY_EXISTS",
    429: "REQUEST_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}


class DatabricksErrors:
    """Platform-level errors: ``{"error_code": ..., "message": ...}``."""

    def error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
        if not code.isupper():
            code = _STATUS_CODES.get(status, "INTERNAL_ERROR")
        return json_response({"error_code": code, "message": message}, status, headers)


_ERR = DatabricksErrors()


def scim_error(status: int, detail: str, scim_type: str | None = None) -> Response:
    body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "detail": detail, "status": str(status)}
    if scim_type:
        body["scimType"] = scim_type
    return json_response(body, status)


def oauth_error(status: int, code: str, description: str) -> Response:
    """Databricks OAuth endpoints answer RFC 6749 error bodies, not ``error_code`` ones."""
    return json_response({"error": code, "error_description": description}, status)


@dataclass
class Caller:
    """Who a request authenticated as: a PAT's owner, or a service principal (Entra or Databricks OAuth
    token). ``admin`` is workspace admin (or account admin on the account API)."""

    admin: bool
    user_name: str | None = None
    service_principal_id: str | None = None


class ScimError(Exception):
    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.scim_type = scim_type


# ------------------------------------------------------------------------------------ filter grammar

_OPS = {"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr"}
_SCIM_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<punct>[()])|(?P<num>-?\d+(?:\.\d+)?)|(?P<word>[A-Za-z_$][\w.:$-]*))'
)


@dataclass
class _Cmp:
    path: str
    op: str
    value: Any = None


@dataclass
class _Bool:
    op: str  # and | or | not
    items: list[Any]


def _scim_tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _SCIM_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ScimError(400, f"Invalid filter '{text}': unexpected character at {pos}.", "invalidFilter")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class ScimFilter:
    """Parses RFC 7644 filters (the subset Databricks documents) and evaluates them on resource dicts."""

    def __init__(self, text: str, attributes: set[str]) -> None:
        self.text = text
        self._attributes = {a.lower() for a in attributes}
        self._tokens = _scim_tokens(text)
        self._pos = 0
        if not self._tokens:
            raise self._bad("empty filter")
        self.tree = self._or()
        if self._pos != len(self._tokens):
            raise self._bad(f"unexpected '{self._tokens[self._pos][1]}'")

    def _bad(self, why: str) -> ScimError:
        return ScimError(400, f"Invalid filter '{self.text}': {why}.", "invalidFilter")

    def _peek_word(self) -> str | None:
        if self._pos < len(self._tokens) and self._tokens[self._pos][0] == "word":
            return self._tokens[self._pos][1].lower()
        return None

    def _take(self) -> tuple[str, str]:
        if self._pos >= len(self._tokens):
            raise self._bad("unexpected end")
        tok = self._tokens[self._pos]
        self._pos += 1
        return tok

    def _or(self) -> Any:
        items = [self._and()]
        while self._peek_word() == "or":
            self._pos += 1
            items.append(self._and())
        return items[0] if len(items) == 1 else _Bool("or", items)

    def _and(self) -> Any:
        items = [self._not()]
        while self._peek_word() == "and":
            self._pos += 1
            items.append(self._not())
        return items[0] if len(items) == 1 else _Bool("and", items)

    def _not(self) -> Any:
        if self._peek_word() == "not":
            self._pos += 1
            return _Bool("not", [self._group()])
        if self._pos < len(self._tokens) and self._tokens[self._pos][1] == "(":
            return self._group()
        return self._comparison()

    def _group(self) -> Any:
        if self._take()[1] != "(":
            raise self._bad("'(' expected")
        inner = self._or()
        if self._take()[1] != ")":
            raise self._bad("')' expected")
        return inner

    def _comparison(self) -> _Cmp:
        kind, path = self._take()
        if kind != "word":
            raise self._bad(f"attribute expected, found '{path}'")
        if path.lower() not in self._attributes:
            raise self._bad(f"unsupported attribute '{path}'")
        kind, op = self._take()
        op = op.lower()
        if kind != "word" or op not in _OPS:
            raise self._bad(f"unknown operator '{op}'")
        if op == "pr":
            return _Cmp(path, op)
        kind, raw = self._take()
        value: Any
        if kind == "str":
            try:
                value = json.loads(raw)
            except ValueError as exc:
                raise self._bad(f"bad string literal {raw}") from exc
        elif kind == "num":
            value = float(raw) if "." in raw else int(raw)
        elif kind == "word" and raw.lower() in ("true", "false", "null"):
            value = {"true": True, "false": False, "null": None}[raw.lower()]
        else:
            raise self._bad(f"a quoted value is expected after '{op}', found '{raw}'")
        return _Cmp(path, op, value)

    # ------------------------------------------------------------------ evaluation
    @staticmethod
    def _values(resource: dict[str, Any], path: str) -> list[Any]:
        head, _, rest = path.partition(".")
        node = next((v for k, v in resource.items() if k.lower() == head.lower()), None)
        if node is None:
            return []
        nodes = node if isinstance(node, list) else [node]
        if not rest:
            return nodes
        out: list[Any] = []
        for n in nodes:
            if isinstance(n, dict):
                out.extend(v for k, v in n.items() if k.lower() == rest.lower() and v is not None)
        return out

    @staticmethod
    def _compare(actual: Any, op: str, expected: Any) -> bool:
        if isinstance(actual, str) and isinstance(expected, str):
            a, e = actual.lower(), expected.lower()
            return {
                "eq": a == e,
                "ne": a != e,
                "co": e in a,
                "sw": a.startswith(e),
                "ew": a.endswith(e),
                "gt": a > e,
                "ge": a >= e,
                "lt": a < e,
                "le": a <= e,
            }[op]
        if op == "eq":
            return bool(actual == expected)
        if op == "ne":
            return bool(actual != expected)
        return False

    def _eval(self, node: Any, resource: dict[str, Any]) -> bool:
        if isinstance(node, _Bool):
            if node.op == "and":
                return all(self._eval(i, resource) for i in node.items)
            if node.op == "or":
                return any(self._eval(i, resource) for i in node.items)
            return not self._eval(node.items[0], resource)
        values = self._values(resource, node.path)
        if node.op == "pr":
            return any(v not in (None, "", []) for v in values)
        if node.op == "ne" and not values:
            return node.value is not None
        return any(self._compare(v, node.op, node.value) for v in values)

    def matches(self, resource: dict[str, Any]) -> bool:
        return self._eval(self.tree, resource)

    def exact_user_name(self) -> str | None:
        """``userName eq "x"`` alone: answered from the index instead of a scan."""
        node = self.tree
        if isinstance(node, _Cmp) and node.op == "eq" and node.path.lower() == "username":
            return str(node.value).lower() if isinstance(node.value, str) else None
        return None


USER_FILTER_ATTRS = {
    "id",
    "userName",
    "displayName",
    "externalId",
    "active",
    "emails",
    "emails.value",
    "name.givenName",
    "name.familyName",
    "entitlements.value",
    "groups.value",
    "groups.display",
}
GROUP_FILTER_ATTRS = {"id", "displayName", "externalId", "members.value", "members.display"}
SERVICE_PRINCIPAL_FILTER_ATTRS = {
    "id",
    "applicationId",
    "displayName",
    "externalId",
    "active",
    "groups.value",
    "groups.display",
}


# ------------------------------------------------------------------------------------ projection


def _project(resource: dict[str, Any], attributes: str | None, excluded: str | None) -> dict[str, Any]:
    if attributes:
        wanted = {a.strip().split(".")[0].lower() for a in attributes.split(",") if a.strip()}
        wanted.add("id")
        return {k: v for k, v in resource.items() if k.lower() in wanted}
    if excluded:
        drop = {a.strip().split(".")[0].lower() for a in excluded.split(",") if a.strip()}
        drop.discard("id")
        return {k: v for k, v in resource.items() if k.lower() not in drop}
    return resource


def _int_param(ctx: Ctx, name: str, default: int) -> int:
    raw = ctx.query(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ScimError(400, f"Invalid value for {name}: '{raw}'.", "invalidValue") from exc


class ScimApp(SystemApp):
    """Users, Groups, Me and ServiceProviderConfig for one directory (workspace or account)."""

    def __init__(self, hub: Hub, kind: str, name: str) -> None:
        system = "account" if kind == "account" else f"workspace:{name}"
        super().__init__(hub, system, _ERR, limits=self._current_limits)
        self.kind = kind
        self.dir_name = name
        self._sorted: dict[tuple[int, int], list[str]] = {}
        prefix = ACCOUNT_PREFIX if kind == "account" else WORKSPACE_PREFIX
        self.add("GET", "/.well-known/databricks-config", "databricks.config", self.host_config)
        self.add("GET", f"{prefix}/Users", "scim.users.list", self.list_users)
        self.add("POST", f"{prefix}/Users", "scim.users.create", self.create_user)
        self.add("GET", f"{prefix}/Users/{{id}}", "scim.users.get", self.get_user)
        self.add("PATCH", f"{prefix}/Users/{{id}}", "scim.users.patch", self.patch_user)
        self.add("DELETE", f"{prefix}/Users/{{id}}", "scim.users.delete", self.delete_user)
        self.add("GET", f"{prefix}/Groups", "scim.groups.list", self.list_groups)
        self.add("POST", f"{prefix}/Groups", "scim.groups.create", self.create_group)
        self.add("GET", f"{prefix}/Groups/{{id}}", "scim.groups.get", self.get_group)
        self.add("PATCH", f"{prefix}/Groups/{{id}}", "scim.groups.patch", self.patch_group)
        self.add("DELETE", f"{prefix}/Groups/{{id}}", "scim.groups.delete", self.delete_group)
        self.add("GET", f"{prefix}/ServiceProviderConfig", "scim.spc", self.service_provider_config)
        sps = f"{prefix}/ServicePrincipals"
        self.add("GET", sps, "scim.service_principals.list", self.list_service_principals)
        self.add("POST", sps, "scim.service_principals.create", self.create_service_principal)
        self.add("GET", f"{sps}/{{id}}", "scim.service_principals.get", self.get_service_principal)
        oidc = ACCOUNT_OIDC_PREFIX if kind == "account" else WORKSPACE_OIDC_PREFIX
        self.add(
            "GET",
            f"{oidc}/.well-known/oauth-authorization-server",
            "databricks.oidc.config",
            self.oidc_config,
        )
        self.add("POST", f"{oidc}/v1/token", "databricks.oidc.token", self.oidc_token)
        if kind == "workspace":
            self.add("GET", f"{prefix}/Me", "scim.me", self.me)
        else:
            pa = ASSIGNMENTS_PREFIX
            self.add("GET", pa, "account.assignments.list", self.list_assignments)
            self.add("GET", f"{pa}/permissions", "account.assignments.permissions", self.assignment_levels)
            self.add(
                "PUT", f"{pa}/principals/{{principal_id}}", "account.assignments.put", self.put_assignment
            )
            self.add(
                "DELETE",
                f"{pa}/principals/{{principal_id}}",
                "account.assignments.delete",
                self.delete_assignment,
            )

    # ------------------------------------------------------------------ plumbing
    def directory(self) -> ScimDirectory | None:
        world = self.hub.world
        return world.account if self.kind == "account" else world.workspaces.get(self.dir_name)

    def _current_limits(self) -> Limits | None:
        directory = self.directory()
        return directory.limits if directory else None

    def _authenticate(self, ctx: Ctx, *, admin: bool) -> tuple[ScimDirectory, Caller]:
        directory = self._known_directory(ctx)
        if not ctx.token:
            raise _Refusal(
                _ERR.error(
                    401,
                    "UNAUTHENTICATED",
                    "Credential was not sent or was of an unsupported type for this API.",
                )
            )
        caller = self._caller(directory, ctx.token)
        needs_admin = admin or self.kind == "account"
        if needs_admin and not caller.admin:
            raise _Refusal(scim_error(403, "User not authorized."))
        return directory, caller

    def _known_directory(self, ctx: Ctx) -> ScimDirectory:
        directory = self.directory()
        if directory is None:
            raise _Refusal(_ERR.error(404, "ENDPOINT_NOT_FOUND", "This workspace no longer exists."))
        if self.kind == "account" and ctx.params.get("account_id") != directory.ident:
            raise _Refusal(_ERR.error(404, "RESOURCE_DOES_NOT_EXIST", "Account not found."))
        return directory

    def _caller(self, directory: ScimDirectory, token: str) -> Caller:
        """A PAT of this directory, a Databricks OAuth token issued by it, or an Entra token for the Azure
        Databricks resource whose identity is a service principal registered here."""
        owner = directory.tokens.get(fingerprint(token))
        if owner is not None:
            return Caller(admin=owner.admin, user_name=owner.user_name)
        invalid = _Refusal(_ERR.error(401, "UNAUTHENTICATED", "Invalid access token."))
        oauth = self.hub.databricks_tokens.lookup(token)
        if oauth is not None:
            # Tokens are bound to the directory that issued them (account or one workspace).
            if oauth.system != self.system or oauth.expires_at <= time.time():
                raise invalid
            sp_id = directory.by_application_id.get(oauth.application_id.lower())
            if sp_id is None:
                raise invalid
            return self._sp_caller(directory, directory.service_principals[sp_id])
        entra, _reason = check_bearer(self.hub, token, {DATABRICKS_RESOURCE})
        if entra is None:  # unknown, expired, or issued for another resource (Graph, Key Vault)
            raise invalid
        sp_id = directory.by_application_id.get(entra.identity.client_id.lower())
        if sp_id is None:
            where = "account" if self.kind == "account" else "workspace"
            raise _Refusal(
                _ERR.error(
                    403,
                    "PERMISSION_DENIED",
                    f"Service principal {entra.identity.client_id} is not a member of this {where}.",
                )
            )
        return self._sp_caller(directory, directory.service_principals[sp_id])

    def _sp_caller(self, directory: ScimDirectory, sp: ScimServicePrincipal) -> Caller:
        if self.kind == "account":
            admin = sp.account_admin
        else:
            admins = directory.group_named("admins")
            admin = admins is not None and sp.id in admins.member_ids
        return Caller(admin=admin, service_principal_id=sp.id)

    async def _handle(
        self,
        ctx: Ctx,
        fn: Callable[[ScimDirectory, Caller], Any],
        *,
        admin: bool = False,
        read: bool = False,
    ) -> Response:
        try:
            directory = self.directory()
            needs_admin = admin or (read and directory is not None and not directory.limits.non_admin_read)
            directory, owner = self._authenticate(ctx, admin=needs_admin)
            result = fn(directory, owner)
            if hasattr(result, "__await__"):
                result = await result
            return result
        except _Refusal as refusal:
            return refusal.response
        except ScimError as err:
            return scim_error(err.status, str(err), err.scim_type)

    async def _body(self, ctx: Ctx) -> dict[str, Any]:
        try:
            body = await ctx.json()
        except ValueError as exc:
            raise ScimError(400, "Request body is not valid JSON.", "invalidSyntax") from exc
        if not isinstance(body, dict):
            raise ScimError(400, "Request body must be a JSON object.", "invalidSyntax")
        return body

    def _entitlements(self, raw: Any, what: str) -> list[dict[str, Any]]:
        """The ``entitlements`` of a create or PATCH, checked. Entitlements are per workspace: the account
        API refuses them (its create cannot set them; a 400 is our choice, the real one may ignore them),
        and a workspace refuses values it does not know."""
        if raw is None or raw == []:
            return []
        if self.kind == "account":
            raise _Refusal(
                _ERR.error(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    f"Entitlements cannot be set on account-level {what}: they belong to a workspace. Set "
                    "them through the workspace's SCIM API.",
                )
            )
        items = raw if isinstance(raw, list) else [raw]
        out: list[dict[str, Any]] = []
        for item in items:
            value = item.get("value") if isinstance(item, dict) else None
            if value not in WORKSPACE_ENTITLEMENTS:
                raise _Refusal(
                    _ERR.error(
                        400,
                        "INVALID_PARAMETER_VALUE",
                        f"Invalid entitlement {value if value is not None else item!r}; valid values are "
                        + ", ".join(WORKSPACE_ENTITLEMENTS)
                        + ".",
                    )
                )
            entry = {"value": value}
            if entry not in out:
                out.append(entry)
        return out

    def _user_view(self, directory: ScimDirectory, user: ScimUser) -> dict[str, Any]:
        view: dict[str, Any] = {
            "emails": user.emails,
            "displayName": user.display_name,
            "schemas": USER_SCHEMAS,
            "name": user.name or {},
            "active": user.active,
            "groups": self._direct_groups(directory, user.id),
            "id": user.id,
            "userName": user.user_name,
        }
        if user.entitlements:
            view["entitlements"] = user.entitlements
        if user.external_id is not None:
            view["externalId"] = user.external_id
        return view

    @staticmethod
    def _direct_groups(directory: ScimDirectory, principal_id: str) -> list[dict[str, Any]]:
        if not directory.groups:
            return []
        return [
            {"display": g.display_name, "type": "direct", "value": g.id, "$ref": f"Groups/{g.id}"}
            for g in directory.groups.values()
            if principal_id in g.member_ids
        ]

    def _group_view(self, directory: ScimDirectory, group: ScimGroup) -> dict[str, Any]:
        members = []
        for mid in group.member_ids:
            user = directory.users.get(mid)
            if user is not None:
                members.append(
                    {"display": user.display_name or user.user_name, "value": mid, "$ref": f"Users/{mid}"}
                )
                continue
            nested = directory.groups.get(mid)
            if nested is not None:
                members.append({"display": nested.display_name, "value": mid, "$ref": f"Groups/{mid}"})
                continue
            sp = directory.service_principals.get(mid)
            if sp is not None:
                members.append({"display": sp.display_name, "value": mid, "$ref": f"ServicePrincipals/{mid}"})
        view: dict[str, Any] = {
            "displayName": group.display_name,
            "members": members,
            "schemas": GROUP_SCHEMAS,
            "id": group.id,
        }
        if group.external_id is not None:
            view["externalId"] = group.external_id
        if self.kind == "workspace":
            # iam.ResourceMeta: "WorkspaceGroup" for a workspace-local group ("Group" would be an account
            # group, which this sandbox does not list in workspaces). Nothing marks an external group.
            view["meta"] = {"resourceType": "WorkspaceGroup"}
        return view

    def _sp_view(self, directory: ScimDirectory, sp: ScimServicePrincipal) -> dict[str, Any]:
        view: dict[str, Any] = {
            "schemas": SERVICE_PRINCIPAL_SCHEMAS,
            "id": sp.id,
            "applicationId": sp.application_id,
            "displayName": sp.display_name,
            "active": sp.active,
            "groups": self._direct_groups(directory, sp.id),
        }
        if sp.entitlements:
            view["entitlements"] = sp.entitlements
        if sp.external_id is not None:
            view["externalId"] = sp.external_id
        if self.kind == "account" and sp.account_admin:
            view["roles"] = [{"type": "direct", "value": "account_admin"}]
        return view

    def _sorted_user_ids(self, directory: ScimDirectory) -> list[str]:
        key = (id(directory), directory.version)
        cached = self._sorted.get(key)
        if cached is None:
            self._sorted.clear()
            cached = sorted(directory.users)
            self._sorted[key] = cached
        return cached

    @staticmethod
    def _touch(directory: ScimDirectory) -> None:
        directory.version += 1

    @staticmethod
    def _page_window(ctx: Ctx, directory: ScimDirectory) -> tuple[int, int]:
        """``startIndex`` (1-based) and ``count``, the latter capped by the server's page size."""
        start = max(1, _int_param(ctx, "startIndex", 1))
        count = max(0, min(_int_param(ctx, "count", directory.limits.page_cap), directory.limits.page_cap))
        return start, count

    @staticmethod
    def _list_response(ctx: Ctx, start: int, total: int, chunk: list[dict[str, Any]]) -> Response:
        attributes, excluded = ctx.query("attributes"), ctx.query("excludedAttributes")
        body: dict[str, Any] = {
            "totalResults": total,
            "startIndex": start,
            "itemsPerPage": len(chunk),
            "schemas": [LIST_SCHEMA],
        }
        if chunk:
            body["Resources"] = [_project(r, attributes, excluded) for r in chunk]
        return json_response(body)

    def _paged(self, ctx: Ctx, directory: ScimDirectory, resources: list[dict[str, Any]]) -> Response:
        start, count = self._page_window(ctx, directory)
        return self._list_response(ctx, start, len(resources), resources[start - 1 : start - 1 + count])

    # ------------------------------------------------------------------ host metadata
    async def host_config(self, ctx: Ctx) -> Response:
        directory = self.directory()
        account = self.hub.world.account
        body: dict[str, Any] = {"cloud": "azure"}
        if self.kind == "account":
            body["account_id"] = directory.ident if directory else None
            body["oidc_endpoint"] = f"{self.origin}/oidc/accounts/{{account_id}}"
        else:
            body["workspace_id"] = directory.ident if directory else None
            if account is not None:
                body["account_id"] = account.ident
            body["oidc_endpoint"] = f"{self.origin}/oidc"
        return json_response(body)

    # ------------------------------------------------------------------ users
    async def list_users(self, ctx: Ctx) -> Response:
        def run(directory: ScimDirectory, _owner: Caller) -> Response:
            now = time.time()
            raw_filter = ctx.query("filter")
            flt = ScimFilter(raw_filter, USER_FILTER_ATTRS) if raw_filter else None
            exact = flt.exact_user_name() if flt else None
            if exact is not None:
                uid = directory.by_user_name.get(exact)
                ids = [uid] if uid else []
            else:
                ids = self._sorted_user_ids(directory)
            if now < directory.pending_until:  # some recent creates are not visible to lists yet
                ids = [i for i in ids if directory.users[i].visible_at <= now]
            if flt is None and not ctx.query("sortBy"):
                return self._paged_ids(ctx, directory, ids)
            views = [self._user_view(directory, directory.users[i]) for i in ids]
            if flt is not None and exact is None:
                views = [v for v in views if flt.matches(v)]
            sort_by = ctx.query("sortBy")
            if sort_by:
                key = sort_by.split(".")[0]
                views.sort(
                    key=lambda v: str(v.get(key) or "").lower(),
                    reverse=(ctx.query("sortOrder") or "").lower() == "descending",
                )
            return self._paged(ctx, directory, views)

        return await self._handle(ctx, run, read=True)

    def _paged_ids(self, ctx: Ctx, directory: ScimDirectory, ids: list[str]) -> Response:
        """Unfiltered, unsorted lists: build views only for the page, so 100k users page cheaply."""
        start, count = self._page_window(ctx, directory)
        chunk = [self._user_view(directory, directory.users[i]) for i in ids[start - 1 : start - 1 + count]]
        return self._list_response(ctx, start, len(ids), chunk)

    async def get_user(self, ctx: Ctx) -> Response:
        def run(directory: ScimDirectory, _owner: Caller) -> Response:
            user = directory.users.get(ctx.params["id"])
            if user is None:
                raise ScimError(404, f"User {ctx.params['id']} not found.")
            view = self._user_view(directory, user)
            return json_response(_project(view, ctx.query("attributes"), ctx.query("excludedAttributes")))

        return await self._handle(ctx, run, read=True)

    async def me(self, ctx: Ctx) -> Response:
        def run(directory: ScimDirectory, owner: Caller) -> Response:
            if owner.service_principal_id is not None:
                # Me answers a service principal's token too, User-shaped: userName is the applicationId.
                sp = directory.service_principals[owner.service_principal_id]
                view: dict[str, Any] = {
                    "emails": [],
                    "displayName": sp.display_name,
                    "schemas": USER_SCHEMAS,
                    "name": {},
                    "active": sp.active,
                    "groups": self._direct_groups(directory, sp.id),
                    "id": sp.id,
                    "userName": sp.application_id,
                }
            else:
                user = directory.users[directory.by_user_name[str(owner.user_name)]]
                view = self._user_view(directory, user)
            return json_response(_project(view, ctx.query("attributes"), ctx.query("excludedAttributes")))

        return await self._handle(ctx, run)

    async def create_user(self, ctx: Ctx) -> Response:
        async def run(directory: ScimDirectory, _owner: Caller) -> Response:
            body = await self._body(ctx)
            user_name = body.get("userName")
            if not isinstance(user_name, str) or not user_name.strip():
                raise ScimError(400, "Request is missing required field: userName.", "invalidValue")
            user_name = user_name.strip()
            entitlements = self._entitlements(body.get("entitlements"), "users")
            if user_name.lower() in directory.by_user_name:
                if self.kind == "account":
                    detail = f"User already exists in the account with userName {user_name.lower()}."
                else:
                    detail = f"User with username {user_name.lower()} already exists."
                raise ScimError(409, detail)
            emails = body.get("emails")
            if not isinstance(emails, list) or not emails:
                emails = [{"value": user_name.lower(), "type": "work", "primary": True}]
            delay = directory.limits.visibility_delay_ms / 1000.0
            now = time.time()
            visible_at = now + delay if delay else 0.0
            directory.pending_until = max(directory.pending_until, visible_at)
            fields: dict[str, Any] = {
                "display_name": body.get("displayName") or user_name.lower(),
                "external_id": body.get("externalId"),
                "emails": emails,
                "name": body.get("name") if isinstance(body.get("name"), dict) else None,
                "active": bool(body.get("active", True)),
            }
            if self._federated(directory):
                user = self._create_federated_user(directory, user_name, fields)
                user.entitlements = entitlements
                user.visible_at = visible_at
            else:
                user = directory.add_user(
                    user_name, entitlements=entitlements, visible_at=visible_at, created_at=now, **fields
                )
            groups_given = False
            for ref in body.get("groups") or []:
                group = directory.groups.get(str(ref.get("value"))) if isinstance(ref, dict) else None
                if group is not None and user.id not in group.member_ids:
                    group.member_ids.append(user.id)
                    groups_given = True
            self._touch(directory)
            if groups_given:
                self._after_membership_change()
            headers = {"Location": f"{self.origin}{ctx.request.url.path.rstrip('/')}/{user.id}"}
            return json_response(self._user_view(directory, user), 201, headers)

        return await self._handle(ctx, run, admin=True)

    async def patch_user(self, ctx: Ctx) -> Response:
        async def run(directory: ScimDirectory, _owner: Caller) -> Response:
            user = directory.users.get(ctx.params["id"])
            if user is None:
                raise ScimError(404, f"User {ctx.params['id']} not found.")
            planned: list[tuple[str, str, Any]] = []
            for op, path, value in _patch_ops(await self._body(ctx)):
                changes = {path: value} if path else (value if isinstance(value, dict) else {})
                for key, val in changes.items():
                    checked = (
                        self._entitlements(val, "users")  # checked before anything is applied
                        if key.lower() == "entitlements" and op != "remove"
                        else val
                    )
                    planned.append((op, key.lower(), checked))
            for op, low, val in planned:
                # userName and emails are immutable on Databricks: PATCH silently ignores them.
                if low == "displayname":
                    user.display_name = None if op == "remove" else val
                elif low == "active":
                    user.active = bool(val) if op != "remove" else True
                elif low == "externalid":
                    user.external_id = None if op == "remove" else val
                elif low == "entitlements":
                    user.entitlements = _apply_list(user.entitlements, op, val)
            return Response(status_code=204)

        return await self._handle(ctx, run, admin=True)

    async def delete_user(self, ctx: Ctx) -> Response:
        def run(directory: ScimDirectory, _owner: Caller) -> Response:
            uid = ctx.params["id"]
            if uid not in directory.users:
                raise ScimError(404, f"User {uid} not found.")
            account = self.hub.world.account
            if self._federated(directory) and uid in directory.from_account and account is not None:
                # Not documented: we take it that a federated workspace's DELETE removes the user's direct
                # assignment (the account user stays); access through a group keeps the user listed.
                account.assignments.get(directory.ident, {}).pop(uid, None)
                sync_federated(self.hub.world, directory)
                return Response(status_code=204)
            directory.remove_principal(uid)
            self._after_membership_change()
            return Response(status_code=204)

        return await self._handle(ctx, run, admin=True)

    # ------------------------------------------------------------------ groups
    async def list_groups(self, ctx: Ctx) -> Response:
        def run(directory: ScimDirectory, _owner: Caller) -> Response:
            raw_filter = ctx.query("filter")
            flt = ScimFilter(raw_filter, GROUP_FILTER_ATTRS) if raw_filter else None
            views = [self._group_view(directory, directory.groups[g]) for g in sorted(directory.groups)]
            if flt is not None:
                views = [v for v in views if flt.matches(v)]
            return self._paged(ctx, directory, views)

        return await self._handle(ctx, run, read=True)

    async def get_group(self, ctx: Ctx) -> Response:
        def run(directory: ScimDirectory, _owner: Caller) -> Response:
            group = directory.groups.get(ctx.params["id"])
            if group is None:
                raise ScimError(404, f"Group {ctx.params['id']} not found.")
            view = self._group_view(directory, group)
            return json_response(_project(view, ctx.query("attributes"), ctx.query("excludedAttributes")))

        return await self._handle(ctx, run, read=True)

    async def create_group(self, ctx: Ctx) -> Response:
        async def run(directory: ScimDirectory, _owner: Caller) -> Response:
            from sandbox.model import ScimGroup

            body = await self._body(ctx)
            name = body.get("displayName")
            if not isinstance(name, str) or not name.strip():
                raise ScimError(400, "Request is missing required field: displayName.", "invalidValue")
            # Unique per directory, case-insensitively, 409: undocumented; our most plausible reading.
            if any(g.display_name.lower() == name.lower() for g in directory.groups.values()):
                raise ScimError(409, f"Group with name {name} already exists.", "uniqueness")
            group = ScimGroup(id=directory.new_id(), display_name=name, external_id=body.get("externalId"))
            group.member_ids = self._member_refs(directory, body.get("members") or [])
            group.created_at = time.time()
            directory.groups[group.id] = group
            self._touch(directory)
            self._after_membership_change()
            headers = {"Location": f"{self.origin}{ctx.request.url.path.rstrip('/')}/{group.id}"}
            return json_response(self._group_view(directory, group), 201, headers)

        return await self._handle(ctx, run, admin=True)

    def _member_refs(self, directory: ScimDirectory, refs: Any) -> list[str]:
        if not isinstance(refs, list):
            raise ScimError(400, "members must be a list.", "invalidValue")
        out: list[str] = []
        for ref in refs:
            value = _ref_value(ref)
            if (
                value not in directory.users
                and value not in directory.groups
                and value not in directory.service_principals
            ):
                raise ScimError(404, f"Member {value} not found.")
            if value not in out:
                out.append(value)
        return out

    async def patch_group(self, ctx: Ctx) -> Response:
        async def run(directory: ScimDirectory, _owner: Caller) -> Response:
            group = directory.groups.get(ctx.params["id"])
            if group is None:
                raise ScimError(404, f"Group {ctx.params['id']} not found.")
            changes = _group_changes(_patch_ops(await self._body(ctx)))
            limit = directory.limits.patch_members_max
            touched = sum(len(group.member_ids) if refs is None else len(refs) for _, refs in changes.members)
            if limit is not None and touched > limit:
                # Databricks documents no limit: the knob, its default and this answer are ours.
                raise _Refusal(
                    _ERR.error(
                        400,
                        "INVALID_PARAMETER_VALUE",
                        f"A group PATCH may add or remove at most {limit} members "
                        f"(limits.patch_members_max); this one has {touched}. Split it into several requests.",
                    )
                )
            if group.external:
                # Groups kept in sync by automatic identity management are read-only in Databricks; a
                # PATCH of such a group has been reported to fail with an internal error. The status is
                # the reported one, the text ours (it must not contain "Unexpected error": databricks-sdk
                # retries errors whose message does).
                raise _Refusal(
                    _ERR.error(
                        500,
                        "INTERNAL_ERROR",
                        f"Failed to update group {group.display_name}: the group is managed by automatic "
                        "identity management from Microsoft Entra ID and cannot be changed in Databricks.",
                    )
                )
            # Work on a copy and commit at the end: a PATCH applies entirely or not at all (RFC 7644 3.5.2).
            member_ids = list(group.member_ids)
            for op, refs in changes.members:
                if refs is None:  # remove with path "members" and no value: every member
                    member_ids = []
                    continue
                ids = self._member_refs(directory, refs)
                if op == "add":
                    member_ids.extend(i for i in ids if i not in member_ids)
                elif op == "replace":
                    member_ids = ids
                else:
                    member_ids = [m for m in member_ids if m not in ids]
            new_name = changes.display_name
            if new_name is not None:
                clash = directory.group_named(new_name)
                if clash is not None and clash.id != group.id:
                    raise ScimError(409, f"Group with name {new_name} already exists.", "uniqueness")
                group.display_name = new_name
            group.member_ids = member_ids
            self._touch(directory)
            self._after_membership_change()
            return Response(status_code=204)

        return await self._handle(ctx, run, admin=True)

    async def delete_group(self, ctx: Ctx) -> Response:
        def run(directory: ScimDirectory, _owner: Caller) -> Response:
            if not directory.remove_group(ctx.params["id"]):
                raise ScimError(404, f"Group {ctx.params['id']} not found.")
            self._after_membership_change()
            return Response(status_code=204)

        return await self._handle(ctx, run, admin=True)

    # ------------------------------------------------------------------ identity federation
    def _federated(self, directory: ScimDirectory) -> bool:
        return (
            self.kind == "workspace" and directory.identity_federated and self.hub.world.account is not None
        )

    def _after_membership_change(self) -> None:
        """Account groups, users and assignments decide who a federated workspace lists."""
        if self.kind == "account":
            sync_all_federated(self.hub.world)

    def _create_federated_user(
        self, directory: ScimDirectory, user_name: str, fields: dict[str, Any]
    ) -> ScimUser:
        """A workspace-level create on a federated workspace creates the account user (or reuses the
        account user of that userName) and gives it a direct USER assignment; the workspace user carries
        the account id."""
        account = self.hub.world.account
        assert account is not None
        acct_id = account.by_user_name.get(user_name.lower())
        if acct_id is None:
            acct_id = account.add_user(user_name, created_at=time.time(), **fields).id
        account.assignments.setdefault(directory.ident, {}).setdefault(acct_id, ["USER"])
        sync_federated(self.hub.world, directory)
        user = directory.users.get(acct_id)
        if user is None:  # a workspace-local principal of that name blocks it; the 409 check ran before
            raise ScimError(409, f"User with username {user_name.lower()} already exists.")
        return user

    # ------------------------------------------------------------------ service principals
    async def list_service_principals(self, ctx: Ctx) -> Response:
        def run(directory: ScimDirectory, _owner: Caller) -> Response:
            raw_filter = ctx.query("filter")
            flt = ScimFilter(raw_filter, SERVICE_PRINCIPAL_FILTER_ATTRS) if raw_filter else None
            views = [
                self._sp_view(directory, directory.service_principals[i])
                for i in sorted(directory.service_principals)
            ]
            if flt is not None:
                views = [v for v in views if flt.matches(v)]
            return self._paged(ctx, directory, views)

        return await self._handle(ctx, run, read=True)

    async def get_service_principal(self, ctx: Ctx) -> Response:
        def run(directory: ScimDirectory, _owner: Caller) -> Response:
            sp = directory.service_principals.get(ctx.params["id"])
            if sp is None:
                raise ScimError(404, f"Service principal {ctx.params['id']} not found.")
            view = self._sp_view(directory, sp)
            return json_response(_project(view, ctx.query("attributes"), ctx.query("excludedAttributes")))

        return await self._handle(ctx, run, read=True)

    async def create_service_principal(self, ctx: Ctx) -> Response:
        async def run(directory: ScimDirectory, _owner: Caller) -> Response:
            body = await self._body(ctx)
            raw_app_id = body.get("applicationId")
            if raw_app_id is not None and (not isinstance(raw_app_id, str) or not raw_app_id.strip()):
                raise ScimError(400, "applicationId must be a non-empty string.", "invalidValue")
            # Without applicationId Databricks creates a Databricks-managed principal with a fresh one.
            app_id = raw_app_id.strip() if isinstance(raw_app_id, str) else str(uuid.uuid4())
            entitlements = self._entitlements(body.get("entitlements"), "service principals")
            if app_id.lower() in directory.by_application_id:
                raise ScimError(
                    409, f"Service principal with applicationId {app_id} already exists.", "uniqueness"
                )
            display = body.get("displayName") if isinstance(body.get("displayName"), str) else None
            now = time.time()
            if self._federated(directory):
                account = self.hub.world.account
                assert account is not None
                acct_id = account.by_application_id.get(app_id.lower())
                if acct_id is None:
                    acct_id = account.add_service_principal(app_id, display_name=display, created_at=now).id
                account.assignments.setdefault(directory.ident, {}).setdefault(acct_id, ["USER"])
                sync_federated(self.hub.world, directory)
                sp = directory.service_principals[acct_id]
                sp.entitlements = entitlements
            else:
                raw_roles = body.get("roles")
                roles: list[Any] = raw_roles if isinstance(raw_roles, list) else []
                sp = directory.add_service_principal(
                    app_id,
                    display_name=display,
                    external_id=body.get("externalId"),
                    entitlements=entitlements,
                    account_admin=self.kind == "account"
                    and any(isinstance(r, dict) and r.get("value") == "account_admin" for r in roles),
                    created_at=now,
                )
            self._touch(directory)
            headers = {"Location": f"{self.origin}{ctx.request.url.path.rstrip('/')}/{sp.id}"}
            return json_response(self._sp_view(directory, sp), 201, headers)

        return await self._handle(ctx, run, admin=True)

    # ------------------------------------------------------------------ Databricks OAuth (M2M)
    def _oidc_base(self, directory: ScimDirectory) -> str:
        if self.kind == "account":
            return f"{self.origin}{ACCOUNT_OIDC_PREFIX.replace('{account_id}', directory.ident)}"
        return f"{self.origin}{WORKSPACE_OIDC_PREFIX}"

    async def oidc_config(self, ctx: Ctx) -> Response:
        try:
            directory = self._known_directory(ctx)
        except _Refusal as refusal:
            return refusal.response
        base = self._oidc_base(directory)
        return json_response(
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/v1/authorize",
                "token_endpoint": f"{base}/v1/token",
                "jwks_uri": f"{base}/v1/keys",
                "response_types_supported": ["code", "id_token"],
                "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
                "scopes_supported": ["all-apis", "offline_access", "openid", "profile", "email"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                    "none",
                ],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def oidc_token(self, ctx: Ctx) -> Response:
        try:
            directory = self._known_directory(ctx)
        except _Refusal as refusal:
            return refusal.response
        text = (await ctx.request.body()).decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(text).items()}
        if form.get("grant_type") != "client_credentials":
            return oauth_error(400, "unsupported_grant_type", "Only client_credentials is served here.")
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = ctx.header("authorization") or ""
        if basic.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(basic[6:].strip()).decode("utf-8")
            except ValueError:
                return oauth_error(401, "invalid_client", "Client authentication failed.")
            client_id, _, secret = decoded.partition(":")
        sp_id = directory.by_application_id.get((client_id or "").lower())
        sp = directory.service_principals.get(sp_id) if sp_id else None
        if sp is None or not sp.oauth_secret or secret != sp.oauth_secret:
            return oauth_error(401, "invalid_client", "Client authentication failed.")
        scope = form.get("scope") or "all-apis"
        if not set(scope.split()) <= {"all-apis", "offline_access"}:
            return oauth_error(400, "invalid_scope", f"The scope '{scope}' is not supported.")
        raw, expires = self.hub.databricks_tokens.issue(
            self.system, sp.application_id, self.hub.world.token_lifetime
        )
        return json_response(
            {
                "access_token": raw,
                "token_type": "Bearer",
                "expires_in": int(expires - time.time()),
                "scope": scope,
            }
        )

    # ------------------------------------------------------------------ workspace permission assignments
    def _assigned_workspace(self, ctx: Ctx) -> ScimDirectory:
        ws_id = ctx.params["workspace_id"]
        found = next((w for w in self.hub.world.workspaces.values() if w.ident == ws_id), None)
        if found is None:
            raise _Refusal(_ERR.error(404, "RESOURCE_DOES_NOT_EXIST", f"Workspace {ws_id} does not exist."))
        return found

    @staticmethod
    def _principal_output(account: ScimDirectory, principal_id: str) -> dict[str, Any] | None:
        out: dict[str, Any] = {"principal_id": int(principal_id)}
        user = account.users.get(principal_id)
        if user is not None:
            return {**out, "display_name": user.display_name or user.user_name, "user_name": user.user_name}
        group = account.groups.get(principal_id)
        if group is not None:
            return {**out, "display_name": group.display_name, "group_name": group.display_name}
        sp = account.service_principals.get(principal_id)
        if sp is not None:
            return {**out, "display_name": sp.display_name, "service_principal_name": sp.application_id}
        return None

    async def list_assignments(self, ctx: Ctx) -> Response:
        def run(account: ScimDirectory, _owner: Caller) -> Response:
            workspace = self._assigned_workspace(ctx)
            items = []
            for principal_id, permissions in account.assignments.get(workspace.ident, {}).items():
                principal = self._principal_output(account, principal_id)
                if principal is not None:
                    items.append({"principal": principal, "permissions": list(permissions)})
            return json_response({"permission_assignments": items})

        return await self._handle(ctx, run)

    async def assignment_levels(self, ctx: Ctx) -> Response:
        def run(_account: ScimDirectory, _owner: Caller) -> Response:
            self._assigned_workspace(ctx)
            levels = [
                {"permission_level": p, "description": PERMISSION_DESCRIPTIONS[p]}
                for p in WORKSPACE_PERMISSIONS
            ]
            return json_response({"permissions": levels})

        return await self._handle(ctx, run)

    async def put_assignment(self, ctx: Ctx) -> Response:
        async def run(account: ScimDirectory, _owner: Caller) -> Response:
            workspace = self._assigned_workspace(ctx)
            principal_id = ctx.params["principal_id"]
            principal = self._principal_output(account, principal_id) if principal_id.isdigit() else None
            delay = account.limits.assignable_delay_ms / 1000.0
            created = self._created_at(account, principal_id)
            if principal is None or (delay and time.time() - created < delay):
                # The status is not documented; the message is the real one. A principal created moments
                # ago answers the same until it has propagated (assignable_delay_ms).
                return _ERR.error(404, "NOT_FOUND", PRINCIPAL_NOT_FOUND)
            try:
                body = await ctx.json()
            except ValueError:
                return _ERR.error(400, "MALFORMED_REQUEST", "Request body is not valid JSON.")
            # Replace, never merge. A missing, empty or invalid list deletes the assignment: the SDK's
            # docstring says so and it is the reported behaviour of the real API.
            permissions = normalise_permissions(body.get("permissions") if isinstance(body, dict) else None)
            per_workspace = account.assignments.setdefault(workspace.ident, {})
            if permissions:
                per_workspace[principal_id] = permissions
            else:
                per_workspace.pop(principal_id, None)
            sync_federated(self.hub.world, workspace)
            return json_response({"principal": principal, "permissions": permissions})

        return await self._handle(ctx, run)

    async def delete_assignment(self, ctx: Ctx) -> Response:
        def run(account: ScimDirectory, _owner: Caller) -> Response:
            workspace = self._assigned_workspace(ctx)
            principal_id = ctx.params["principal_id"]
            per_workspace = account.assignments.get(workspace.ident, {})
            if per_workspace.pop(principal_id, None) is None:
                return _ERR.error(
                    404,
                    "RESOURCE_DOES_NOT_EXIST",
                    f"Principal {principal_id} has no permission assignment on workspace {workspace.ident}.",
                )
            sync_federated(self.hub.world, workspace)
            return json_response({})

        return await self._handle(ctx, run)

    @staticmethod
    def _created_at(directory: ScimDirectory, principal_id: str) -> float:
        for store in (directory.users, directory.groups, directory.service_principals):
            found = store.get(principal_id)
            if found is not None:
                return float(found.created_at)
        return 0.0

    # ------------------------------------------------------------------ discovery
    async def service_provider_config(self, ctx: Ctx) -> Response:
        def run(directory: ScimDirectory, _owner: Caller) -> Response:
            return json_response(
                {
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
                    "documentationUri": "https://docs.databricks.com/dev-tools/api/latest/scim/index.html",
                    "patch": {"supported": True},
                    "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
                    "filter": {"supported": True, "maxResults": directory.limits.page_cap},
                    "changePassword": {"supported": False},
                    "sort": {"supported": True},
                    "etag": {"supported": False},
                    "authenticationSchemes": [
                        {
                            "type": "oauthbearertoken",
                            "name": "OAuth Bearer Token",
                            "description": "Databricks personal access token or OAuth token.",
                            "primary": True,
                        }
                    ],
                }
            )

        return await self._handle(ctx, run)


class _Refusal(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__("refused")
        self.response = response


def _patch_ops(body: dict[str, Any]) -> list[tuple[str, str | None, Any]]:
    schemas = body.get("schemas")
    if schemas is not None and PATCH_SCHEMA not in schemas:
        raise ScimError(400, f"schemas must contain {PATCH_SCHEMA}.", "invalidSyntax")
    ops = body.get("Operations", body.get("operations"))
    if not isinstance(ops, list) or not ops:
        raise ScimError(400, "Operations must be a non-empty list.", "invalidSyntax")
    out: list[tuple[str, str | None, Any]] = []
    for op in ops:
        if not isinstance(op, dict):
            raise ScimError(400, "Each operation must be an object.", "invalidSyntax")
        name = str(op.get("op", "")).lower()
        if name not in ("add", "remove", "replace"):
            raise ScimError(400, f"Unsupported op '{op.get('op')}'.", "invalidSyntax")
        out.append((name, op.get("path"), op.get("value")))
    return out


def _apply_list(current: list[dict[str, Any]], op: str, value: Any) -> list[dict[str, Any]]:
    items = [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, dict)]
    if op == "replace":
        return items
    if op == "add":
        return current + [i for i in items if i not in current]
    return [c for c in current if c not in items]


def _ref_value(ref: Any) -> str:
    return str(ref.get("value")) if isinstance(ref, dict) else str(ref)


@dataclass
class _GroupChanges:
    members: list[tuple[str, list[Any] | None]]  # (op, member refs); None = remove every member
    display_name: str | None = None


def _group_changes(ops: list[tuple[str, str | None, Any]]) -> _GroupChanges:
    """A group PatchOp as member changes and a new display name. Both forms databricks-sdk and the
    Databricks docs use are understood: ``{"op": "add", "value": {"members": [...]}}``, ``{"op": "add",
    "path": "members", "value": [...]}`` and ``{"op": "remove", "path": "members[value eq \"<id>\"]"}``."""
    changes = _GroupChanges(members=[])
    for op, path, value in ops:
        low = (path or "").lower()
        selector = re.fullmatch(r'members\[\s*value\s+eq\s+"([^"]*)"\s*\]', path or "", re.IGNORECASE)
        if selector and op == "remove":
            changes.members.append((op, [selector.group(1)]))
        elif low == "members" or (not path and isinstance(value, dict) and "members" in value):
            refs = value if low == "members" else value["members"]
            if op == "remove" and refs is None:
                changes.members.append((op, None))
                continue
            if refs is None:
                raise ScimError(400, f"The {op} of members needs a value.", "invalidValue")
            changes.members.append((op, refs if isinstance(refs, list) else [refs]))
        elif low == "displayname" and op != "remove":
            changes.display_name = str(value)
        elif not path and isinstance(value, dict) and "displayName" in value:
            changes.display_name = str(value["displayName"])
        else:
            raise ScimError(400, f"Unsupported patch path '{path}'.", "invalidPath")
    return changes
