"""The fields of the workspaces file, each described once.

Everything else is derived from :data:`FIELDS` and :data:`SETTINGS_FIELDS`: the loader's defaults and
generic checks (``config.py``), the field tables of ``docs/configuration.md`` and the JSON Schema editors use
(``config_schema.py``, ``make schema``). A field whose check cannot be written as a type, a range, a
choice or a pattern names a special validator (``check``) that ``config.py`` implements.

This module imports nothing heavier than the identity constants, so a hook may take its defaults from here
(``FIELDS["scim_concurrency"].default``) without depending on the config loader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from entra_provisioning.identities import USER_NAME_ATTRIBUTES
from entra_provisioning.run_events import EVENT_KINDS

__all__ = [
    "CRON_PRESETS",
    "FIELDS",
    "NOTIFY_FIELDS",
    "NO_DEFAULT",
    "SETTINGS_FIELDS",
    "Field",
    "Kind",
]


class Kind(StrEnum):
    """The value type of a field, as the loader and the schema see it."""

    TEXT = "text"  # a string; stripped; non-empty unless ``nullable``
    INTEGER = "integer"  # an int, never a bool
    NUMBER = "number"  # an int or a float, never a bool
    BOOLEAN = "boolean"
    TEXT_LIST = "text_list"  # a list of non-empty strings, de-duplicated in order
    MAPPING = "mapping"  # a mapping whose keys are the fields of ``Field.keys``


class _NoDefault:
    """Marks a field that has no default (required, or replaced by another field when absent)."""

    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Final = _NoDefault()

CRON_PRESETS: tuple[str, ...] = ("@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")


@dataclass(frozen=True)
class Field:
    """One key of a workspace entry (or of ``settings``).

    :param name: the key in the file.
    :param kind: the value's type.
    :param help: what it means, in Markdown (docs/configuration.md's table, editor hover).
    :param default: the value when absent, or :data:`NO_DEFAULT`.
    :param required: an entry (after merging ``defaults``) must give it.
    :param nullable: ``null`` is a meaningful value (not the same as absent).
    :param minimum: smallest number allowed.
    :param maximum: largest number allowed.
    :param exclusive_minimum: ``minimum`` itself is not allowed.
    :param choices: the only values allowed.
    :param pattern: a regular expression each string (or each list item) must match in full; written
        in the subset Python and ECMAScript read alike, so the JSON Schema can carry it unchanged.
    :param pattern_hint: how to say what ``pattern`` allows, after "must be".
    :param single_allowed: a list field also accepts one string.
    :param in_defaults: may appear in the file's ``defaults:`` block.
    :param aliases: other accepted keys (the per-workspace script's parameter names).
    :param check: a special validator in ``config.py``, run after the generic checks pass.
    :param shape: how the field table's "type" column describes the value, when the derived text is not enough.
    :param schema: extra JSON Schema keywords for what ``check`` enforces (e.g. a URL's pattern).
    :param keys: for a :attr:`Kind.MAPPING` field, the fields its mapping may hold.
    """

    name: str
    kind: Kind
    help: str
    default: Any = NO_DEFAULT
    required: bool = False
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple[Any, ...] = ()
    pattern: str | None = None
    pattern_hint: str | None = None
    single_allowed: bool = False
    in_defaults: bool = True
    aliases: tuple[str, ...] = ()
    check: str | None = None
    shape: str | None = None
    schema: Mapping[str, Any] = field(default_factory=dict)
    keys: Mapping[str, Field] = field(default_factory=dict)

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT


# Loose on purpose where the loader's named check is exact (host allow-lists live in the file itself):
# an editor should flag the common slips (http://, a path, a key URL) without refusing what loads.
_HTTPS_ORIGIN = r"^\s*https://[^/?#@\s]+/?\s*$"
_SECRET_URL = r"^\s*https://[^/?#@\s]+/secrets/[0-9A-Za-z-]{1,127}(/[0-9A-Za-z]{32})?/?\s*$"
_CRON_FIVE_FIELDS = r"^\s*\S+(\s+\S+){4}\s*$"
# Minimal on purpose: one "@" with something on each side, and none of the characters that would split an
# address list (SmtpHook splits a string on "," and ";") or break a header. The mail server decides the rest.
_EMAIL_ADDRESS = r'^[^@\s,;<>()\[\]\\"]{1,64}@[^@\s,;<>()\[\]\\"]{1,253}$'
_EMAIL_HINT = "an e-mail address (name@domain, no spaces, commas or angle brackets)"

#: The keys of ``notify:`` (alerts). ``email`` is the one channel today; another Airflow notifier would be
#: another key here, and ``notifiers.CHANNELS`` would say how to build it.
NOTIFY_FIELDS: Mapping[str, Field] = {
    f.name: f
    for f in (
        Field(
            "email",
            Kind.TEXT_LIST,
            "who gets the alerts: one address or a list. An entry's `notify` (after merging `defaults`) "
            "needs at least one",
            default=(),
            single_allowed=True,
            pattern=_EMAIL_ADDRESS,
            pattern_hint=_EMAIL_HINT,
            shape="one address or a list",
        ),
        Field(
            "smtp_conn_id",
            Kind.TEXT,
            "Airflow connection (type `smtp`, from the SMTP provider Airflow installs) the messages are "
            "sent through",
            default="smtp_default",
        ),
        Field(
            "from_email",
            Kind.TEXT,
            "the sender; `null`: the SMTP connection's `from_email` extra",
            default=None,
            nullable=True,
            pattern=_EMAIL_ADDRESS,
            pattern_hint=_EMAIL_HINT,
            shape="an address, or `null`",
        ),
        Field(
            "events",
            Kind.TEXT_LIST,
            "which events are sent (at least one): " + ", ".join(f"`{kind}`" for kind in EVENT_KINDS),
            default=EVENT_KINDS,
            pattern="^(" + "|".join(EVENT_KINDS) + ")$",
            pattern_hint="one of " + ", ".join(EVENT_KINDS),
            shape="list of event names",
            schema={"minItems": 1},
        ),
    )
}

_WORKSPACE_FIELDS: tuple[Field, ...] = (
    Field(
        "name",
        Kind.TEXT,
        "unique; the DAG id is `entra_provisioning__<name>`",
        required=True,
        in_defaults=False,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        pattern_hint="a slug of lower-case letters, digits, '-' or '_' (≤ 63)",
        shape="slug: lower-case letters, digits, `-`, `_` (≤ 63)",
    ),
    Field(
        "databricks_instance",
        Kind.TEXT,
        "workspace URL, `https://adb-<id>.<n>.azuredatabricks.net`; no path. Its host must match "
        "`settings.allowed_workspace_hosts`",
        required=True,
        in_defaults=False,
        aliases=("databricksInstance",),
        check="workspace_url",
        shape="https URL",
        schema={"pattern": _HTTPS_ORIGIN},
    ),
    Field(
        "entra_groups",
        Kind.TEXT_LIST,
        "display names or object ids (GUIDs); members of nested groups count",
        required=True,
        single_allowed=True,
        aliases=("accessGroups",),
        check="groups",
        shape="one group or a list (at least one)",
        schema={"minItems": 1},
    ),
    Field(
        "target",
        Kind.TEXT,
        "where users are provisioned: `workspace` (the workspace's own SCIM API; today's behaviour) or "
        "`account` (the Databricks account's SCIM API, then a workspace assignment; for identity-federated "
        "workspaces, needs `databricks_conn_id` and `account_id`)",
        default="workspace",
        choices=("workspace", "account"),
    ),
    Field(
        "pat_secret_url",
        Kind.TEXT,
        "Key Vault secret holding the workspace PAT: `https://<vault>.vault.azure.net/secrets/<name>[/<version>]`. "
        "Its host must match `settings.allowed_key_vault_hosts`. Give exactly one of this and "
        "`databricks_conn_id`; `target: workspace` only",
        default=None,
        nullable=True,
        in_defaults=False,
        aliases=("scimToken",),
        check="secret_url",
        shape="https URL",
        schema={"pattern": _SECRET_URL},
    ),
    Field(
        "databricks_conn_id",
        Kind.TEXT,
        "Airflow connection of the Databricks provider's type (`databricks`) whose identity provisions: an "
        "Entra service principal (login, password, extra `azure_tenant_id`), a managed or workload identity "
        "(extra `use_default_azure_credential` or `use_azure_managed_identity`, optionally "
        "`azure_managed_identity_client_id`) or Databricks OAuth M2M (extra `service_principal_oauth`). "
        "It supplies credentials only: the entry decides the host, and a connection naming another host is "
        "refused",
        default=None,
        nullable=True,
    ),
    Field(
        "account_id",
        Kind.TEXT,
        "the Databricks account id (a GUID); `target: account` only",
        default=None,
        nullable=True,
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
        pattern_hint="a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
        shape="GUID or `null`",
    ),
    Field(
        "account_host",
        Kind.TEXT,
        "the account console's API origin; its host must match `settings.allowed_account_hosts`; "
        "`target: account` only",
        default="https://accounts.azuredatabricks.net",
        check="account_url",
        shape="https URL",
        schema={"pattern": _HTTPS_ORIGIN},
    ),
    Field(
        "workspace_id",
        Kind.INTEGER,
        "the workspace's numeric id, for its permission assignments; derived from an "
        "`adb-<id>.<n>.azuredatabricks.net` host when not given; `target: account` only",
        default=None,
        nullable=True,
        minimum=1,
        in_defaults=False,
    ),
    Field(
        "schedule",
        Kind.TEXT,
        "cron expression (5 fields), a preset (" + ", ".join(f"`{p}`" for p in CRON_PRESETS) + "), or "
        "`null` for manual runs only. Without it, `runs_per_day` applies",
        nullable=True,
        check="cron",
        shape="cron, preset or `null`",
        schema={"anyOf": [{"enum": list(CRON_PRESETS)}, {"pattern": _CRON_FIVE_FIELDS}]},
    ),
    Field(
        "runs_per_day",
        Kind.INTEGER,
        "friendlier alternative to `schedule`: N evenly spaced runs a day (up to 24, or a count that "
        "divides an hour evenly such as 48 or 96). The minute is derived from the workspace name so that "
        "many workspaces do not hit Graph in the same minute. Giving both `schedule` and `runs_per_day` in "
        "one entry is an error; an entry's own choice replaces the one in `defaults`",
        default=4,
        minimum=1,
        maximum=1440,
        check="runs_per_day",
    ),
    Field("enabled", Kind.BOOLEAN, "`false` keeps the entry but builds no DAG", default=True),
    Field("owner", Kind.TEXT, "the DAG's owner in the UI", default="airflow"),
    Field(
        "retries",
        Kind.INTEGER,
        "how many times Airflow retries a failed task of a run (a lost worker's task included); add-only "
        "makes every retry safe",
        default=3,
        minimum=0,
        maximum=10,
    ),
    Field(
        "retry_delay_seconds",
        Kind.INTEGER,
        "the wait before the first retry; each further retry waits twice as long, at most 20 minutes",
        default=120,
        minimum=1,
        maximum=3600,
    ),
    Field(
        "tags",
        Kind.TEXT_LIST,
        "extra DAG tags (`entra-provisioning` and `databricks` are always set); each 1–100 word "
        "characters, spaces, `.`, `:`, `/` or `-`",
        default=(),
        check="tags",
        schema={"items": {"maxLength": 100}},
    ),
    Field(
        "description", Kind.TEXT, "free text shown at the top of the DAG's docs", default=None, nullable=True
    ),
    Field(
        "azure_conn_id",
        Kind.TEXT,
        "Airflow connection (type `azure`) whose identity reads the Key Vault secret",
        default="azure_default",
    ),
    Field(
        "msgraph_conn_id",
        Kind.TEXT,
        "Airflow connection (type `msgraph`) used for Microsoft Graph",
        default="msgraph_default",
    ),
    Field(
        "user_name_attribute",
        Kind.TEXT,
        "which Entra attribute becomes the Databricks `userName`; lower-cased; guests (`#EXT#` UPNs) "
        "always use `mail`",
        default="userPrincipalName",
        choices=USER_NAME_ATTRIBUTES,
    ),
    Field(
        "max_new_users_per_run",
        Kind.INTEGER,
        "blast-radius guard: a run that would add more users fails before creating anyone; `null` = no "
        "limit, `0` = add nobody. The trigger form can override it for one run",
        default=500,
        nullable=True,
        minimum=0,
    ),
    Field(
        "scim_concurrency",
        Kind.INTEGER,
        "SCIM create requests in flight at once (the workspace API has refused more than 4)",
        default=4,
        minimum=1,
        maximum=64,
    ),
    Field(
        "scim_max_creates_per_second",
        Kind.NUMBER,
        "client-side pace of SCIM creates, so the job stays under Databricks' write limits instead of "
        "bouncing off them",
        default=5.0,
        minimum=0,
        exclusive_minimum=True,
        maximum=10_000,
    ),
    Field(
        "account_max_assignments_per_second",
        Kind.NUMBER,
        "client-side pace of workspace permission assignments (`PUT`) in account mode; Databricks reports "
        "about 5 writes/s",
        default=5.0,
        minimum=0,
        exclusive_minimum=True,
        maximum=10_000,
    ),
    Field(
        "account_max_reads_per_second",
        Kind.NUMBER,
        "client-side pace of single-object reads (`GET` of a group or a user) in account mode; Databricks "
        "reports about 20 GETs/s",
        default=20.0,
        minimum=0,
        exclusive_minimum=True,
        maximum=10_000,
    ),
    Field(
        "account_max_list_calls_per_minute",
        Kind.NUMBER,
        "client-side pace of list calls (each page of the account's users, the assignment list) in account "
        "mode; Databricks reports about 240 a minute",
        default=240.0,
        minimum=0,
        exclusive_minimum=True,
        maximum=600_000,
    ),
    Field(
        "mirror_groups",
        Kind.BOOLEAN,
        "mirror each configured Entra group as a Databricks group (named by `group_name`, `externalId` = "
        "the Entra group's object id) holding its transitive members; account groups with `target: "
        "account` (assigned to the workspace), workspace groups otherwise (workspace-local on an "
        "identity-federated workspace)",
        default=False,
    ),
    Field(
        "group_name",
        Kind.TEXT,
        "the Databricks name of a mirrored group: a template with `{display_name}` (the Entra group's "
        "display name) and `{object_id}`",
        default="{display_name}",
        check="group_name",
    ),
    Field(
        "assign_users_directly",
        Kind.BOOLEAN,
        "with `mirror_groups` and `target: account`: also give each user its own workspace assignment, "
        "instead of access through the mirrored group's assignment alone",
        default=False,
    ),
    Field(
        "remove_stale_members",
        Kind.BOOLEAN,
        "with `mirror_groups`: remove from a mirrored group (one whose `externalId` is the Entra group's id) "
        "the members who are no longer in the Entra group. Removes *memberships* only, never users; "
        "off by default (they are reported as membership drift)",
        default=False,
    ),
    Field(
        "max_membership_removals_per_run",
        Kind.INTEGER,
        "guard for `remove_stale_members`: a run that would remove more memberships fails before any write",
        default=10,
        minimum=0,
    ),
    Field(
        "group_patch_batch_size",
        Kind.INTEGER,
        "members added to (or removed from) a group per SCIM `PATCH`; Databricks documents no limit, so "
        "this stays conservative",
        default=100,
        minimum=1,
        maximum=10_000,
    ),
    Field(
        "include_service_principals",
        Kind.BOOLEAN,
        "provision the Entra service principals found in the groups as Databricks service principals "
        "(`applicationId` = the Entra `appId`; the Graph app needs `Application.Read.All`); off: they are "
        "skipped as `not_a_user`",
        default=False,
    ),
    Field(
        "entitlements",
        Kind.TEXT_LIST,
        "workspace entitlements given to users this job creates (existing users are never changed); "
        "`target: workspace` only. Workspace and SQL access usually come from the workspace's `users` "
        "group already",
        default=(),
        pattern=r"^(workspace-access|databricks-sql-access|allow-cluster-create|allow-instance-pool-create|workspace-consume)$",
        pattern_hint="one of workspace-access, databricks-sql-access, allow-cluster-create, "
        "allow-instance-pool-create, workspace-consume",
        shape="list of entitlement names",
    ),
    Field(
        "secret_expiry_warning_days",
        Kind.INTEGER,
        "warn when the PAT secret expires within this many days",
        default=14,
        minimum=0,
        maximum=3650,
    ),
    Field(
        "notify",
        Kind.MAPPING,
        "alerts by e-mail for this workspace's runs (keys below); `null` or absent: none. An entry's "
        "`notify` is merged key by key over the one in `defaults`; `notify: null` in an entry turns the "
        "defaults' alerts off for it",
        default=None,
        nullable=True,
        keys=NOTIFY_FIELDS,
        check="notify",
        shape="mapping (see [Alerts](#alerts-notify)), or `null`",
    ),
)

#: The fields of a workspace entry, by name, in the order docs/configuration.md lists them.
FIELDS: Mapping[str, Field] = {f.name: f for f in _WORKSPACE_FIELDS}

_HOST_PATTERN = r"^(\*\.)?[A-Za-z0-9.-]+$"

#: The keys of the file's ``settings:`` block.
SETTINGS_FIELDS: Mapping[str, Field] = {
    f.name: f
    for f in (
        Field(
            "allowed_workspace_hosts",
            Kind.TEXT_LIST,
            "host patterns (`*.suffix` or an exact host) a `databricks_instance` may use. Widen it "
            "explicitly for sovereign clouds (`*.databricks.azure.cn`, `*.databricks.azure.us`) or the "
            "local sandbox (`127.0.0.1`). The list replaces the default",
            default=("*.azuredatabricks.net",),
            pattern=_HOST_PATTERN,
            pattern_hint="a host or *.suffix",
        ),
        Field(
            "allowed_account_hosts",
            Kind.TEXT_LIST,
            "the same for `account_host` (`accounts.azuredatabricks.us`, … for other clouds)",
            default=("accounts.azuredatabricks.net",),
            pattern=_HOST_PATTERN,
            pattern_hint="a host or *.suffix",
        ),
        Field(
            "allowed_key_vault_hosts",
            Kind.TEXT_LIST,
            "the same for `pat_secret_url` (`*.vault.azure.cn`, `*.vault.usgovcloudapi.net`, …)",
            default=("*.vault.azure.net",),
            pattern=_HOST_PATTERN,
            pattern_hint="a host or *.suffix",
        ),
        Field(
            "xcom_retention_days",
            Kind.INTEGER,
            "days a run's large XComs (the members record, the run summary: `return_value`) are kept. Each "
            "run's `report` deletes those of its own DAG's older runs, but never the latest 3 runs' nor any "
            "`counts` XCom (the overview page, alerts and metrics read those). `0` or `null` turns it off. "
            "See [Keeping the metadata database small](operations.md#keeping-the-metadata-database-small)",
            default=30,
            nullable=True,
            minimum=0,
        ),
        Field(
            "graph_pool",
            Kind.TEXT,
            "an Airflow pool every workspace's `resolve_members` runs in, bounding how many workspaces read "
            "Microsoft Graph at once (they share one Graph budget per tenant). It bounds concurrency, not "
            "requests per 10 s. Create it with `python -m entra_provisioning pool --create` (`airflow-init` "
            "and `make ui` do); a task in a missing pool is never scheduled. `null`: Airflow's default pool",
            default=None,
            nullable=True,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$",
            pattern_hint="a pool name: letters, digits, '_', '.' or '-' (≤ 256)",
            shape="pool name, or `null`",
        ),
        Field(
            "graph_pool_slots",
            Kind.INTEGER,
            "the slots `pool --create` gives `graph_pool`: how many workspaces resolve their groups at once",
            default=4,
            minimum=1,
            maximum=1024,
        ),
    )
}
