"""Shared server-side state: the world, issued Entra tokens, faults, the request log and the origins."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sandbox.evidence import RequestLog, fingerprint
from sandbox.faults import FaultInjector
from sandbox.model import (
    DATABRICKS_RESOURCE,
    GRAPH_APP_ID,
    GRAPH_RESOURCE,
    VAULT_RESOURCE,
    Identity,
    World,
    load_world,
)


@dataclass
class IssuedToken:
    audience: str  # the resource it was issued for, normalised
    identity: Identity
    expires_at: float


def normalise_resource(value: str) -> str:
    """``https://graph.microsoft.com/.default`` and ``https://graph.microsoft.com/`` -> the bare resource."""
    value = value.strip()
    if value.endswith("/.default"):
        value = value[: -len("/.default")]
    return value.rstrip("/")


_Record = TypeVar("_Record", bound="_Expiring")


class _Expiring(Protocol):
    expires_at: float


class _OpaqueTokens(Generic[_Record]):
    """Opaque access tokens of one kind: only their SHA-256 is kept, like everywhere else in the sandbox."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._lock = threading.Lock()
        self._tokens: dict[str, _Record] = {}

    def _store(self, record: _Record) -> str:
        raw = self._prefix + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[fingerprint(raw)] = record
        return raw

    def lookup(self, raw: str) -> _Record | None:
        with self._lock:
            return self._tokens.get(fingerprint(raw))

    def expire_all(self) -> int:
        with self._lock:
            for tok in self._tokens.values():
                tok.expires_at = 0.0
            return len(self._tokens)

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


class TokenStore(_OpaqueTokens[IssuedToken]):
    """Entra access tokens."""

    def __init__(self) -> None:
        super().__init__("sbx-at.")

    def issue(self, audience: str, identity: Identity, lifetime: int) -> tuple[str, float]:
        expires = time.time() + lifetime
        return self._store(IssuedToken(audience, identity, expires)), expires


@dataclass
class DatabricksToken:
    """A Databricks OAuth M2M access token: valid only on the directory that issued it."""

    system: str  # "account" or "workspace:<name>"
    application_id: str
    expires_at: float


class DatabricksTokenStore(_OpaqueTokens[DatabricksToken]):
    """Tokens from the Databricks ``/oidc/.../v1/token`` endpoints. Real ones are JWTs; ours are opaque like
    the Entra ones (nothing in our path decodes them)."""

    def __init__(self) -> None:
        super().__init__("sbx-dbx.")

    def issue(self, system: str, application_id: str, lifetime: int) -> tuple[str, float]:
        expires = time.time() + lifetime
        return self._store(DatabricksToken(system, application_id, expires)), expires


class Hub:
    """Everything the system apps share. Handlers read ``hub.world`` on every request, so a reseed is
    visible at once."""

    def __init__(
        self, seed: dict[str, Any], fault_rules: list[dict[str, Any]] | None = None, fault_seed: int = 0
    ):
        self.seed = seed
        self.world: World = load_world(seed)
        self.tokens = TokenStore()
        self.databricks_tokens = DatabricksTokenStore()
        self.log = RequestLog()
        self.faults = FaultInjector(seed=fault_seed)
        self._initial_faults = list(fault_rules or [])
        self._initial_fault_seed = fault_seed
        self.faults.configure(self._initial_faults, fault_seed)
        self.origins: dict[str, str] = {}  # system name -> https://127.0.0.1:port
        self.vault_resources: dict[str, str] = {}  # vault name -> challenge resource
        self.apps: list[Any] = []

    # ---------------------------------------------------------------- audiences
    @property
    def graph_audiences(self) -> set[str]:
        out = {GRAPH_RESOURCE, GRAPH_APP_ID}
        if "graph" in self.origins:
            out.add(self.origins["graph"])
        return out

    @property
    def vault_audiences(self) -> set[str]:
        return {VAULT_RESOURCE, *self.vault_resources.values()}

    def known_resource(self, resource: str) -> bool:
        return (
            resource in self.graph_audiences
            or resource in self.vault_audiences
            or resource in {DATABRICKS_RESOURCE}
        )

    # ---------------------------------------------------------------- lifecycle
    def reset(
        self,
        seed: dict[str, Any] | None = None,
        *,
        keep_faults: bool = False,
        keep_log: bool = False,
        drop_tokens: bool = False,
    ) -> None:
        """Reload the world from the original seed (or a new one); restore start-up faults; clear the log.

        Issued Entra and Databricks OAuth tokens stay valid unless ``drop_tokens``: long-lived client
        processes cache them, as they would against the real service.
        """
        world = load_world(seed if seed is not None else self.seed)
        if seed is not None:
            self.seed = seed
        self.world = world
        if drop_tokens:
            self.tokens.clear()
            self.databricks_tokens.clear()
        for app in self.apps:
            app.reset_limits()
        if not keep_faults:
            self.faults.configure(self._initial_faults, self._initial_fault_seed)
        if not keep_log:
            self.log.clear()


def check_bearer(hub: Hub, raw: str | None, audiences: set[str]) -> tuple[IssuedToken | None, str]:
    """Validate an Entra token for a resource: ``(token, "ok")`` or ``(None, reason)``.

    Reasons: ``missing``, ``unknown``, ``expired``, ``audience``.
    """
    if not raw:
        return None, "missing"
    tok = hub.tokens.lookup(raw)
    if tok is None:
        return None, "unknown"
    if tok.expires_at <= time.time():
        return None, "expired"
    if tok.audience not in audiences:
        return None, "audience"
    return tok, "ok"
