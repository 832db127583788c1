"""The workspaces file: typed entries, defaults, aliases and validation.

The file is the former "SCIM AD Groups" file, one entry per Databricks workspace. Loading it must be
cheap (it runs at every DAG parse) and must report *every* problem at once, each naming the file, the
entry (index and name) and the field, so whoever edits the file fixes it in one pass.
"""

from __future__ import annotations

import hashlib
import re
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from entra_provisioning.errors import PermanentError
from entra_provisioning.identities import USER_NAME_ATTRIBUTES, is_object_id
from entra_provisioning.urls import SecretRef, host_allowed, https_origin, parse_secret_url

__all__ = [
    "ConfigError",
    "ProvisioningConfig",
    "SecretRef",
    "Settings",
    "WorkspaceConfig",
    "host_allowed",
    "is_object_id",
    "load_config",
    "parse_config",
    "parse_secret_url",
]

DAG_ID_PREFIX = "entra_provisioning__"

#: Hard limits that make a hostile or mistaken file fail fast instead of eating the DAG processor.
MAX_CONFIG_BYTES = 5 * 1024 * 1024
MAX_YAML_ALIASES = 100

DEFAULT_WORKSPACE_HOSTS: tuple[str, ...] = ("*.azuredatabricks.net",)
DEFAULT_KEY_VAULT_HOSTS: tuple[str, ...] = ("*.vault.azure.net",)

#: The seed's script ran "XX times per day"; four evenly spaced runs is our default.
DEFAULT_RUNS_PER_DAY = 4

#: The per-workspace script's parameter names, accepted unchanged so teams can paste them.
ALIASES: Mapping[str, str] = {
    "databricksInstance": "databricks_instance",
    "accessGroups": "entra_groups",
    "scimToken": "pat_secret_url",
}

CRON_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_TAG_RE = re.compile(r"^[\w .:/-]{1,100}$")

# Messages quote the offending value. A plain repr of a value built from YAML aliases can be exponentially
# large (a few dozen aliases describe a billion-item list), so quotes are bounded in depth and length.
_QUOTE = reprlib.Repr()
_QUOTE.maxlevel, _QUOTE.maxstring, _QUOTE.maxother = 2, 120, 120


def _show(value: Any) -> str:
    """A short, bounded repr of a user-supplied value for an error message."""
    return _QUOTE.repr(value)


@dataclass(frozen=True)
class WorkspaceConfig:
    """One validated entry of the workspaces file."""

    name: str
    databricks_instance: str
    entra_groups: tuple[str, ...]
    pat_secret_url: str
    schedule: str | None
    enabled: bool = True
    owner: str = "airflow"
    tags: tuple[str, ...] = ()
    azure_conn_id: str = "azure_default"
    msgraph_conn_id: str = "msgraph_default"
    user_name_attribute: str = "userPrincipalName"
    max_new_users_per_run: int | None = 500
    scim_concurrency: int = 4
    scim_max_creates_per_second: float = 5.0
    secret_expiry_warning_days: int = 14
    description: str | None = None

    @property
    def dag_id(self) -> str:
        return f"{DAG_ID_PREFIX}{self.name}"

    @property
    def secret(self) -> SecretRef:
        return parse_secret_url(self.pat_secret_url)

    @property
    def workspace_host(self) -> str:
        return urlsplit(self.databricks_instance).netloc


@dataclass(frozen=True)
class Settings:
    """File-wide settings: which hosts the job may talk to."""

    allowed_workspace_hosts: tuple[str, ...] = DEFAULT_WORKSPACE_HOSTS
    allowed_key_vault_hosts: tuple[str, ...] = DEFAULT_KEY_VAULT_HOSTS


@dataclass(frozen=True)
class ProvisioningConfig:
    """The whole file: settings and the workspaces in file order."""

    path: str
    settings: Settings
    workspaces: tuple[WorkspaceConfig, ...]

    @property
    def enabled_workspaces(self) -> tuple[WorkspaceConfig, ...]:
        return tuple(ws for ws in self.workspaces if ws.enabled)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the file, located as precisely as we can."""

    message: str
    field: str | None = None
    index: int | None = None
    entry_name: str | None = None

    def render(self, path: str) -> str:
        where = [path]
        if self.index is not None:
            entry = f"workspaces[{self.index}]"
            if self.entry_name:
                entry += f" (name {self.entry_name!r})"
            where.append(entry)
        if self.field is not None:  # an empty key is still a key the reader must find
            where.append(f"field {self.field!r}")
        return ": ".join([*where, self.message])


class ConfigError(PermanentError):
    """The workspaces file is unusable; ``problems`` lists every reason."""

    def __init__(self, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        lines = [p.render(path) for p in problems]
        noun = "problem" if len(lines) == 1 else "problems"
        super().__init__(f"{len(lines)} {noun} in {path}:\n  - " + "\n  - ".join(lines))


# ---------------------------------------------------------------------------------------------- YAML


try:
    # libyaml parses many times faster than the pure-Python parser: a file near the size cap must load in
    # about a second at every DAG parse, not in half a minute. Construction stays SafeConstructor's.
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]


class _StrictLoader(_BaseLoader):
    """Safe loader that refuses duplicate keys (alias bombs are refused before it runs)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "mapping keys must be plain values", key_node.start_mark
                ) from None
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_show(key)}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _too_many_aliases(text: str) -> bool:
    """Count aliases from the event stream alone, before anything is composed or constructed."""
    aliases = 0
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                return True
    return False


def _read_yaml(path: str, text: str) -> Any:
    if len(text.encode("utf-8", errors="replace")) > MAX_CONFIG_BYTES:
        raise ConfigError(path, [Problem(f"file is larger than {MAX_CONFIG_BYTES} bytes")])
    try:
        if _too_many_aliases(text):
            raise ConfigError(
                path, [Problem(f"more than {MAX_YAML_ALIASES} YAML aliases; refusing to expand them")]
            )
        return yaml.load(text, Loader=_StrictLoader)  # _StrictLoader derives from a SafeLoader
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(path, [Problem(f"not valid YAML: {detail}")]) from None
    except RecursionError:
        raise ConfigError(path, [Problem("not valid YAML: nested too deeply")]) from None


# ------------------------------------------------------------------------------------- field checks


def _normalise_workspace_url(url: str, allowed_hosts: tuple[str, ...]) -> str:
    origin = https_origin(url, example="https://adb-<id>.<n>.azuredatabricks.net")
    if not host_allowed(origin.host, allowed_hosts):
        raise ValueError(
            f"host {origin.host!r} is not in settings.allowed_workspace_hosts {list(allowed_hosts)}"
        )
    return origin.url


def runs_per_day_to_cron(runs: int, name: str) -> str:
    """Turn ``runs_per_day`` into an evenly spaced cron expression.

    The minute is derived from the workspace name so that many workspaces do not all call Graph and
    Key Vault in the same minute (their limits are per tenant, not per workspace).

    :raises ValueError: when ``runs`` cannot be spaced evenly within a day.
    """
    minute = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 60
    if runs == 24:
        return f"{minute} * * * *"
    if 1 <= runs < 24:
        if 24 % runs == 0:
            return f"{minute} */{24 // runs} * * *"
        hours = sorted({(i * 24) // runs for i in range(runs)})
        return f"{minute} {','.join(map(str, hours))} * * *"
    if runs > 24 and 1440 % runs == 0 and 60 % (1440 // runs) == 0:
        step = 1440 // runs
        return f"{minute % step}-59/{step} * * * *"
    raise ValueError("must be 1 to 24, or a number of runs that divides an hour evenly (48, 72, 96, …)")


def validate_cron(expression: str) -> None:
    """Raise ``ValueError`` unless ``expression`` is a preset or a valid five-field cron expression."""
    if expression in CRON_PRESETS:
        return
    from croniter import croniter  # Airflow's own cron library; kept out of module import time.

    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise ValueError(
            f"{expression!r} is not a valid cron expression (five fields) or one of {', '.join(CRON_PRESETS)}"
        )


# ------------------------------------------------------------------------------------------ loading


_REQUIRED = ("name", "databricks_instance", "entra_groups", "pat_secret_url")
_OPTIONAL_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "owner": "airflow",
    "tags": [],
    "azure_conn_id": "azure_default",
    "msgraph_conn_id": "msgraph_default",
    "user_name_attribute": "userPrincipalName",
    "max_new_users_per_run": 500,
    "scim_concurrency": 4,
    "scim_max_creates_per_second": 5.0,
    "secret_expiry_warning_days": 14,
    "description": None,
}
_SCHEDULE_KEYS = ("schedule", "runs_per_day")
ENTRY_KEYS = frozenset((*_REQUIRED, *_OPTIONAL_DEFAULTS, *_SCHEDULE_KEYS))
DEFAULTS_KEYS = ENTRY_KEYS - {"name", "databricks_instance", "pat_secret_url"}
TOP_LEVEL_KEYS = frozenset(("settings", "defaults", "workspaces"))
SETTINGS_KEYS = frozenset(("allowed_workspace_hosts", "allowed_key_vault_hosts"))


class _Collector:
    """Gathers problems for one entry so that every field is checked before we give up."""

    def __init__(self, problems: list[Problem], index: int | None, entry_name: str | None) -> None:
        self.problems = problems
        self.index = index
        self.entry_name = entry_name

    def add(self, field_name: str | None, message: str) -> None:
        self.problems.append(Problem(message, field_name, self.index, self.entry_name))


def _canonical_keys(raw: Mapping[Any, Any], allowed: frozenset[str], out: _Collector) -> dict[str, Any]:
    """Resolve aliases, report unknown and clashing keys."""
    result: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            out.add(str(key), "keys must be strings")
            continue
        canonical = ALIASES.get(key, key)
        if canonical not in allowed:
            hint = _suggest(key, allowed)
            out.add(key, "unknown key" + (f" (did you mean {hint!r}?)" if hint else ""))
            continue
        if canonical in result:
            out.add(key, f"given twice: as {canonical!r} and as its alias {key!r}")
            continue
        result[canonical] = value
    return result


def _suggest(key: str, allowed: frozenset[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(key, sorted(allowed | set(ALIASES)), n=1)
    return matches[0] if matches else None


def _str_list(value: Any, field_name: str, out: _Collector, *, allow_single: bool) -> tuple[str, ...] | None:
    if isinstance(value, str) and allow_single:
        value = [value]
    if not isinstance(value, list):
        out.add(field_name, f"must be a list of strings, got {type(value).__name__}")
        return None
    # A dict keeps first-seen order and makes de-duplication linear: a long list must not cost n².
    items: dict[str, None] = {}
    for position, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            out.add(field_name, f"item {position} must be a non-empty string, got {_show(item)}")
            return None
        items.setdefault(item.strip(), None)
    return tuple(items)


def _int(value: Any, field_name: str, out: _Collector, *, minimum: int, maximum: int | None = None) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        out.add(field_name, f"must be an integer, got {type(value).__name__}")
        return None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        out.add(field_name, f"must be {bound}, got {value}")
        return None
    return value


def _settings(raw: Any, problems: list[Problem]) -> Settings:
    if raw is None:
        return Settings()
    out = _Collector(problems, None, None)
    if not isinstance(raw, Mapping):
        out.add("settings", f"must be a mapping, got {type(raw).__name__}")
        return Settings()
    values: dict[str, tuple[str, ...]] = {}
    for key, value in raw.items():
        if key not in SETTINGS_KEYS:
            out.add(f"settings.{key}", "unknown key")
            continue
        patterns = _str_list(value, f"settings.{key}", out, allow_single=False)
        if patterns is not None:
            bad = [p for p in patterns if not re.fullmatch(r"(\*\.)?[a-z0-9.-]+", p.lower())]
            if bad:
                out.add(f"settings.{key}", f"patterns must be a host or *.suffix, got {bad}")
            else:
                values[key] = patterns
    return Settings(
        allowed_workspace_hosts=values.get("allowed_workspace_hosts", DEFAULT_WORKSPACE_HOSTS),
        allowed_key_vault_hosts=values.get("allowed_key_vault_hosts", DEFAULT_KEY_VAULT_HOSTS),
    )


def _entry(
    index: int, raw: Any, defaults: Mapping[str, Any], settings: Settings, problems: list[Problem]
) -> WorkspaceConfig | None:
    entry_name = raw.get("name") if isinstance(raw, Mapping) else None
    out = _Collector(problems, index, entry_name if isinstance(entry_name, str) else None)
    if not isinstance(raw, Mapping):
        out.add(None, f"each workspace must be a mapping, got {type(raw).__name__}")
        return None
    before = len(problems)
    own = _canonical_keys(raw, ENTRY_KEYS, out)
    own_schedule = [k for k in _SCHEDULE_KEYS if k in own]
    if len(own_schedule) == 2:
        out.add("schedule", "give either 'schedule' or 'runs_per_day', not both")
    merged: dict[str, Any] = dict(_OPTIONAL_DEFAULTS)
    merged.update({k: v for k, v in defaults.items() if not (own_schedule and k in _SCHEDULE_KEYS)})
    merged.update(own)

    for key in _REQUIRED:
        if key not in merged or merged[key] is None:
            out.add(key, "is required" + (f" (alias: {_alias_of(key)})" if _alias_of(key) else ""))

    values: dict[str, Any] = {}
    name = merged.get("name")
    if name is not None:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            out.add(
                "name", f"must be a slug of lower-case letters, digits, '-' or '_' (≤ 63), got {_show(name)}"
            )
        else:
            values["name"] = name

    url = _url_field(
        merged,
        "databricks_instance",
        out,
        lambda u: _normalise_workspace_url(u, settings.allowed_workspace_hosts),
    )
    if url is not None:
        values["databricks_instance"] = url

    groups = merged.get("entra_groups")
    if groups is not None:
        parsed = _str_list(groups, "entra_groups", out, allow_single=True)
        if parsed is not None and not parsed:
            out.add("entra_groups", "must name at least one group (display name or object id)")
        elif parsed is not None:
            values["entra_groups"] = parsed

    secret = _url_field(merged, "pat_secret_url", out, lambda u: _checked_secret_url(u, settings))
    if secret is not None:
        values["pat_secret_url"] = secret

    values["schedule"] = _schedule(merged, values.get("name") or str(index), out)

    for key in ("enabled",):
        if not isinstance(merged[key], bool):
            out.add(key, f"must be true or false, got {_show(merged[key])}")
        else:
            values[key] = merged[key]
    for key in ("owner", "azure_conn_id", "msgraph_conn_id"):
        if not isinstance(merged[key], str) or not merged[key].strip():
            out.add(key, f"must be a non-empty string, got {_show(merged[key])}")
        else:
            values[key] = merged[key].strip()
    if merged["description"] is not None and not isinstance(merged["description"], str):
        out.add("description", "must be a string")
    else:
        values["description"] = merged["description"]

    tags = _str_list(merged["tags"], "tags", out, allow_single=False)
    if tags is not None:
        bad_tags = [t for t in tags if not _TAG_RE.match(t)]
        if bad_tags:
            out.add("tags", f"tags must be 1-100 word characters, spaces, '.', ':', '/' or '-': {bad_tags}")
        else:
            values["tags"] = tags

    attribute = merged["user_name_attribute"]
    if attribute not in USER_NAME_ATTRIBUTES:
        out.add("user_name_attribute", f"must be one of {list(USER_NAME_ATTRIBUTES)}, got {_show(attribute)}")
    else:
        values["user_name_attribute"] = attribute

    if merged["max_new_users_per_run"] is None:
        values["max_new_users_per_run"] = None
    else:
        values["max_new_users_per_run"] = _int(
            merged["max_new_users_per_run"], "max_new_users_per_run", out, minimum=0
        )
    values["scim_concurrency"] = _int(
        merged["scim_concurrency"], "scim_concurrency", out, minimum=1, maximum=64
    )
    values["secret_expiry_warning_days"] = _int(
        merged["secret_expiry_warning_days"], "secret_expiry_warning_days", out, minimum=0, maximum=3650
    )
    rate = merged["scim_max_creates_per_second"]
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 10_000:
        out.add(
            "scim_max_creates_per_second", f"must be a number above 0 and at most 10000, got {_show(rate)}"
        )
    else:
        values["scim_max_creates_per_second"] = float(rate)

    if len(problems) > before:
        return None
    return WorkspaceConfig(**values)


def _url_field(
    merged: Mapping[str, Any], key: str, out: _Collector, check: Callable[[str], str]
) -> str | None:
    """A URL-valued field: its string type, then ``check`` (which normalises it or raises ValueError)."""
    value = merged.get(key)
    if value is None:
        return None  # reported as missing by the required-field check
    if not isinstance(value, str):
        out.add(key, f"must be a string, got {type(value).__name__}")
        return None
    try:
        return check(value.strip())
    except ValueError as exc:
        out.add(key, str(exc))
        return None


def _checked_secret_url(url: str, settings: Settings) -> str:
    ref = parse_secret_url(url)
    host = urlsplit(ref.vault_url).hostname or ""
    allowed = settings.allowed_key_vault_hosts
    if not host_allowed(host, allowed):
        raise ValueError(f"vault host {host!r} is not in settings.allowed_key_vault_hosts {list(allowed)}")
    return url.rstrip("/")


def _alias_of(key: str) -> str | None:
    return next((alias for alias, canonical in ALIASES.items() if canonical == key), None)


def _schedule(merged: Mapping[str, Any], name: str, out: _Collector) -> str | None:
    if "schedule" in merged:
        schedule = merged["schedule"]
        if schedule is None:
            return None  # manual runs only
        if not isinstance(schedule, str):
            out.add("schedule", f"must be a cron expression, a preset or null, got {type(schedule).__name__}")
            return None
        try:
            validate_cron(schedule.strip())
        except ValueError as exc:
            out.add("schedule", str(exc))
            return None
        return schedule.strip()
    runs = merged.get("runs_per_day", DEFAULT_RUNS_PER_DAY)
    if _int(runs, "runs_per_day", out, minimum=1, maximum=1440) is None:
        return None
    try:
        return runs_per_day_to_cron(runs, name)
    except ValueError as exc:
        out.add("runs_per_day", str(exc))
        return None


def parse_config(text: str, path: str = "<config>") -> ProvisioningConfig:
    """Parse and validate the workspaces file's text.

    :param text: the YAML document.
    :param path: how to name the file in error messages.
    :raises ConfigError: listing every problem found, each with file, entry and field.
    """
    data = _read_yaml(path, text)
    problems: list[Problem] = []
    top = _Collector(problems, None, None)
    if not isinstance(data, Mapping):
        raise ConfigError(path, [Problem("the file must be a mapping with a 'workspaces' list")])
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            top.add(str(key), f"unknown top-level key (expected {sorted(TOP_LEVEL_KEYS)})")
    settings = _settings(data.get("settings"), problems)

    defaults_raw = data.get("defaults") or {}
    defaults: dict[str, Any] = {}
    if not isinstance(defaults_raw, Mapping):
        top.add("defaults", f"must be a mapping, got {type(defaults_raw).__name__}")
    else:
        defaults_out = _Collector(problems, None, None)
        defaults = _canonical_keys(defaults_raw, DEFAULTS_KEYS, defaults_out)
        if all(k in defaults for k in _SCHEDULE_KEYS):
            top.add("defaults.schedule", "give either 'schedule' or 'runs_per_day', not both")

    entries = data.get("workspaces")
    workspaces: list[WorkspaceConfig] = []
    if not isinstance(entries, list):
        top.add("workspaces", "must be a list of workspace entries")
    else:
        seen: dict[str, int] = {}
        for index, raw in enumerate(entries):
            ws = _entry(index, raw, defaults, settings, problems)
            if ws is None:
                continue
            if ws.name in seen:
                problems.append(
                    Problem(
                        f"duplicate name (first used by workspaces[{seen[ws.name]}])", "name", index, ws.name
                    )
                )
                continue
            seen[ws.name] = index
            workspaces.append(ws)
    if problems:
        raise ConfigError(path, problems)
    return ProvisioningConfig(path=path, settings=settings, workspaces=tuple(workspaces))


def load_config(path: str | Path) -> ProvisioningConfig:
    """Read and validate the workspaces file at ``path``.

    :raises ConfigError: when the file cannot be read or is invalid.
    """
    shown = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(shown, [Problem(f"cannot read the file: {exc.strerror or exc}")]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(shown, [Problem(f"file is larger than {MAX_CONFIG_BYTES} bytes")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(shown, [Problem(f"not UTF-8 text (byte {exc.start})")]) from None
    return parse_config(text, shown)
