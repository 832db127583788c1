"""Hostile and broken workspaces files: the loader either loads them or raises ConfigError naming
file/entry/field, never another exception; bombs and huge files are refused quickly."""

from __future__ import annotations

import copy
import string
import time
import tracemalloc
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from entra_provisioning.config import (
    ENTRY_KEYS,
    MAX_CONFIG_BYTES,
    MAX_YAML_ALIASES,
    ConfigError,
    ProvisioningConfig,
    parse_config,
    parse_config_report,
)

PATH = "hostile/workspaces.yaml"

VALID: dict[str, Any] = {
    "settings": {
        "allowed_workspace_hosts": ["*.azuredatabricks.net"],
        "allowed_key_vault_hosts": ["*.vault.azure.net"],
    },
    "defaults": {"runs_per_day": 4, "max_new_users_per_run": 500},
    "workspaces": [
        {
            "name": "analytics",
            "databricks_instance": "https://adb-6234138917436195.15.azuredatabricks.net",
            "entra_groups": ["Databricks-Group-Test", "O'Brien's \"team\" ü"],
            "pat_secret_url": "https://kv-dbx.vault.azure.net/secrets/adb-pat",
        },
        {
            "name": "sales",
            "databricksInstance": "https://adb-1.2.azuredatabricks.net",
            "accessGroups": "Sales",
            "scimToken": "https://kv-dbx.vault.azure.net/secrets/sales-pat/0123456789abcdef0123456789abcdef",
            "schedule": "@daily",
            "tags": ["sales"],
        },
    ],
}

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(text: str) -> ProvisioningConfig | ConfigError:
    """The property: a config, or a ConfigError whose every problem is located. Anything else fails."""
    try:
        return parse_config(text, PATH)
    except ConfigError as exc:
        assert exc.path == PATH
        assert exc.problems, "a ConfigError must list at least one problem"
        assert str(exc).startswith(f"{len(exc.problems)} problem")
        for problem in exc.problems:
            rendered = problem.render(PATH)
            assert rendered.startswith(f"{PATH}: ")
            assert problem.message.strip()
            if problem.index is not None:
                assert f"workspaces[{problem.index}]" in rendered
            if problem.field is not None:
                assert f"field {problem.field!r}" in rendered
        return exc


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["https://x", "http://adb-1.1.azuredatabricks.net", "@daily", "* * * * *", "", " "]),
)
structures = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(
            st.one_of(st.text(max_size=20), st.sampled_from(sorted(ENTRY_KEYS))), children, max_size=5
        ),
    ),
    max_leaves=30,
)


@FAST
@given(st.text(max_size=400))
def test_any_text_loads_or_is_a_located_config_error(text: str) -> None:
    check(text)


yamlish = st.lists(
    st.sampled_from(
        [
            "workspaces:",
            "settings:",
            "defaults:",
            "  - ",
            "- ",
            "name: ",
            "a",
            "&x ",
            "*x",
            "<<: *x",
            "!!set",
            "!!binary",
            "!!python/object:os.system",
            "{",
            "}",
            "[",
            "]",
            ", ",
            ": ",
            "? ",
            "'",
            '"',
            "\n",
            "  ",
            "\t",
            "#",
            "---",
            "...",
            "%YAML 1.1",
            "null",
            "~",
            "0x1F",
            "1e400",
            ".nan",
            "2001-01-01",
            "|",
            ">",
            "entra_groups: ",
            "databricks_instance: ",
            "pat_secret_url: ",
            "runs_per_day: ",
            "schedule: ",
            "é",
            "\x00",
        ]
    ),
    max_size=60,
).map("".join)


@FAST
@given(yamlish)
def test_yaml_shaped_noise_loads_or_is_a_located_config_error(text: str) -> None:
    check(text)


@FAST
@given(structures)
def test_any_structure_dumped_to_yaml_loads_or_is_a_located_config_error(data: Any) -> None:
    check(yaml.safe_dump(data, allow_unicode=True))
    check(yaml.safe_dump({"workspaces": data}, allow_unicode=True))
    check(yaml.safe_dump({"workspaces": [data], "defaults": data, "settings": data}, allow_unicode=True))


@st.composite
def mutated(draw: st.DrawFn) -> tuple[dict[str, Any], int | None, str | None]:
    """A valid document with one entry field replaced, removed or added; returns (doc, index, key)."""
    doc = copy.deepcopy(VALID)
    index = draw(st.integers(min_value=0, max_value=len(doc["workspaces"]) - 1))
    entry = doc["workspaces"][index]
    key = draw(
        st.one_of(st.sampled_from(sorted(entry)), st.sampled_from(sorted(ENTRY_KEYS)), st.text(max_size=12))
    )
    action = draw(st.sampled_from(["replace", "delete"]))
    if action == "delete":
        entry.pop(key, None)
    else:
        entry[key] = draw(structures)
    return doc, index, key


def faithful_yaml(doc: dict[str, Any]) -> str:
    """``doc`` as YAML, for documents that survive the round trip. PyYAML does not load back every key it
    dumps unchanged (a key holding "\\x85", a YAML line break, comes back as another key); such a document
    differs from the one built beyond the edited entry, so a test about that entry says nothing of it."""
    text = yaml.safe_dump(doc, allow_unicode=True)
    assume(yaml.safe_load(text) == doc)
    return text


@FAST
@given(mutated())
def test_a_broken_entry_is_reported_against_that_entry(
    case: tuple[dict[str, Any], int | None, str | None],
) -> None:
    doc, index, _ = case
    result = check(faithful_yaml(doc))
    if isinstance(result, ConfigError):
        # Only that entry changed, so every problem points at it and names a field.
        for problem in result.problems:
            assert problem.index == index, problem
            assert problem.field is not None, problem


@FAST
@given(mutated())
def test_a_broken_entry_leaves_the_other_entry_its_dag(
    case: tuple[dict[str, Any], int | None, str | None],
) -> None:
    doc, index, _ = case
    other = 1 - (index or 0)
    other_name = VALID["workspaces"][other]["name"]
    report = parse_config_report(faithful_yaml(doc), PATH)
    names = [ws.name for ws in report.config.workspaces]
    claims_other_name = doc["workspaces"][index].get("name") == other_name
    # The untouched entry keeps its DAG, unless the edit made the broken entry claim its name first.
    if not (claims_other_name and index < other):
        assert other_name in names, report.problems
    assert all(p.index == index for p in report.problems), report.problems
    assert [i for i, _ in report.rejected] == ([index] if report.problems else [])


@FAST
@given(st.data())
def test_random_edits_of_valid_yaml_text_load_or_are_located_config_errors(data: st.DataObject) -> None:
    text = yaml.safe_dump(VALID, allow_unicode=True, sort_keys=False)
    for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
        at = data.draw(st.integers(min_value=0, max_value=len(text)))
        edit = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = data.draw(st.text(alphabet=string.printable + "&*!|>'\"é", min_size=1, max_size=4))
        if edit == "insert":
            text = text[:at] + piece + text[at:]
        elif edit == "delete":
            text = text[:at] + text[at + len(piece) :]
        else:
            text = text[:at] + piece + text[at + len(piece) :]
    check(text)


def test_the_valid_document_itself_loads() -> None:
    config = parse_config(yaml.safe_dump(VALID, allow_unicode=True), PATH)
    assert [ws.name for ws in config.workspaces] == ["analytics", "sales"]
    assert config.workspaces[0].entra_groups == ("Databricks-Group-Test", "O'Brien's \"team\" ü")


def laughs(levels: int, width: int = 10) -> str:
    """A billion-laughs document: each level is a list of ``width`` aliases to the level below."""
    lines = ["lol: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    body = "\n".join("  " + line for line in lines)
    last = f"*l{levels - 1}"
    # The expanded value lands where validation quotes it in messages.
    return (
        f"bomb:\n{body}\nworkspaces:\n  - name: x\n    owner: {last}\n    entra_groups: [{last}]\n"
        f"    user_name_attribute: {last}\n    tags: {last}\n"
    )


def bounded(text: str) -> tuple[ConfigError, float, int]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ConfigError) as info:
            parse_config(text, PATH)
        return info.value, time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_alias_bomb_under_the_alias_cap_is_refused_quickly() -> None:
    # 9 levels of 10 aliases = 90 aliases (under the cap) describing 10**9 strings: the loader shares them,
    # and error messages must not expand them (a plain repr would run for hours).
    text = laughs(9)
    assert text.count("*") < MAX_YAML_ALIASES
    error, seconds, peak = bounded(text)
    assert seconds < 1.0
    assert peak < 50 * 2**20
    assert len(str(error)) < 5000
    assert any(p.field == "owner" for p in error.problems)


def test_alias_bomb_over_the_alias_cap_is_refused_before_expanding() -> None:
    error, seconds, peak = bounded(laughs(12, width=10))
    assert seconds < 1.0 and peak < 50 * 2**20
    assert [p.message for p in error.problems] == [
        f"more than {MAX_YAML_ALIASES} YAML aliases; refusing to expand them"
    ]


def test_files_over_the_size_cap_are_refused_without_parsing() -> None:
    text = "workspaces: [" + "{" * (MAX_CONFIG_BYTES + 10)
    error, seconds, _ = bounded(text)
    assert seconds < 1.0
    assert [p.message for p in error.problems] == [f"file is larger than {MAX_CONFIG_BYTES} bytes"]


def test_deep_nesting_is_refused_quickly() -> None:
    for text in ("[" * 200_000 + "]" * 200_000, "- " * 100_000 + "x", "{a: " * 50_000 + "1" + "}" * 50_000):
        error, seconds, _ = bounded(text)
        assert seconds < 1.0
        assert error.problems[0].message.startswith("not valid YAML")


def test_a_long_group_list_under_the_size_cap_loads_in_linear_time() -> None:
    # ~100k group names: de-duplication used to be quadratic (minutes); libyaml keeps parsing fast.
    groups = ", ".join(f"group-{i}" for i in range(100_000))
    text = (
        "workspaces:\n  - name: big\n    databricks_instance: https://adb-1.1.azuredatabricks.net\n"
        f"    pat_secret_url: https://kv.vault.azure.net/secrets/x\n    entra_groups: [{groups}, group-0]\n"
    )
    assert len(text) < MAX_CONFIG_BYTES
    started = time.perf_counter()
    config = parse_config(text, PATH)
    assert time.perf_counter() - started < 5.0
    assert len(config.workspaces[0].entra_groups) == 100_000
