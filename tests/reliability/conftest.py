"""Reliability and security tests: the real task bodies and hooks against the sandbox under stress."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from demo.sandbox_airflow import connections_env
from entra_provisioning.config import WorkspaceConfig


@pytest.fixture
def connected(sandbox_env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The sandbox (reset, no faults), its trust and identity environment, and the Airflow connections
    an operator would define. Afterwards the start seed is restored (a reset with a custom seed becomes
    the seed later resets reload) and faults and knobs are cleared, so nothing leaks into other tests."""
    for key, value in connections_env(sandbox_env.endpoints).items():
        monkeypatch.setenv(key, value)
    try:
        yield sandbox_env
    finally:
        sandbox_env.control.reset(sandbox_env.seed)


def workspace(
    sandbox: Any,
    *,
    ws: str = "ws-beta",
    groups: tuple[str, ...] = ("Large Team",),
    secret: str = "ws-beta-pat",
    **options: Any,
) -> WorkspaceConfig:
    """A validated-shape workspace entry pointing at the sandbox (fast pace: the sandbox is local)."""
    options.setdefault("scim_max_creates_per_second", 200.0)
    options.setdefault("max_new_users_per_run", None)
    return WorkspaceConfig(
        name="reliability",
        databricks_instance=sandbox.workspace_host(ws),
        entra_groups=groups,
        pat_secret_url=sandbox.secret_url(secret),
        schedule=None,
        **options,
    )


def seed_with(sandbox: Any, users: list[dict[str, Any]], groups: list[dict[str, Any]]) -> dict[str, Any]:
    """The sandbox's start seed plus extra Graph users and groups (everything else unchanged)."""
    seed = copy.deepcopy(sandbox.seed)
    seed["users"] = [*seed["users"], *users]
    seed["groups"] = [*seed["groups"], *groups]
    return seed


def team(
    name: str, size: int, domain: str = "contoso.onmicrosoft.com"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``size`` ordinary users and a group ``name`` holding them."""
    slug = name.lower().replace(" ", "-")
    users = [
        {"userPrincipalName": f"{slug}-{i:03d}@{domain}", "displayName": f"{name} {i}", "mail": None}
        for i in range(size)
    ]
    return users, {"displayName": name, "members": [u["userPrincipalName"] for u in users]}
