"""The control API: read state and evidence, reseed, and change faults and limits at run time.

It listens on its own loopback origin, needs no credentials, is never faulted and is not written to the
request log (so it does not disturb the counts the benchmarks read).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from sandbox.http import Ctx, SystemApp, json_response
from sandbox.model import Limits, ScimDirectory, ScimGroup, SeedError, sync_all_federated

if TYPE_CHECKING:
    from sandbox.hub import Hub


class ControlErrors:
    def error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
        return json_response({"error": code, "message": message}, status, headers)


_ERR = ControlErrors()


def _user_dict(user: Any) -> dict[str, Any]:
    return {
        "id": user.id,
        "userName": user.user_name,
        "displayName": user.display_name,
        "externalId": user.external_id,
        "active": user.active,
        "emails": user.emails,
        "entitlements": user.entitlements,
    }


def _principal_id(directory: ScimDirectory, ref: str) -> str | None:
    """A directory id from an id, a userName, an applicationId or ``group:<displayName>``."""
    if ref in directory.users or ref in directory.groups or ref in directory.service_principals:
        return ref
    if ref.lower().startswith("group:"):
        group = directory.group_named(ref[len("group:") :])
        return group.id if group else None
    return directory.by_user_name.get(ref.lower()) or directory.by_application_id.get(ref.lower())


def _group_dict(directory: ScimDirectory, group: ScimGroup) -> dict[str, Any]:
    members = []
    for mid in group.member_ids:
        if mid in directory.users:
            members.append({"id": mid, "kind": "user", "name": directory.users[mid].user_name})
        elif mid in directory.groups:
            members.append({"id": mid, "kind": "group", "name": directory.groups[mid].display_name})
        elif mid in directory.service_principals:
            sp = directory.service_principals[mid]
            members.append({"id": mid, "kind": "service_principal", "name": sp.application_id})
    return {
        "id": group.id,
        "displayName": group.display_name,
        "externalId": group.external_id,
        "external": group.external,
        "member_ids": list(group.member_ids),
        "members": members,
    }


class ControlApp(SystemApp):
    def __init__(self, hub: Hub) -> None:
        super().__init__(hub, "control", _ERR, faultable=False, logged=False)
        self.endpoints: dict[str, Any] = {}
        add = self.add
        add("GET", "/control/health", "control.health", self.health)
        add("GET", "/control/endpoints", "control.endpoints", self.get_endpoints)
        add("GET", "/control/state", "control.state", self.summary)
        add("GET", "/control/state/tenant", "control.tenant", self.tenant)
        add("GET", "/control/state/workspaces/{name}/users", "control.ws.users", self.directory_users)
        add("POST", "/control/state/workspaces/{name}/users", "control.ws.users.add", self.directory_add_user)
        add("GET", "/control/state/workspaces/{name}/groups", "control.ws.groups", self.directory_groups)
        add(
            "POST",
            "/control/state/workspaces/{name}/groups",
            "control.ws.groups.add",
            self.directory_add_group,
        )
        add("GET", "/control/state/workspaces/{name}/limits", "control.ws.limits", self.get_limits)
        add("PUT", "/control/state/workspaces/{name}/limits", "control.ws.limits.set", self.set_limits)
        add("GET", "/control/state/account/users", "control.account.users", self.directory_users)
        add("POST", "/control/state/account/users", "control.account.users.add", self.directory_add_user)
        add("GET", "/control/state/account/groups", "control.account.groups", self.directory_groups)
        add("POST", "/control/state/account/groups", "control.account.groups.add", self.directory_add_group)
        add(
            "GET",
            "/control/state/workspaces/{name}/service_principals",
            "control.ws.service_principals",
            self.directory_service_principals,
        )
        add(
            "GET",
            "/control/state/account/service_principals",
            "control.account.service_principals",
            self.directory_service_principals,
        )
        add(
            "GET",
            "/control/state/account/assignments/{workspace}",
            "control.account.assignments",
            self.account_assignments,
        )
        add("GET", "/control/state/account/limits", "control.account.limits", self.get_limits)
        add("PUT", "/control/state/account/limits", "control.account.limits.set", self.set_limits)
        add("GET", "/control/state/graph/limits", "control.graph.limits", self.get_graph_limits)
        add("PUT", "/control/state/graph/limits", "control.graph.limits.set", self.set_graph_limits)
        add(
            "PUT",
            "/control/state/graph/next_link_origin",
            "control.graph.nextlink",
            self.set_next_link_origin,
        )
        add("GET", "/control/state/vaults/{name}", "control.vault", self.vault)
        add("POST", "/control/reset", "control.reset", self.reset)
        add("GET", "/control/faults", "control.faults", self.get_faults)
        add("PUT", "/control/faults", "control.faults.set", self.set_faults)
        add("DELETE", "/control/faults", "control.faults.clear", self.clear_faults)
        add("GET", "/control/log", "control.log", self.log)
        add("GET", "/control/log/counts", "control.log.counts", self.counts)
        add("DELETE", "/control/log", "control.log.clear", self.clear_log)
        add("GET", "/control/tokens", "control.tokens", self.tokens)
        add("POST", "/control/tokens/expire", "control.tokens.expire", self.expire_tokens)

    def _directory(self, ctx: Ctx) -> ScimDirectory | None:
        if "name" in ctx.params:
            return self.hub.world.workspaces.get(ctx.params["name"])
        return self.hub.world.account

    async def health(self, ctx: Ctx) -> Response:
        return json_response({"ok": True})

    async def get_endpoints(self, ctx: Ctx) -> Response:
        return json_response(self.endpoints)

    async def summary(self, ctx: Ctx) -> Response:
        world = self.hub.world
        return json_response(
            {
                "tenant": {
                    "id": world.tenant.id,
                    "users": len(world.tenant.users),
                    "groups": len(world.tenant.groups),
                    "other_objects": len(world.tenant.objects),
                },
                "vaults": {n: sorted(s.name for s in v.secrets.values()) for n, v in world.vaults.items()},
                "workspaces": {
                    n: {
                        "workspace_id": d.ident,
                        "users": len(d.users),
                        "groups": len(d.groups),
                        "service_principals": len(d.service_principals),
                        "identity_federated": d.identity_federated,
                    }
                    for n, d in world.workspaces.items()
                },
                "account": None
                if world.account is None
                else {
                    "account_id": world.account.ident,
                    "users": len(world.account.users),
                    "groups": len(world.account.groups),
                    "service_principals": len(world.account.service_principals),
                },
                "requests_logged": self.hub.log.last_seq,
            }
        )

    async def tenant(self, ctx: Ctx) -> Response:
        t = self.hub.world.tenant
        return json_response(
            {
                "id": t.id,
                "domain": t.domain,
                "users": [dataclasses.asdict(u) for u in t.users.values()],
                "groups": [{**g.to_graph(), "member_ids": list(g.member_ids)} for g in t.groups.values()],
                "objects": [{"kind": o.odata_kind, **o.to_graph()} for o in t.objects.values()],
            }
        )

    async def directory_users(self, ctx: Ctx) -> Response:
        directory = self._directory(ctx)
        if directory is None:
            return _ERR.error(404, "NotFound", "no such workspace or no account in the seed")
        return json_response(
            {
                "users": [
                    {**_user_dict(u), "from_account": u.id in directory.from_account}
                    for u in directory.users.values()
                ]
            }
        )

    async def directory_groups(self, ctx: Ctx) -> Response:
        directory = self._directory(ctx)
        if directory is None:
            return _ERR.error(404, "NotFound", "no such workspace or no account in the seed")
        return json_response({"groups": [_group_dict(directory, g) for g in directory.groups.values()]})

    async def directory_add_group(self, ctx: Ctx) -> Response:
        """Add a group behind the API's back: someone else's group, or an external (AIM-synced) one.

        Body: ``{displayName, externalId?, external?: bool, members?: [id | userName | applicationId |
        "group:<displayName>"]}``. The display name must be free (the API's uniqueness rule)."""
        directory = self._directory(ctx)
        if directory is None:
            return _ERR.error(404, "NotFound", "no such workspace or no account in the seed")
        body = await ctx.json() or {}
        name = body.get("displayName")
        if not isinstance(name, str) or not name.strip():
            return _ERR.error(400, "BadRequest", "displayName is required")
        if directory.group_named(name) is not None:
            return _ERR.error(409, "Conflict", f"a group named {name!r} already exists")
        member_ids: list[str] = []
        for ref in body.get("members") or []:
            found = _principal_id(directory, str(ref))
            if found is None:
                return _ERR.error(400, "BadRequest", f"unknown member {ref!r}")
            if found not in member_ids:
                member_ids.append(found)
        group = ScimGroup(
            id=directory.new_id(),
            display_name=name,
            external_id=None if body.get("externalId") is None else str(body["externalId"]),
            member_ids=member_ids,
            created_at=time.time(),
            external=bool(body.get("external", False)),
        )
        directory.groups[group.id] = group
        directory.version += 1
        if directory.kind == "account":
            sync_all_federated(self.hub.world)
        return json_response(_group_dict(directory, group), 201)

    async def directory_service_principals(self, ctx: Ctx) -> Response:
        directory = self._directory(ctx)
        if directory is None:
            return _ERR.error(404, "NotFound", "no such workspace or no account in the seed")
        admins = directory.group_named("admins")
        return json_response(
            {
                "service_principals": [
                    {
                        "id": sp.id,
                        "applicationId": sp.application_id,
                        "displayName": sp.display_name,
                        "active": sp.active,
                        "admin": sp.account_admin
                        if directory.kind == "account"
                        else admins is not None and sp.id in admins.member_ids,
                        "has_oauth_secret": sp.oauth_secret is not None,
                        "externalId": sp.external_id,
                        "entitlements": sp.entitlements,
                        "group_ids": [g.id for g in directory.groups.values() if sp.id in g.member_ids],
                    }
                    for sp in directory.service_principals.values()
                ]
            }
        )

    async def account_assignments(self, ctx: Ctx) -> Response:
        """A workspace's permission assignments, by workspace name, with each principal's kind and name."""
        world = self.hub.world
        workspace = world.workspaces.get(ctx.params["workspace"])
        account = world.account
        if workspace is None or account is None:
            return _ERR.error(404, "NotFound", "no such workspace or no account in the seed")
        out = []
        for principal_id, permissions in account.assignments.get(workspace.ident, {}).items():
            if principal_id in account.users:
                kind, name = "user", account.users[principal_id].user_name
            elif principal_id in account.groups:
                kind, name = "group", account.groups[principal_id].display_name
            else:
                kind, name = "service_principal", account.service_principals[principal_id].application_id
            out.append({"principal_id": principal_id, "kind": kind, "name": name, "permissions": permissions})
        return json_response(
            {
                "workspace": workspace.name,
                "workspace_id": workspace.ident,
                "identity_federated": workspace.identity_federated,
                "assignments": out,
            }
        )

    async def directory_add_user(self, ctx: Ctx) -> Response:
        """Add a user behind the API's back (drift, or a user created by someone else)."""
        directory = self._directory(ctx)
        if directory is None:
            return _ERR.error(404, "NotFound", "no such workspace or no account in the seed")
        body = await ctx.json() or {}
        try:
            user = directory.add_user(
                str(body["userName"]),
                display_name=body.get("displayName"),
                external_id=body.get("externalId"),
                created_at=time.time(),
            )
        except (KeyError, SeedError) as exc:
            return _ERR.error(400, "BadRequest", str(exc))
        return json_response(_user_dict(user), 201)

    async def get_limits(self, ctx: Ctx) -> Response:
        directory = self._directory(ctx)
        if directory is None:
            return _ERR.error(404, "NotFound", "no such workspace or no account in the seed")
        return json_response(directory.limits.to_dict())

    async def set_limits(self, ctx: Ctx) -> Response:
        """Merge the given keys into the current limits (``rates`` is replaced as a whole)."""
        directory = self._directory(ctx)
        if directory is None:
            return _ERR.error(404, "NotFound", "no such workspace or no account in the seed")
        body = await ctx.json() or {}
        merged = {**directory.limits.to_dict(), **body}
        try:
            directory.limits = Limits.from_seed(merged, default_page_cap=directory.limits.page_cap)
        except (SeedError, TypeError, ValueError) as exc:
            return _ERR.error(400, "BadRequest", str(exc))
        for app in self.hub.apps:
            app.reset_limits()
        return json_response(directory.limits.to_dict())

    async def get_graph_limits(self, ctx: Ctx) -> Response:
        limits = self.hub.world.graph_limits
        return json_response(None if limits is None else limits.to_dict())

    async def set_graph_limits(self, ctx: Ctx) -> Response:
        """Merge the given keys into Graph's limits (``null`` body keys keep defaults)."""
        body = await ctx.json() or {}
        current = self.hub.world.graph_limits
        merged = {**(current.to_dict() if current else {}), **body}
        try:
            self.hub.world.graph_limits = Limits.from_seed(merged, default_page_cap=999)
        except (SeedError, TypeError, ValueError) as exc:
            return _ERR.error(400, "BadRequest", str(exc))
        for app in self.hub.apps:
            app.reset_limits()
        return json_response(self.hub.world.graph_limits.to_dict())

    async def set_next_link_origin(self, ctx: Ctx) -> Response:
        """Serve Graph's ``@odata.nextLink`` on another origin (``null`` restores Graph's own) until reset."""
        body = await ctx.json() or {}
        origin = body.get("origin")
        if origin is not None and not isinstance(origin, str):
            return _ERR.error(400, "BadRequest", "origin must be a string or null")
        self.hub.world.graph_next_link_origin = origin.rstrip("/") if origin else None
        return json_response({"origin": self.hub.world.graph_next_link_origin})

    async def vault(self, ctx: Ctx) -> Response:
        vault = self.hub.world.vaults.get(ctx.params["name"])
        if vault is None:
            return _ERR.error(404, "NotFound", "no such vault")
        return json_response(
            {
                "name": vault.name,
                "access": sorted(vault.access),
                "secrets": {
                    s.name: [
                        {k: v for k, v in dataclasses.asdict(ver).items() if k != "value"}
                        for ver in s.versions
                    ]
                    for s in vault.secrets.values()
                },
            }
        )

    async def reset(self, ctx: Ctx) -> Response:
        body = await ctx.json() or {}
        try:
            self.hub.reset(
                body.get("seed"),
                keep_faults=bool(body.get("keep_faults", False)),
                keep_log=bool(body.get("keep_log", False)),
                drop_tokens=bool(body.get("drop_tokens", False)),
            )
        except (SeedError, TypeError, ValueError) as exc:
            return _ERR.error(400, "BadSeed", str(exc))
        return json_response({"ok": True})

    async def get_faults(self, ctx: Ctx) -> Response:
        return json_response(self.hub.faults.snapshot())

    async def set_faults(self, ctx: Ctx) -> Response:
        body = await ctx.json() or {}
        try:
            self.hub.faults.configure(list(body.get("rules") or []), body.get("seed"))
        except (TypeError, ValueError) as exc:
            return _ERR.error(400, "BadFaults", str(exc))
        return json_response(self.hub.faults.snapshot())

    async def clear_faults(self, ctx: Ctx) -> Response:
        self.hub.faults.clear()
        return json_response(self.hub.faults.snapshot())

    async def log(self, ctx: Ctx) -> Response:
        entries = self.hub.log.entries(
            since=int(ctx.query("since") or 0),
            system=ctx.query("system"),
            endpoint=ctx.query("endpoint"),
            limit=int(ctx.query("limit") or 10_000),
        )
        return json_response({"entries": entries, "last_seq": self.hub.log.last_seq})

    async def counts(self, ctx: Ctx) -> Response:
        return json_response(self.hub.log.counts())

    async def clear_log(self, ctx: Ctx) -> Response:
        self.hub.log.clear()
        return json_response({"ok": True})

    async def tokens(self, ctx: Ctx) -> Response:
        return json_response(self.hub.log.token_hosts())

    async def expire_tokens(self, ctx: Ctx) -> Response:
        expired = self.hub.tokens.expire_all() + self.hub.databricks_tokens.expire_all()
        return json_response({"expired": expired})
