"""Task bodies of a workspace DAG. They land with the pipeline issue; until then they refuse to run."""

from __future__ import annotations

from typing import Any

from entra_provisioning.config import WorkspaceConfig


def fetch_token(ws: WorkspaceConfig) -> dict[str, Any]:
    raise NotImplementedError("fetch_token lands with the pipeline issue")


def resolve_members(ws: WorkspaceConfig) -> dict[str, Any]:
    raise NotImplementedError("resolve_members lands with the pipeline issue")


def add_missing_users(
    ws: WorkspaceConfig, token_facts: dict[str, Any], members: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any]:
    raise NotImplementedError("add_missing_users lands with the pipeline issue")
