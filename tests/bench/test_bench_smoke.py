"""The benchmark at tiny sizes, so that `make bench` cannot rot: it runs, and its numbers are sane.

No performance target is asserted here (timings on a shared CI machine mean little at this size); only
that every scenario did the work it claims, that the request counts it reports agree with the sandbox's
log, and that parsing the DAG file imports no SDK.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.world import group_names, group_of, user_name
from sandbox.generator import generated_users_and_groups

REPO = Path(__file__).resolve().parents[2]


def test_world_user_names_match_the_generator() -> None:
    users, _ = generated_users_and_groups(
        domain="contoso.onmicrosoft.com", users=3, groups=1, guest_ratio=0, disabled_ratio=0, no_mail_ratio=0
    )
    assert [u["userPrincipalName"].lower() for u in users] == [user_name(i) for i in range(3)]
    # The mirrored-group scenarios' membership: member i in group i % groups, groups named gen-000, ….
    users, groups = generated_users_and_groups(
        domain="contoso.onmicrosoft.com",
        users=7,
        groups=3,
        guest_ratio=0,
        disabled_ratio=0,
        no_mail_ratio=0,
        top_group=None,
    )
    assert [g["displayName"] for g in groups] == group_names(3)
    assert [sorted(g["members"]) for g in groups] == [
        sorted(user_name(i) for i in range(7) if group_of(i, 3) == g) for g in range(3)
    ]


def test_benchmarks_page_is_rendered_from_the_committed_results(tmp_path) -> None:
    """docs/benchmarks.md and bench/results/full.md are what `make bench` writes from full.json: re-rendered
    here into a temporary directory (the committed files are not touched), they must be identical."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)])}
    page = tmp_path / "benchmarks.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--render-only",
            "--out-dir",
            str(tmp_path),
            "--docs-page",
            str(page),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert page.read_text() == (REPO / "docs" / "benchmarks.md").read_text(), (
        "run `python -m bench.run --render-only`"
    )
    assert (tmp_path / "full.md").read_text() == (REPO / "bench" / "results" / "full.md").read_text()
    assert "{{" not in page.read_text()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    # In a process of its own: the benchmark starts its own sandbox (its own CA) and points the SDKs at
    # it through the environment, and some clients (aiohttp) cache their TLS trust at import.
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)])}
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--json", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "| (a) all missing |" in done.stdout
    return json.loads(out.read_text())


def test_every_scenario_did_its_work(results) -> None:
    by = {r["scenario"]: r for r in results["scenarios"]}
    assert set(by) == {"a", "b", "c", "e", "f", "g", "h", "i"}
    for r in by.values():
        ours = r["ours"]
        assert 0 < ours["seconds"] < 120 and math.isfinite(ours["seconds"])
        assert ours["failed"] == 0
        assert ours["added"] == r["missing"] == ours["posts"] - ours["creates_429"]
        assert ours["already_present"] == r["members"] - r["missing"]
        # Every member ends up in the workspace, beside its admin (a PAT's user; the account target's
        # token is a managed identity's, not a user's).
        assert ours["workspace_users_after"] == r["members"] + (0 if r.get("target") == "account" else 1)
        # The floor is a floor: nobody gets below it, and the figures come from the sandbox's log.
        assert ours["floor_requests"] >= r["floor"]["requests"]
        assert ours["requests"] >= ours["floor_requests"]
        assert r["floor"]["latency_seconds"] > 0
    assert by["b"]["ours"]["posts"] == 0


def test_account_scenarios_create_assign_and_read_what_their_floors_say(results) -> None:
    """(f) creates every member in the account and assigns it, (g) only reads: both through the account
    API alone, with request counts per endpoint matching the floor's parts."""
    by = {r["scenario"]: r for r in results["scenarios"]}
    for key in "fg":
        r, ours, floor = by[key], by[key]["ours"], by[key]["floor"]
        assert r["target"] == "account" and "baseline" not in r
        counts = ours["counts"]
        # Nothing goes to a workspace's own SCIM API: the account API does it all.
        assert not [system for system in counts if system.startswith("workspace:")]
        account = counts["account"]

        def ok(endpoint: str, account: dict = account) -> int:
            return account.get(endpoint, {}).get("200", 0) + account.get(endpoint, {}).get("201", 0)

        assert ok("scim.users.list") == floor["account_list_pages"]
        assert ok("account.assignments.list") == floor["assignment_lists"] == 1
        assert ok("scim.groups.get") == floor["account_group_gets"]
        assert ok("scim.users.create") == floor["creates"] == ours["created_in_account"] == r["missing"]
        assert ok("account.assignments.put") == floor["assignment_puts"] == ours["added"] == r["missing"]
        assert ours["writes"] == ours["posts"] + ours["puts"]
        assert ours["writes"] - ours["writes_429"] == 2 * r["missing"]
        # Retried 429s aside, the requests are exactly the floor.
        assert ours["floor_requests"] - ours["writes_429"] == floor["requests"]
        assert ours["account_users_after"] == r["members"]
        assert ours["access_direct"] + ours["access_via_group"] == r["members"] - r["missing"]
    f, g = by["f"], by["g"]
    assert f["sandbox_limits"]["assignable_delay_ms"] == 0
    assert f["floor"]["write_seconds"] == f["missing"] / f["sandbox_limits"]["rates"]["scim.users.create"]
    assert f["ours"]["add_time_over_write_floor"] > 0
    # (g): both read paths are exercised, two assigned groups and one nested group read once each.
    assert g["ours"]["writes"] == 0
    assert g["ours"]["access_direct"] > g["ours"]["access_via_group"] > 0
    assert g["floor"]["account_group_gets"] == 3
    assert g["floor"]["account_list_pages"] == math.ceil(g["members"] / 100) > 1
    assert "(f) account" in results["report"] and "(g) account" in results["report"]


def test_mirrored_group_scenarios_make_exactly_their_floor(results) -> None:
    """(h) creates every user, every mirrored group and every membership in PATCH batches, (i) only reads:
    each endpoint's count equals its part of the floor, and every mirror ends up whole."""
    by = {r["scenario"]: r for r in results["scenarios"]}
    for key in "hi":
        r, ours, floor = by[key], by[key]["ours"], by[key]["floor"]
        assert "baseline" not in r and r.get("target") != "account"
        assert r["groups"] == 3 and r["config"]["group_patch_batch_size"] == floor["patch_batch_size"] == 4
        counts = ours["counts"]
        assert not [system for system in counts if system == "account"]
        graph, workspace = counts["graph"], counts["workspace:ws-bench"]

        def ok(endpoint: str, system: dict) -> int:
            return sum(n for status, n in system.get(endpoint, {}).items() if status in ("200", "201", "204"))

        # Reads: each group's Graph pages and look-up, the user list, one group look-up per mirror.
        assert ok("graph.groups.transitiveMembers", graph) == floor["graph_pages"] == 3
        assert ok("graph.groups.list", graph) == floor["group_lookups"] == 3
        assert ok("scim.users.list", workspace) == floor["scim_list_pages"] == 1
        assert ok("scim.groups.list", workspace) == ours["group_lookups"] == floor["scim_group_lookups"] == 3
        assert floor["read_requests"] == 3 + 3 + 1 + 3
        # Writes: one per missing user, one per missing group, ceil(missing members / 4) PATCHes per group.
        assert ok("scim.users.create", workspace) == floor["posts"] == r["missing"]
        assert ok("scim.groups.create", workspace) == ours["group_creates"] == floor["group_creates"]
        assert ok("scim.groups.patch", workspace) == ours["group_patches"] == floor["group_patches"]
        assert ours["writes"] == ours["posts"] + ours["group_creates"] + ours["group_patches"]
        assert ours["writes_429"] == 0
        assert ours["floor_requests"] == floor["requests"]
        assert ours["memberships_added"] == floor["memberships"]
        # Every mirror has the Entra group's object id and exactly its members afterwards.
        assert ours["groups_failed"] == 0
        assert ours["mirrors_complete"] == r["groups"]
        assert ours["group_members_after"] == r["members"]
    h, i = by["h"], by["i"]
    # 30 members in 3 groups of 10: 4 + 4 + 2 per group.
    assert h["missing"] == h["members"] == 30
    assert h["floor"]["group_creates"] == h["ours"]["groups_created"] == 3
    assert h["floor"]["group_patches"] == 3 * math.ceil(10 / 4) == 9
    assert h["floor"]["memberships"] == 30
    assert h["floor"]["requests"] == h["floor"]["read_requests"] + 30 + 3 + 9
    # (i): nothing to write at all, and the read floor is the whole floor.
    assert i["missing"] == 0
    assert i["ours"]["writes"] == 0 and i["ours"]["groups_created"] == 0
    assert i["floor"]["requests"] == i["floor"]["read_requests"]
    assert "(h) mirrored groups" in results["report"] and "(i) mirrored groups" in results["report"]


def test_baseline_makes_one_get_per_member_and_one_post_per_missing(results) -> None:
    by = {r["scenario"]: r for r in results["scenarios"]}
    a = by["a"]["baseline"]
    assert not a["sampled"] and a["get"] == by["a"]["members"] and a["post"] == by["a"]["missing"]
    assert a["created"] == by["a"]["missing"]
    c = by["c"]["baseline"]
    assert c["sampled"] and 0 < c["processed"] < by["c"]["members"]
    assert c["estimated_seconds"] > c["seconds"] > 0
    for key in "abc":
        assert by[key]["ratio"] > 0 and math.isfinite(by[key]["ratio"])


def test_every_task_ran_in_its_own_process_with_its_figures(results) -> None:
    by = {r["scenario"]: r for r in results["scenarios"]}
    for r in by.values():
        tasks = r["ours"]["tasks"]
        assert list(tasks) == ["fetch_token", "resolve_members", "add_missing_users"]
        for figures in tasks.values():
            assert figures["max_rss_kb"] >= figures["rss_after_import_kb"] > 0
            assert figures["xcom_bytes"] > 0
    # (a) ran each task in a fresh process: its memory figures are reported per task.
    assert set(results["memory"]["30"]["tasks"]) == {"fetch_token", "resolve_members", "add_missing_users"}
    # (e) is repeated; the report keeps the median run and every run's figure.
    e = by["e"]["ours"]
    assert len(e["run_seconds"]) == len(e["run_time_over_n_by_limit"]) == 2
    assert e["seconds"] in e["run_seconds"]


def test_parse_and_report(results) -> None:
    parse = results["parse"]
    assert parse["repeats"] == 2 and parse["dagbag_import_timeout_s"] > 0
    assert list(parse["counts"]) == ["2", "3"]
    for n, entry in parse["counts"].items():
        for kind in ("ours", "reference"):
            assert entry[kind]["dags"] == int(n)
            assert entry[kind]["banned_imported"] == []
            assert 0 < entry[kind]["parse_s"]["min"] <= entry[kind]["parse_s"]["median"] < 60
            # The reference is honest about the docs: about the same size as ours.
            assert 0.8 < entry["reference"]["doc_md_chars"] / entry["ours"]["doc_md_chars"] < 1.25
        assert "entra_provisioning" in entry["ours"]["new_top_level"]
        assert "entra_provisioning" not in entry["reference"]["new_top_level"]
        assert entry["ratio"] > 0 and entry["paired_ratio"]["min"] <= entry["paired_ratio"]["max"]
    report = results["report"]
    assert "| (a) all missing |" in report and "DAG-file parse" in report
    assert "hand-written reference" in report and "Peak RSS per task process" in report


def test_overview_page_data_row(results) -> None:
    """(o) at smoke size: every workspace DAG gets its row with counts and its last failure, and the
    fast reader gives exactly the naive reader's rows."""
    o = results["overview"]
    assert (o["workspaces"], o["runs_per_workspace"]) == (6, 30)
    assert o["dags"] == o["rows"] == o["rows_with_counts"] == o["rows_with_failure"] == 6
    assert o["runs"] == 6 * 30 and o["xcoms"] == 6 * 30 * 6
    assert o["same_rows"] is True
    assert len(o["run_seconds"]) == o["repeats"] == 3 and o["seconds"] in o["run_seconds"]
    assert 0 < o["seconds"] < 60 and 0 < o["naive_seconds"] < 120
    assert "(o) Overview page data" in results["report"]


def test_bytes_per_run_row(results) -> None:
    """(x) at smoke size: the compressed members record is smaller than the plain one and reads back (the
    module asserts the round trip); no PostgreSQL in the smoke run."""
    x = results["xcom_size"]
    assert [row["members"] for row in x["rows"]] == [100, 1000]
    for row in x["rows"]:
        assert 0 < row["ours_bytes"] < row["naive_bytes"] / 1.5, row
        assert row["naive_per_member"] > 60, row  # object id, userName, display name, groups: not empty
    assert x["pg"] is False and "ours_pg_bytes" not in x["rows"][0]
    assert "(x) Bytes per run of the members record" in results["report"]


def test_the_celery_row_is_not_in_the_plain_smoke(results) -> None:
    """(t) starts a whole Airflow cluster (about 90 s at its smoke size): only `--smoke --only t` runs it."""
    assert "many_workspaces" not in results
