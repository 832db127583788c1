"""The workspaces file: parsing, defaults, aliases and every validation message."""

from __future__ import annotations

import itertools
import textwrap

import pytest

from entra_provisioning.config import (
    DEFAULT_RUNS_PER_DAY,
    MAX_CONFIG_BYTES,
    ConfigError,
    is_object_id,
    load_config,
    load_config_report,
    parse_config,
    parse_config_report,
    parse_secret_url,
    runs_per_day_to_cron,
)

WS_URL = "https://adb-6234138917436195.15.azuredatabricks.net"
KV_URL = "https://kv-test.vault.azure.net/secrets/dbx-pat"


def entry(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "analytics",
        "databricks_instance": WS_URL,
        "entra_groups": ["Databricks-Group-Test"],
        "pat_secret_url": KV_URL,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def render(workspaces: list[dict[str, object]], **top: object) -> str:
    import yaml

    return yaml.safe_dump({**top, "workspaces": workspaces}, sort_keys=False)


def problems_of(text: str, path: str = "ws.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, path)
    return [p.render(path) for p in info.value.problems]


def test_minimal_entry_gets_documented_defaults() -> None:
    config = parse_config(render([entry()]))
    (ws,) = config.workspaces
    assert ws.dag_id == "entra_provisioning__analytics"
    assert ws.databricks_instance == WS_URL
    assert ws.entra_groups == ("Databricks-Group-Test",)
    assert ws.enabled is True
    assert ws.azure_conn_id == "azure_default"
    assert ws.msgraph_conn_id == "msgraph_default"
    assert ws.user_name_attribute == "userPrincipalName"
    assert ws.max_new_users_per_run == 500
    assert ws.scim_concurrency == 4
    assert ws.schedule == runs_per_day_to_cron(DEFAULT_RUNS_PER_DAY, "analytics")
    assert ws.schedule is not None and ws.schedule.split()[1] == "*/6"


def test_defaults_block_is_merged_and_entry_wins() -> None:
    text = render(
        [entry(), entry(name="other", owner="team-b", schedule="@daily")],
        defaults={"owner": "platform", "runs_per_day": 2, "tags": ["x"], "max_new_users_per_run": None},
    )
    first, second = parse_config(text).workspaces
    assert (first.owner, second.owner) == ("platform", "team-b")
    assert first.schedule is not None and first.schedule.split()[1] == "*/12"
    # An entry's own schedule replaces the default runs_per_day instead of clashing with it.
    assert second.schedule == "@daily"
    assert first.tags == ("x",)
    assert first.max_new_users_per_run is None


def test_script_parameter_names_are_accepted_as_aliases() -> None:
    text = textwrap.dedent(
        f"""
        workspaces:
          - name: pasted
            databricksInstance: "{WS_URL}"
            accessGroups: "Databricks-Group-Test"
            scimToken: "{KV_URL}"
        """
    )
    (ws,) = parse_config(text).workspaces
    assert ws.databricks_instance == WS_URL
    assert ws.entra_groups == ("Databricks-Group-Test",)
    assert ws.pat_secret_url == KV_URL


def test_alias_and_canonical_name_together_is_an_error() -> None:
    (msg,) = problems_of(render([entry(databricksInstance=WS_URL)]))
    assert "workspaces[0] (name 'analytics')" in msg
    assert "databricksInstance" in msg and "given twice" in msg


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"colour": "blue"}, "colour", "unknown key"),
        ({"entra_group": ["x"]}, "entra_group", "did you mean 'entra_groups'"),
        ({"name": None}, "name", "is required"),
        ({"pat_secret_url": None}, "pat_secret_url", "is required (alias: scimToken)"),
        ({"name": "Bad Name"}, "name", "must be a slug"),
        ({"databricks_instance": "http://adb-1.1.azuredatabricks.net"}, "databricks_instance", "https://"),
        (
            {"databricks_instance": "https://evil.example.com"},
            "databricks_instance",
            "allowed_workspace_hosts",
        ),
        ({"databricks_instance": f"{WS_URL}/api/2.0"}, "databricks_instance", "without a path"),
        ({"databricks_instance": 42}, "databricks_instance", "must be a string"),
        ({"pat_secret_url": "https://kv.vault.azure.net/keys/k"}, "pat_secret_url", "Key Vault secret URL"),
        (
            {"pat_secret_url": "https://evil.example.com/secrets/x"},
            "pat_secret_url",
            "allowed_key_vault_hosts",
        ),
        ({"pat_secret_url": "http://kv.vault.azure.net/secrets/x"}, "pat_secret_url", "https://"),
        ({"entra_groups": []}, "entra_groups", "at least one group"),
        ({"entra_groups": [""]}, "entra_groups", "non-empty string"),
        ({"entra_groups": {"a": 1}}, "entra_groups", "list of strings"),
        ({"schedule": "61 * * * *"}, "schedule", "not a valid cron"),
        ({"schedule": "every day"}, "schedule", "not a valid cron"),
        ({"schedule": 5}, "schedule", "must be a cron expression"),
        ({"schedule": "@daily", "runs_per_day": 2}, "schedule", "not both"),
        ({"runs_per_day": 7.5}, "runs_per_day", "must be an integer"),
        ({"runs_per_day": 0}, "runs_per_day", "between 1 and 1440"),
        ({"runs_per_day": 50}, "runs_per_day", "divides an hour"),
        ({"enabled": "yes"}, "enabled", "true or false"),
        ({"max_new_users_per_run": -1}, "max_new_users_per_run", "at least 0"),
        ({"max_new_users_per_run": True}, "max_new_users_per_run", "must be an integer"),
        ({"scim_concurrency": 0}, "scim_concurrency", "between 1 and 64"),
        ({"scim_max_creates_per_second": 0}, "scim_max_creates_per_second", "above 0"),
        ({"user_name_attribute": "displayName"}, "user_name_attribute", "must be one of"),
        ({"tags": "one"}, "tags", "list of strings"),
        ({"owner": ""}, "owner", "non-empty string"),
    ],
)
def test_each_bad_field_is_named_with_file_and_entry(
    overrides: dict[str, object], field: str, fragment: str
) -> None:
    messages = problems_of(render([entry(**overrides)]), "config/ws.yaml")
    matching = [m for m in messages if f"field {field!r}" in m and fragment in m]
    assert matching, messages
    assert matching[0].startswith("config/ws.yaml: workspaces[0]")


def test_all_problems_are_reported_at_once() -> None:
    text = render(
        [
            entry(),
            entry(name="analytics"),  # duplicate
            entry(name="second", databricks_instance="http://x.azuredatabricks.net", entra_groups=[]),
        ]
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "ws.yaml")
    rendered = str(info.value)
    assert "3 problems in ws.yaml" in rendered
    assert (
        "workspaces[1] (name 'analytics'): field 'name': duplicate name (first used by workspaces[0])"
        in rendered
    )
    assert "workspaces[2] (name 'second'): field 'databricks_instance'" in rendered
    assert "workspaces[2] (name 'second'): field 'entra_groups'" in rendered


def test_settings_allow_list_widens_hosts_for_sandbox_and_sovereign_clouds() -> None:
    text = render(
        [
            entry(
                databricks_instance="https://127.0.0.1:8443",
                pat_secret_url="https://127.0.0.1:8444/secrets/pat",
            )
        ],
        settings={"allowed_workspace_hosts": ["127.0.0.1"], "allowed_key_vault_hosts": ["127.0.0.1"]},
    )
    (ws,) = parse_config(text).workspaces
    assert ws.workspace_host == "127.0.0.1:8443"
    assert ws.secret.vault_url == "https://127.0.0.1:8444"
    sovereign = render(
        [entry(databricks_instance="https://adb-1.2.databricks.azure.cn")],
        settings={"allowed_workspace_hosts": ["*.databricks.azure.cn"]},
    )
    assert parse_config(sovereign).workspaces[0].workspace_host == "adb-1.2.databricks.azure.cn"
    # Widening one cloud does not keep the default: the list is explicit.
    assert problems_of(render([entry()], settings={"allowed_workspace_hosts": ["*.databricks.azure.cn"]}))


def test_bad_settings_and_top_level_are_reported() -> None:
    messages = problems_of(render([entry()], settings={"allowed_workspace_hosts": ["http://x"], "other": 1}))
    assert any("settings.allowed_workspace_hosts" in m for m in messages)
    assert any("settings.other" in m and "unknown key" in m for m in messages)
    assert any("unknown top-level key" in m for m in problems_of(render([entry()], extra=1)))
    assert any("'workspaces'" in m for m in problems_of("defaults: {}\n"))
    assert problems_of("- just\n- a list\n") == [
        "ws.yaml: the file must be a mapping with a 'workspaces' list"
    ]


def test_yaml_errors_duplicate_keys_and_alias_bombs_are_refused_cheaply() -> None:
    (msg,) = problems_of("workspaces: [\n")
    assert msg.startswith("ws.yaml: not valid YAML")
    dup = f"workspaces:\n  - name: a\n    name: b\n    databricks_instance: {WS_URL}\n"
    assert "duplicate key 'name'" in problems_of(dup)[0]
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 12):
        prev = chr(ord("a") + level - 1)
        cur = chr(ord("a") + level)
        bomb.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    assert "YAML aliases" in problems_of("\n".join(bomb))[0]


def test_load_config_names_unreadable_and_oversized_files(tmp_path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read the file"):
        load_config(missing)
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"#" * (MAX_CONFIG_BYTES + 10))
    with pytest.raises(ConfigError, match="larger than"):
        load_config(huge)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


def test_disabled_entries_are_kept_but_not_enabled() -> None:
    config = parse_config(render([entry(), entry(name="off", enabled=False)]))
    assert [ws.name for ws in config.workspaces] == ["analytics", "off"]
    assert [ws.name for ws in config.enabled_workspaces] == ["analytics"]


@pytest.mark.parametrize("runs", [1, 2, 3, 4, 5, 6, 7, 8, 12, 24, 48, 96, 288])
def test_runs_per_day_are_evenly_spaced(runs: int) -> None:
    from datetime import datetime

    from croniter import croniter

    cron = runs_per_day_to_cron(runs, "ws")
    it = croniter(cron, datetime(2026, 1, 1))
    fires = [it.get_next(datetime) for _ in range(runs * 3)]
    day = [f for f in fires if f.date() == datetime(2026, 1, 2).date()]
    assert len(day) == runs
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(fires)}
    # Exact spacing where the day divides evenly; within an hour of even otherwise.
    assert max(gaps) - min(gaps) <= (0 if 24 % runs == 0 or runs > 24 else 3600)


def test_runs_per_day_minute_is_spread_by_name() -> None:
    minutes = {runs_per_day_to_cron(4, f"ws-{i}").split()[0] for i in range(50)}
    assert len(minutes) > 10


def test_secret_url_parsing() -> None:
    ref = parse_secret_url("https://kv.vault.azure.net/secrets/pat/0123456789abcdef0123456789abcdef")
    assert (ref.vault_url, ref.name, ref.version) == (
        "https://kv.vault.azure.net",
        "pat",
        "0123456789abcdef0123456789abcdef",
    )
    assert parse_secret_url("https://kv.vault.azure.net/secrets/pat").version is None
    with pytest.raises(ValueError, match="Key Vault secret URL"):
        parse_secret_url("https://kv.vault.azure.net/secrets/pat/notahexversion")


def test_object_ids_are_told_apart_from_names() -> None:
    assert is_object_id("0f8fad5b-d9cb-469f-a165-70867728950e")
    assert not is_object_id("Databricks-Group-Test")
    assert not is_object_id("0f8fad5bd9cb469fa16570867728950e")


def test_shipped_config_is_valid() -> None:
    from entra_provisioning.factory import DEFAULT_CONFIG_PATH

    config = load_config(DEFAULT_CONFIG_PATH)
    assert config.workspaces and config.enabled_workspaces


def test_report_keeps_valid_entries_and_names_the_bad_ones() -> None:
    text = render([entry(), entry(name="bad", scim_concurrency=0), entry(name="third", enabled=False)])
    report = parse_config_report(text, "ws.yaml")
    assert [ws.name for ws in report.config.workspaces] == ["analytics", "third"]
    assert report.rejected == ((1, "bad"),)
    (problem,) = report.problems
    assert problem.render("ws.yaml") == (
        "ws.yaml: workspaces[1] (name 'bad'): field 'scim_concurrency': must be between 1 and 64, got 0"
    )
    # The all-or-nothing loader refuses the same text with the same message.
    assert problems_of(text) == [problem.render("ws.yaml")]


def test_report_refuses_a_file_broken_as_a_whole_with_every_problem() -> None:
    text = render([entry(), entry(name="bad", owner="")], defaults={"scim_concurrency": 99})
    with pytest.raises(ConfigError) as info:
        parse_config_report(text, "ws.yaml")
    rendered = [p.render("ws.yaml") for p in info.value.problems]
    # A bad default is reported once, at the defaults block, not once per entry that inherits it …
    assert rendered[0] == "ws.yaml: field 'defaults.scim_concurrency': must be between 1 and 64, got 99"
    # … and the entries' own problems are still listed.
    assert rendered[1:] == [
        "ws.yaml: workspaces[1] (name 'bad'): field 'owner': must be a non-empty string, got ''"
    ]


def test_the_first_entry_keeps_a_duplicated_name_even_when_it_is_broken() -> None:
    text = render([entry(scim_concurrency=0), entry(), entry(name="other")])
    report = parse_config_report(text, "ws.yaml")
    assert [ws.name for ws in report.config.workspaces] == ["other"]
    assert [p.render("ws.yaml") for p in report.problems] == [
        "ws.yaml: workspaces[0] (name 'analytics'): field 'scim_concurrency': must be between 1 and 64, got 0",
        "ws.yaml: workspaces[1] (name 'analytics'): field 'name': duplicate name (first used by workspaces[0])",
    ]


def test_load_config_report_reads_files(tmp_path) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text(render([entry(), entry(name="x", tags="one")]))
    report = load_config_report(path)
    assert report.config.path == str(path) and len(report.config.workspaces) == 1
    error = report.error(note="a closing note")
    assert error is not None and str(error).endswith("\na closing note")


def test_a_set_as_a_mapping_key_is_a_config_error() -> None:
    """``!!set`` makes a key a set: ``key in seen`` tolerates it (looked up as a frozenset), ``add`` does not."""
    assert problems_of("!!set  workspaces:") == [
        'ws.yaml: not valid YAML: mapping keys must be plain values in "<unicode string>", line 1, column 1'
    ]
