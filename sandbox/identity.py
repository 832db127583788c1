"""Entra ID stand-in: the App Service managed-identity endpoint and the v2.0 client-credentials flow.

Tokens are opaque and bound to one resource (audience) and one identity; they expire after the seed's
``settings.token_lifetime_seconds``.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from starlette.responses import Response

from sandbox.http import Ctx, SystemApp, json_response
from sandbox.hub import normalise_resource

if TYPE_CHECKING:
    from sandbox.hub import Hub
    from sandbox.model import Identity

MSI_PATH = "/msi/token"


class EntraErrors:
    """OAuth error bodies in Entra's shape (``error``, ``error_description`` with an AADSTS code)."""

    def error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
        return json_response(
            {
                "error": code,
                "error_description": message,
                "error_codes": [],
                "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
                "trace_id": str(uuid.uuid4()),
                "correlation_id": str(uuid.uuid4()),
            },
            status,
            headers,
        )


_ERR = EntraErrors()


def _tenant_matches(hub: Hub, tenant: str) -> bool:
    t = hub.world.tenant
    return tenant.lower() in (t.id.lower(), t.domain.lower())


async def msi_token(ctx: Ctx) -> Response:
    hub = ctx.hub
    if ctx.header("x-identity-header") != hub.world.identity_header:
        return _ERR.error(401, "unauthorized_client", "X-IDENTITY-HEADER is missing or wrong.")
    if ctx.query("api-version") != "2019-08-01":
        return _ERR.error(400, "invalid_request", "api-version must be 2019-08-01.")
    resource = ctx.query("resource")
    if not resource:
        return _ERR.error(400, "invalid_request", "The 'resource' parameter is required.")
    audience = normalise_resource(resource)
    if not hub.known_resource(audience):
        return _ERR.error(
            400, "invalid_resource", f"AADSTS500011: The resource principal named {resource} was not found."
        )
    wanted = {k: ctx.query(k) for k in ("client_id", "principal_id", "object_id", "mi_res_id")}
    candidates = [i for i in hub.world.tenant.identities.values() if i.kind == "managedIdentity"]
    chosen: Identity | None = None
    if wanted["client_id"]:
        chosen = next((i for i in candidates if i.client_id == wanted["client_id"]), None)
    elif wanted["principal_id"] or wanted["object_id"]:
        oid = wanted["principal_id"] or wanted["object_id"]
        chosen = next((i for i in candidates if i.object_id == oid), None)
    elif wanted["mi_res_id"]:
        chosen = next((i for i in candidates if wanted["mi_res_id"].rstrip("/").endswith("/" + i.name)), None)
    else:
        chosen = candidates[0] if candidates else None
    if chosen is None:
        return _ERR.error(400, "invalid_request", "No managed identity matches the request.")
    raw, expires = hub.tokens.issue(audience, chosen, hub.world.token_lifetime)
    return json_response(
        {
            "access_token": raw,
            "expires_on": str(int(expires)),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": chosen.client_id,
        }
    )


def _openid_config(ctx: Ctx, tenant: str) -> dict[str, object]:
    base = ctx.app.origin
    tid = ctx.hub.world.tenant.id
    return {
        "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": [
            "client_secret_post",
            "private_key_jwt",
            "client_secret_basic",
        ],
        "jwks_uri": f"{base}/{tid}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{base}/{tid}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{base}/oidc/userinfo",
        "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
        "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
        "tenant_region_scope": "EU",
        "cloud_instance_name": "sandbox.local",
    }


async def openid_configuration(ctx: Ctx) -> Response:
    tenant = ctx.params["tenant"]
    if not _tenant_matches(ctx.hub, tenant) and tenant.lower() not in ("common", "organizations"):
        return _ERR.error(400, "invalid_tenant", f"AADSTS90002: Tenant '{tenant}' not found.")
    return json_response(_openid_config(ctx, tenant))


async def jwks(ctx: Ctx) -> Response:
    return json_response({"keys": []})


async def instance_discovery(ctx: Ctx) -> Response:
    host = ctx.app.origin.removeprefix("https://")
    return json_response(
        {
            "tenant_discovery_endpoint": f"{ctx.app.origin}/{ctx.hub.world.tenant.id}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        }
    )


async def client_credentials_token(ctx: Ctx) -> Response:
    hub = ctx.hub
    tenant = ctx.params["tenant"]
    if not _tenant_matches(hub, tenant):
        return _ERR.error(400, "invalid_request", f"AADSTS90002: Tenant '{tenant}' not found.")
    form = {k: v[0] for k, v in parse_qs((await ctx.request.body()).decode("utf-8", "replace")).items()}
    if form.get("grant_type") != "client_credentials":
        return _ERR.error(
            400, "unsupported_grant_type", "AADSTS70003: Only client_credentials is served here."
        )
    client_id = form.get("client_id")
    secret = form.get("client_secret")
    basic = ctx.header("authorization") or ""
    if not client_id and basic.lower().startswith("basic "):
        import base64

        decoded = base64.b64decode(basic[6:]).decode("utf-8", "replace")
        client_id, _, secret = decoded.partition(":")
    ident = next(
        (
            i
            for i in hub.world.tenant.identities.values()
            if i.kind == "servicePrincipal" and i.client_id == client_id
        ),
        None,
    )
    if ident is None:
        return _ERR.error(
            400,
            "unauthorized_client",
            f"AADSTS700016: Application with identifier '{client_id}' was not found in the directory.",
        )
    if not secret or secret != ident.client_secret:
        return _ERR.error(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
    scopes = (form.get("scope") or "").split()
    if len(scopes) != 1 or not scopes[0].endswith("/.default"):
        return _ERR.error(
            400,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid. Client credential flows must have "
            "a scope value with /.default suffixed to the resource identifier.",
        )
    audience = normalise_resource(scopes[0])
    if not hub.known_resource(audience):
        return _ERR.error(
            400, "invalid_resource", f"AADSTS500011: The resource principal named {audience} was not found."
        )
    raw, expires = hub.tokens.issue(audience, ident, hub.world.token_lifetime)
    lifetime = int(expires - time.time())
    return json_response(
        {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": raw}
    )


def build_identity_app(hub: Hub) -> SystemApp:
    app = SystemApp(hub, "identity", _ERR)
    app.add("GET", MSI_PATH, "identity.msi.token", msi_token)
    app.add("GET", "/common/discovery/instance", "identity.discovery.instance", instance_discovery)
    app.add(
        "GET",
        "/{tenant}/v2.0/.well-known/openid-configuration",
        "identity.openid.config",
        openid_configuration,
    )
    app.add(
        "GET", "/{tenant}/.well-known/openid-configuration", "identity.openid.config", openid_configuration
    )
    app.add("GET", "/{tenant}/discovery/v2.0/keys", "identity.openid.keys", jwks)
    app.add("POST", "/{tenant}/oauth2/v2.0/token", "identity.oauth2.token", client_credentials_token)
    return app
