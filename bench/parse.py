"""DAG-file parse time with 1, 200 and 1,000 workspaces, each parse in a fresh process.

A fresh Python process first imports what Airflow's DAG processor already has loaded when it forks a
parser (``airflow.dag_processing`` and the serializer), then the clock runs over exactly the parser's
work: ``BundleDagBag`` on our DAG file (import of our package, config read and validation, one DAG per
workspace) and the serialisation of every DAG. Also reported: the modules the DAG file pulled in, which
must include no Azure, Microsoft Graph or Databricks SDK.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DAG_FILE = REPO / "dags" / "entra_provisioning_dags.py"
#: Top-level packages that must never be imported while parsing (DESIGN: nothing at parse but config).
BANNED = ("azure", "msgraph", "msgraph_core", "kiota_abstractions", "kiota_http", "databricks")

_CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import BundleDagBag
from airflow.serialization.serialized_objects import DagSerialization
before = set(sys.modules)
t1 = time.perf_counter()
bag = BundleDagBag(dag_folder=sys.argv[1], bundle_path=os.path.dirname(sys.argv[1]), load_op_links=False)
t2 = time.perf_counter()
for dag in bag.dags.values():
    DagSerialization.to_dict(dag)
t3 = time.perf_counter()
new = sorted(set(sys.modules) - before)
print(json.dumps({"airflow_import_s": t1 - t0, "bag_s": t2 - t1, "serialize_s": t3 - t2,
                  "dags": len(bag.dags), "errors": bag.import_errors, "new_modules": new,
                  "all_modules": sorted(sys.modules)}))
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


def parse_once(config: Path, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(DAG_FILE)],
        env={**env, "ENTRA_PROVISIONING_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"parse process failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def banned_in(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in BANNED)


def measure(counts: tuple[int, ...] = (1, 200, 1000), repeats: int = 5) -> dict[str, Any]:
    """Median parse seconds per workspace count, in fresh processes, and the parse-time imports."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO / "plugins"), str(REPO), env.get("PYTHONPATH")])
    )
    results: dict[str, Any] = {"repeats": repeats, "counts": {}}
    with tempfile.TemporaryDirectory(prefix="bench-parse-") as tmp:
        env.setdefault("AIRFLOW_HOME", tmp)
        env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
        for count in counts:
            config = Path(tmp) / f"workspaces-{count}.yaml"
            config.write_text(workspaces_config(count))
            runs = [parse_once(config, env) for _ in range(repeats)]
            for run in runs:
                if run["errors"] or run["dags"] != count:
                    raise RuntimeError(
                        f"parse of {count} workspaces: {run['dags']} DAGs, errors {run['errors']}"
                    )
            last = runs[-1]
            results["counts"][str(count)] = {
                "bag_s": statistics.median(r["bag_s"] for r in runs),
                "serialize_s": statistics.median(r["serialize_s"] for r in runs),
                "parse_s": statistics.median(r["bag_s"] + r["serialize_s"] for r in runs),
                "airflow_import_s": statistics.median(r["airflow_import_s"] for r in runs),
                "dags": last["dags"],
                "new_modules": len(last["new_modules"]),
                "new_top_level": sorted({m.split(".")[0] for m in last["new_modules"]}),
                "banned_imported": banned_in(last["all_modules"]),
            }
    base = results["counts"][str(counts[0])]["parse_s"]
    for count in counts:
        entry = results["counts"][str(count)]
        entry["ratio"] = entry["parse_s"] / base if base else float("nan")
    return results


if __name__ == "__main__":
    print(json.dumps(measure(repeats=int(sys.argv[1]) if len(sys.argv) > 1 else 3), indent=1))
