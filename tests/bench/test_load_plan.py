"""The many-workspaces load driver (``demo/load.py``) and bench row (t), without starting a cluster: the
seed loads in the sandbox, the workspaces file passes our config loader, and the report renders."""

from __future__ import annotations

import pytest

from bench import run as bench
from demo.load import SHARED_GROUP, LoadPlan, graph_peak_units, load_seed, workspaces_file
from entra_provisioning.config import parse_config
from sandbox.model import load_world


def test_the_seed_gives_every_workspace_its_group_and_the_shared_one() -> None:
    plan = LoadPlan(workspaces=3, members=2, shared_members=2)
    world = load_world(load_seed(plan))
    assert sorted(world.workspaces) == ["ws-load-001", "ws-load-002", "ws-load-003"]
    assert all(len(ws.users) <= 1 for ws in world.workspaces.values())  # the admin at most
    names = {g.display_name for g in world.tenant.groups.values()}
    assert names == {"load-001", "load-002", "load-003", SHARED_GROUP}
    assert len(world.tenant.users) == 3 * 2 + 2
    assert world.graph_limits is not None and world.graph_limits.rates
    assert plan.expected_members(2) == {
        "load002.u00@contoso.onmicrosoft.com",
        "load002.u01@contoso.onmicrosoft.com",
        "load.shared00@contoso.onmicrosoft.com",
        "load.shared01@contoso.onmicrosoft.com",
    }
    assert plan.dag_ids(2) == ["entra_provisioning__load_001", "entra_provisioning__load_002"]


def test_the_workspaces_file_is_valid_config() -> None:
    plan = LoadPlan(workspaces=2)
    endpoints = {
        "workspaces": {plan.sandbox_workspace(i): {"host": f"https://127.0.0.1:{9000 + i}"} for i in (1, 2)},
        "vaults": {
            "kv-demo": {
                "secrets": {
                    f"{plan.sandbox_workspace(i)}-pat": f"https://127.0.0.1:9100/secrets/ws-load-00{i}-pat"
                    for i in (1, 2)
                }
            }
        },
    }
    config = parse_config(workspaces_file(endpoints, plan))
    assert [ws.dag_id for ws in config.enabled_workspaces] == plan.dag_ids()
    for ws in config.enabled_workspaces:
        assert ws.schedule is None and ws.scim_max_creates_per_second == plan.creates_per_second
        assert ws.entra_groups[-1] == SHARED_GROUP


def test_plan_bounds() -> None:
    with pytest.raises(ValueError):
        LoadPlan(workspaces=0)
    with pytest.raises(ValueError):
        LoadPlan(workspaces=1000)


def _figures(ok: bool = True) -> dict:
    return {
        "workspaces": 3,
        "worker_concurrency": 2,
        "wall_seconds": 35.5,
        "runs_per_hour": 304.0,
        "run_seconds": [27.7, 33.1, 34.5],
        "median_run_seconds": 33.1,
        "max_run_seconds": 34.5,
        "states": {"success": 3},
        "graph_requests": 12,
        "graph_429": 0,
        "graph_peak_units_per_10s": 30,
        "scim_requests": 39,
        "scim_429": 0,
        "scim_concurrency_refusals": 0,
        "creates_201": 30,
        "creates_409": 0,
        "members_expected": 30,
        "problems": [] if ok else ["ws-load-002: 1 missing"],
        "ok": ok,
    }


@pytest.mark.parametrize("ok", [True, False])
def test_row_t_renders_and_its_target_follows_the_verification(ok: bool) -> None:
    many = {
        "burst_concurrency": 2,
        "plan": {
            "workspaces": 3,
            "own_members": 6,
            "shared_members": 4,
            "creates_per_second": 2.0,
            "graph_limits": {"rates": {"graph.groups.list": 100}},
            "workspace_limits": {"rates": {"scim.users.create": 2}, "max_concurrent": 4},
        },
        "burst": _figures(ok),
        "sustained": {"1": {**_figures(), "worker_concurrency": 1}},
        "cluster_start_seconds": {"2": 48.0, "1": 45.0},
    }
    line = bench._many_line(many)
    assert line.startswith("(t) Many workspaces at once") and "| 3 | 1 | 35.50 s | 304 |" in line
    assert "| 12 (0; 30) |" in line
    (target,) = [
        t for t in bench.targets({"scenarios": [], "many_workspaces": many}) if t["pass"] is not None
    ]
    assert target["pass"] is ok
    assert ("PROBLEMS" in target["figure"]) is not ok
    text = bench._many_figures({"many_workspaces": many})
    assert "3 workspaces triggered at once with 2 worker slots" in text and "304 runs/h" in text
    assert bench._many_line({**many, "skipped": "no Redis"}).endswith("not run (no Redis).")


def test_graph_peak_units_counts_the_busiest_window() -> None:
    class Log:
        def log(self, **_: object) -> list[dict]:
            pages = [{"ts": t, "endpoint": "graph.groups.transitiveMembers"} for t in (0.0, 1.0, 9.5)]
            return [*pages, {"ts": 10.5, "endpoint": "graph.groups.list"}, {"ts": 30.0, "endpoint": "x"}]

    # 0.0, 1.0 and 9.5 fall in one 10 s window (three pages of 4 units); 10.5 starts a later one.
    assert graph_peak_units(Log()) == 12  # type: ignore[arg-type]
    assert graph_peak_units(Log(), window=1.5) == 8  # type: ignore[arg-type]
