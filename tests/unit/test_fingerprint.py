"""The workspace entry's fingerprint: one run, one version of its entry (fingerprint.py)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

import pytest
import yaml

from entra_provisioning.config import WorkspaceConfig, parse_config
from entra_provisioning.config_fields import FIELDS
from entra_provisioning.errors import ConfigChangedError, PermanentError
from entra_provisioning.fingerprint import (
    FINGERPRINT_IGNORES,
    FINGERPRINT_KEY,
    check_unchanged,
    config_fingerprint,
)

ENTRY: dict[str, Any] = {
    "name": "analytics",
    "databricks_instance": "https://adb-1234.5.azuredatabricks.net",
    "entra_groups": ["Data Engineers", "Data Scientists"],
    "pat_secret_url": "https://kv-dbx.vault.azure.net/secrets/pat",
}


def entry(text: str) -> WorkspaceConfig:
    (ws,) = parse_config(text).workspaces
    return ws


def yaml_of(**changes: Any) -> str:
    return yaml.safe_dump({"workspaces": [{**ENTRY, **changes}]}, sort_keys=False)


BASE = entry(yaml_of())


def test_is_sixteen_hex_digits_and_stable_across_processes() -> None:
    fingerprint = config_fingerprint(BASE)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    # Another interpreter (another hash seed) gets the same value: workers are other processes.
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, yaml; from entra_provisioning.config import parse_config; "
            "from entra_provisioning.fingerprint import config_fingerprint; "
            "print(config_fingerprint(parse_config(sys.stdin.read()).workspaces[0]))",
        ],
        input=yaml_of(),
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", **_pythonpath()},
    )
    assert child.stdout.strip() == fingerprint


def _pythonpath() -> dict[str, str]:
    import os

    return {"PYTHONPATH": os.pathsep.join(sys.path), "PATH": os.environ.get("PATH", "")}


@pytest.mark.parametrize(
    "text",
    [
        # Key order in the file.
        yaml.safe_dump({"workspaces": [dict(reversed(list(ENTRY.items())))]}, sort_keys=False),
        # The old script's alias instead of the field name.
        yaml.safe_dump(
            {
                "workspaces": [
                    {
                        **{k: v for k, v in ENTRY.items() if k != "entra_groups"},
                        "accessGroups": ENTRY["entra_groups"],
                    }
                ]
            }
        ),
        # A default written out, in the entry or in defaults.
        yaml_of(max_new_users_per_run=500, target="workspace"),
        yaml.safe_dump({"defaults": {"user_name_attribute": "userPrincipalName"}, "workspaces": [ENTRY]}),
        # The order of the groups: the union of their members is the same.
        yaml_of(entra_groups=list(reversed(ENTRY["entra_groups"]))),
        # Fields that decide when, how fast or who is told, not what is written.
        yaml_of(runs_per_day=24, tags=["finance"], owner="data-platform", description="edited"),
        yaml_of(scim_concurrency=2, scim_max_creates_per_second=1.5, secret_expiry_warning_days=30),
        yaml_of(notify={"email": "ops@example.com"}, schedule="@daily"),
        yaml_of(retries=1, retry_delay_seconds=30),
    ],
    ids=[
        "key-order",
        "alias",
        "default-spelled-out",
        "defaults-block",
        "group-order",
        "ui",
        "pace",
        "when",
        "retries",
    ],
)
def test_unchanged_by_what_does_not_change_what_a_run_writes(text: str) -> None:
    assert config_fingerprint(entry(text)) == config_fingerprint(BASE)


@pytest.mark.parametrize(
    "changes",
    [
        {"entra_groups": ["Data Engineers"]},  # a group removed
        {"entra_groups": [*ENTRY["entra_groups"], "Contractors"]},  # a group added
        {"entra_groups": ["Data Engineers", "data scientists"]},  # a group renamed (case counts at Graph)
        {"databricks_instance": "https://adb-9999.5.azuredatabricks.net"},
        {"pat_secret_url": "https://kv-dbx.vault.azure.net/secrets/other-pat"},
        {"max_new_users_per_run": 10},
        {"user_name_attribute": "mail"},
        {"entitlements": ["workspace-access"]},
        {"mirror_groups": True},
        {"include_service_principals": True},
        {"msgraph_conn_id": "msgraph_other"},
    ],
    ids=",".join,
)
def test_changes_when_what_a_run_writes_changes(changes: dict[str, Any]) -> None:
    assert config_fingerprint(entry(yaml_of(**changes))) != config_fingerprint(BASE)


def test_every_field_is_covered_or_ignored_with_a_reason() -> None:
    """A new field is covered unless someone decides (and says why) that it cannot change what is written."""
    names = {f.name for f in dataclasses.fields(WorkspaceConfig)}
    assert set(FINGERPRINT_IGNORES) <= names  # no stale entries
    assert all(reason.strip() for reason in FINGERPRINT_IGNORES.values())
    for field in names - set(FINGERPRINT_IGNORES):
        value = getattr(BASE, field)
        if isinstance(value, bool):
            other = dataclasses.replace(BASE, **{field: not value})
        elif isinstance(value, int | float) and value is not None:
            other = dataclasses.replace(BASE, **{field: value + 1})
        elif isinstance(value, tuple):
            other = dataclasses.replace(BASE, **{field: (*value, "x")})
        else:
            other = dataclasses.replace(BASE, **{field: f"{value}-changed"})
        assert config_fingerprint(other) != config_fingerprint(BASE), field
    # Every field of the table is a field of the entry (so none escapes the loop above).
    assert set(FIELDS) - {"runs_per_day"} <= names


def test_check_unchanged_passes_the_same_version_and_refuses_another() -> None:
    facts = {"admin_user_name": "admin@contoso.com", FINGERPRINT_KEY: config_fingerprint(BASE)}
    assert check_unchanged(BASE, facts, "add_missing_users") == facts[FINGERPRINT_KEY]
    changed = entry(yaml_of(entra_groups=["Everyone"]))
    with pytest.raises(ConfigChangedError) as caught:
        check_unchanged(changed, facts, "add_missing_users")
    assert isinstance(caught.value, PermanentError) and caught.value.retryable is False
    message = str(caught.value)
    assert "'analytics' changed during the run" in message
    assert "add_missing_users stopped before reading or writing anything" in message
    assert "the next run will use the new version" in message
    assert config_fingerprint(BASE) in message and config_fingerprint(changed) in message


def test_check_unchanged_without_a_recorded_fingerprint_has_nothing_to_compare() -> None:
    assert check_unchanged(BASE, {"admin_user_name": "admin@contoso.com"}, "resolve_members") is None
