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

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from sandbox.evidence import fingerprint
from sandbox.http import Ctx, SystemApp, json_response

if TYPE_CHECKING:
    from sandbox.hub import Hub
    from sandbox.model import Limits, PatToken, ScimDirectory, ScimGroup, ScimUser

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER_SCHEMAS = [
    "urn:ietf:params:scim:schemas:core:2.0:User",
    "urn:ietf:params:scim:schemas:extension:workspace:2.0:User",
]
GROUP_SCHEMAS = ["urn:ietf:params:scim:schemas:core:2.0:Group"]
WORKSPACE_PREFIX = "/api/2.0/preview/scim/v2"
ACCOUNT_PREFIX = "/api/2.0/accounts/{account_id}/scim/v2"

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
        if kind == "workspace":
            self.add("GET", f"{prefix}/Me", "scim.me", self.me)

    # ------------------------------------------------------------------ plumbing
    def directory(self) -> ScimDirectory | None:
        world = self.hub.world
        return world.account if self.kind == "account" else world.workspaces.get(self.dir_name)

    def _current_limits(self) -> Limits | None:
        directory = self.directory()
        return directory.limits if directory else None

    def _authenticate(self, ctx: Ctx, *, admin: bool) -> tuple[ScimDirectory, PatToken]:
        directory = self.directory()
        if directory is None:
            raise _Refusal(_ERR.error(404, "ENDPOINT_NOT_FOUND", "This workspace no longer exists."))
        if self.kind == "account" and ctx.params.get("account_id") != directory.ident:
            raise _Refusal(_ERR.error(404, "RESOURCE_DOES_NOT_EXIST", "Account not found."))
        if not ctx.token:
            raise _Refusal(
                _ERR.error(
                    401,
                    "UNAUTHENTICATED",
                    "Credential was not sent or was of an unsupported type for this API.",
                )
            )
        owner = directory.tokens.get(fingerprint(ctx.token))
        if owner is None:
            raise _Refusal(_ERR.error(401, "UNAUTHENTICATED", "Invalid access token."))
        needs_admin = admin or self.kind == "account"
        if needs_admin and not owner.admin:
            raise _Refusal(scim_error(403, "User not authorized."))
        return directory, owner

    async def _handle(
        self,
        ctx: Ctx,
        fn: Callable[[ScimDirectory, PatToken], Any],
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

    def _user_view(self, directory: ScimDirectory, user: ScimUser) -> dict[str, Any]:
        view: dict[str, Any] = {
            "emails": user.emails,
            "displayName": user.display_name,
            "schemas": USER_SCHEMAS,
            "name": user.name or {},
            "active": user.active,
            "groups": [
                {"display": g.display_name, "type": "direct", "value": g.id, "$ref": f"Groups/{g.id}"}
                for g in directory.groups.values()
                if user.id in g.member_ids
            ]
            if directory.groups
            else [],
            "id": user.id,
            "userName": user.user_name,
        }
        if user.entitlements:
            view["entitlements"] = user.entitlements
        if user.external_id is not None:
            view["externalId"] = user.external_id
        return view

    def _group_view(self, directory: ScimDirectory, group: ScimGroup) -> dict[str, Any]:
        members = []
        for uid in group.member_ids:
            user = directory.users.get(uid)
            if user is not None:
                members.append(
                    {"display": user.display_name or user.user_name, "value": uid, "$ref": f"Users/{uid}"}
                )
        view: dict[str, Any] = {
            "displayName": group.display_name,
            "members": members,
            "schemas": GROUP_SCHEMAS,
            "id": group.id,
        }
        if group.external_id is not None:
            view["externalId"] = group.external_id
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
        def run(directory: ScimDirectory, _owner: PatToken) -> Response:
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
        def run(directory: ScimDirectory, _owner: PatToken) -> Response:
            user = directory.users.get(ctx.params["id"])
            if user is None:
                raise ScimError(404, f"User {ctx.params['id']} not found.")
            view = self._user_view(directory, user)
            return json_response(_project(view, ctx.query("attributes"), ctx.query("excludedAttributes")))

        return await self._handle(ctx, run, read=True)

    async def me(self, ctx: Ctx) -> Response:
        def run(directory: ScimDirectory, owner: PatToken) -> Response:
            user = directory.users[directory.by_user_name[owner.user_name]]
            view = self._user_view(directory, user)
            return json_response(_project(view, ctx.query("attributes"), ctx.query("excludedAttributes")))

        return await self._handle(ctx, run)

    async def create_user(self, ctx: Ctx) -> Response:
        async def run(directory: ScimDirectory, _owner: PatToken) -> Response:
            body = await self._body(ctx)
            user_name = body.get("userName")
            if not isinstance(user_name, str) or not user_name.strip():
                raise ScimError(400, "Request is missing required field: userName.", "invalidValue")
            user_name = user_name.strip()
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
            visible_at = time.time() + delay if delay else 0.0
            directory.pending_until = max(directory.pending_until, visible_at)
            user = directory.add_user(
                user_name,
                display_name=body.get("displayName") or user_name.lower(),
                external_id=body.get("externalId"),
                emails=emails,
                entitlements=[e for e in body.get("entitlements") or [] if isinstance(e, dict)],
                name=body.get("name") if isinstance(body.get("name"), dict) else None,
                active=bool(body.get("active", True)),
                visible_at=visible_at,
            )
            for ref in body.get("groups") or []:
                group = directory.groups.get(str(ref.get("value"))) if isinstance(ref, dict) else None
                if group is not None and user.id not in group.member_ids:
                    group.member_ids.append(user.id)
            self._touch(directory)
            headers = {"Location": f"{self.origin}{ctx.request.url.path.rstrip('/')}/{user.id}"}
            return json_response(self._user_view(directory, user), 201, headers)

        return await self._handle(ctx, run, admin=True)

    async def patch_user(self, ctx: Ctx) -> Response:
        async def run(directory: ScimDirectory, _owner: PatToken) -> Response:
            user = directory.users.get(ctx.params["id"])
            if user is None:
                raise ScimError(404, f"User {ctx.params['id']} not found.")
            for op, path, value in _patch_ops(await self._body(ctx)):
                changes = {path: value} if path else (value if isinstance(value, dict) else {})
                for key, val in changes.items():
                    low = key.lower()
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
        def run(directory: ScimDirectory, _owner: PatToken) -> Response:
            user = directory.users.pop(ctx.params["id"], None)
            if user is None:
                raise ScimError(404, f"User {ctx.params['id']} not found.")
            directory.by_user_name.pop(user.user_name, None)
            for group in directory.groups.values():
                if user.id in group.member_ids:
                    group.member_ids.remove(user.id)
            self._touch(directory)
            return Response(status_code=204)

        return await self._handle(ctx, run, admin=True)

    # ------------------------------------------------------------------ groups
    async def list_groups(self, ctx: Ctx) -> Response:
        def run(directory: ScimDirectory, _owner: PatToken) -> Response:
            raw_filter = ctx.query("filter")
            flt = ScimFilter(raw_filter, GROUP_FILTER_ATTRS) if raw_filter else None
            views = [self._group_view(directory, directory.groups[g]) for g in sorted(directory.groups)]
            if flt is not None:
                views = [v for v in views if flt.matches(v)]
            return self._paged(ctx, directory, views)

        return await self._handle(ctx, run, read=True)

    async def get_group(self, ctx: Ctx) -> Response:
        def run(directory: ScimDirectory, _owner: PatToken) -> Response:
            group = directory.groups.get(ctx.params["id"])
            if group is None:
                raise ScimError(404, f"Group {ctx.params['id']} not found.")
            view = self._group_view(directory, group)
            return json_response(_project(view, ctx.query("attributes"), ctx.query("excludedAttributes")))

        return await self._handle(ctx, run, read=True)

    async def create_group(self, ctx: Ctx) -> Response:
        async def run(directory: ScimDirectory, _owner: PatToken) -> Response:
            from sandbox.model import ScimGroup

            body = await self._body(ctx)
            name = body.get("displayName")
            if not isinstance(name, str) or not name.strip():
                raise ScimError(400, "Request is missing required field: displayName.", "invalidValue")
            if any(g.display_name.lower() == name.lower() for g in directory.groups.values()):
                raise ScimError(409, f"Group with name {name} already exists.", "uniqueness")
            group = ScimGroup(id=directory.new_id(), display_name=name, external_id=body.get("externalId"))
            group.member_ids = self._member_refs(directory, body.get("members") or [])
            directory.groups[group.id] = group
            self._touch(directory)
            return json_response(self._group_view(directory, group), 201)

        return await self._handle(ctx, run, admin=True)

    def _member_refs(self, directory: ScimDirectory, refs: Any) -> list[str]:
        if not isinstance(refs, list):
            raise ScimError(400, "members must be a list.", "invalidValue")
        out: list[str] = []
        for ref in refs:
            value = str(ref.get("value")) if isinstance(ref, dict) else str(ref)
            if value not in directory.users and value not in directory.groups:
                raise ScimError(404, f"Member {value} not found.")
            if value not in out:
                out.append(value)
        return out

    async def patch_group(self, ctx: Ctx) -> Response:
        async def run(directory: ScimDirectory, _owner: PatToken) -> Response:
            group = directory.groups.get(ctx.params["id"])
            if group is None:
                raise ScimError(404, f"Group {ctx.params['id']} not found.")
            for op, path, value in _patch_ops(await self._body(ctx)):
                low = (path or "").lower()
                selector = re.fullmatch(r'members\[\s*value\s+eq\s+"([^"]*)"\s*\]', path or "", re.IGNORECASE)
                if selector and op == "remove":
                    group.member_ids = [m for m in group.member_ids if m != selector.group(1)]
                elif low == "members" or (not path and isinstance(value, dict) and "members" in value):
                    refs = value if low == "members" else value["members"]
                    if op == "remove" and refs is None:
                        group.member_ids = []
                        continue
                    ids = self._member_refs(directory, refs if isinstance(refs, list) else [refs])
                    if op == "add":
                        group.member_ids.extend(i for i in ids if i not in group.member_ids)
                    elif op == "replace":
                        group.member_ids = ids
                    else:
                        group.member_ids = [m for m in group.member_ids if m not in ids]
                elif low == "displayname" and op != "remove":
                    group.display_name = str(value)
                elif not path and isinstance(value, dict) and "displayName" in value:
                    group.display_name = str(value["displayName"])
                else:
                    raise ScimError(400, f"Unsupported patch path '{path}'.", "invalidPath")
            self._touch(directory)
            return Response(status_code=204)

        return await self._handle(ctx, run, admin=True)

    async def delete_group(self, ctx: Ctx) -> Response:
        def run(directory: ScimDirectory, _owner: PatToken) -> Response:
            if directory.groups.pop(ctx.params["id"], None) is None:
                raise ScimError(404, f"Group {ctx.params['id']} not found.")
            return Response(status_code=204)

        return await self._handle(ctx, run, admin=True)

    # ------------------------------------------------------------------ discovery
    async def service_provider_config(self, ctx: Ctx) -> Response:
        def run(directory: ScimDirectory, _owner: PatToken) -> Response:
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
