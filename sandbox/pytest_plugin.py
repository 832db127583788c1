"""pytest plugin: a session-wide sandbox in a subprocess (real sockets, real TLS).

Register with ``pytest_plugins = ["sandbox.pytest_plugin"]`` (done in ``tests/conftest.py``).

Fixtures
- ``sandbox`` (session): a :class:`Sandbox` running the demo seed (or ``$SANDBOX_SEED``).
- ``sandbox_clean`` (function): the same object after ``reset()``: seed state, start-up faults only,
  empty log and token map (issued Entra tokens stay valid; ``control.expire_tokens()`` ends them).
- ``sandbox_env`` (function): ``sandbox_clean`` plus the client environment (``env_for``) applied with
  ``monkeypatch``, for code that reads ``IDENTITY_ENDPOINT``, ``REQUESTS_CA_BUNDLE`` and friends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.client import DEMO_SEED, ControlClient, SandboxProcess, env_for
from sandbox.evidence import fingerprint
from sandbox.model import read_seed_file


class Sandbox:
    """What the fixtures yield: endpoint URLs, the control client, and a few shortcuts."""

    def __init__(self, process: SandboxProcess) -> None:
        self.process = process
        self.endpoints: dict[str, Any] = process.endpoints
        assert process.control is not None
        self.control: ControlClient = process.control
        self.seed: dict[str, Any] = read_seed_file(process.seed)
        self.ca_file: str = self.endpoints["ca_file"]
        self.ca_bundle: str = self.endpoints["ca_bundle"]
        self.env: dict[str, str] = env_for(self.endpoints)
        self.tenant_id: str = self.endpoints["tenant_id"]

    # ------------------------------------------------------------------ URLs
    @property
    def graph_url(self) -> str:
        """``https://127.0.0.1:<port>/v1.0``"""
        return str(self.endpoints["graph"]["base_url"])

    @property
    def authority_host(self) -> str:
        return str(self.endpoints["identity"]["authority_host"])

    def vault_url(self, vault: str = "kv-demo") -> str:
        return str(self.endpoints["vaults"][vault]["url"])

    def secret_url(self, name: str, vault: str = "kv-demo") -> str:
        return f"{self.vault_url(vault)}/secrets/{name}"

    def workspace_host(self, workspace: str = "ws-alpha") -> str:
        return str(self.endpoints["workspaces"][workspace]["host"])

    @property
    def account_host(self) -> str:
        return str(self.endpoints["account"]["host"])

    @property
    def account_id(self) -> str:
        return str(self.endpoints["account"]["account_id"])

    def identity(self, name: str) -> dict[str, Any]:
        """``client_id``, ``object_id`` (and ``client_secret`` for service principals) of a seeded identity."""
        return dict(self.endpoints["identities"][name])

    def pat(self, workspace: str = "ws-alpha", *, admin: bool = True) -> str:
        """A PAT from the seed for a workspace (``"account"`` for the account API)."""
        section = (
            self.seed["account"]
            if workspace == "account"
            else next(w for w in self.seed["workspaces"] if w["name"] == workspace)
        )
        return str(next(t["token"] for t in section["tokens"] if bool(t.get("admin")) == admin))

    # ------------------------------------------------------------------ evidence
    @staticmethod
    def fingerprint(token: str) -> str:
        return fingerprint(token)

    def hosts_for_token(self, token: str) -> set[str]:
        return self.control.hosts_for_token(token)

    def reset(self) -> None:
        self.control.reset()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    seed = Path(os.environ.get("SANDBOX_SEED") or DEMO_SEED)
    process = SandboxProcess(tmp_path_factory.mktemp("sandbox"), seed)
    process.start()
    try:
        yield Sandbox(process)
    finally:
        process.stop()


@pytest.fixture
def sandbox_clean(sandbox: Sandbox) -> Sandbox:
    sandbox.reset()
    return sandbox


@pytest.fixture
def sandbox_env(sandbox_clean: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    for key, value in sandbox_clean.env.items():
        monkeypatch.setenv(key, value)
    return sandbox_clean
