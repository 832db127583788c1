"""Large synthetic tenants, generated in-process from a ``generate:`` block of the seed.

Example seed block::

    generate:
      users: 100000          # tenant users to add
      groups: 50             # groups gen-000 ... gen-049, users spread round-robin
      top_group: gen-all     # a group that nests all generated groups
      guest_ratio: 0.02      # share of #EXT# guests (with mail)
      disabled_ratio: 0.02   # share of accountEnabled: false
      no_mail_ratio: 0.01    # share of members without mail
      seed: 7                # the same numbers give the same tenant
      workspace_fill:        # share of generated users already present in a workspace
        ws-alpha: 0.3
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any


def generated_users_and_groups(
    *,
    domain: str,
    users: int,
    groups: int,
    seed: int = 1,
    guest_ratio: float = 0.02,
    disabled_ratio: float = 0.02,
    no_mail_ratio: float = 0.01,
    group_prefix: str = "gen-",
    top_group: str | None = "gen-all",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(seed)
    out_users: list[dict[str, Any]] = []
    members: list[list[str]] = [[] for _ in range(max(groups, 1))]
    for i in range(users):
        roll = rng.random()
        if roll < guest_ratio:
            upn = f"guest{i:06d}_partner.example#EXT#@{domain}"
            user: dict[str, Any] = {
                "userPrincipalName": upn,
                "mail": f"guest{i:06d}@partner.example",
                "displayName": f"Guest {i:06d}",
                "userType": "Guest",
            }
        else:
            upn = f"user{i:06d}@{domain}"
            user = {"userPrincipalName": upn, "displayName": f"User {i:06d}"}
            if roll < guest_ratio + no_mail_ratio:
                user["mail"] = None
        if rng.random() < disabled_ratio:
            user["accountEnabled"] = False
        out_users.append(user)
        members[i % len(members)].append(upn)
    out_groups = [
        {"displayName": f"{group_prefix}{g:03d}", "members": members[g]} for g in range(max(groups, 1))
    ]
    if top_group:
        out_groups.append(
            {"displayName": top_group, "members": [f"group:{g['displayName']}" for g in out_groups]}
        )
    return out_users, out_groups


def expand(seed: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``seed`` with its ``generate:`` block turned into users, groups and workspace users."""
    spec = dict(seed.get("generate") or {})
    out = dict(seed)
    out.pop("generate", None)
    domain = str((seed.get("tenant") or {}).get("domain", "contoso.onmicrosoft.com"))
    users, groups = generated_users_and_groups(
        domain=domain,
        users=int(spec.get("users", 1000)),
        groups=int(spec.get("groups", 10)),
        seed=int(spec.get("seed", 1)),
        guest_ratio=float(spec.get("guest_ratio", 0.02)),
        disabled_ratio=float(spec.get("disabled_ratio", 0.02)),
        no_mail_ratio=float(spec.get("no_mail_ratio", 0.01)),
        group_prefix=str(spec.get("group_prefix", "gen-")),
        top_group=spec.get("top_group", "gen-all"),
    )
    out["users"] = list(seed.get("users") or []) + users
    out["groups"] = list(seed.get("groups") or []) + groups
    fill = dict(spec.get("workspace_fill") or {})
    if fill:
        rng = random.Random(int(spec.get("seed", 1)) + 1)
        workspaces = []
        for raw_ws in seed.get("workspaces") or []:
            ws = dict(raw_ws)
            share = float(fill.get(ws.get("name"), 0.0))
            if share:
                existing = {
                    str(u if isinstance(u, str) else u.get("userName")).lower() for u in ws.get("users") or []
                }
                # Workspace userNames are the Entra mail (UPN when mail is absent from the seed entry).
                extra = [
                    str(u.get("mail", u["userPrincipalName"])).lower()
                    for u in users
                    if rng.random() < share and u.get("mail", "") is not None
                ]
                ws["users"] = list(ws.get("users") or []) + [e for e in extra if e not in existing]
            workspaces.append(ws)
        out["workspaces"] = workspaces
    return out


def write_generated_seed(path: str, *, users: int, groups: int, seed: int) -> None:
    """Write a fully expanded seed (no ``generate:`` block) for inspection or reuse."""
    import yaml

    body = expand(
        {
            "tenant": {"domain": "contoso.onmicrosoft.com"},
            "generate": {"users": users, "groups": groups, "seed": seed},
        }
    )
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    with open(path, "w", encoding="utf-8") as handle:
        yaml.dump(body, handle, Dumper=dumper, sort_keys=False)
