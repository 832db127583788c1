"""The DAG factory and the DAG file, loaded the way Airflow loads them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from entra_provisioning.config import load_config, parse_config
from entra_provisioning.factory import CONFIG_ENV_VAR, DEFAULT_CONFIG_PATH, build_dag, build_dags

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags"
DAG_FILE = DAGS_FOLDER / "entra_provisioning_dags.py"
CHECK_FILE = DAGS_FOLDER / "entra_provisioning_config_check.py"

# Airflow's own provider discovery imports each provider's ``get_provider_info``; the hooks and SDKs are ours.
HEAVY_PACKAGES = (
    "azure",
    "msgraph",
    "msgraph_core",
    "kiota_abstractions",
    "kiota_http",
    "databricks",
    "airflow.providers.microsoft.azure.hooks",
    "airflow.providers.databricks.hooks",
    # Alerts are sent by the report task, never at parse time (Airflow itself reads every provider's info).
    "airflow.providers.smtp.notifications",
    "airflow.providers.smtp.hooks",
    "entra_provisioning.hooks",
)


def generated_config(count: int) -> str:
    return yaml.safe_dump(
        {
            "defaults": {"runs_per_day": 4},
            "workspaces": [
                {
                    "name": f"ws-{i:04d}",
                    "databricks_instance": f"https://adb-{1000 + i}.{i % 20}.azuredatabricks.net",
                    "entra_groups": [f"Databricks-Group-{i}", f"Databricks-Admins-{i % 7}"],
                    "pat_secret_url": f"https://kv-{i % 5}.vault.azure.net/secrets/pat-{i}",
                    "enabled": i % 10 != 9,
                }
                for i in range(count)
            ],
        }
    )


def dagbag_for(config_file: Path, monkeypatch: pytest.MonkeyPatch, dag_folder: Path = DAG_FILE):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv(CONFIG_ENV_VAR, str(config_file))
    return DagBag(dag_folder=str(dag_folder))


def test_dagbag_loads_one_dag_per_enabled_entry_of_the_shipped_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bag = dagbag_for(DEFAULT_CONFIG_PATH, monkeypatch, DAGS_FOLDER)
    assert bag.import_errors == {}  # the config-check file is quiet when the file is valid
    expected = [ws.dag_id for ws in load_config(DEFAULT_CONFIG_PATH).enabled_workspaces]
    assert sorted(bag.dag_ids) == sorted(expected)


def test_dagbag_with_200_workspaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file = tmp_path / "ws.yaml"
    config_file.write_text(generated_config(200))
    bag = dagbag_for(config_file, monkeypatch)
    assert bag.import_errors == {}
    assert len(bag.dag_ids) == 180  # every tenth entry is disabled
    assert "entra_provisioning__ws-0009" not in bag.dag_ids


def test_bad_entries_get_no_dag_and_are_reported_by_the_config_check_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = yaml.safe_load(generated_config(2))["workspaces"]
    config_file = tmp_path / "bad.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "workspaces": [
                    good[0],
                    {"name": "a", "entra_groups": []},
                    {"name": "B", "databricksInstance": "http://x"},
                    good[1],
                ]
            }
        )
    )
    bag = dagbag_for(config_file, monkeypatch, DAGS_FOLDER)
    # The valid entries keep their DAGs: the workspace DAG file imports cleanly …
    assert sorted(bag.dag_ids) == ["entra_provisioning__ws-0000", "entra_provisioning__ws-0001"]
    # … and the problems are the import error of the check file alone, naming file, entry and field.
    assert list(bag.import_errors) == [str(CHECK_FILE)]
    (error,) = bag.import_errors.values()
    assert "ConfigError: 7 problems in " + str(config_file) in error
    for fragment in (
        "workspaces[1] (name 'a'): field 'databricks_instance': is required",
        "workspaces[1] (name 'a'): field 'entra_groups': must name at least one group",
        "workspaces[2] (name 'B'): field 'name': must be a slug",
        "workspaces[2] (name 'B'): field 'databricks_instance': must be an https:// URL",
        "the 2 valid enabled workspace(s) keep theirs",
    ):
        assert fragment in error


def test_a_dag_file_that_fails_to_import_loses_every_dag_it_defines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why bad entries are skipped rather than raised: on our pinned Airflow, a DAG file that raises
    yields no DAG at all, so one bad entry would take every workspace of the file down (the dag-processor
    then marks them stale: tests/e2e/test_distributed.py). The old DAG file did exactly this."""
    good = yaml.safe_load(generated_config(2))["workspaces"]
    config_file = tmp_path / "ws.yaml"
    config_file.write_text(yaml.safe_dump({"workspaces": [good[0], {**good[1], "scim_concurrency": 0}]}))
    old_design = tmp_path / "dags" / "old_entra_provisioning_dags.py"
    old_design.parent.mkdir()
    old_design.write_text(
        '"""Airflow DAG file as it was: build the DAGs from the all-or-nothing loader."""\n'
        "from entra_provisioning.config import load_config\n"
        "from entra_provisioning.factory import build_dags, config_path\n"
        "globals().update(build_dags(load_config(config_path())))\n"
    )
    old = dagbag_for(config_file, monkeypatch, old_design.parent)
    assert old.dag_ids == []
    assert list(old.import_errors) == [str(old_design)]
    assert "workspaces[1] (name 'ws-0001'): field 'scim_concurrency'" in old.import_errors[str(old_design)]

    new = dagbag_for(config_file, monkeypatch, DAGS_FOLDER)
    assert new.dag_ids == ["entra_provisioning__ws-0000"]
    assert list(new.import_errors) == [str(CHECK_FILE)]
    assert "workspaces[1] (name 'ws-0001'): field 'scim_concurrency'" in new.import_errors[str(CHECK_FILE)]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("workspaces: [\n", "not valid YAML"),
        ("- a list\n", "the file must be a mapping"),
        ("defaults: {scim_concurrency: 0}\nworkspaces: []\n", "field 'defaults.scim_concurrency'"),
        ("settings: {allowed_workspace_hosts: 3}\nworkspaces: []\n", "settings.allowed_workspace_hosts"),
        ("workspace: []\n", "unknown top-level key"),
    ],
)
def test_a_file_broken_as_a_whole_fails_both_dag_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, fragment: str
) -> None:
    good = yaml.safe_dump({"workspaces": yaml.safe_load(generated_config(1))["workspaces"]})
    config_file = tmp_path / "ws.yaml"
    # The valid entry is there too: a broken file as a whole still stops it, loudly.
    config_file.write_text(
        text if text.startswith(("workspaces: [", "- ")) else text.replace("workspaces: []\n", good)
    )
    bag = dagbag_for(config_file, monkeypatch, DAGS_FOLDER)
    assert bag.dag_ids == []
    assert sorted(bag.import_errors) == sorted([str(DAG_FILE), str(CHECK_FILE)])
    for error in bag.import_errors.values():
        assert fragment in error


def test_a_duplicate_name_leaves_the_first_entry_its_dag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = yaml.safe_load(generated_config(2))["workspaces"]
    config_file = tmp_path / "ws.yaml"
    config_file.write_text(yaml.safe_dump({"workspaces": [first, {**second, "name": first["name"]}]}))
    bag = dagbag_for(config_file, monkeypatch, DAGS_FOLDER)
    assert bag.dag_ids == ["entra_provisioning__ws-0000"]
    assert bag.dags["entra_provisioning__ws-0000"].doc_md is not None
    assert first["databricks_instance"] in (bag.dags["entra_provisioning__ws-0000"].doc_md or "")
    (error,) = bag.import_errors.values()
    assert (
        "workspaces[1] (name 'ws-0000'): field 'name': duplicate name (first used by workspaces[0])" in error
    )


def test_dag_shape_and_trigger_form() -> None:
    (ws,) = parse_config(generated_config(1)).workspaces
    dag = build_dag(ws)
    assert dag.dag_id == "entra_provisioning__ws-0000"
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert [t.task_id for t in dag.topological_sort()] == [
        "fetch_token",
        "resolve_members",
        "add_missing_users",
        "report",
    ]
    assert dag.task_dict["add_missing_users"].upstream_task_ids == {"fetch_token", "resolve_members"}
    # report runs whatever happened and never changes the run's outcome; it is the asset alias's producer.
    report = dag.task_dict["report"]
    assert report.is_teardown and report.upstream_task_ids == {"add_missing_users"}
    assert [outlet.name for outlet in report.outlets] == ["entra_provisioning__ws-0000__users_added"]
    # No task infers multiple_outputs from its -> dict annotation (which stores every key twice).
    assert all(task.multiple_outputs is False for task in dag.tasks)
    assert dag.default_args["retries"] == 3
    assert {"entra-provisioning", "databricks"} <= set(dag.tags)
    params = dag.params
    assert params["dry_run"] is False
    assert params["max_new_users_per_run"] is None
    dry = params.get_param("dry_run")
    assert dry.schema["type"] == "boolean" and dry.schema["title"] == "Dry run" and dry.description
    guard = params.get_param("max_new_users_per_run")
    assert guard.schema["type"] == ["null", "integer"] and "500" in (guard.description or "")


def test_an_entry_sets_its_retry_policy() -> None:
    from datetime import timedelta

    raw = yaml.safe_load(generated_config(2))
    raw["workspaces"][1].update({"retries": 0, "retry_delay_seconds": 5})
    default, tuned = (build_dag(ws) for ws in parse_config(yaml.safe_dump(raw)).workspaces)
    assert default.default_args["retry_delay"] == timedelta(minutes=2)
    assert tuned.default_args["retries"] == 0
    assert tuned.default_args["retry_delay"] == timedelta(seconds=5)
    assert all(task.retries == 0 for task in tuned.tasks if task.task_id != "report")
    assert tuned.task_dict["report"].retries == 1  # its own: one retry for unsent alerts


def test_doc_md_names_workspace_groups_and_secret_but_no_token() -> None:
    (ws,) = parse_config(generated_config(1)).workspaces
    doc = build_dag(ws).doc_md or ""
    assert ws.databricks_instance in doc
    assert "Databricks-Group-0" in doc and "Databricks-Admins-0" in doc
    assert "kv-0.vault.azure.net" in doc and "pat-0" in doc
    assert "dapi" not in doc.lower() and "token value" not in doc.lower()


def test_doc_md_of_an_account_entry_names_the_account_and_the_connection() -> None:
    import dataclasses

    (ws,) = parse_config(generated_config(1)).workspaces
    account = dataclasses.replace(
        ws,
        pat_secret_url=None,
        target="account",
        databricks_conn_id="databricks_mi",
        account_id="0f1e2d3c-0000-4000-8000-00000000acc0",
        workspace_id=42,
    )
    doc = build_dag(account).doc_md or ""
    assert "account `0f1e2d3c-0000-4000-8000-00000000acc0`" in doc and "workspace id `42`" in doc
    assert "`databricks_mi`" in doc and "Key Vault" not in doc
    assert "assignments 5/s" in doc and "creates and assigns the members without access" in doc
    assert "USER` assignment" in doc


def test_build_dags_keeps_file_order() -> None:
    config = parse_config(generated_config(30))
    assert list(build_dags(config)) == [ws.dag_id for ws in config.enabled_workspaces]


def test_dag_file_imports_no_sdk_and_does_no_network(tmp_path: Path) -> None:
    """Parse the DAG file in a fresh interpreter with sockets disabled and list what got imported."""
    config_file = tmp_path / "ws.yaml"
    document = yaml.safe_load(generated_config(50))
    document["defaults"]["notify"] = {"email": "ops@contoso.com"}  # alerts configured, nothing sent
    config_file.write_text(yaml.safe_dump(document))
    probe = f"""
import json, socket, sys, runpy
def refuse(*a, **k):
    raise AssertionError("network access at parse time")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
runpy.run_path({str(CHECK_FILE)!r})  # raises if the config had a problem
ns = runpy.run_path({str(DAG_FILE)!r})
dags = [k for k in ns if k.startswith("entra_provisioning__")]
print(json.dumps({{"dags": len(dags), "modules": sorted(sys.modules)}}))
"""
    env = {
        **os.environ,
        CONFIG_ENV_VAR: str(config_file),
        "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["dags"] == 45
    heavy = [m for m in result["modules"] if any(m == p or m.startswith(p + ".") for p in HEAVY_PACKAGES)]
    assert heavy == []


def test_resolve_members_takes_fetch_tokens_facts() -> None:
    """fetch_token's result (with the entry's fingerprint) is resolve_members' input, so it can check it."""
    (ws,) = parse_config(generated_config(1)).workspaces
    dag = build_dag(ws)
    resolve = dag.task_dict["resolve_members"]
    assert resolve.upstream_task_ids == {"fetch_token"}
    (arg,) = resolve.op_args
    assert arg.operator.task_id == "fetch_token" and arg.key == "return_value"


def test_graph_pool_only_when_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = yaml.safe_load(generated_config(2))
    plain = build_dags(parse_config(yaml.safe_dump(document)))
    assert {task.pool for dag in plain.values() for task in dag.tasks} == {"default_pool"}

    document["settings"] = {"graph_pool": "entra_graph", "graph_pool_slots": 3}
    config_file = tmp_path / "ws.yaml"
    config_file.write_text(yaml.safe_dump(document))
    monkeypatch.setenv(CONFIG_ENV_VAR, str(config_file))
    pooled = build_dags()  # the DAG file's way: the file named by the environment
    assert pooled.keys() == plain.keys()
    for dag in pooled.values():
        pools = {task.task_id: task.pool for task in dag.tasks}
        # Only the Graph reads are bounded; the token check, the writes and the report are not held back.
        assert pools == {
            "fetch_token": "default_pool",
            "resolve_members": "entra_graph",
            "add_missing_users": "default_pool",
            "report": "default_pool",
        }
        assert dag.task_dict["resolve_members"].pool_slots == 1
