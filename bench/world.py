"""The benchmark tenant: a sandbox seed with one empty bench workspace, and per-scenario reseeds.

Every scenario uses the same shape of data: one Entra group ``gen-000`` holding ``members`` plain users
(no guests, no disabled accounts, so members == Graph objects == provisionable users), and a Databricks
workspace ``ws-bench`` that already holds a chosen subset of them plus its admin. Our path and the
baseline run against the same reseed, one after the other.

Group-mirroring scenarios spread the members over ``groups`` Entra groups ``gen-000``, ``gen-001``, …
(member ``i`` in group ``i % groups``: disjoint, as the generator deals them out) and, when some members
exist, give ``ws-bench`` each group's mirror already: a Databricks group of the same name whose
``externalId`` is the Entra group's object id, holding that group's existing members.

Account-target scenarios (:func:`account_scenario_seed`) make ``ws-bench`` identity-federated instead: its
users come from the account, and a chosen subset of the members exists in the account with access to the
workspace, most through direct assignments, the rest through assigned account groups (one of them
nested). The bench entry then reaches the account with the managed identity ``airflow-mi`` (an account
admin) through the Airflow ``databricks`` connection the demo uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from demo.sandbox_airflow import DATABRICKS_CONN_ID, DATABRICKS_IDENTITY
from sandbox.client import DEMO_SEED
from sandbox.model import read_seed_file, stable_id

WORKSPACE = "ws-bench"
VAULT = "kv-demo"
SECRET = "ws-bench-pat"
TOKEN = "dapi-bench-admin-0001"
ADMIN = "admin@contoso.com"
GROUP = "gen-000"
DOMAIN = "contoso.onmicrosoft.com"
WORKSPACE_ID = "4242424242424242"
#: Account groups of the account scenarios: two assigned to the workspace, one nested in the first.
READERS, NESTED, ANALYSTS = "bench-readers", "bench-readers-nested", "bench-analysts"


def user_name(index: int) -> str:
    """The Databricks userName of generated user ``index`` (its UPN, lower-cased)."""
    # Mirrors sandbox.generator for a tenant without guests: checked against it in the smoke test.
    return f"user{index:06d}@{DOMAIN}"


def group_names(groups: int) -> list[str]:
    """The generated Entra groups' display names: ``gen-000``, ``gen-001``, …"""
    return [f"gen-{g:03d}" for g in range(groups)]


def group_of(index: int, groups: int) -> int:
    """The generated group that holds user ``index`` (each user is in exactly one)."""
    # Mirrors sandbox.generator's round-robin: checked against it in the smoke test.
    return index % groups


def group_object_id(name: str) -> str:
    """The Entra object id the sandbox gives a (non-duplicate) group of that display name."""
    # Mirrors sandbox.model's stable ids: checked against the sandbox's tenant in the smoke test.
    return stable_id("group", name)


def base_seed(limits: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The demo seed's identities and vault, with one bench workspace and no demo users or groups."""
    seed = read_seed_file(DEMO_SEED)
    seed["users"] = []
    seed["groups"] = []
    seed["servicePrincipals"] = []
    seed["devices"] = []
    # The start seed keeps an account (so that the sandbox serves the account API) with only the managed
    # identity as its admin; workspace scenarios reseed without it, account scenarios with their own.
    seed["account"] = _account(seed["account"]["account_id"], {})
    for vault in seed["vaults"]:
        if vault["name"] == VAULT:
            vault["secrets"] = [{"name": SECRET, "versions": [{"value": TOKEN, "exp": "+90d"}]}]
    seed["workspaces"] = [
        {
            "name": WORKSPACE,
            "workspace_id": WORKSPACE_ID,
            "users": [],
            "groups": [{"displayName": "admins", "members": [ADMIN]}],
            "tokens": [{"token": TOKEN, "user": ADMIN, "admin": True}],
            "limits": dict(limits or {}),
        }
    ]
    return seed


def scenario_seed(
    members: int,
    existing: Iterable[int],
    limits: Mapping[str, Any] | None = None,
    *,
    groups: int = 1,
    mirrored: bool = False,
) -> dict[str, Any]:
    """A reseed: ``members`` users in ``groups`` groups (``gen-000``, …); the workspace already has users
    ``existing`` and, with ``mirrored`` and anyone existing, each group's mirror holding its existing
    members (:func:`mirror_groups_seed`)."""
    seed = base_seed(limits)
    seed.pop("account")
    _generate(seed, members, groups)
    existing = list(existing)
    ws = seed["workspaces"][0]
    ws["users"] = [user_name(i) for i in existing]
    if mirrored and existing:
        ws["groups"] += mirror_groups_seed(existing, groups)
    return seed


def mirror_groups_seed(existing: Iterable[int], groups: int) -> list[dict[str, Any]]:
    """Workspace groups mirroring every generated group: same name, ``externalId`` = the Entra group's
    object id, members = the users of ``existing`` in that group."""
    members: list[list[str]] = [[] for _ in range(groups)]
    for i in existing:
        members[group_of(i, groups)].append(user_name(i))
    return [
        {"displayName": name, "externalId": group_object_id(name), "members": members[g]}
        for g, name in enumerate(group_names(groups))
    ]


def _generate(seed: dict[str, Any], members: int, groups: int = 1) -> None:
    seed["generate"] = {
        "users": members,
        "groups": groups,
        "top_group": None,
        "guest_ratio": 0.0,
        "disabled_ratio": 0.0,
        "no_mail_ratio": 0.0,
        "seed": 7,
    }


def _account(account_id: str, limits: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "users": [],
        "groups": [],
        "service_principals": [{"identity": DATABRICKS_IDENTITY, "admin": True}],
        "assignments": {},
        "limits": dict(limits),
    }


def account_access(existing: Iterable[int]) -> tuple[list[int], dict[str, list[int]]]:
    """Who of ``existing`` has access how: (directly assigned, {account group: its user members}).

    Nine in ten directly; every tenth through a group: a quarter of those in ``bench-readers``, a quarter
    in ``bench-readers-nested`` (a member group of ``bench-readers``, not assigned itself), half in
    ``bench-analysts``. Both assigned groups and the nested one are read once each.
    """
    direct: list[int] = []
    groups: dict[str, list[int]] = {READERS: [], NESTED: [], ANALYSTS: []}
    for i in existing:
        if i % 10:
            direct.append(i)
        else:
            groups[(READERS, NESTED, ANALYSTS, ANALYSTS)[(i // 10) % 4]].append(i)
    return direct, groups


def account_groups_read(existing: Iterable[int]) -> int:
    """Account groups the read path must GET: each assigned group, and each group nested in one, once."""
    _, groups = account_access(existing)
    return len(groups) if any(groups.values()) else 0


def account_scenario_seed(
    members: int, existing: Iterable[int], limits: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A reseed for the account target: ``members`` users in group ``gen-000``; ``ws-bench`` is
    identity-federated and empty but for the account users ``existing``, who all have access to it
    (:func:`account_access`); ``limits`` are the account's."""
    seed = base_seed()
    _generate(seed, members)
    ws = seed["workspaces"][0]
    # No local users, groups or PATs: everything the workspace has comes from the account.
    ws.update({"identity_federated": True, "users": [], "groups": [], "tokens": []})
    account = _account(seed["account"]["account_id"], limits or {})
    existing = list(existing)
    direct, groups = account_access(existing)
    account["users"] = [user_name(i) for i in existing]
    if any(groups.values()):
        account["groups"] = [
            {
                "displayName": READERS,
                "members": [user_name(i) for i in groups[READERS]] + [f"group:{NESTED}"],
            },
            {"displayName": NESTED, "members": [user_name(i) for i in groups[NESTED]]},
            {"displayName": ANALYSTS, "members": [user_name(i) for i in groups[ANALYSTS]]},
        ]
    assignments: list[dict[str, Any]] = [{"user": user_name(i), "permissions": ["USER"]} for i in direct]
    if any(groups.values()):
        assignments += [
            {"group": READERS, "permissions": ["USER"]},
            {"group": ANALYSTS, "permissions": ["USER"]},
        ]
    account["assignments"] = {WORKSPACE: assignments}
    seed["account"] = account
    return seed


def write_base_seed(path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(base_seed(), sort_keys=False))
    return path


def workspaces_yaml(
    endpoints: Mapping[str, Any],
    concurrency: int,
    creates_per_second: float,
    options: Mapping[str, Any] | None = None,
) -> str:
    """The workspaces file an operator would write for the bench workspace.

    :param options: more keys of the entry; ``target: account`` makes it an account-target entry (the
        account's id and host, the workspace id and the managed identity's Databricks connection).
    """
    import yaml

    options = dict(options or {})
    settings: dict[str, Any] = {
        "allowed_workspace_hosts": ["127.0.0.1"],
        "allowed_key_vault_hosts": ["127.0.0.1"],
    }
    entry: dict[str, Any] = {
        "name": "bench",
        "databricks_instance": endpoints["workspaces"][WORKSPACE]["host"],
        "entra_groups": [GROUP],
    }
    if options.get("target") == "account":
        settings["allowed_account_hosts"] = ["127.0.0.1"]
        entry.update(
            {
                "target": "account",
                "databricks_conn_id": DATABRICKS_CONN_ID,
                "account_id": endpoints["account"]["account_id"],
                "account_host": endpoints["account"]["host"],
                # Loopback hosts do not carry the id the way adb-<id>.<n>.azuredatabricks.net does.
                "workspace_id": int(endpoints["workspaces"][WORKSPACE]["workspace_id"]),
            }
        )
    else:
        entry["pat_secret_url"] = endpoints["vaults"][VAULT]["secrets"][SECRET]
    entry.update(
        {
            "schedule": None,
            "max_new_users_per_run": None,
            "scim_concurrency": concurrency,
            "scim_max_creates_per_second": creates_per_second,
            **options,
        }
    )
    document = {"settings": settings, "workspaces": [entry]}
    return yaml.safe_dump(document, sort_keys=False)
