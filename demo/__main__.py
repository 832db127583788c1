"""``make demo``: the main job end to end on a throwaway SQLite Airflow against the local sandbox.

Starts the sandbox with the demo tenant, runs every demo workspace DAG with ``airflow dags test`` (two
workspaces the original way, with a Key Vault PAT; one identity-federated workspace through the account
API with a managed identity), prints each run's summary, runs everything again to show nothing is added
twice, then stops what it started. Exit status 0 only if every run succeeded and the second round wrote
nothing.
"""

from __future__ import annotations

import shutil
import sys
import time

from demo.sandbox_airflow import (
    DEMO_WORKSPACES,
    REPO,
    airflow,
    airflow_env,
    latest_xcom,
    workspaces_yaml,
)
from entra_provisioning.config import DAG_ID_PREFIX

WORK = REPO / ".tmp" / "demo"
ROWS = (
    ("members resolved", "members_resolved"),
    ("already present", "already_present"),
    ("to add", "to_add"),
    ("added", "added"),
    ("existed at create (409)", "existed_on_create"),
    ("failed", "failed"),
    ("drift (in no group)", "drift"),
    ("renamed in Entra", "renamed"),
)


ACCOUNT_ROWS = (
    ("members resolved", "members_resolved"),
    ("already had access", "already_present"),
    ("  directly assigned", "access_direct"),
    ("  through a group", "access_via_group"),
    ("to assign", "to_add"),
    ("created in the account", "created_in_account"),
    ("assigned to the workspace", "added"),
    ("existed at create (409)", "existed_on_create"),
    ("failed", "failed"),
    ("drift (access, no group)", "drift"),
)


def _print_summary(title: str, summary: dict) -> None:
    counts = summary
    print(f"\n  {title}")
    for label, key in ACCOUNT_ROWS if summary.get("target") == "account" else ROWS:
        print(f"    {label:<26} {counts.get(key, 0)}")
    skipped = {k: v for k, v in (summary.get("skipped") or {}).items() if v}
    print(f"    {'skipped':<26} {sum(skipped.values())} {skipped if skipped else ''}")
    added = summary.get("added_user_names") or []
    if added:
        print(f"    added: {', '.join(added[:8])}{' …' if len(added) > 8 else ''}")
    drift = summary.get("drift_user_names") or []
    if drift:
        print(f"    drift: {', '.join(drift[:8])}")
    sps = summary.get("service_principals")
    if sps:
        added_sps = ", ".join(sps["added_application_ids"]) or "none"
        print(f"    service principals: {sps['resolved']} in the groups, added {added_sps}")
    groups = summary.get("groups")
    if groups:
        print(
            f"    mirrored groups: created {', '.join(groups['created']) or 'none'}; memberships added "
            f"{groups['memberships_added']}; membership drift {groups['membership_drift']}"
        )


def main() -> int:
    from sandbox.client import SandboxProcess

    started = time.monotonic()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    airflow_home = WORK / "airflow"
    config_file = WORK / "workspaces.yaml"
    print("Starting the sandbox (Entra ID, Key Vault, Graph, Databricks SCIM on 127.0.0.1) …")
    with SandboxProcess(WORK / "sandbox") as box:
        assert box.control is not None
        endpoints = box.endpoints
        config_file.write_text(workspaces_yaml(endpoints))
        env = airflow_env(endpoints, airflow_home, config_file)
        print(f"Airflow home {airflow_home} (SQLite); config {config_file}")
        migrated = airflow(env, "db", "migrate")
        if migrated.returncode != 0:
            print(migrated.stdout[-3000:], migrated.stderr[-3000:], file=sys.stderr)
            return 1
        ok = True
        for round_no in (1, 2):
            print(f"\n=== Round {round_no}: airflow dags test, one DAG per workspace ===")
            creates_before = _creates(box.control.counts())
            for ws in DEMO_WORKSPACES:
                dag_id = f"{DAG_ID_PREFIX}{ws.name}"
                run = airflow(env, "dags", "test", dag_id)
                summary = latest_xcom(airflow_home, dag_id) if run.returncode == 0 else None
                if summary is None:
                    ok = False
                    print(f"\n  {dag_id}: FAILED (exit {run.returncode})")
                    print(run.stdout[-4000:], run.stderr[-4000:], file=sys.stderr)
                    continue
                how = (
                    "account API, managed identity"
                    if ws.target == "account"
                    else "workspace SCIM, Key Vault PAT"
                )
                _print_summary(f"{dag_id} → {ws.sandbox_workspace} ({how})", summary)
            creates = _creates(box.control.counts()) - creates_before
            print(
                f"\n  Databricks writes this round (users, service principals, groups, memberships, assignments): {creates}"
            )
            if round_no == 2 and creates:
                ok = False
                print("  ERROR: the second round wrote; it should have found everyone present")
    print(f"\nDemo {'succeeded' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s; sandbox stopped.")
    return 0 if ok else 1


def _creates(counts: dict) -> int:
    """Successful writes on every workspace and on the account: users, service principals, groups,
    memberships and workspace assignments."""
    total = 0
    for system, endpoints in counts.items():
        if system.startswith("workspace:") or system == "account":
            for name in (
                "scim.users.create",
                "account.assignments.put",
                "scim.groups.create",
                "scim.groups.patch",
                "scim.service_principals.create",
            ):
                statuses = endpoints.get(name) or {}
                total += sum(n for status, n in statuses.items() if str(status).startswith("2"))
    return total


if __name__ == "__main__":
    raise SystemExit(main())
