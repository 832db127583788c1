"""The workspaces file: typed entries, defaults, aliases and validation.

The file is the former "SCIM AD Groups" file, one entry per Databricks workspace. Loading it must be
cheap (it runs at every DAG parse) and must report *every* problem at once, each naming the file, the
entry (index and name) and the field, so whoever edits the file fixes it in one pass.

The fields themselves (types, defaults, ranges, aliases) are declared once in ``config_fields.py``; this
module applies them. A problem in one entry disqualifies that entry only (:func:`load_config_report`), so
the other workspaces keep their DAGs; a problem with the file as a whole disqualifies everything.
"""

from __future__ import annotations

import hashlib
import re
import reprlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from entra_provisioning.config_fields import CRON_PRESETS, FIELDS, NOTIFY_FIELDS, SETTINGS_FIELDS, Field, Kind
from entra_provisioning.errors import PermanentError
from entra_provisioning.identities import is_object_id
from entra_provisioning.urls import SecretRef, host_allowed, https_origin, parse_secret_url

__all__ = [
    "ConfigError",
    "ConfigReport",
    "NotifyConfig",
    "Problem",
    "ProvisioningConfig",
    "SecretRef",
    "Settings",
    "WorkspaceConfig",
    "host_allowed",
    "is_object_id",
    "load_config",
    "load_config_report",
    "parse_config",
    "parse_config_report",
    "parse_secret_url",
]

DAG_ID_PREFIX = "entra_provisioning__"

#: Hard limits that make a hostile or mistaken file fail fast instead of eating the DAG processor.
MAX_CONFIG_BYTES = 5 * 1024 * 1024
MAX_YAML_ALIASES = 100

DEFAULT_WORKSPACE_HOSTS: tuple[str, ...] = SETTINGS_FIELDS["allowed_workspace_hosts"].default
DEFAULT_KEY_VAULT_HOSTS: tuple[str, ...] = SETTINGS_FIELDS["allowed_key_vault_hosts"].default
DEFAULT_ACCOUNT_HOSTS: tuple[str, ...] = SETTINGS_FIELDS["allowed_account_hosts"].default
DEFAULT_XCOM_RETENTION_DAYS: int | None = SETTINGS_FIELDS["xcom_retention_days"].default
DEFAULT_GRAPH_POOL_SLOTS: int = SETTINGS_FIELDS["graph_pool_slots"].default

#: ``adb-<workspace id>.<n>.azuredatabricks.net``: the workspace id is in the host name.
_WORKSPACE_ID_IN_HOST = re.compile(r"^adb-(?P<id>[0-9]{1,20})\.[0-9]+\.")

#: Fields that mean something with ``target: account`` only.
ACCOUNT_ONLY_FIELDS = ("account_id", "account_host", "workspace_id")

#: The seed's script ran "XX times per day"; four evenly spaced runs is our default.
DEFAULT_RUNS_PER_DAY: int = FIELDS["runs_per_day"].default

#: The per-workspace script's parameter names, accepted unchanged so teams can paste them.
ALIASES: Mapping[str, str] = {alias: f.name for f in FIELDS.values() for alias in f.aliases}

# Python's \w is Unicode-aware where ECMAScript's is not, so this one stays out of the shared table
# (config_fields.Field.pattern) and is applied by the named "tags" check instead.
_TAG_RE = re.compile(r"^[\w .:/-]{1,100}$")

# Messages quote the offending value. A plain repr of a value built from YAML aliases can be exponentially
# large (a few dozen aliases describe a billion-item list), so quotes are bounded in depth and length.
_QUOTE = reprlib.Repr()
_QUOTE.maxlevel, _QUOTE.maxstring, _QUOTE.maxother = 2, 120, 120


def _show(value: Any) -> str:
    """A short, bounded repr of a user-supplied value for an error message."""
    return _QUOTE.repr(value)


def _default(name: str) -> Any:
    return FIELDS[name].default


@dataclass(frozen=True)
class NotifyConfig:
    """A workspace's ``notify:`` (alerts), validated: who is told, through what, about which events."""

    email: tuple[str, ...]
    smtp_conn_id: str = NOTIFY_FIELDS["smtp_conn_id"].default
    from_email: str | None = NOTIFY_FIELDS["from_email"].default
    events: tuple[str, ...] = NOTIFY_FIELDS["events"].default


@dataclass(frozen=True)
class WorkspaceConfig:
    """One validated entry of the workspaces file (defaults: ``config_fields.FIELDS``)."""

    name: str
    databricks_instance: str
    entra_groups: tuple[str, ...]
    pat_secret_url: str | None
    schedule: str | None
    target: str = _default("target")
    databricks_conn_id: str | None = _default("databricks_conn_id")
    account_id: str | None = _default("account_id")
    account_host: str = _default("account_host")
    workspace_id: int | None = _default("workspace_id")
    enabled: bool = _default("enabled")
    owner: str = _default("owner")
    retries: int = _default("retries")
    retry_delay_seconds: int = _default("retry_delay_seconds")
    tags: tuple[str, ...] = _default("tags")
    azure_conn_id: str = _default("azure_conn_id")
    msgraph_conn_id: str = _default("msgraph_conn_id")
    user_name_attribute: str = _default("user_name_attribute")
    max_new_users_per_run: int | None = _default("max_new_users_per_run")
    scim_concurrency: int = _default("scim_concurrency")
    scim_max_creates_per_second: float = _default("scim_max_creates_per_second")
    account_max_assignments_per_second: float = _default("account_max_assignments_per_second")
    account_max_reads_per_second: float = _default("account_max_reads_per_second")
    account_max_list_calls_per_minute: float = _default("account_max_list_calls_per_minute")
    mirror_groups: bool = _default("mirror_groups")
    group_name: str = _default("group_name")
    assign_users_directly: bool = _default("assign_users_directly")
    remove_stale_members: bool = _default("remove_stale_members")
    max_membership_removals_per_run: int = _default("max_membership_removals_per_run")
    group_patch_batch_size: int = _default("group_patch_batch_size")
    include_service_principals: bool = _default("include_service_principals")
    entitlements: tuple[str, ...] = _default("entitlements")
    secret_expiry_warning_days: int = _default("secret_expiry_warning_days")
    notify: NotifyConfig | None = None  # FIELDS["notify"].default: no alerts
    description: str | None = _default("description")

    @property
    def dag_id(self) -> str:
        return f"{DAG_ID_PREFIX}{self.name}"

    @property
    def is_account(self) -> bool:
        """Provisioned through the account API and a workspace assignment (``target: account``)."""
        return self.target == "account"

    @property
    def secret(self) -> SecretRef | None:
        """The Key Vault secret of the PAT, or ``None`` when a Databricks connection authenticates."""
        return parse_secret_url(self.pat_secret_url) if self.pat_secret_url else None

    @property
    def workspace_host(self) -> str:
        return urlsplit(self.databricks_instance).netloc


@dataclass(frozen=True)
class Settings:
    """File-wide settings: which hosts the job may talk to, how long runs' large XComs are kept, and the
    Airflow pool of the Graph reads."""

    allowed_workspace_hosts: tuple[str, ...] = DEFAULT_WORKSPACE_HOSTS
    allowed_key_vault_hosts: tuple[str, ...] = DEFAULT_KEY_VAULT_HOSTS
    allowed_account_hosts: tuple[str, ...] = DEFAULT_ACCOUNT_HOSTS
    #: ``0`` or ``None``: off (see :mod:`entra_provisioning.retention`).
    xcom_retention_days: int | None = DEFAULT_XCOM_RETENTION_DAYS
    graph_pool: str | None = None
    graph_pool_slots: int = DEFAULT_GRAPH_POOL_SLOTS


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
    """The workspaces file (or some of its entries) is unusable; ``problems`` lists every reason.

    :param note: a closing line, e.g. what still works despite the problems.
    """

    def __init__(self, path: str, problems: list[Problem], note: str | None = None) -> None:
        self.path = path
        self.problems = problems
        lines = [p.render(path) for p in problems]
        noun = "problem" if len(lines) == 1 else "problems"
        message = f"{len(lines)} {noun} in {path}:\n  - " + "\n  - ".join(lines)
        super().__init__(message + (f"\n{note}" if note else ""))


@dataclass(frozen=True)
class ConfigReport:
    """A workspaces file whose *file* is sound: the entries that are valid, and what is wrong with the rest.

    ``config`` holds only the valid entries; each problem names an entry (``Problem.index``), and that
    entry is left out. Airflow builds DAGs from ``config`` so one bad entry cannot take the others down.
    """

    config: ProvisioningConfig
    problems: tuple[Problem, ...]

    @property
    def rejected(self) -> tuple[tuple[int, str | None], ...]:
        """``(index, name)`` of every entry left out, in file order."""
        found = {p.index: p.entry_name for p in self.problems if p.index is not None}
        return tuple(sorted(found.items()))

    def error(self, note: str | None = None) -> ConfigError | None:
        """The problems as one :class:`ConfigError` (``None`` when there are none)."""
        return ConfigError(self.config.path, list(self.problems), note) if self.problems else None


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
                # hash() first: "a_set in seen" quietly looks the set up as a frozenset, and add() then fails.
                hash(key)
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


@dataclass(frozen=True)
class _Context:
    """What a named check may need besides the value: the file's settings, the entry's name, and whether
    the value is the ``defaults:`` block's (which may leave out what each entry completes)."""

    settings: Settings
    name: str
    in_defaults: bool = False


def _check_workspace_url(value: str, ctx: _Context) -> str:
    return _normalise_workspace_url(value.strip(), ctx.settings.allowed_workspace_hosts)


def _check_account_url(value: str, ctx: _Context) -> str:
    # The host allow-list applies to account-target entries only (_check_target): the default host must not
    # fail a workspace-target entry in a file whose allow-list names another cloud's account host.
    return https_origin(value.strip(), example="https://accounts.azuredatabricks.net").url


def _check_secret_url(value: str | None, ctx: _Context) -> str | None:
    return None if value is None else _checked_secret_url(value.strip(), ctx.settings)


def _check_groups(value: tuple[str, ...], ctx: _Context) -> tuple[str, ...]:
    if not value:
        raise ValueError("must name at least one group (display name or object id)")
    return value


_TEMPLATE_FIELDS = frozenset(("display_name", "object_id"))


def _check_group_name(value: str, ctx: _Context) -> str:
    import string

    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValueError(f"is not a valid template ({exc}); use {{display_name}} and {{object_id}}") from None
    unknown = sorted(fields - _TEMPLATE_FIELDS)
    if unknown:
        raise ValueError(f"may use only {{display_name}} and {{object_id}}, not {', '.join(unknown)}")
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _check_tags(value: tuple[str, ...], ctx: _Context) -> tuple[str, ...]:
    bad = [t for t in value if not _TAG_RE.match(t)]
    if bad:
        raise ValueError(f"tags must be 1-100 word characters, spaces, '.', ':', '/' or '-': {bad}")
    return value


def _check_notify(value: Mapping[str, Any] | None, ctx: _Context) -> NotifyConfig | None:
    if value is None:
        return None  # no alerts
    events = value.get("events", NOTIFY_FIELDS["events"].default)
    if not events:
        raise ValueError("'events' must name at least one event (to send no alerts, set notify to null)")
    email = value.get("email", ())
    if not email and not ctx.in_defaults:
        raise ValueError("needs at least one recipient in 'email' (to send no alerts, set notify to null)")
    return NotifyConfig(
        email=tuple(email),
        smtp_conn_id=value.get("smtp_conn_id", NOTIFY_FIELDS["smtp_conn_id"].default),
        from_email=value.get("from_email", NOTIFY_FIELDS["from_email"].default),
        events=tuple(events),
    )


def _check_cron(value: str | None, ctx: _Context) -> str | None:
    if value is None:
        return None  # manual runs only
    validate_cron(value.strip())
    return value.strip()


def _check_runs_per_day(value: int, ctx: _Context) -> int:
    runs_per_day_to_cron(value, ctx.name)  # raises ValueError when the day cannot be split evenly
    return value


#: The special validators ``config_fields`` refers to by name. Each gets a value that passed the field's
#: generic checks, returns it normalised, or raises ``ValueError`` with the message to show.
_CHECKS: Mapping[str, Callable[[Any, _Context], Any]] = {
    "workspace_url": _check_workspace_url,
    "secret_url": _check_secret_url,
    "account_url": _check_account_url,
    "group_name": _check_group_name,
    "groups": _check_groups,
    "tags": _check_tags,
    "cron": _check_cron,
    "runs_per_day": _check_runs_per_day,
    "notify": _check_notify,
}
_unknown_checks = {
    f.check for f in (*FIELDS.values(), *SETTINGS_FIELDS.values(), *NOTIFY_FIELDS.values())
} - {None, *_CHECKS}
if _unknown_checks:  # a typo in the table must fail loudly, not silently skip a check
    raise RuntimeError(f"config_fields names checks that config.py does not define: {_unknown_checks}")


# ------------------------------------------------------------------------------------------ loading


_REQUIRED = tuple(f.name for f in FIELDS.values() if f.required)
_SCHEDULE_KEYS = ("schedule", "runs_per_day")
_MAPPING_KEYS = tuple(f.name for f in FIELDS.values() if f.kind is Kind.MAPPING)
# The schedule pair is resolved together (one replaces the other), so neither is merged as a default.
_OPTIONAL_DEFAULTS: dict[str, Any] = {
    f.name: list(f.default) if isinstance(f.default, tuple) else f.default
    for f in FIELDS.values()
    if f.has_default and f.name not in _SCHEDULE_KEYS
}
ENTRY_KEYS = frozenset(FIELDS)


def _checked_defaults() -> dict[str, Any]:
    """Every optional field's default, through its own checks (which a default must pass)."""
    problems: list[Problem] = []
    out = _Collector(problems, None, None)
    ctx = _Context(Settings(), "defaults")
    checked = {
        name: _validate(FIELDS[name], value, name, out, ctx) for name, value in _OPTIONAL_DEFAULTS.items()
    }
    if problems:  # a bad default in the field table is a bug of this package, not of a config file
        raise RuntimeError(f"config_fields has defaults its own checks refuse: {problems}")
    return checked


DEFAULTS_KEYS = frozenset(f.name for f in FIELDS.values() if f.in_defaults)
TOP_LEVEL_KEYS = frozenset(("settings", "defaults", "workspaces"))
SETTINGS_KEYS = frozenset(SETTINGS_FIELDS)

#: Returned by :func:`_validate` for a value that is wrong (``None`` is a valid value of nullable fields).
_INVALID: Any = object()


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
    given_as: dict[str, str] = {}
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
            # Name the alias whichever of the two came first in the file.
            alias = key if key != canonical else given_as[canonical]
            out.add(key, f"given twice: as {canonical!r} and as its alias {alias!r}")
            continue
        result[canonical] = value
        given_as[canonical] = key
    return result


def _suggest(key: str, allowed: frozenset[str]) -> str | None:
    return _suggest_from(key, allowed | set(ALIASES))


def _suggest_from(key: str, allowed: Iterable[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(key, sorted(allowed), n=1)
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


def _bounds(spec: Field) -> str:
    low = None if spec.minimum is None else f"{spec.minimum:g}"
    high = None if spec.maximum is None else f"{spec.maximum:g}"
    if spec.kind is Kind.NUMBER:
        parts = [f"above {low}" if spec.exclusive_minimum else f"at least {low}"] if low else []
        parts += [f"at most {high}"] if high else []
        return "a number " + " and ".join(parts) if parts else "a number"
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f"at least {low}" if low is not None else f"at most {high}"


def _generic(spec: Field, value: Any, label: str, out: _Collector) -> Any:
    """The checks a field's table row states: type, null, choices, range, pattern. Returns the value
    (strings stripped, lists as de-duplicated tuples) or ``_INVALID`` after reporting the problem."""
    if value is None and spec.nullable:
        return None
    if spec.choices:
        if isinstance(value, list | dict) or value not in spec.choices:
            out.add(label, f"must be one of {list(spec.choices)}, got {_show(value)}")
            return _INVALID
        return value
    if spec.kind is Kind.BOOLEAN:
        if not isinstance(value, bool):
            out.add(label, f"must be true or false, got {_show(value)}")
            return _INVALID
        return value
    if spec.kind is Kind.INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            out.add(label, f"must be an integer, got {type(value).__name__}")
            return _INVALID
        if (spec.minimum is not None and value < spec.minimum) or (
            spec.maximum is not None and value > spec.maximum
        ):
            out.add(label, f"must be {_bounds(spec)}, got {value}")
            return _INVALID
        return value
    if spec.kind is Kind.NUMBER:
        # ``not (low < value)`` rather than ``value <= low`` so that NaN is refused too.
        in_range = (
            not isinstance(value, bool)
            and isinstance(value, int | float)
            and (
                spec.minimum is None
                or (value > spec.minimum if spec.exclusive_minimum else value >= spec.minimum)
            )
            and (spec.maximum is None or value <= spec.maximum)
        )
        if not in_range:
            out.add(label, f"must be {_bounds(spec)}, got {_show(value)}")
            return _INVALID
        return float(value)
    if spec.kind is Kind.MAPPING:
        return _mapping(spec, value, label, out)
    if spec.kind is Kind.TEXT_LIST:
        items = _str_list(value, label, out, allow_single=spec.single_allowed)
        if items is None:
            return _INVALID
        if spec.pattern is not None:
            bad = [item for item in items if not re.fullmatch(spec.pattern, item)]
            if bad:
                out.add(label, f"each item must be {spec.pattern_hint or 'valid'}, got {bad}")
                return _INVALID
        return items
    # Kind.TEXT
    if not isinstance(value, str):
        if spec.pattern_hint:
            out.add(label, f"must be {spec.pattern_hint}, got {_show(value)}")
        elif spec.name == "schedule":
            out.add(label, f"must be a cron expression, a preset or null, got {type(value).__name__}")
        else:
            out.add(label, f"must be a string, got {type(value).__name__}")
        return _INVALID
    if spec.pattern is not None:
        if not re.fullmatch(spec.pattern, value):
            out.add(label, f"must be {spec.pattern_hint or 'valid'}, got {_show(value)}")
            return _INVALID
        return value
    if spec.check is not None or spec.nullable:
        return value  # the named check (or free text) decides what the string may hold
    if not value.strip():
        out.add(label, f"must be a non-empty string, got {_show(value)}")
        return _INVALID
    return value.strip()


def _mapping(spec: Field, value: Any, label: str, out: _Collector) -> Any:
    """A mapping field's keys, each through its own generic checks (``label.key`` names a bad one). The keys
    given, normalised (absent keys stay absent: ``defaults`` and an entry are merged key by key)."""
    if not isinstance(value, Mapping):
        out.add(label, f"must be a mapping with keys {sorted(spec.keys)}, got {type(value).__name__}")
        return _INVALID
    checked: dict[str, Any] = {}
    bad = False
    for key, item in value.items():
        sub = spec.keys.get(key) if isinstance(key, str) else None
        if sub is None:
            hint = _suggest_from(str(key), spec.keys)
            out.add(
                f"{label}.{key}",
                "unknown key"
                + (f" (did you mean {hint!r}?)" if hint else f" (expected {sorted(spec.keys)})"),
            )
            bad = True
            continue
        result = _generic(sub, item, f"{label}.{key}", out)
        if result is _INVALID:
            bad = True
        else:
            checked[key] = result
    return _INVALID if bad else checked


def _validate(spec: Field, value: Any, label: str, out: _Collector, ctx: _Context) -> Any:
    """A field's generic checks, then its named check; the normalised value or ``_INVALID``."""
    checked = _generic(spec, value, label, out)
    if checked is _INVALID or spec.check is None:
        return checked
    try:
        return _CHECKS[spec.check](checked, ctx)
    except ValueError as exc:
        out.add(label, str(exc))
        return _INVALID


_CHECKED_DEFAULTS: dict[str, Any] = _checked_defaults()


def _settings(raw: Any, problems: list[Problem]) -> Settings:
    if raw is None:
        return Settings()
    out = _Collector(problems, None, None)
    if not isinstance(raw, Mapping):
        out.add("settings", f"must be a mapping, got {type(raw).__name__}")
        return Settings()
    ctx = _Context(Settings(), "settings")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        spec = SETTINGS_FIELDS.get(key) if isinstance(key, str) else None
        if spec is None:
            out.add(f"settings.{key}", "unknown key")
            continue
        checked = _validate(spec, value, f"settings.{key}", out, ctx)
        if checked is not _INVALID:
            values[key] = checked
    if "graph_pool_slots" in values and values.get("graph_pool") is None:
        out.add("settings.graph_pool_slots", "is only used with settings.graph_pool (the pool's name)")
    return Settings(**values)


def _defaults(raw: Any, settings: Settings, problems: list[Problem]) -> dict[str, Any]:
    """The ``defaults:`` block, checked once on its own: a bad default is a problem of the file, not of
    every entry that inherits it. Only the good values are returned, so no entry reports them again."""
    top = _Collector(problems, None, None)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        top.add("defaults", f"must be a mapping, got {type(raw).__name__}")
        return {}
    own = _canonical_keys(raw, DEFAULTS_KEYS, top)
    if all(k in own for k in _SCHEDULE_KEYS):
        top.add("defaults.schedule", "give either 'schedule' or 'runs_per_day', not both")
        own = {k: v for k, v in own.items() if k not in _SCHEDULE_KEYS}
    ctx = _Context(settings, "defaults", in_defaults=True)
    return {
        key: value
        for key, value in own.items()
        if _validate(FIELDS[key], value, f"defaults.{key}", top, ctx) is not _INVALID
    }


def _entry(
    index: int, raw: Any, defaults: Mapping[str, Any], settings: Settings, problems: list[Problem]
) -> tuple[WorkspaceConfig | None, str | None]:
    """One entry: the validated workspace (or ``None``) and the name it claims (or ``None`` if its name
    is not usable). A broken entry still claims its name, so a later duplicate cannot take its DAG."""
    entry_name = raw.get("name") if isinstance(raw, Mapping) else None
    out = _Collector(problems, index, entry_name if isinstance(entry_name, str) else None)
    if not isinstance(raw, Mapping):
        out.add(None, f"each workspace must be a mapping, got {type(raw).__name__}")
        return None, None
    before = len(problems)
    own = _canonical_keys(raw, ENTRY_KEYS, out)
    own_schedule = [k for k in _SCHEDULE_KEYS if k in own]
    if len(own_schedule) == 2:
        out.add("schedule", "give either 'schedule' or 'runs_per_day', not both")
    merged: dict[str, Any] = dict(_OPTIONAL_DEFAULTS)
    merged.update({k: v for k, v in defaults.items() if not (own_schedule and k in _SCHEDULE_KEYS)})
    merged.update(own)
    # Mappings are merged key by key: defaults can name the recipients and an entry only its events.
    for key in _MAPPING_KEYS:
        if isinstance(defaults.get(key), Mapping) and isinstance(own.get(key), Mapping):
            merged[key] = {**defaults[key], **own[key]}

    for key in _REQUIRED:
        if key not in merged or merged[key] is None:
            out.add(key, "is required" + (f" (alias: {_alias_of(key)})" if _alias_of(key) else ""))

    name = merged.get("name")
    ctx = _Context(settings, name if isinstance(name, str) else str(index))
    values: dict[str, Any] = {}
    for spec in FIELDS.values():
        if spec.name in _SCHEDULE_KEYS or (spec.required and merged.get(spec.name) is None):
            continue  # the schedule is resolved below; a missing required field is reported above
        if spec.name not in own and spec.name not in defaults:
            # The table's own default, checked once at import: most fields of most entries are defaults, and
            # re-checking them for each of 1,000 entries would be most of the loading time.
            values[spec.name] = _CHECKED_DEFAULTS[spec.name]
            continue
        checked = _validate(spec, merged[spec.name], spec.name, out, ctx)
        if checked is not _INVALID:
            values[spec.name] = checked
    claimed = values.get("name")
    if claimed is not None:
        ctx = _Context(settings, claimed)
    values["schedule"] = _schedule(merged, out, ctx)
    _check_target(values, own, out, settings)

    if len(problems) > before:
        return None, claimed
    return WorkspaceConfig(**values), claimed


def _check_group_options(values: dict[str, Any], own: Mapping[str, Any], out: _Collector) -> None:
    """The group-mirroring options that only make sense together (checked where the entry sets them)."""
    account = values.get("target") == "account"
    if values.get("entitlements") and account:
        out.add(
            "entitlements",
            "cannot be set with target: account: entitlements are per workspace and the account-level "
            "create cannot set them. Give them to a group in the workspace (its 'users' group already "
            "grants workspace and SQL access), or use target: workspace",
        )
    for key in ("remove_stale_members", "assign_users_directly", "group_name"):
        if key in own and own[key] not in (False, None) and not values.get("mirror_groups"):
            out.add(key, "is only used with mirror_groups: true")
    if "assign_users_directly" in own and values.get("assign_users_directly") and not account:
        out.add(
            "assign_users_directly",
            "is only used with target: account (workspace users are created directly)",
        )


def workspace_id_from_host(url: str) -> int | None:
    """The workspace id an ``adb-<id>.<n>.azuredatabricks.net`` URL carries, or ``None``."""
    match = _WORKSPACE_ID_IN_HOST.match(urlsplit(url).hostname or "")
    return int(match["id"]) if match else None


def _check_target(
    values: dict[str, Any], own: Mapping[str, Any], out: _Collector, settings: Settings
) -> None:
    """The combinations of ``target``, credentials and account fields; fills in derived values.

    The entry's own keys decide: a ``databricks_conn_id`` or an account field inherited from ``defaults``
    gives way to an entry that says otherwise (its own PAT, or ``target: workspace``), so one ``defaults``
    block can serve both kinds of entry; the same conflict within one entry is an error.
    """
    _check_group_options(values, own, out)
    pat, conn = values.get("pat_secret_url"), values.get("databricks_conn_id")
    if pat and conn:
        if "databricks_conn_id" in own:
            out.add(
                "databricks_conn_id",
                "give either pat_secret_url (alias: scimToken) or databricks_conn_id, not both",
            )
            return
        values["databricks_conn_id"] = conn = None  # the entry's own PAT wins over a default connection
    if not pat and not conn:
        out.add("pat_secret_url", "is required (alias: scimToken), unless databricks_conn_id is given")
        return
    if values.get("target") != "account":
        for key in ACCOUNT_ONLY_FIELDS:
            if key in own:
                out.add(key, "is only used with target: account (this entry's target is workspace)")
        values.update({"account_id": None, "workspace_id": None})
        return
    if pat:
        out.add(
            "pat_secret_url",
            "a workspace PAT cannot call the account API; with target: account give databricks_conn_id "
            "(an Entra service principal, a managed identity or OAuth M2M)",
        )
    if not conn:
        out.add("databricks_conn_id", "is required with target: account")
    host = urlsplit(values.get("account_host") or "").hostname or ""
    if "account_host" in values and not host_allowed(host, settings.allowed_account_hosts):
        out.add(
            "account_host",
            f"host {host!r} is not in settings.allowed_account_hosts {list(settings.allowed_account_hosts)}",
        )
    if not values.get("account_id"):
        out.add("account_id", "is required with target: account")
    else:
        values["account_id"] = values["account_id"].lower()
    if "databricks_instance" not in values:
        return  # reported already; there is no host to derive the workspace id from
    derived = workspace_id_from_host(values["databricks_instance"])
    given = values.get("workspace_id")
    if given is None and derived is None:
        out.add(
            "workspace_id",
            f"is required with target: account when databricks_instance ({values['databricks_instance']}) "
            "is not an adb-<id>.<n>.azuredatabricks.net URL",
        )
    elif given is not None and derived is not None and given != derived:
        out.add("workspace_id", f"is {given}, but databricks_instance names workspace {derived}")
    else:
        values["workspace_id"] = given if given is not None else derived


def _checked_secret_url(url: str, settings: Settings) -> str:
    ref = parse_secret_url(url)
    host = urlsplit(ref.vault_url).hostname or ""
    allowed = settings.allowed_key_vault_hosts
    if not host_allowed(host, allowed):
        raise ValueError(f"vault host {host!r} is not in settings.allowed_key_vault_hosts {list(allowed)}")
    return url.rstrip("/")


def _alias_of(key: str) -> str | None:
    return next((alias for alias, canonical in ALIASES.items() if canonical == key), None)


def _schedule(merged: Mapping[str, Any], out: _Collector, ctx: _Context) -> str | None:
    if "schedule" in merged:
        schedule = _validate(FIELDS["schedule"], merged["schedule"], "schedule", out, ctx)
        return None if schedule is _INVALID else schedule
    runs = _validate(
        FIELDS["runs_per_day"], merged.get("runs_per_day", DEFAULT_RUNS_PER_DAY), "runs_per_day", out, ctx
    )
    return None if runs is _INVALID else runs_per_day_to_cron(runs, ctx.name)


def parse_config_report(text: str, path: str = "<config>") -> ConfigReport:
    """Parse the workspaces file's text, keeping the valid entries and reporting the others.

    :param text: the YAML document.
    :param path: how to name the file in error messages.
    :returns: the valid entries and one problem per thing wrong with an entry (file, entry, field).
    :raises ConfigError: when the file as a whole is unusable (not YAML, not a mapping, an unknown top-level
        key, a broken ``settings``, ``defaults`` or ``workspaces``), listing every problem, the entries' too.
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
    defaults = _defaults(data.get("defaults"), settings, problems)

    entries = data.get("workspaces")
    workspaces: list[WorkspaceConfig] = []
    if not isinstance(entries, list):
        top.add("workspaces", "must be a list of workspace entries")
    else:
        owners: dict[str, int] = {}
        for index, raw in enumerate(entries):
            ws, name = _entry(index, raw, defaults, settings, problems)
            if name is not None and name in owners:
                # The first entry owns the name even when it is broken itself: which entry gets the DAG
                # must not change when an unrelated field is fixed.
                problems.append(
                    Problem(f"duplicate name (first used by workspaces[{owners[name]}])", "name", index, name)
                )
                continue
            if name is not None:
                owners[name] = index
            if ws is not None:
                workspaces.append(ws)
    if any(p.index is None for p in problems):
        raise ConfigError(path, problems)
    config = ProvisioningConfig(path=path, settings=settings, workspaces=tuple(workspaces))
    return ConfigReport(config, tuple(problems))


def parse_config(text: str, path: str = "<config>") -> ProvisioningConfig:
    """Parse and validate the workspaces file's text, all or nothing.

    :param text: the YAML document.
    :param path: how to name the file in error messages.
    :raises ConfigError: listing every problem found, each with file, entry and field.
    """
    report = parse_config_report(text, path)
    error = report.error()
    if error is not None:
        raise error
    return report.config


def _read_file(path: str | Path) -> tuple[str, str]:
    shown = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(shown, [Problem(f"cannot read the file: {exc.strerror or exc}")]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(shown, [Problem(f"file is larger than {MAX_CONFIG_BYTES} bytes")])
    try:
        return raw.decode("utf-8"), shown
    except UnicodeDecodeError as exc:
        raise ConfigError(shown, [Problem(f"not UTF-8 text (byte {exc.start})")]) from None


def load_config_report(path: str | Path) -> ConfigReport:
    """Read the workspaces file at ``path``, keeping the valid entries and reporting the others.

    :raises ConfigError: when the file cannot be read or is unusable as a whole.
    """
    text, shown = _read_file(path)
    return parse_config_report(text, shown)


def load_config(path: str | Path) -> ProvisioningConfig:
    """Read and validate the workspaces file at ``path``, all or nothing.

    :raises ConfigError: when the file cannot be read or anything in it is invalid.
    """
    text, shown = _read_file(path)
    return parse_config(text, shown)
