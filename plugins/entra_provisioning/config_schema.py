"""What ``make schema`` generates from the field table: the JSON Schema and the field tables of
``docs/configuration.md``.

Both are pure functions of ``config_fields``; tests compare them with the committed
``config/workspaces.schema.json`` and the marked blocks of ``docs/configuration.md``, so neither can drift from what
the loader enforces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from entra_provisioning.config import TOP_LEVEL_KEYS, runs_per_day_to_cron
from entra_provisioning.config_fields import FIELDS, NOTIFY_FIELDS, SETTINGS_FIELDS, Field, Kind

__all__ = ["DOC_BLOCKS", "json_schema", "markdown_blocks", "replace_blocks", "schema_text"]

#: JSON Schema draft-07: the newest draft the VS Code YAML extension (yaml-language-server) supports fully.
SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"

_SCHEMA_TYPES = {
    Kind.TEXT: "string",
    Kind.INTEGER: "integer",
    Kind.NUMBER: "number",
    Kind.BOOLEAN: "boolean",
}


def _plain(markdown: str) -> str:
    """The help text without Markdown code marks, for editors that show ``description`` as plain text."""
    return markdown.replace("`", "")


def _valid_runs_per_day() -> list[int]:
    """The day splits ``runs_per_day_to_cron`` accepts above 24 (1–24 are all fine), for the schema."""
    valid = []
    for runs in range(25, int(FIELDS["runs_per_day"].maximum or 24) + 1):
        try:
            runs_per_day_to_cron(runs, "x")
        except ValueError:
            continue
        valid.append(runs)
    return valid


def _value_schema(spec: Field) -> dict[str, Any]:
    """The JSON Schema of one field's value (no documentation keywords)."""
    schema: dict[str, Any]
    if spec.kind is Kind.MAPPING:
        # No "required" keys: an entry's mapping is merged over the one in `defaults:`, so a key may come
        # from either; the loader checks the merged result.
        schema = {
            "type": "object",
            "additionalProperties": False,
            "properties": {sub.name: _property(sub) for sub in spec.keys.values()},
        }
        schema.update(spec.schema)
    elif spec.kind is Kind.TEXT_LIST:
        item: dict[str, Any] = {"type": "string", "pattern": r"\S"}
        if spec.pattern is not None:
            item["pattern"] = spec.pattern
        item.update(spec.schema.get("items", {}))
        schema = {"type": "array", "items": item}
        schema.update({k: v for k, v in spec.schema.items() if k != "items"})
        if spec.single_allowed:
            schema = {"anyOf": [{"type": "string", "pattern": spec.pattern or r"\S"}, schema]}
    else:
        schema = {"type": _SCHEMA_TYPES[spec.kind]}
        if spec.choices:
            schema["enum"] = list(spec.choices)
        if spec.minimum is not None:
            schema["exclusiveMinimum" if spec.exclusive_minimum else "minimum"] = spec.minimum
        if spec.maximum is not None:
            schema["maximum"] = spec.maximum
        if spec.pattern is not None:
            schema["pattern"] = spec.pattern
        elif spec.kind is Kind.TEXT and not spec.nullable and spec.check is None and not spec.choices:
            schema["pattern"] = r"\S"  # the loader refuses blank strings
        schema.update(spec.schema)
        if spec.name == "runs_per_day":
            schema = {**schema, "anyOf": [{"maximum": 24}, {"enum": _valid_runs_per_day()}]}
    if spec.nullable:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def _property(spec: Field, alias_of: str | None = None) -> dict[str, Any]:
    prop: dict[str, Any] = {}
    help_text = spec.help if alias_of is None else f"alias of `{alias_of}` (the per-workspace script's name)"
    if alias_of is None and spec.required:
        help_text = f"required. {help_text}"
    prop["description"] = _plain(help_text)
    prop["markdownDescription"] = help_text
    if spec.has_default and alias_of is None:
        prop["default"] = list(spec.default) if isinstance(spec.default, tuple) else spec.default
    prop.update(_value_schema(spec))
    return prop


def _one_of_names(spec: Field) -> list[dict[str, Any]]:
    """``required`` alternatives: the field under its own name or any alias."""
    return [{"required": [name]} for name in (spec.name, *spec.aliases)]


def _object(fields: Iterable[Field], *, entry: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    rules: list[dict[str, Any]] = []
    chosen = [f for f in fields if entry or f.in_defaults]
    for spec in chosen:
        properties[spec.name] = _property(spec)
        for alias in spec.aliases:
            properties[alias] = _property(spec, alias_of=spec.name)
            rules.append({"not": {"type": "object", "required": [spec.name, alias]}})
        # A required field with an alias is required under either name. One that may come from defaults
        # (entra_groups) is required by the document-level rule in json_schema instead.
        if entry and spec.required and not spec.in_defaults and spec.aliases:
            rules.append({"anyOf": _one_of_names(spec)})
    # "type": "object" keeps these rules from refusing a null `defaults:`.
    rules.append({"not": {"type": "object", "required": ["schedule", "runs_per_day"]}})
    if entry:
        # Exactly one credential per entry, and never a PAT for the account API.
        pat_names = _one_of_names(FIELDS["pat_secret_url"])
        rules += [
            {"not": {"type": "object", "required": [pat["required"][0], "databricks_conn_id"]}}
            for pat in pat_names
        ]
        rules.append(
            {
                "if": {
                    "type": "object",
                    "required": ["target"],
                    "properties": {"target": {"const": "account"}},
                },
                "then": {"not": {"anyOf": pat_names}},
            }
        )
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
    required = [f.name for f in chosen if entry and f.required and not f.aliases and not f.in_defaults]
    if required:
        schema["required"] = required
    schema["allOf"] = rules
    return schema


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the workspaces file, for editors (``# yaml-language-server: $schema=…``)."""
    workspace = _object(FIELDS.values(), entry=True)
    defaults = _object(FIELDS.values(), entry=False)
    settings = {
        "type": ["object", "null"],
        "additionalProperties": False,
        "properties": {spec.name: _property(spec) for spec in SETTINGS_FIELDS.values()},
    }
    defaults_given = [
        rule for spec in FIELDS.values() if spec.required and spec.in_defaults for rule in _one_of_names(spec)
    ]
    entry_required = [
        {"anyOf": _one_of_names(spec)} for spec in FIELDS.values() if spec.required and spec.in_defaults
    ]
    schema: dict[str, Any] = {
        "$schema": SCHEMA_DIALECT,
        "title": "Entra ID → Databricks provisioning: workspaces file",
        "description": "One entry per Azure Databricks workspace; each enabled entry becomes the Airflow DAG "
        "entra_provisioning__<name>. Generated by `make schema` from "
        "plugins/entra_provisioning/config_fields.py; do not edit.",
        "type": "object",
        "additionalProperties": False,
        "required": ["workspaces"],
        "properties": {
            "settings": {
                "description": "optional: which hosts the job may talk to",
                **settings,
            },
            "defaults": {
                "description": "optional: merged into every entry; an entry's own value wins",
                **defaults,
                "type": ["object", "null"],
            },
            "workspaces": {
                "description": "the workspaces, one entry each",
                "type": "array",
                "items": workspace,
            },
        },
        "allOf": [
            # A field that is required of every entry but may come from `defaults:` (entra_groups): when
            # defaults do not give it, each entry must.
            {
                "if": {
                    "not": {
                        "required": ["defaults"],
                        "properties": {"defaults": {"type": "object", "anyOf": defaults_given}},
                    }
                },
                "then": {"properties": {"workspaces": {"items": {"allOf": entry_required}}}},
            },
            # A credential: the entry's PAT, or a Databricks connection (its own or from `defaults:`).
            {
                "if": {
                    "not": {
                        "required": ["defaults"],
                        "properties": {"defaults": {"type": "object", "required": ["databricks_conn_id"]}},
                    }
                },
                "then": {
                    "properties": {
                        "workspaces": {
                            "items": {
                                "anyOf": [
                                    *_one_of_names(FIELDS["pat_secret_url"]),
                                    {"required": ["databricks_conn_id"]},
                                ]
                            }
                        }
                    }
                },
            },
        ],
    }
    if set(schema["properties"]) != TOP_LEVEL_KEYS:  # the loader's top-level keys are the schema's
        raise RuntimeError(
            f"schema top-level keys {sorted(schema['properties'])} != {sorted(TOP_LEVEL_KEYS)}"
        )
    return schema


def schema_text() -> str:
    """:func:`json_schema` as the committed file's text."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------- docs/configuration.md


def _code(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "`" + json.dumps(list(value)) + "`"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def _number(value: float) -> str:
    return f"{value:g}"


def _shape(spec: Field) -> str:
    """The field table's "type" column: derived from the constraints unless the table says it better."""
    if spec.shape is not None:
        text = spec.shape
    elif spec.choices:
        text = " or ".join(_code(choice) for choice in spec.choices)
    elif spec.kind in (Kind.INTEGER, Kind.NUMBER):
        text = "integer" if spec.kind is Kind.INTEGER else "number"
        low, high = spec.minimum, spec.maximum
        if low is not None and high is not None and not spec.exclusive_minimum:
            text += f" {_number(low)}–{_number(high)}"
        else:
            if low is not None:
                text += f" {'>' if spec.exclusive_minimum else '≥'} {_number(low)}"
            if high is not None:
                text += f", ≤ {_number(high)}"
    elif spec.kind is Kind.BOOLEAN:
        text = "`true` / `false`"
    elif spec.kind is Kind.TEXT_LIST:
        text = "list of text"
    elif spec.kind is Kind.MAPPING:
        text = "mapping"
    else:
        text = "text"
    if spec.nullable and "`null`" not in text:
        text += ", or `null`"
    return text


def _default_cell(spec: Field) -> str:
    if not spec.has_default or spec.default is None:
        return "—"
    return _code(spec.default)


def _workspace_table() -> str:
    rows = ["| field | required | type | default | meaning |", "|---|---|---|---|---|"]
    for spec in FIELDS.values():
        rows.append(
            f"| `{spec.name}` | {'yes' if spec.required else 'no'} | {_shape(spec)} | {_default_cell(spec)} "
            f"| {spec.help} |"
        )
    only_entries = [f"`{f.name}`" for f in FIELDS.values() if not f.in_defaults]
    rows.append("")
    rows.append(
        f"Every field except {', '.join(only_entries[:-1])} and {only_entries[-1]} may also be given in "
        "`defaults:`."
    )
    return "\n".join(rows)


def _settings_table() -> str:
    rows = ["| setting | type | default | meaning |", "|---|---|---|---|"]
    for spec in SETTINGS_FIELDS.values():
        rows.append(f"| `{spec.name}` | {_shape(spec)} | {_default_cell(spec)} | {spec.help} |")
    return "\n".join(rows)


def _notify_table() -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for spec in NOTIFY_FIELDS.values():
        rows.append(f"| `{spec.name}` | {_shape(spec)} | {_default_cell(spec)} | {spec.help} |")
    return "\n".join(rows)


def _aliases_table() -> str:
    rows = ["| script parameter | field |", "|---|---|"]
    for spec in FIELDS.values():
        for alias in spec.aliases:
            rows.append(f"| `{alias}` | `{spec.name}` |")
    return "\n".join(rows)


#: The blocks of ``docs/configuration.md`` that ``make schema`` rewrites, by marker name.
DOC_BLOCKS = ("workspace-fields", "notify", "settings", "aliases")


def markdown_blocks() -> Mapping[str, str]:
    """The generated tables of ``docs/configuration.md``, by block name."""
    return {
        "workspace-fields": _workspace_table(),
        "notify": _notify_table(),
        "settings": _settings_table(),
        "aliases": _aliases_table(),
    }


def _markers(name: str) -> tuple[str, str]:
    return (
        f"<!-- generated:{name} (make schema, from plugins/entra_provisioning/config_fields.py) -->",
        f"<!-- /generated:{name} -->",
    )


def replace_blocks(text: str) -> str:
    """``text`` (``docs/configuration.md``) with every generated block rewritten from the field table.

    :raises ValueError: when a block's markers are missing, so a moved marker cannot go unnoticed.
    """
    for name, body in markdown_blocks().items():
        begin, end = _markers(name)
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        replacement = f"{begin}\n{body}\n{end}"
        # Sliced in rather than passed to re.sub, so that backslashes in a table stay literal.
        found = pattern.search(text)
        if found is None:
            raise ValueError(f"markers for {name!r} not found: {begin} … {end}")
        text = text[: found.start()] + replacement + text[found.end() :]
    return text
