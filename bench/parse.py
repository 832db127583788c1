"""DAG-file parse cost: our DAG file beside a hand-written DAG file with the same DAGs, interleaved.

The floor for "one DAG per workspace" is what Airflow itself needs to build and serialise such a DAG, so
ours is measured against a **reference**: a plain DAG file (no config, no YAML, no package of ours) that
builds, in a loop over a literal list, the same DAG per workspace: the same three ``@task`` functions
with the same dependencies, the same two ``Param`` definitions, the same ``default_args``, schedule,
tags and a ``doc_md`` of the same size. The only thing ours does on top is reading and validating the
workspaces file and rendering the docs from it.

As in Airflow's DAG processor, one parent process imports the parser's modules once (``BundleDagBag``,
the serializer) and forks a fresh child for every parse; the child's clock runs over exactly the
parser's work: importing the DAG file (for ours: our package, the config read and validation, one DAG
per workspace) and serialising every DAG. Repetitions of ours and the reference alternate (ABBA), so
machine noise hits both alike. Also reported: the modules the DAG file pulled in, which must include no
Azure, Microsoft Graph or Databricks SDK, and Airflow's ``dagbag_import_timeout``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DAG_FILE = REPO / "dags" / "entra_provisioning_dags.py"
#: Top-level packages that must never be imported while parsing (DESIGN: nothing at parse but config).
BANNED = ("azure", "msgraph", "msgraph_core", "kiota_abstractions", "kiota_http", "databricks")
KINDS = ("ours", "reference")

# The parent: imports what the DAG processor has loaded, then forks one child per parse job. Each
# child parses one DAG file and writes one JSON line to the parent through a pipe.
_PARENT = r"""
import json, os, sys, time
from airflow.configuration import conf
from airflow.dag_processing.dagbag import BundleDagBag
from airflow.serialization.serialized_objects import DagSerialization

def parse(job):
    os.environ.update(job["env"])
    before = set(sys.modules)
    t1 = time.perf_counter()
    bag = BundleDagBag(dag_folder=job["file"], bundle_path=os.path.dirname(job["file"]), load_op_links=False)
    t2 = time.perf_counter()
    for dag in bag.dags.values():
        DagSerialization.to_dict(dag)
    t3 = time.perf_counter()
    docs = [len(dag.doc_md or "") for dag in bag.dags.values()]
    return {"kind": job["kind"], "count": job["count"], "bag_s": t2 - t1, "serialize_s": t3 - t2,
            "dags": len(bag.dags), "errors": {k: str(v) for k, v in bag.import_errors.items()},
            "doc_md_chars": sum(docs) / max(1, len(docs)),
            "new_modules": sorted(set(sys.modules) - before), "all_modules": sorted(sys.modules)}

results = []
for job in json.loads(sys.stdin.read()):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            out = json.dumps(parse(job)).encode()
        except BaseException as exc:
            out = json.dumps({"kind": job["kind"], "count": job["count"], "failed": repr(exc)}).encode()
        with os.fdopen(write, "wb") as pipe:
            pipe.write(out)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    results.append(json.loads(data))
print(json.dumps({"dagbag_import_timeout": conf.getfloat("core", "dagbag_import_timeout"),
                  "runs": results}))
"""


def workspaces_config(count: int) -> str:
    lines = ["workspaces:"]
    for i in range(count):
        lines += [
            f"  - name: ws-{i:04d}",
            f"    databricks_instance: https://adb-{1000000000000000 + i}.{i % 20}.azuredatabricks.net",
            f"    entra_groups: [Databricks-Group-{i:04d}, Data Engineers]",
            f"    pat_secret_url: https://kv-dbx.vault.azure.net/secrets/adb-{1000000000000000 + i}-pat",
        ]
    return "\n".join(lines) + "\n"


_REFERENCE_HEAD = '''\
"""Hand-written reference DAG file for the parse benchmark: one DAG per workspace, no config layer."""

from datetime import datetime, timedelta

from airflow.sdk import DAG, AssetAlias, Param, task

DEFAULT_ARGS = {
    "retries": 3,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=20),
}

DOC = """\\
### Provisioning of Databricks users from Entra ID groups: `{name}`

The members of the Entra ID groups listed below are added to this Databricks workspace. Nothing is
ever removed or deactivated; workspace users who belong to none of the groups show up as *drift* in the
summary of each run.

| | |
|---|---|
| Workspace | {instance} |
| Token (Key Vault) | vault `{vault}`, secret `{secret}` |
| Azure connection (Key Vault) | `azure_default` |
| Graph connection | `msgraph_default` |
| Schedule | `{schedule}` |
| userName from | `userPrincipalName` (guests: `mail`) |
| Guard: most new users per run | {guard} |
| SCIM creates | 4 at a time, at most 5/s |
| Alerts | none (no `notify`) |

**Groups**

{groups}

**Tasks**: `fetch_token` reads the workspace token from Key Vault and checks it (no secret returned) ->
`resolve_members` lists the transitive user members of the groups through Microsoft Graph ->
`add_missing_users` creates the users missing from the workspace and returns the summary of the run ->
`report` (a teardown, so the run's outcome is never its own) emits the workspace's asset event
`entra_provisioning__{name}__users` if users were added, and sends the alerts and the metrics when they are
switched on. Every task also keeps a small `counts` XCom, for failed attempts as well.

Switch **dry_run** on when triggering to list who would be added, without writing anything.
"""


def build(name, instance, host, groups, vault, secret, schedule, guard):
    params = {
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Resolve the groups and compute who would be added, but create nobody.",
        ),
        "max_new_users_per_run": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            title="Most new users this run (guard override)",
            description=(
                f"Leave empty to use the configured guard ({guard}). "
                "The run fails before creating anyone if more users would be added than this."
            ),
        ),
    }
    with DAG(
        dag_id=f"entra_provisioning__{name}",
        description=f"Add members of {len(groups)} Entra ID group(s) to {host}",
        schedule=schedule,
        start_date=datetime(2025, 1, 1),
        catchup=False,
        max_active_runs=1,
        dagrun_timeout=timedelta(hours=3),
        default_args={**DEFAULT_ARGS, "owner": "airflow"},
        params=params,
        tags=["databricks", "entra-provisioning"],
        doc_md=DOC.format(
            name=name,
            instance=instance,
            vault=vault,
            secret=secret,
            schedule=schedule,
            guard=guard,
            groups="\\n".join(f"- `{group}`" for group in groups),
        ),
    ) as dag:

        @task(task_id="fetch_token")
        def fetch_token():
            return {"workspace": instance}

        @task(task_id="resolve_members")
        def resolve_members():
            return {"groups": list(groups)}

        @task(task_id="add_missing_users")
        def add_missing_users(token_facts, members, params=None):
            return {"workspace": token_facts["workspace"], "groups": members["groups"]}

        @task(task_id="report", retries=1, outlets=[AssetAlias(name=f"entra_provisioning__{name}__users_added")])
        def report():
            return {"events": []}

        token_facts = fetch_token()
        members = resolve_members()
        token_facts >> members
        add_missing_users(token_facts, members) >> report().as_teardown()
    return dag


WORKSPACES = [
'''

_REFERENCE_TAIL = """]

for _workspace in WORKSPACES:
    _dag = build(*_workspace)
    globals()[_dag.dag_id] = _dag
"""


def reference_dag_file(count: int) -> str:
    """The reference DAG file for ``count`` workspaces: the values ours reads from YAML, as literals."""
    from entra_provisioning.config import parse_config

    rows = []
    for ws in parse_config(workspaces_config(count), "bench.yaml").workspaces:
        guard = "no limit" if ws.max_new_users_per_run is None else str(ws.max_new_users_per_run)
        row = (
            ws.name,
            ws.databricks_instance,
            ws.workspace_host,
            tuple(ws.entra_groups),
            ws.secret.vault_host if ws.secret else None,
            ws.secret.name if ws.secret else None,
            ws.schedule,
            guard,
        )
        rows.append(f"    {row!r},")
    return _REFERENCE_HEAD + "\n".join(rows) + "\n" + _REFERENCE_TAIL


def banned_in(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in BANNED)


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(counts: tuple[int, ...] = (200, 1000), repeats: int = 5) -> dict[str, Any]:
    """Parse cost of ours and the reference per workspace count: ``repeats`` fresh parses of each."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO / "plugins"), str(REPO), env.get("PYTHONPATH")])
    )
    with tempfile.TemporaryDirectory(prefix="bench-parse-") as tmp:
        env.setdefault("AIRFLOW_HOME", tmp)
        env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
        files: dict[tuple[str, int], dict[str, Any]] = {}
        for count in counts:
            config = Path(tmp) / f"workspaces-{count}.yaml"
            config.write_text(workspaces_config(count))
            reference = Path(tmp) / f"reference-{count}" / "reference_dags.py"
            reference.parent.mkdir()
            reference.write_text(reference_dag_file(count))
            files[("ours", count)] = {
                "file": str(DAG_FILE),
                "env": {"ENTRA_PROVISIONING_CONFIG": str(config)},
            }
            files[("reference", count)] = {"file": str(reference), "env": {}}
        jobs = []
        for rep in range(repeats):
            # ABBA: alternate which of the two goes first, so drift in machine load favours neither.
            order = KINDS if rep % 2 == 0 else KINDS[::-1]
            for count in counts:
                for kind in order:
                    jobs.append({"kind": kind, "count": count, **files[(kind, count)]})
        done = subprocess.run(
            [sys.executable, "-c", _PARENT],
            input=json.dumps(jobs),
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"parse process failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    results: dict[str, Any] = {
        "repeats": repeats,
        "dagbag_import_timeout_s": out["dagbag_import_timeout"],
        "counts": {},
    }
    for count in counts:
        entry: dict[str, Any] = {}
        per_kind: dict[str, list[dict[str, Any]]] = {}
        for kind in KINDS:
            runs = [r for r in out["runs"] if r["kind"] == kind and r["count"] == count]
            for run in runs:
                if "failed" in run or run["errors"] or run["dags"] != count:
                    raise RuntimeError(f"parse of {count} workspaces ({kind}): {run}")
            per_kind[kind] = runs
            last = runs[-1]
            entry[kind] = {
                "dags": last["dags"],
                "bag_s": _spread([r["bag_s"] for r in runs]),
                "serialize_s": _spread([r["serialize_s"] for r in runs]),
                "parse_s": _spread([r["bag_s"] + r["serialize_s"] for r in runs]),
                "per_dag_ms": _spread([(r["bag_s"] + r["serialize_s"]) / count * 1000 for r in runs]),
                "doc_md_chars": last["doc_md_chars"],
                "new_modules": len(last["new_modules"]),
                "new_top_level": sorted({m.split(".")[0] for m in last["new_modules"]}),
                "banned_imported": banned_in(last["all_modules"]),
            }
        # Each repetition's ours against the reference parsed right beside it.
        paired = [
            (o["bag_s"] + o["serialize_s"]) / (r["bag_s"] + r["serialize_s"])
            for o, r in zip(per_kind["ours"], per_kind["reference"], strict=True)
        ]
        entry["ratio"] = entry["ours"]["per_dag_ms"]["median"] / entry["reference"]["per_dag_ms"]["median"]
        entry["paired_ratio"] = _spread(paired)
        results["counts"][str(count)] = entry
    return results


if __name__ == "__main__":
    print(json.dumps(measure(repeats=int(sys.argv[1]) if len(sys.argv) > 1 else 5), indent=1))
