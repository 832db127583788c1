"""Azure Key Vault secrets, data plane: ``GET /secrets/{name}[/{version}]`` with the challenge protocol.

``SecretClient`` checks that the challenge's resource is a DNS suffix of the vault host
(``verify_challenge_resource``). A real vault is ``<name>.vault.azure.net`` and challenges with
``https://vault.azure.net``. Ours is ``127.0.0.1:<port>``, so it challenges with ``https://0.0.1:<port>``: a
proper suffix of the request's netloc after a dot, which satisfies the check without any client flag. The
identity endpoint issues tokens for that resource, and the vault accepts exactly its own resource or the
generic ``https://vault.azure.net`` audience.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from sandbox.http import Ctx, SystemApp, json_response
from sandbox.hub import check_bearer

if TYPE_CHECKING:
    from sandbox.hub import Hub
    from sandbox.model import Limits, Secret, SecretVersion, Vault

_API_VERSION = re.compile(r"^(7\.\d+(-preview(\.\d+)?)?|\d{4}-\d{2}-\d{2}(-preview)?)$")


class VaultErrors:
    throttle_code = "Throttled"

    def error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
        return json_response({"error": {"code": code, "message": message}}, status, headers)


_ERR = VaultErrors()


def vault_resource_for(port: int) -> str:
    """The challenge resource for a vault at ``127.0.0.1:<port>`` (see the module docstring)."""
    return f"https://0.0.1:{port}"


class VaultApp(SystemApp):
    def __init__(self, hub: Hub, vault_name: str) -> None:
        super().__init__(hub, f"vault:{vault_name}", _ERR, limits=self._vault_limits)
        self.vault_name = vault_name
        self.add("GET", "/secrets", "vault.secrets.list", self.list_secrets)
        self.add("GET", "/secrets/{name}/versions", "vault.secrets.versions", self.list_versions)
        self.add("GET", "/secrets/{name}", "vault.secrets.get", self.get_secret)
        self.add("GET", "/secrets/{name}/{version}", "vault.secrets.get", self.get_secret)

    # ------------------------------------------------------------------ plumbing
    def _vault_limits(self) -> Limits | None:
        vault = self.hub.world.vaults.get(self.vault_name)
        return vault.limits if vault else None

    @property
    def resource(self) -> str:
        return self.hub.vault_resources[self.vault_name]

    def _vault(self) -> Vault | None:
        return self.hub.world.vaults.get(self.vault_name)

    def _challenge(self, error: str | None = None) -> dict[str, str]:
        login = self.hub.origins.get("identity", "https://login.microsoftonline.com")
        value = f'Bearer authorization="{login}/{self.hub.world.tenant.id}", resource="{self.resource}"'
        if error:
            value += f', error="{error}"'
        return {"WWW-Authenticate": value}

    def _authorize(self, ctx: Ctx) -> Response | None:
        tok, reason = check_bearer(self.hub, ctx.token, self.hub.vault_audiences)
        if tok is None:
            messages = {
                "missing": ("AKV10000: Request is missing a Bearer or PoP token.", None),
                "unknown": ("AKV10001: The token could not be validated.", "invalid_token"),
                "expired": ("AKV10032: The token has expired.", "invalid_token"),
                "audience": (
                    f"AKV10022: Invalid audience. Expected {self.resource}.",
                    "invalid_token",
                ),
            }
            message, err = messages[reason]
            return _ERR.error(401, "Unauthorized", message, headers=self._challenge(err))
        api_version = ctx.query("api-version")
        if api_version is None:
            return _ERR.error(400, "BadParameter", "The 'api-version' query parameter is missing.")
        if not _API_VERSION.match(api_version):
            return _ERR.error(400, "BadParameter", f"The api-version '{api_version}' is invalid.")
        vault = self._vault()
        if vault is None or tok.identity.object_id not in vault.access:
            ident = tok.identity
            return json_response(
                {
                    "error": {
                        "code": "Forbidden",
                        "message": (
                            f"The user, group or application 'appid={ident.client_id};oid={ident.object_id}' "
                            f"does not have secrets get permission on key vault '{self.vault_name}'."
                        ),
                        "innererror": {"code": "AccessDenied"},
                    }
                },
                403,
            )
        return None

    def _bundle(self, secret: Secret, version: SecretVersion, *, with_value: bool) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "enabled": version.enabled,
            "created": version.created,
            "updated": version.updated,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        }
        if version.exp is not None:
            attributes["exp"] = version.exp
        if version.nbf is not None:
            attributes["nbf"] = version.nbf
        body: dict[str, Any] = {"id": f"{self.origin}/secrets/{secret.name}/{version.version}"}
        if with_value:
            body["value"] = version.value
        body["attributes"] = attributes
        if version.content_type is not None:
            body["contentType"] = version.content_type
        if version.tags:
            body["tags"] = version.tags
        return body

    # ------------------------------------------------------------------ handlers
    async def get_secret(self, ctx: Ctx) -> Response:
        refused = self._authorize(ctx)
        if refused:
            return refused
        vault = self._vault()
        assert vault is not None
        name = ctx.params["name"]
        secret = vault.secrets.get(name.lower())
        wanted = ctx.params.get("version")
        version = None
        if secret is not None:
            if wanted:
                version = next((v for v in secret.versions if v.version == wanted.lower()), None)
            elif secret.versions:
                version = secret.versions[-1]
        if secret is None or version is None:
            ref = f"{name}/{wanted}" if wanted else name
            return _ERR.error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {ref} was not found in this key vault. If you recently deleted "
                "this secret you may be able to recover it using the correct recovery command.",
            )
        if not version.enabled:
            return json_response(
                {
                    "error": {
                        "code": "Forbidden",
                        "message": "Operation get is not allowed on a disabled secret.",
                        "innererror": {"code": "SecretDisabled"},
                    }
                },
                403,
            )
        # Like the real service, exp/nbf are informational for secrets: the value is still served and the
        # caller must look at attributes.exp itself.
        return json_response(self._bundle(secret, version, with_value=True))

    async def list_secrets(self, ctx: Ctx) -> Response:
        refused = self._authorize(ctx)
        if refused:
            return refused
        vault = self._vault()
        assert vault is not None
        items = []
        for secret in vault.secrets.values():
            if not secret.versions:
                continue
            body = self._bundle(secret, secret.versions[-1], with_value=False)
            body["id"] = f"{self.origin}/secrets/{secret.name}"
            items.append(body)
        return json_response({"value": items, "nextLink": None})

    async def list_versions(self, ctx: Ctx) -> Response:
        refused = self._authorize(ctx)
        if refused:
            return refused
        vault = self._vault()
        assert vault is not None
        secret = vault.secrets.get(ctx.params["name"].lower())
        if secret is None:
            return _ERR.error(
                404, "SecretNotFound", f"A secret with (name/id) {ctx.params['name']} was not found."
            )
        items = [self._bundle(secret, v, with_value=False) for v in secret.versions]
        return json_response({"value": items, "nextLink": None})
