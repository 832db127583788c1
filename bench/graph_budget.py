"""How many Microsoft Graph requests a day a many-workspace config spends, and what sharing would save.

``python -m bench.graph_budget`` (about a minute; not part of ``make bench``): starts the sandbox with a
tenant of shared and per-team groups, runs the real ``resolve_members`` task body for each distinct group
and for a few representative workspaces, and counts the Graph requests each made in the sandbox's request
log (by endpoint). From the measured cost per group it totals a day of a config of ``--workspaces``
entries (default 200), each listing two of ten shared groups and one group of its own, at ``--runs-per-day``
(default 4): today (each workspace resolves its own groups) and with resolved groups shared across
workspaces (each distinct group resolved once per scheduling cycle). Prints a Markdown report.

Graph's cost per request is documented in resource units (RU) per app and tenant per 10 s: a
``/transitiveMembers`` page with ``$select`` costs 4 (docs/production.md, "Graph budget").
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

#: Ten groups most workspaces share (sizes in users; overlapping, as "All Data Users" and its subsets do).
SHARED_SIZES = (5000, 3000, 2000, 1500, 1000, 800, 500, 300, 200, 100)
#: The size of each workspace's own team group.
OWN_SIZE = 60
#: How many own groups to measure (they all cost the same: one look-up and one page).
OWN_MEASURED = 3
MEMBER_PAGE_RU = 4  # /transitiveMembers (5) with $select (-1)


def _seed(base: dict[str, Any]) -> dict[str, Any]:
    seed = copy.deepcopy(base)
    users = [
        {
            "userPrincipalName": f"bulk{i:05d}@contoso.onmicrosoft.com",
            "displayName": f"Bulk {i}",
            "mail": None,
        }
        for i in range(max(SHARED_SIZES))
    ]
    groups = [
        {"displayName": f"Shared-{k}", "members": [u["userPrincipalName"] for u in users[:size]]}
        for k, size in enumerate(SHARED_SIZES)
    ]
    groups += [
        {
            "displayName": f"Team-{t}",
            "members": [u["userPrincipalName"] for u in users[t * OWN_SIZE : (t + 1) * OWN_SIZE]],
        }
        for t in range(OWN_MEASURED)
    ]
    seed["users"] = [*seed["users"], *users]
    seed["groups"] = [*seed["groups"], *groups]
    return seed


def _requests(control: Any, since: int) -> Counter[str]:
    return Counter(e["endpoint"] for e in control.log(since=since, system="graph"))


def measure(box: Any) -> tuple[dict[str, Counter[str]], dict[tuple[str, ...], Counter[str]]]:
    """Graph requests of ``resolve_members`` per distinct group, and per representative workspace."""
    import yaml

    from demo.sandbox_airflow import connections_env
    from entra_provisioning import tasks
    from entra_provisioning.config import WorkspaceConfig
    from sandbox.client import DEMO_SEED, env_for

    os.environ.update(env_for(box.endpoints))
    os.environ.update(connections_env(box.endpoints))
    control = box.control
    control.reset(_seed(yaml.safe_load(Path(DEMO_SEED).read_text())))

    def run(groups: tuple[str, ...]) -> Counter[str]:
        ws = WorkspaceConfig(
            name="budget",
            databricks_instance=box.endpoints["workspaces"]["ws-beta"]["host"],
            entra_groups=groups,
            pat_secret_url=None,
            databricks_conn_id="unused",
            schedule=None,
        )
        since = control.last_seq()
        tasks.resolve_members(ws)
        return _requests(control, since)

    per_group = {g: run((g,)) for g in [f"Shared-{k}" for k in range(len(SHARED_SIZES))]}
    per_group.update({f"Team-{t}": run((f"Team-{t}",)) for t in range(OWN_MEASURED)})
    samples: tuple[tuple[str, ...], ...] = (
        ("Shared-0", "Shared-5", "Team-0"),
        ("Shared-1", "Shared-2", "Team-1"),
        ("Shared-3", "Team-2"),
    )
    per_workspace = {groups: run(groups) for groups in samples}
    return per_group, per_workspace


def workspace_groups(index: int) -> tuple[str, str, str]:
    """The model config's entry ``index``: two shared groups (round-robin over pairs) and its own team."""
    n = len(SHARED_SIZES)
    first = index % n
    second = (first + 1 + (index // n) % (n - 1)) % n
    return f"Shared-{first}", f"Shared-{second}", f"Team-{index}"


def report(
    per_group: dict[str, Counter[str]],
    per_workspace: dict[tuple[str, ...], Counter[str]],
    workspaces: int,
    runs_per_day: int,
) -> str:
    def cost(group: str) -> Counter[str]:
        return per_group[group] if group in per_group else per_group["Team-0"]  # every team costs the same

    lines = ["| group | users | Graph requests per resolve (by endpoint) |", "|---|---|---|"]
    for k, size in enumerate(SHARED_SIZES):
        counted = per_group[f"Shared-{k}"]
        lines.append(f"| Shared-{k} | {size} | {sum(counted.values())} ({dict(sorted(counted.items()))}) |")
    team = per_group["Team-0"]
    lines.append(f"| Team-* | {OWN_SIZE} | {sum(team.values())} ({dict(sorted(team.items()))}) |")
    additive = all(
        sum(counted.values()) == sum(sum(cost(g).values()) for g in groups)
        for groups, counted in per_workspace.items()
    )
    lines.append("")
    lines.append(
        "A workspace's requests are the sum of its groups' (measured on "
        f"{len(per_workspace)} multi-group workspaces: {'yes' if additive else 'NO'})."
    )

    config = [workspace_groups(i) for i in range(workspaces)]
    today = Counter[str]()
    for groups in config:
        for group in groups:
            today.update(cost(group))
    distinct = sorted({g for groups in config for g in groups})
    shared = Counter[str]()
    for group in distinct:
        shared.update(cost(group))

    def ru(counted: Counter[str]) -> int:
        return sum(
            n * (MEMBER_PAGE_RU if "member" in endpoint.lower() else 1) for endpoint, n in counted.items()
        )

    per_run_today = sum(today.values())
    per_run_shared = sum(shared.values())
    lines += [
        "",
        f"Model config: {workspaces} workspaces × {runs_per_day} runs/day; each lists 2 of the "
        f"{len(SHARED_SIZES)} shared groups and 1 own group ({len(distinct)} distinct groups, "
        f"{sum(len(g) for g in config)} group listings).",
        "",
        "| | requests per cycle | requests per day | of which member pages | RU per day (pages × 4, look-ups × 1) |",
        "|---|---|---|---|---|",
        f"| today: each workspace resolves its groups | {per_run_today} | {per_run_today * runs_per_day} | "
        f"{_pages(today) * runs_per_day} | {ru(today) * runs_per_day} |",
        f"| sharing: each distinct group once per cycle | {per_run_shared} | {per_run_shared * runs_per_day} | "
        f"{_pages(shared) * runs_per_day} | {ru(shared) * runs_per_day} |",
        "",
        f"Sharing saves {100 * (1 - per_run_shared / per_run_today):.0f} % of the requests "
        f"({(per_run_today - per_run_shared) * runs_per_day} a day) and "
        f"{100 * (1 - ru(shared) / ru(today)):.0f} % of the resource units.",
    ]
    return "\n".join(lines)


def _pages(counted: Counter[str]) -> int:
    return sum(n for endpoint, n in counted.items() if "member" in endpoint.lower())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.graph_budget", description=__doc__)
    parser.add_argument("--workspaces", type=int, default=200)
    parser.add_argument("--runs-per-day", type=int, default=4)
    args = parser.parse_args(argv)
    from sandbox.client import SandboxProcess

    with tempfile.TemporaryDirectory(prefix="graph-budget-") as tmp, SandboxProcess(Path(tmp)) as box:
        per_group, per_workspace = measure(box)
    print(report(per_group, per_workspace, args.workspaces, args.runs_per_day))
    expected_pages = {f"Shared-{k}": math.ceil(size / 999) for k, size in enumerate(SHARED_SIZES)}
    measured_pages = {g: _pages(per_group[g]) for g in expected_pages}
    if measured_pages != expected_pages:  # $top=999 must hold: each page is a full page
        print(f"unexpected page counts: {measured_pages} (expected {expected_pages})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
