"""The field table and what is generated from it: the JSON Schema, docs/configuration.md's tables, the loader's
defaults. The schema and the loader must agree on the shipped and demo files and on typical mistakes."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from entra_provisioning.cli import main
from entra_provisioning.config import (
    ALIASES,
    DEFAULTS_KEYS,
    ENTRY_KEYS,
    ConfigError,
    WorkspaceConfig,
    parse_config,
    parse_config_report,
)
from entra_provisioning.config_fields import FIELDS, SETTINGS_FIELDS
from entra_provisioning.config_schema import json_schema, markdown_blocks, replace_blocks, schema_text
from entra_provisioning.factory import DEFAULT_CONFIG_PATH

REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILE = REPO / "config" / "workspaces.schema.json"
CONFIGURATION_DOC = REPO / "docs" / "configuration.md"

WS_URL = "https://adb-6234138917436195.15.azuredatabricks.net"
KV_URL = "https://kv-test.vault.azure.net/secrets/dbx-pat"
GOOD_ENTRY: dict[str, Any] = {
    "name": "analytics",
    "databricks_instance": WS_URL,
    "entra_groups": ["Databricks-Group-Test"],
    "pat_secret_url": KV_URL,
}


def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(SCHEMA_FILE.read_text()))


def schema_errors(document: Any) -> list[str]:
    return [error.message for error in validator().iter_errors(document)]


def loader_problems(document: Any) -> list[str]:
    try:
        report = parse_config_report(yaml.safe_dump(document), "ws.yaml")
    except ConfigError as exc:
        return [p.render("ws.yaml") for p in exc.problems]
    return [p.render("ws.yaml") for p in report.problems]


def test_committed_schema_is_current() -> None:
    assert SCHEMA_FILE.read_text() == schema_text(), "run `make schema`"


def test_configuration_doc_tables_are_current() -> None:
    text = CONFIGURATION_DOC.read_text()
    assert replace_blocks(text) == text, "run `make schema`"
    for block in markdown_blocks().values():
        assert block in text


def test_schema_is_draft_07_and_the_shipped_config_points_editors_at_it() -> None:
    jsonschema.Draft7Validator.check_schema(json_schema())
    assert json_schema()["$schema"] == "http://json-schema.org/draft-07/schema#"
    first = DEFAULT_CONFIG_PATH.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=./workspaces.schema.json"
    assert (DEFAULT_CONFIG_PATH.parent / "workspaces.schema.json").exists()


def test_shipped_and_demo_configs_satisfy_schema_and_loader() -> None:
    from demo.sandbox_airflow import DEMO_WORKSPACES, workspaces_yaml

    endpoints = {
        "workspaces": {
            ws.sandbox_workspace: {"host": f"https://127.0.0.1:{8443 + i}", "workspace_id": str(100 + i)}
            for i, ws in enumerate(DEMO_WORKSPACES)
        },
        "vaults": {
            "kv-demo": {
                "secrets": {
                    ws.secret: f"https://127.0.0.1:9443/secrets/{ws.secret}"
                    for ws in DEMO_WORKSPACES
                    if ws.secret
                }
            }
        },
        "account": {"host": "https://127.0.0.1:9444", "account_id": "0f1e2d3c-0000-4000-8000-00000000acc0"},
        "identities": {"airflow-mi": {"client_id": "5c1a8f0e-0000-4000-8000-0000000000a1"}},
    }
    texts = {
        "shipped": DEFAULT_CONFIG_PATH.read_text(),
        "demo": workspaces_yaml(endpoints),
        "demo, every minute": workspaces_yaml(endpoints, defaults={"schedule": "* * * * *"}),
    }
    for label, text in texts.items():
        assert schema_errors(yaml.safe_load(text)) == [], label
        assert parse_config(text, label).workspaces, label


def test_minimal_entry_gets_the_table_defaults() -> None:
    (ws,) = parse_config(yaml.safe_dump({"workspaces": [GOOD_ENTRY]})).workspaces
    for spec in FIELDS.values():
        if spec.has_default and spec.name not in ("runs_per_day", *GOOD_ENTRY):
            assert getattr(ws, spec.name) == spec.default, spec.name
            # The dataclass's own defaults (used by tests and tools) come from the table too.
            assert WorkspaceConfig.__dataclass_fields__[spec.name].default == spec.default, spec.name
    assert set(FIELDS) == ENTRY_KEYS
    assert {f.name for f in FIELDS.values() if f.in_defaults} == DEFAULTS_KEYS
    assert ALIASES == {
        "databricksInstance": "databricks_instance",
        "accessGroups": "entra_groups",
        "scimToken": "pat_secret_url",
    }
    settings = parse_config(yaml.safe_dump({"workspaces": [GOOD_ENTRY]})).settings
    for spec in SETTINGS_FIELDS.values():
        assert getattr(settings, spec.name) == spec.default


def document(
    entry_changes: dict[str, Any] | None = None, drop: tuple[str, ...] = (), **top: Any
) -> dict[str, Any]:
    entry = {k: v for k, v in copy.deepcopy(GOOD_ENTRY).items() if k not in drop}
    entry.update(entry_changes or {})
    return {**top, "workspaces": [entry]}


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (document({"scim_concurrency": 0}), "scim_concurrency"),
        (document({"scim_concurrency": 65}), "scim_concurrency"),
        (document({"scim_max_creates_per_second": 0}), "scim_max_creates_per_second"),
        (document({"colour": "blue"}), "colour"),
        (document({"databricks_instance": "http://adb-1.1.azuredatabricks.net"}), "databricks_instance"),
        (document({"databricks_instance": f"{WS_URL}/api/2.0"}), "databricks_instance"),
        (document({"pat_secret_url": "https://kv.vault.azure.net/keys/k"}), "pat_secret_url"),
        (document({"runs_per_day": 50}), "runs_per_day"),
        (document({"runs_per_day": 0}), "runs_per_day"),
        (document({"schedule": "@daily", "runs_per_day": 2}), "schedule"),
        (document({"schedule": "every day"}), "schedule"),
        (document({"databricksInstance": WS_URL}), "databricks_instance"),  # the later key of the two
        (document(drop=("entra_groups",)), "entra_groups"),
        (document(drop=("pat_secret_url",)), "pat_secret_url"),
        (document({"entra_groups": []}), "entra_groups"),
        (document({"user_name_attribute": "displayName"}), "user_name_attribute"),
        (document({"tags": "one"}), "tags"),
        (document({"name": "Bad Name"}), "name"),
        (document({"enabled": "yes"}), "enabled"),
        (document({"owner": " "}), "owner"),
        (document({"max_new_users_per_run": -1}), "max_new_users_per_run"),
        (document(defaults={"name": "x"}), "name"),
        (document(settings={"allowed_workspace_hosts": ["http://x"]}), "settings.allowed_workspace_hosts"),
    ],
)
def test_typical_mistakes_are_refused_by_schema_and_loader(doc: dict[str, Any], field: str) -> None:
    assert schema_errors(doc), "the schema accepted it"
    problems = loader_problems(doc)
    assert any(f"field {field!r}" in p for p in problems), problems
    assert not any("its alias 'databricks_instance'" in p for p in problems), problems


@pytest.mark.parametrize(
    "doc",
    [
        document(),
        document(
            {"databricksInstance": WS_URL, "accessGroups": "One group", "scimToken": KV_URL},
            drop=tuple(GOOD_ENTRY)[1:],
        ),
        document({"entra_groups": "a single group"}),
        document(drop=("entra_groups",), defaults={"entra_groups": ["Everyone-Group"]}),
        document(drop=("entra_groups",), defaults={"accessGroups": "Everyone-Group"}),
        document({"schedule": None, "max_new_users_per_run": None, "description": None}),
        document({"runs_per_day": 96, "tags": ["team:data"], "scim_max_creates_per_second": 0.5}),
        document({"pat_secret_url": KV_URL + "/0123456789abcdef0123456789abcdef"}),
        document({"schedule": "15 */2 * * *"}, defaults={"runs_per_day": 2}),
        {"settings": None, "defaults": None, "workspaces": []},
    ],
)
def test_good_variants_are_accepted_by_schema_and_loader(doc: dict[str, Any]) -> None:
    assert schema_errors(doc) == []
    assert loader_problems(doc) == []


def test_validate_lists_every_problem_and_what_still_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "ws.yaml"
    config_file.write_text(
        yaml.safe_dump({"workspaces": [GOOD_ENTRY, {**GOOD_ENTRY, "name": "b", "scim_concurrency": 0}]})
    )
    assert main(["validate", str(config_file)]) == 1
    out, err = capsys.readouterr()
    assert (
        f"{config_file}: workspaces[1] (name 'b'): field 'scim_concurrency': must be between 1 and 64, got 0"
        in err
    )
    assert "1 entry rejected (no DAG); the other 1 workspace(s) are valid, 1 enabled" in out
    assert "entra_provisioning__analytics" in out
    # The deployment start-up check lists the same problem but lets the valid entries run.
    assert main(["validate", "--allow-bad-entries", str(config_file)]) == 0
    assert "field 'scim_concurrency': must be between 1 and 64" in capsys.readouterr().err

    config_file.write_text("- not a mapping\n")
    assert main(["validate", str(config_file)]) == 1
    assert "unusable as a whole: Airflow builds no DAG from it" in capsys.readouterr().err
    assert main(["validate", "--allow-bad-entries", str(config_file)]) == 1


def _make_recipe(target: str) -> list[str]:
    """The arguments after ``$(PY) -m entra_provisioning`` in the Makefile's recipe for ``target``."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = lines[start + 1].strip()
    prefix = "$(PY) -m entra_provisioning "
    assert recipe.startswith(prefix), recipe
    return recipe[len(prefix) :].split()


def test_make_schema_check_passes_on_the_committed_files() -> None:
    """``make schema``'s own command line, with ``--check``: it would change nothing."""
    args = _make_recipe("schema")
    assert args == ["schema", "--write", "config/workspaces.schema.json", "--docs", "docs/configuration.md"]
    result = subprocess.run(
        [sys.executable, "-m", "entra_provisioning", *args, "--check"],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO / "plugins"), "PATH": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_validate_commands_on_the_configuration_page(tmp_path: Path) -> None:
    """The three commands of docs/configuration.md "Validating the file", as given there."""
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"workspaces": [GOOD_ENTRY]}))
    more = tmp_path / "more.yaml"
    more.write_text(yaml.safe_dump({"workspaces": [{**GOOD_ENTRY, "name": "b", "scim_concurrency": 0}]}))
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    commands = [
        [sys.executable, "-m", "entra_provisioning", "validate", str(good), str(more)],
    ]
    if shutil.which("make") is not None:
        # The Makefile's targets with this interpreter and without the install step.
        make = ["make", "--no-print-directory", f"PY={sys.executable}", "STAMP="]
        commands += [[*make, "validate-config"], [*make, "validate-config", f"CONFIG={good}"]]
    results = [
        subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        for command in commands
    ]
    both, *made = results
    assert both.returncode == 1
    assert f"{good}: OK, 1 workspace(s), 1 enabled" in both.stdout
    assert "field 'scim_concurrency': must be between 1 and 64, got 0" in both.stderr
    for result in made:
        assert result.returncode == 0, result.stdout + result.stderr
        assert ": OK, " in result.stdout
