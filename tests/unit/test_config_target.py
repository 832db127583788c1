"""``target``, credentials and the account fields: what combines, and every combination that does not."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from entra_provisioning.config import ConfigError, parse_config, workspace_id_from_host

WS_URL = "https://adb-6234138917436195.15.azuredatabricks.net"
KV_URL = "https://kv-test.vault.azure.net/secrets/dbx-pat"
ACCOUNT_ID = "0F1E2D3C-0000-4000-8000-00000000ACC0"


def entry(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "analytics", "databricks_instance": WS_URL, "entra_groups": ["G"]}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def account_entry(**overrides: Any) -> dict[str, Any]:
    return entry(
        **{"target": "account", "databricks_conn_id": "databricks_sp", "account_id": ACCOUNT_ID, **overrides}
    )


def load(*entries: dict[str, Any], **top: Any) -> Any:
    return parse_config(yaml.safe_dump({**top, "workspaces": list(entries)}), "ws.yaml")


def problems(*entries: dict[str, Any], **top: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(*entries, **top)
    return [p.render("ws.yaml") for p in info.value.problems]


def test_workspace_target_with_a_pat_is_todays_entry() -> None:
    (ws,) = load(entry(pat_secret_url=KV_URL)).workspaces
    assert (ws.target, ws.is_account, ws.databricks_conn_id, ws.account_id, ws.workspace_id) == (
        "workspace",
        False,
        None,
        None,
        None,
    )
    assert ws.secret is not None and ws.secret.name == "dbx-pat"


def test_workspace_target_with_a_connection_needs_no_pat() -> None:
    (ws,) = load(entry(databricks_conn_id="databricks_sp")).workspaces
    assert ws.databricks_conn_id == "databricks_sp"
    assert ws.pat_secret_url is None and ws.secret is None


def test_account_target_derives_the_workspace_id_and_lower_cases_the_account_id() -> None:
    (ws,) = load(account_entry()).workspaces
    assert ws.is_account
    assert ws.workspace_id == 6234138917436195
    assert ws.account_id == ACCOUNT_ID.lower()
    assert ws.account_host == "https://accounts.azuredatabricks.net"


def test_workspace_id_given_for_a_host_that_does_not_carry_it() -> None:
    (ws,) = load(
        account_entry(databricks_instance="https://127.0.0.1:8443", workspace_id=42),
        settings={"allowed_workspace_hosts": ["127.0.0.1"]},
    ).workspaces
    assert ws.workspace_id == 42


def test_workspace_id_from_host() -> None:
    assert workspace_id_from_host(WS_URL) == 6234138917436195
    assert workspace_id_from_host("https://adb-1.2.azuredatabricks.net/") == 1
    assert workspace_id_from_host("https://127.0.0.1:8443") is None
    assert workspace_id_from_host("https://myws.cloud.databricks.com") is None


@pytest.mark.parametrize(
    ("entries", "top", "expected"),
    [
        ([entry()], {}, "field 'pat_secret_url': is required (alias: scimToken), unless databricks_conn_id"),
        (
            [entry(pat_secret_url=KV_URL, databricks_conn_id="c")],
            {},
            "field 'databricks_conn_id': give either pat_secret_url (alias: scimToken) or databricks_conn_id",
        ),
        (
            [account_entry(pat_secret_url=KV_URL, databricks_conn_id=None)],
            {},
            "field 'pat_secret_url': a workspace PAT cannot call the account API",
        ),
        (
            [entry(target="account", pat_secret_url=KV_URL, account_id=ACCOUNT_ID)],
            {},
            "field 'databricks_conn_id': is required with target: account",
        ),
        ([account_entry(account_id=None)], {}, "field 'account_id': is required with target: account"),
        ([account_entry(account_id="acc-1")], {}, "field 'account_id': must be a GUID"),
        (
            [account_entry(databricks_instance="https://127.0.0.1:8443")],
            {"settings": {"allowed_workspace_hosts": ["127.0.0.1"]}},
            "field 'workspace_id': is required with target: account when databricks_instance",
        ),
        (
            [account_entry(workspace_id=7)],
            {},
            "field 'workspace_id': is 7, but databricks_instance names workspace 6234138917436195",
        ),
        (
            [entry(pat_secret_url=KV_URL, account_id=ACCOUNT_ID)],
            {},
            "field 'account_id': is only used with target: account",
        ),
        (
            [entry(pat_secret_url=KV_URL, workspace_id=5)],
            {},
            "field 'workspace_id': is only used with target: account",
        ),
        (
            [account_entry(account_host="https://accounts.example.com")],
            {},
            "field 'account_host': host 'accounts.example.com' is not in settings.allowed_account_hosts",
        ),
        (
            [account_entry(account_host="http://accounts.azuredatabricks.net")],
            {},
            "field 'account_host': must be an https:// URL",
        ),
        ([entry(target="accounts", pat_secret_url=KV_URL)], {}, "field 'target': must be one of"),
        (
            [account_entry(entitlements=["allow-cluster-create"])],
            {},
            "field 'entitlements': cannot be set with target: account",
        ),
        (
            [entry(pat_secret_url=KV_URL, entitlements=["sudo"])],
            {},
            "field 'entitlements': each item must be one of",
        ),
        (
            [entry(pat_secret_url=KV_URL, remove_stale_members=True)],
            {},
            "field 'remove_stale_members': is only used with mirror_groups: true",
        ),
        (
            [entry(pat_secret_url=KV_URL, mirror_groups=True, assign_users_directly=True)],
            {},
            "field 'assign_users_directly': is only used with target: account",
        ),
        (
            [entry(pat_secret_url=KV_URL, mirror_groups=True, group_name="{display_name}-{owner}")],
            {},
            "field 'group_name': may use only {display_name} and {object_id}, not owner",
        ),
        (
            [entry(pat_secret_url=KV_URL, mirror_groups=True, group_name="{display_name")],
            {},
            "field 'group_name': is not a valid template",
        ),
        (
            [account_entry(account_max_assignments_per_second=0)],
            {},
            "field 'account_max_assignments_per_second': must be a number above 0",
        ),
    ],
)
def test_combinations_that_make_no_sense_are_named(
    entries: list[dict[str, Any]], top: dict[str, Any], expected: str
) -> None:
    found = problems(*entries, **top)
    assert any(expected in line for line in found), found
    assert all(line.startswith("ws.yaml: workspaces[0] (name 'analytics'): field ") for line in found), found


def test_defaults_serve_both_kinds_of_entry() -> None:
    """A default connection and account give way to an entry's own PAT and ``target: workspace``."""
    config = load(
        account_entry(name="fed", target=None, databricks_conn_id=None, account_id=None),
        entry(name="legacy", pat_secret_url=KV_URL, target="workspace"),
        defaults={"target": "account", "databricks_conn_id": "databricks_sp", "account_id": ACCOUNT_ID},
    )
    fed, legacy = config.workspaces
    assert (fed.target, fed.databricks_conn_id, fed.account_id) == (
        "account",
        "databricks_sp",
        ACCOUNT_ID.lower(),
    )
    assert (legacy.target, legacy.databricks_conn_id, legacy.account_id) == ("workspace", None, None)


def test_account_hosts_can_be_widened_for_other_clouds() -> None:
    (ws,) = load(
        account_entry(account_host="https://accounts.azuredatabricks.us/"),
        settings={"allowed_account_hosts": ["accounts.azuredatabricks.us"]},
    ).workspaces
    assert ws.account_host == "https://accounts.azuredatabricks.us"


def test_group_options_load_with_their_defaults() -> None:
    (ws,) = load(
        entry(pat_secret_url=KV_URL, mirror_groups=True, entitlements=["workspace-consume"])
    ).workspaces
    assert (
        ws.mirror_groups,
        ws.group_name,
        ws.group_patch_batch_size,
        ws.max_membership_removals_per_run,
    ) == (
        True,
        "{display_name}",
        100,
        10,
    )
    assert ws.entitlements == ("workspace-consume",) and ws.include_service_principals is False
