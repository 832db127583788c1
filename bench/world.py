"""The benchmark tenant: a sandbox seed with one empty bench workspace, and per-scenario reseeds.

Every scenario uses the same shape of data: one Entra group ``gen-000`` holding ``members`` plain users
(no guests, no disabled accounts, so members == Graph objects == provisionable users), and a Databricks
workspace ``ws-bench`` that already holds a chosen subset of them plus its admin. Our path and the
baseline run against the same reseed, one after the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sandbox.client import DEMO_SEED
from sandbox.model import read_seed_file

WORKSPACE = "ws-bench"
VAULT = "kv-demo"
SECRET = "ws-bench-pat"
TOKEN = "dapi-bench-admin-0001"
ADMIN = "admin@contoso.com"
GROUP = "gen-000"
DOMAIN = "contoso.onmicrosoft.com"


def user_name(index: int) -> str:
    """The Databricks userName of generated user ``index`` (its UPN, lower-cased)."""
    # Mirrors sandbox.generator for a tenant without guests: checked against it in the smoke test.
    return f"user{index:06d}@{DOMAIN}"


def base_seed(limits: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The demo seed's identities and vault, with one bench workspace and no demo users or groups."""
    seed = read_seed_file(DEMO_SEED)
    seed["users"] = []
    seed["groups"] = []
    seed["servicePrincipals"] = []
    seed["devices"] = []
    seed.pop("account", None)
    for vault in seed["vaults"]:
        if vault["name"] == VAULT:
            vault["secrets"] = [{"name": SECRET, "versions": [{"value": TOKEN, "exp": "+90d"}]}]
    seed["workspaces"] = [
        {
            "name": WORKSPACE,
            "workspace_id": "4242424242424242",
            "users": [],
            "groups": [{"displayName": "admins", "members": [ADMIN]}],
            "tokens": [{"token": TOKEN, "user": ADMIN, "admin": True}],
            "limits": dict(limits or {}),
        }
    ]
    return seed


def scenario_seed(
    members: int, existing: Iterable[int], limits: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A reseed: ``members`` users in group ``gen-000``; the workspace already has users ``existing``."""
    seed = base_seed(limits)
    seed["generate"] = {
        "users": members,
        "groups": 1,
        "top_group": None,
        "guest_ratio": 0.0,
        "disabled_ratio": 0.0,
        "no_mail_ratio": 0.0,
        "seed": 7,
    }
    seed["workspaces"][0]["users"] = [user_name(i) for i in existing]
    return seed


def write_base_seed(path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(base_seed(), sort_keys=False))
    return path


def workspaces_yaml(endpoints: Mapping[str, Any], concurrency: int, creates_per_second: float) -> str:
    """The workspaces file an operator would write for the bench workspace."""
    import yaml

    document = {
        "settings": {"allowed_workspace_hosts": ["127.0.0.1"], "allowed_key_vault_hosts": ["127.0.0.1"]},
        "workspaces": [
            {
                "name": "bench",
                "databricks_instance": endpoints["workspaces"][WORKSPACE]["host"],
                "entra_groups": [GROUP],
                "pat_secret_url": endpoints["vaults"][VAULT]["secrets"][SECRET],
                "schedule": None,
                "max_new_users_per_run": None,
                "scim_concurrency": concurrency,
                "scim_max_creates_per_second": creates_per_second,
            }
        ],
    }
    return yaml.safe_dump(document, sort_keys=False)
