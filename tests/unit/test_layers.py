"""The layers point down: entry → factory → tasks → (hooks | plan, summary) → config → shared values → errors.

A hook speaks its system only: it may use the shared value types, URL facts, errors, the retry policy and
the field table's plain defaults, but never the decision layer or the config loader.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

import entra_provisioning
from entra_provisioning import USER_AGENT, __version__

PACKAGE = Path(entra_provisioning.__file__).parent
REPO = PACKAGE.parents[1]

#: What each module may import from the package (besides itself); anything else is an upward arrow.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "retry": {"errors"},
    "identities": set(),
    "urls": set(),
    # The event names of ``notify.events`` are the run events' kinds (run_events imports nothing).
    "config_fields": {"identities", "run_events"},
    "config": {"config_fields", "errors", "identities", "urls"},
    "config_schema": {"config", "config_fields"},
    # One run, one version of its entry: the fingerprint of a loaded entry (pure), and the error it raises.
    "fingerprint": {"config", "errors"},
    "plan": {"errors", "identities"},
    "groups_plan": {"errors", "identities", "plan"},
    # The task layer's helper for service principals and mirrored groups: it drives a hook it is given.
    "group_sync": {"config", "groups_plan", "identities", "plan", "hooks.scim"},
    "summary": {"identities", "plan", "groups_plan"},
    # Watching runs: the counts record, the events and the metrics read from it are pure (metrics' thin
    # emitter imports Airflow inside a function); run_state and reporting are the task side (an Airflow
    # Variable, XComs, the asset alias, sending the metrics).
    "run_record": set(),
    "run_events": set(),
    "metrics": set(),
    "run_state": set(),
    "reporting": {"", "config", "metrics", "notifiers", "retention", "run_events", "run_record", "run_state"},
    # Which runs' return_value XComs to delete (settings.xcom_retention_days): pure, imports nothing.
    "retention": set(),
    # Alerts: the message text is pure; notifiers is the task side (Airflow notifiers, the state Variable).
    "alerts": {"run_events"},
    "notifiers": {"", "alerts", "config", "errors", "run_events", "run_record", "run_state"},
    "hooks": set(),
    "hooks.key_vault": {"", "errors", "hooks", "retry", "urls"},
    "hooks.entra": {"", "errors", "hooks", "identities", "retry"},
    "hooks.databricks_auth": {"", "errors"},
    # The SCIM hook takes its two defaults (concurrency, pace) from the field table, where they are
    # declared once; the table is plain facts and imports nothing but identities.
    "hooks.scim": {"", "config_fields", "errors", "identities", "retry", "urls", "hooks.scim_groups"},
    "hooks.scim_groups": {"identities", "hooks.scim"},
    # The overview page (Airflow UI plugin): reads Airflow's metadata, never a hook or the task layer.
    "overview_data": {"config", "config_fields", "run_record"},
    "overview_app": {"config", "factory", "overview_data"},
    "overview_plugin": {"overview_app"},
}


def package_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name == "entra_provisioning":
                found.add("")
            elif name.startswith("entra_provisioning."):
                found.add(name.removeprefix("entra_provisioning."))
    return found


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_imports_only_point_down(module: str) -> None:
    path = PACKAGE / (module.replace(".", "/") + ".py")
    if module == "hooks":
        path = PACKAGE / "hooks" / "__init__.py"
    assert package_imports(path) <= ALLOWED[module], module


def test_every_module_is_placed_in_a_layer() -> None:
    lower = {p.stem if p.parent == PACKAGE else f"hooks.{p.stem}" for p in PACKAGE.rglob("*.py")}
    lower -= {"__init__", "__main__", "hooks.__init__", "cli", "factory", "tasks"}  # the upper layers
    assert lower <= set(ALLOWED), sorted(lower - set(ALLOWED))


def test_one_version_for_package_metadata_and_user_agent() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__
    assert re.fullmatch(r"entra-provisioning/\d+\.\d+\.\d+", USER_AGENT)
    assert USER_AGENT.endswith(__version__)
