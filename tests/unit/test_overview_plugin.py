"""The overview page's plugin is found in the plugins folder, and loading it is cheap where tasks run.

Every task process loads the plugins folder (for macros), so the plugin module must not import an SDK nor
build its FastAPI app there: the app, and Airflow's API modules with it, come only when the api-server
asks for the plugin's apps. Checked in fresh processes, since this one has imported much already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_LOAD_AS_A_TASK_DOES = """
import json, sys
from airflow.sdk.plugins_manager import _get_plugins
plugins, errors = _get_plugins()
ours = [p for p in plugins if p.name == "entra_provisioning"]
print(json.dumps({
    "found": len(ours),
    "source": str(ours[0].source) if ours else None,
    "errors": {k: str(v) for k, v in errors.items()},
    "views": ours[0].external_views if ours else None,
    "modules": sorted(sys.modules),
}))
"""


def _run(code: str, tmp_path: Path, plugins: Path = REPO / "plugins") -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)]),
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_task_process_finds_the_plugin_without_building_its_app(tmp_path: Path) -> None:
    out = _run(_LOAD_AS_A_TASK_DOES, tmp_path)
    assert out["found"] == 1 and out["errors"] == {}
    assert out["source"] == "$PLUGINS_FOLDER/entra_provisioning_overview.py"
    assert out["views"][0]["url_route"] == "entra-provisioning"
    # .airflowignore keeps the package's modules from being imported one by one as top-level modules.
    assert "config" not in out["modules"] and "tasks" not in out["modules"]
    # Beside an empty plugins folder, the plugin adds our own modules only: no SDK, no FastAPI, none of
    # Airflow's API modules (the app is not built).
    (tmp_path / "empty").mkdir()
    baseline = _run(_LOAD_AS_A_TASK_DOES, tmp_path, plugins=tmp_path / "empty")
    assert baseline["found"] == 0
    added = set(out["modules"]) - set(baseline["modules"])
    assert "entra_provisioning.overview_plugin" in added and "entra_provisioning.overview_app" in added
    assert {
        m for m in added if m.split(".")[0] not in ("entra_provisioning", "entra_provisioning_overview")
    } == set()
    assert "entra_provisioning.tasks" not in added and "entra_provisioning.hooks" not in added


def test_the_api_server_gets_the_app_at_its_prefix(tmp_path: Path) -> None:
    out = _run(
        """
import json
from airflow import plugins_manager
apps, _ = plugins_manager.get_fastapi_plugins()
ours = [a for a in apps if a["name"] == "Entra provisioning overview"]
routes = sorted(r.path for r in ours[0]["app"].routes) if ours else []
print(json.dumps({"prefixes": [a["url_prefix"] for a in ours], "routes": routes}))
""",
        tmp_path,
    )
    assert out["prefixes"] == ["/entra-provisioning"]
    assert out["routes"] == ["/", "/api/workspaces"]
