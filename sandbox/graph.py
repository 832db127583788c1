"""Microsoft Graph v1.0 stand-in: groups, members, transitive members and their OData casts.

Rules copied from the real service's behaviour: ``$count`` and advanced operators (``ne``, ``not``,
``endswith``) need ``ConsistencyLevel: eventual`` (advanced operators also ``$count=true``); pages default to
100 and ``$top`` must be 1..999; ``@odata.nextLink`` is absolute, on the Graph origin, with a ``$skiptoken``.
User objects leave ``accountEnabled`` and ``userType`` out unless ``$select`` asks for them, as Graph does.
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.responses import Response

from sandbox.http import Ctx, SystemApp, json_response
from sandbox.hub import check_bearer

if TYPE_CHECKING:
    from sandbox.hub import Hub
    from sandbox.model import Identity, Tenant

DEFAULT_PAGE = 100
MAX_PAGE = 999

USER_DEFAULT = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)
USER_PROPS = (*USER_DEFAULT, "accountEnabled", "userType")
GROUP_PROPS = (
    "id",
    "displayName",
    "description",
    "mail",
    "mailNickname",
    "mailEnabled",
    "securityEnabled",
    "groupTypes",
)
SP_PROPS = ("id", "displayName", "appId", "servicePrincipalType", "accountEnabled")
DEVICE_PROPS = ("id", "displayName", "deviceId", "operatingSystem", "accountEnabled")
PROPS_BY_KIND = {
    "user": USER_PROPS,
    "group": GROUP_PROPS,
    "servicePrincipal": SP_PROPS,
    "device": DEVICE_PROPS,
}
CASTS = {
    "microsoft.graph.user": "user",
    "microsoft.graph.group": "group",
    "microsoft.graph.serviceprincipal": "servicePrincipal",
    "microsoft.graph.device": "device",
}
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class GraphErrors:
    throttle_code = "TooManyRequests"

    def error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
        request_id = str(uuid.uuid4())
        body = {
            "error": {
                "code": code,
                "message": message,
                "innerError": {
                    "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
                    "request-id": request_id,
                    "client-request-id": request_id,
                },
            }
        }
        all_headers = {"request-id": request_id, **(headers or {})}
        return json_response(body, status, all_headers)


_ERR = GraphErrors()


# --------------------------------------------------------------------------------------- $filter


@dataclass
class _Clause:
    field: str
    op: str  # eq | ne | startswith | endswith
    value: Any
    negate: bool = False


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<punct>[(),])|(?P<word>[A-Za-z_$][\w./$-]*)|(?P<num>-?\d+))"
)
_MISSING = object()


def _tokenize(text: str) -> list[tuple[str, str]]:
    pos = 0
    out: list[tuple[str, str]] = []
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise GraphError(
                400, "BadRequest", f"Invalid filter clause: syntax error at position {pos} in '{text}'."
            )
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _FilterParser:
    """or-of-ands of simple comparisons; enough for what directory queries allow in practice."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.advanced = False

    def _bad(self, why: str) -> GraphError:
        return GraphError(400, "BadRequest", f"Invalid filter clause: {why} in '{self.text}'.")

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _next(self) -> tuple[str, str]:
        tok = self._peek()
        if tok is None:
            raise self._bad("unexpected end of expression")
        self.pos += 1
        return tok

    def _expect(self, value: str) -> None:
        tok = self._next()
        if tok[1] != value:
            raise self._bad(f"expected '{value}' but found '{tok[1]}'")

    def parse(self) -> list[list[_Clause]]:
        if not self.tokens:
            raise self._bad("empty expression")
        result = self._or()
        if self._peek() is not None:
            raise self._bad(f"unexpected '{self._peek()[1]}'")  # type: ignore[index]
        return result

    def _or(self) -> list[list[_Clause]]:
        groups = [self._and()]
        while (tok := self._peek()) and tok[0] == "word" and tok[1].lower() == "or":
            self.pos += 1
            groups.append(self._and())
        return groups

    def _and(self) -> list[_Clause]:
        clauses = [self._term()]
        while (tok := self._peek()) and tok[0] == "word" and tok[1].lower() == "and":
            self.pos += 1
            clauses.append(self._term())
        return clauses

    def _literal(self) -> Any:
        kind, value = self._next()
        if kind == "str":
            return value[1:-1].replace("''", "'")
        if kind == "num":
            return int(value)
        if kind == "word" and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if kind == "word" and value.lower() == "null":
            return None
        if kind == "word" and _GUID.match(value):
            return value
        raise self._bad(f"'{value}' is not a literal")

    def _term(self) -> _Clause:
        kind, value = self._next()
        if kind != "word":
            raise self._bad(f"unexpected '{value}'")
        low = value.lower()
        if low == "not":
            self.advanced = True
            clause = self._term()
            clause.negate = not clause.negate
            return clause
        if low in ("startswith", "endswith"):
            if low == "endswith":
                self.advanced = True
            self._expect("(")
            fkind, field = self._next()
            if fkind != "word":
                raise self._bad("a property name is expected")
            self._expect(",")
            literal = self._literal()
            self._expect(")")
            return _Clause(field, low, literal)
        op_kind, op = self._next()
        if op_kind != "word" or op.lower() not in ("eq", "ne"):
            raise self._bad(f"unsupported operator '{op}'")
        if op.lower() == "ne":
            self.advanced = True
        return _Clause(value, op.lower(), self._literal())


def _fold(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _clause_matches(clause: _Clause, obj: dict[str, Any]) -> bool:
    field = clause.field.split("/")[0]
    actual = obj.get(field, _MISSING)
    if actual is _MISSING:
        return False
    if clause.op in ("eq", "ne"):
        hit = _fold(actual) == _fold(clause.value)
        if clause.op == "ne":
            hit = not hit
    elif not isinstance(actual, str) or not isinstance(clause.value, str):
        hit = False
    elif clause.op == "startswith":
        hit = actual.lower().startswith(clause.value.lower())
    else:
        hit = actual.lower().endswith(clause.value.lower())
    return hit != clause.negate


def compile_filter(text: str, allowed: set[str]) -> tuple[Callable[[dict[str, Any]], bool], bool]:
    parser = _FilterParser(text)
    tree = parser.parse()
    for group in tree:
        for clause in group:
            if clause.field.split("/")[0] not in allowed:
                raise GraphError(
                    400,
                    "Request_BadRequest",
                    f"Property '{clause.field}' does not exist as a declared property or extension property.",
                )

    def predicate(obj: dict[str, Any]) -> bool:
        return any(all(_clause_matches(c, obj) for c in group) for group in tree)

    return predicate, parser.advanced


# --------------------------------------------------------------------------------------- querying


@dataclass
class _Query:
    top: int
    offset: int
    select: list[str] | None
    count: bool
    predicate: Callable[[dict[str, Any]], bool] | None


def _eventual(ctx: Ctx) -> bool:
    return (ctx.header("consistencylevel") or "").strip().lower() == "eventual"


def _parse_query(ctx: Ctx, props: tuple[str, ...], type_name: str) -> _Query:
    q = ctx.request.query_params
    following = "$skiptoken" in q
    raw_top = q.get("$top")
    if raw_top is None:
        top = DEFAULT_PAGE
    else:
        try:
            top = int(raw_top)
        except ValueError as exc:
            raise GraphError(400, "BadRequest", f"Invalid page size specified: '{raw_top}'.") from exc
        if not 1 <= top <= MAX_PAGE:
            raise GraphError(
                400,
                "Request_BadRequest",
                f"Invalid page size specified: '{raw_top}'. Must be between 1 and {MAX_PAGE} inclusive.",
            )
    count_raw = (q.get("$count") or "false").lower()
    if count_raw not in ("true", "false"):
        raise GraphError(400, "BadRequest", f"Invalid value '{q.get('$count')}' for $count.")
    count = count_raw == "true"
    if count and not _eventual(ctx) and not following:
        raise GraphError(
            400,
            "Request_BadRequest",
            "$count is not currently supported without the header 'ConsistencyLevel: eventual'.",
        )
    select = None
    if q.get("$select"):
        select = [s.strip() for s in q["$select"].split(",") if s.strip()]
        for prop in select:
            if prop not in props:
                raise GraphError(
                    400,
                    "Request_BadRequest",
                    f"Could not find a property named '{prop}' on type '{type_name}'.",
                )
    predicate = None
    if q.get("$filter"):
        predicate, advanced = compile_filter(q["$filter"], set(props))
        if advanced and not following and not (_eventual(ctx) and count):
            raise GraphError(
                400,
                "Request_UnsupportedQuery",
                "This filter needs advanced query capabilities: send 'ConsistencyLevel: eventual' "
                "and '$count=true'.",
            )
    if q.get("$search") and not _eventual(ctx):
        raise GraphError(
            400, "Request_UnsupportedQuery", "$search needs the header 'ConsistencyLevel: eventual'."
        )
    if q.get("$orderby") and not _eventual(ctx):
        raise GraphError(
            400, "Request_UnsupportedQuery", "Sorting is only supported with 'ConsistencyLevel: eventual'."
        )
    offset = 0
    if following:
        offset = _decode_skiptoken(q["$skiptoken"])
    return _Query(top=top, offset=offset, select=select, count=count, predicate=predicate)


def _encode_skiptoken(offset: int) -> str:
    raw = f"sbx1:{offset}:{offset * 7919 % 65521}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_skiptoken(token: str) -> int:
    try:
        padded = token + "=" * (-len(token) % 4)
        tag, offset, check = base64.urlsafe_b64decode(padded).decode().split(":")
        value = int(offset)
        if tag != "sbx1" or int(check) != value * 7919 % 65521 or value < 0:
            raise ValueError(token)
    except ValueError as exc:
        raise GraphError(400, "Request_BadRequest", "The skip token is not valid.") from exc
    return value


def _object_view(tenant: Tenant, object_id: str) -> tuple[str, dict[str, Any]]:
    if object_id in tenant.users:
        return "user", tenant.users[object_id].to_graph()
    if object_id in tenant.groups:
        return "group", tenant.groups[object_id].to_graph()
    obj = tenant.objects[object_id]
    return obj.odata_kind, obj.to_graph()


def _project(
    kind: str, full: dict[str, Any], select: list[str] | None, typed: bool, limited: bool = False
) -> dict[str, Any]:
    """``limited``: the caller may not read this object's type. Graph then returns it "with limited
    information": ``@odata.type`` and ``id``, every other property ``null`` (documented under "Limited
    information returned for inaccessible member objects"). We keep the keys the caller would otherwise
    get and null their values, so ``appId`` reads as null, never as a value."""
    out: dict[str, Any] = {"@odata.type": f"#microsoft.graph.{kind}"} if typed else {}
    if select is None:
        keys: tuple[str, ...] | list[str] = USER_DEFAULT if kind == "user" else PROPS_BY_KIND[kind]
    else:
        keys = select
    for key in keys:
        if key in full:
            out[key] = full[key] if not limited or key == "id" else None
    return out


def _page(
    ctx: Ctx,
    ids: list[str],
    query: _Query,
    context: str,
    typed: bool,
    *,
    limited_kinds: frozenset[str] = frozenset(),
) -> Response:
    """One page over directory object ids; views are built only for the page unless a filter needs all."""
    tenant = ctx.hub.world.tenant
    if query.predicate is not None:
        predicate = query.predicate
        views = [_object_view(tenant, i) for i in ids]
        items = [(k, o) for k, o in views if predicate(o)]
        total = len(items)
        chunk = items[query.offset : query.offset + query.top]
    else:
        total = len(ids)
        chunk = [_object_view(tenant, i) for i in ids[query.offset : query.offset + query.top]]
    body: dict[str, Any] = {"@odata.context": f"{ctx.app.origin}/v1.0/$metadata#{context}"}
    if query.count:
        body["@odata.count"] = total
    end = query.offset + len(chunk)
    if end < total:
        params = [(k, v) for k, v in ctx.request.query_params.multi_items() if k != "$skiptoken"]
        params.append(("$skiptoken", _encode_skiptoken(end)))
        # A test knob can point next links elsewhere, to check clients do not follow them with a token.
        link_origin = ctx.hub.world.graph_next_link_origin or ctx.app.origin
        body["@odata.nextLink"] = f"{link_origin}{ctx.request.url.path}?{urlencode(params)}"
    body["value"] = [_project(kind, obj, query.select, typed, kind in limited_kinds) for kind, obj in chunk]
    return json_response(body)


class GraphApp(SystemApp):
    def __init__(self, hub: Hub) -> None:
        super().__init__(hub, "graph", _ERR, limits=lambda: hub.world.graph_limits)
        self.add("GET", "/v1.0/groups", "graph.groups.list", self.list_groups)
        self.add("GET", "/v1.0/groups/{id}", "graph.groups.get", self.get_group)
        for rel in ("members", "transitiveMembers"):
            self.add("GET", f"/v1.0/groups/{{id}}/{rel}", f"graph.groups.{rel}", self.members)
            self.add("GET", f"/v1.0/groups/{{id}}/{rel}/{{cast}}", f"graph.groups.{rel}", self.members)
            self.add(
                "GET", f"/v1.0/groups/{{id}}/{rel}/{{cast}}/{{count}}", f"graph.groups.{rel}", self.members
            )
        self.add("GET", "/v1.0/users", "graph.users.list", self.list_users)
        self.add("GET", "/v1.0/users/{id}", "graph.users.get", self.get_user)
        self._cast_cache: dict[tuple[int, str, str, str], list[str]] = {}

    async def _guard(self, ctx: Ctx) -> tuple[Response | None, Identity | None]:
        tok, reason = check_bearer(self.hub, ctx.token, self.hub.graph_audiences)
        if tok is None:
            message = {
                "missing": "Access token is empty.",
                "unknown": "Access token validation failure. The token is not recognised.",
                "expired": "Lifetime validation failed, the token is expired.",
                "audience": "Access token validation failure. Invalid audience.",
            }[reason]
            challenge = (
                'Bearer realm="", authorization_uri="'
                + self.hub.origins.get("identity", "")
                + '/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
            )
            refusal = _ERR.error(
                401, "InvalidAuthenticationToken", message, headers={"WWW-Authenticate": challenge}
            )
            return refusal, None
        if not tok.identity.graph_access:
            refusal = _ERR.error(
                403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
            )
            return refusal, None
        return None, tok.identity

    async def _run(self, ctx: Ctx, fn: Callable[[Identity], Response]) -> Response:
        """``fn`` gets the calling identity (the application permissions its token was issued with)."""
        refused, caller = await self._guard(ctx)
        if refused is not None:
            return refused
        assert caller is not None
        try:
            return fn(caller)
        except GraphError as err:
            return _ERR.error(err.status, err.code, str(err))

    def _group(self, group_id: str) -> Any:
        if not _GUID.match(group_id):
            raise GraphError(400, "Request_BadRequest", f"Invalid object identifier '{group_id}'.")
        group = self.hub.world.tenant.groups.get(group_id)
        if group is None:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{group_id}' does not exist or one of its queried reference-property objects "
                "are not present.",
            )
        return group

    async def list_groups(self, ctx: Ctx) -> Response:
        def run(_caller: Identity) -> Response:
            query = _parse_query(ctx, GROUP_PROPS, "microsoft.graph.group")
            return _page(ctx, list(self.hub.world.tenant.groups), query, "groups", typed=False)

        return await self._run(ctx, run)

    async def get_group(self, ctx: Ctx) -> Response:
        def run(_caller: Identity) -> Response:
            group = self._group(ctx.params["id"])
            query = _parse_query(ctx, GROUP_PROPS, "microsoft.graph.group")
            body = {"@odata.context": f"{ctx.app.origin}/v1.0/$metadata#groups/$entity"}
            body.update(_project("group", group.to_graph(), query.select, typed=False))
            return json_response(body)

        return await self._run(ctx, run)

    async def list_users(self, ctx: Ctx) -> Response:
        def run(_caller: Identity) -> Response:
            query = _parse_query(ctx, USER_PROPS, "microsoft.graph.user")
            return _page(ctx, list(self.hub.world.tenant.users), query, "users", typed=False)

        return await self._run(ctx, run)

    async def get_user(self, ctx: Ctx) -> Response:
        def run(_caller: Identity) -> Response:
            tenant = self.hub.world.tenant
            key = ctx.params["id"]
            user = tenant.users.get(key) or next(
                (u for u in tenant.users.values() if u.user_principal_name.lower() == key.lower()), None
            )
            if user is None:
                raise GraphError(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist.")
            query = _parse_query(ctx, USER_PROPS, "microsoft.graph.user")
            body = {"@odata.context": f"{ctx.app.origin}/v1.0/$metadata#users/$entity"}
            body.update(_project("user", user.to_graph(), query.select, typed=False))
            return json_response(body)

        return await self._run(ctx, run)

    async def members(self, ctx: Ctx) -> Response:
        def run(caller: Identity) -> Response:
            tenant = self.hub.world.tenant
            group = self._group(ctx.params["id"])
            transitive = "/transitiveMembers" in ctx.request.url.path
            cast_seg = ctx.params.get("cast")
            count_seg = ctx.params.get("count")
            only_count = False
            kind: str | None = None
            if cast_seg == "$count" and count_seg is None:
                only_count = True
            elif cast_seg is not None:
                # Graph accepts the namespace alias too: msgraph-sdk itself sends ``graph.user``.
                cast_key = cast_seg.lower()
                if cast_key.startswith("graph."):
                    cast_key = "microsoft." + cast_key
                kind = CASTS.get(cast_key)
                if kind is None:
                    raise GraphError(400, "BadRequest", f"Resource not found for the segment '{cast_seg}'.")
                if count_seg is not None:
                    if count_seg != "$count":
                        raise GraphError(
                            400, "BadRequest", f"Resource not found for the segment '{count_seg}'."
                        )
                    only_count = True
            ids = self._member_ids(tenant, group.id, transitive, kind)
            if only_count:
                if not _eventual(ctx):
                    raise GraphError(
                        400, "Request_BadRequest", "Counting needs the header 'ConsistencyLevel: eventual'."
                    )
                return Response(content=str(len(ids)), media_type="text/plain")
            props = (
                PROPS_BY_KIND[kind] if kind else tuple(sorted({p for v in PROPS_BY_KIND.values() for p in v}))
            )
            query = _parse_query(ctx, props, f"microsoft.graph.{kind or 'directoryObject'}")
            context = f"{kind}s" if kind else "directoryObjects"
            # Without Application.Read.All (or a Directory.* permission) service principals are inaccessible
            # objects: listed, but with limited information (no appId).
            limited = frozenset() if caller.can_read_service_principals else frozenset({"servicePrincipal"})
            return _page(ctx, ids, query, context, typed=kind is None, limited_kinds=limited)

        return await self._run(ctx, run)

    def _member_ids(self, tenant: Tenant, group_id: str, transitive: bool, kind: str | None) -> list[str]:
        key = (id(tenant), group_id, "t" if transitive else "d", kind or "")
        cached = self._cast_cache.get(key)
        if cached is not None:
            return cached
        if len(self._cast_cache) > 10_000:
            self._cast_cache.clear()
        ids = (
            tenant.transitive_member_ids(group_id) if transitive else list(tenant.groups[group_id].member_ids)
        )
        if kind:
            ids = [i for i in ids if tenant.kind_of(i) == kind]
        self._cast_cache[key] = ids
        return ids

    def reset_limits(self) -> None:
        super().reset_limits()
        self._cast_cache.clear()
