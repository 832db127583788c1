"""Build one Airflow DAG per workspace entry.

Only configuration is touched here: this module runs at every DAG parse, so it must not do network I/O
or import an Azure, Graph or Databricks SDK (ruff's TID253 and a test enforce it). The task bodies import
what they need when they run.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from entra_provisioning.config import (
    ConfigReport,
    ProvisioningConfig,
    Settings,
    WorkspaceConfig,
    load_config_report,
)
from entra_provisioning.reporting import users_added_alias

if TYPE_CHECKING:
    from airflow.sdk import DAG

log = logging.getLogger(__name__)

CONFIG_ENV_VAR = "ENTRA_PROVISIONING_CONFIG"
#: Where the workspaces file lives when the environment does not say: ``<repo>/config/workspaces.yaml``
#: in a checkout, ``/opt/airflow/config/workspaces.yaml`` in the compose/Docker layout.
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "config" / "workspaces.yaml"

BASE_TAGS = ("entra-provisioning", "databricks")
START_DATE = datetime(2025, 1, 1)

#: A provisioning run is cheap to repeat and add-only, so retry transient failures a few times (the entry's
#: ``retries``, 3 by default), spaced out enough to ride over a Graph or SCIM throttling window rather than
#: into it (``retry_delay_seconds``, 2 minutes by default, doubling up to this cap).
MAX_RETRY_DELAY = timedelta(minutes=20)


def default_args(ws: WorkspaceConfig) -> dict[str, Any]:
    """The tasks' defaults: owner and the entry's retry policy."""
    return {
        "owner": ws.owner,
        "retries": ws.retries,
        "retry_delay": timedelta(seconds=ws.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "max_retry_delay": MAX_RETRY_DELAY,
    }


#: A run that has not finished in this time is stuck, not slow (100,000 members take minutes).
RUN_TIMEOUT = timedelta(hours=3)


def config_path() -> Path:
    """The workspaces file the DAG file reads: ``$ENTRA_PROVISIONING_CONFIG`` or the repo's default."""
    return Path(os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)


def doc_md(ws: WorkspaceConfig) -> str:
    """The DAG's documentation shown in the UI: where it provisions from and to, never a secret."""
    groups = "\n".join(f"- `{group}`" for group in ws.entra_groups)
    guard = "no limit" if ws.max_new_users_per_run is None else str(ws.max_new_users_per_run)
    intro = f"{ws.description}\n\n" if ws.description else ""
    secret = ws.secret
    if secret is not None:
        credential_rows = (
            f"| Token (Key Vault) | vault `{secret.vault_host}`, secret `{secret.name}`"
            f"{f', version `{secret.version}`' if secret.version else ''} |\n"
            f"| Azure connection (Key Vault) | `{ws.azure_conn_id}` |"
        )
    else:
        credential_rows = f"| Databricks connection (credentials only) | `{ws.databricks_conn_id}` |"
    if ws.notify is not None:
        alerts_row = (
            f"| Alerts | e-mail to {len(ws.notify.email)} recipient(s) through `{ws.notify.smtp_conn_id}`: "
            f"{', '.join(f'`{kind}`' for kind in ws.notify.events)} |\n"
        )
    else:
        alerts_row = "| Alerts | none (no `notify`) |\n"
    if ws.is_account:
        what = (
            "Creates the members of the Entra ID groups below in the Databricks **account** when it lacks "
            "them, and gives those without access a `USER` assignment to the workspace (a member with any "
            "assignment, or access through an assigned group, is left as it is). **Add-only**: nobody is "
            "removed; account users with access to the workspace who are in none of the groups are reported "
            "as *drift* in the run summary."
        )
        target_rows = (
            f"| Target | account `{ws.account_id}` at {ws.account_host}, workspace id `{ws.workspace_id}` |\n"
            f"| Account pace | creates {ws.scim_max_creates_per_second:g}/s, assignments "
            f"{ws.account_max_assignments_per_second:g}/s, reads {ws.account_max_reads_per_second:g}/s, "
            f"lists {ws.account_max_list_calls_per_minute:g}/min |\n"
        )
    else:
        what = (
            "Adds the members of the Entra ID groups below to the Databricks workspace. **Add-only**: users "
            "are never removed or deactivated; users in the workspace who are in none of the groups are "
            "reported as *drift* in the run summary."
        )
        target_rows = ""
    return f"""\
### Entra ID → Databricks provisioning: `{ws.name}`

{intro}{what}

| | |
|---|---|
| Workspace | {ws.databricks_instance} |
{target_rows}{credential_rows}
| Graph connection | `{ws.msgraph_conn_id}` |
| Schedule | `{ws.schedule or "manual only"}` |
| userName from | `{ws.user_name_attribute}` (guests: `mail`) |
| Guard: most new users per run | {guard} |
| SCIM creates | {ws.scim_concurrency} at a time, at most {ws.scim_max_creates_per_second:g}/s |
{alerts_row}
**Groups**

{groups}

**Tasks**: `fetch_token` {"reads the token from Key Vault" if secret is not None else "obtains a token from the connection's identity"} and proves it works (returns no secret) →
`resolve_members` lists the groups' transitive user members through Microsoft Graph →
`add_missing_users` {"creates and assigns the members without access" if ws.is_account else "creates the users the workspace lacks"} and returns the run summary →
`report` (a teardown: it never changes the run's outcome) emits the asset event `{ws.dag_id}__users` when
the run added someone, sends the run's alerts, and sends the run's metrics (`entra_provisioning.*`) when
Airflow's metrics are on. Each task also stores a small `counts` XCom, failed attempts included.

Trigger with **dry_run** on to see what would be added without writing anything.
"""


def build_dag(ws: WorkspaceConfig, settings: Settings | None = None) -> DAG:
    """Build the provisioning DAG for one workspace entry.

    :param settings: the file's: XCom retention, and the Airflow pool ``resolve_members`` runs in
        (``graph_pool``; ``None``: Airflow's default pool).
    """
    from airflow.sdk import DAG, Param, task

    settings = settings or Settings()
    retention_days = settings.xcom_retention_days
    graph_pool = settings.graph_pool

    params = {
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Resolve the groups and compute who would be added, but create nobody.",
        ),
        "max_new_users_per_run": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            title="Most new users this run (guard override)",
            description=(
                "Leave empty to use the configured guard "
                f"({'no limit' if ws.max_new_users_per_run is None else ws.max_new_users_per_run}). "
                "The run fails before creating anyone if more users would be added than this."
            ),
        ),
    }
    with DAG(
        dag_id=ws.dag_id,
        description=f"Add members of {len(ws.entra_groups)} Entra ID group(s) to {ws.workspace_host}",
        schedule=ws.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        dagrun_timeout=RUN_TIMEOUT,
        default_args=default_args(ws),
        params=params,
        tags=sorted({*BASE_TAGS, *ws.tags}),
        doc_md=doc_md(ws),
    ) as dag:
        # multiple_outputs=False: the ``-> dict`` annotations would otherwise make Airflow push every key of
        # the result as an XCom of its own as well, storing the members list twice.
        @task(task_id="fetch_token", multiple_outputs=False)
        def fetch_token() -> dict[str, Any]:
            from entra_provisioning import reporting, tasks

            push = reporting.counts_pusher(ws, "fetch_token")
            return tasks.recorded("fetch_token", lambda counts: tasks.fetch_token(ws, counts), push)

        # graph_pool (settings) bounds how many workspaces read Graph at once; None: Airflow's default pool.
        @task(task_id="resolve_members", multiple_outputs=False, pool=graph_pool)
        def resolve_members(token_facts: dict[str, Any]) -> dict[str, Any]:
            from entra_provisioning import reporting, tasks

            push = reporting.counts_pusher(ws, "resolve_members")
            return tasks.recorded(
                "resolve_members", lambda counts: tasks.resolve_members(ws, counts, token_facts), push
            )

        @task(task_id="add_missing_users", multiple_outputs=False)
        def add_missing_users(
            token_facts: dict[str, Any], members: dict[str, Any], params: dict[str, Any] | None = None
        ) -> dict[str, Any]:
            from entra_provisioning import reporting, tasks

            push = reporting.counts_pusher(ws, "add_missing_users")
            return tasks.recorded(
                "add_missing_users",
                lambda counts: tasks.add_missing_users(ws, token_facts, members, params or {}, counts),
                push,
            )

        # A teardown: it runs once the work has finished for good, whatever its outcome, and its own
        # outcome never changes the run's. Its outlet is the alias its asset event is attached to.
        @task(task_id="report", multiple_outputs=False, retries=1, outlets=[users_added_alias(ws)])
        def report() -> dict[str, Any]:
            from airflow.sdk import get_current_context

            from entra_provisioning import reporting

            return reporting.report(ws, get_current_context(), xcom_retention_days=retention_days)

        # resolve_members takes fetch_token's facts: a bad token fails the run before it spends Graph quota on
        # member lists, and the facts carry the entry's fingerprint, which the later tasks check.
        token_facts = fetch_token()
        members = resolve_members(token_facts)  # type: ignore[arg-type]
        # The decorator hands the upstream XCom values over at run time; mypy sees only the XComArgs.
        added = add_missing_users(token_facts, members)  # type: ignore[arg-type]
        added >> report().as_teardown()
    return dag


def build_dags(config: ProvisioningConfig | None = None) -> dict[str, DAG]:
    """Build the DAGs of every enabled workspace, keyed by DAG id, in file order.

    Without ``config``, the workspaces file is read leniently: an invalid entry gets no DAG but does not
    stop the others (Airflow marks every DAG of a DAG file that fails to import stale). The entry's problems
    are reported by :func:`check_config`, which the second DAG file runs.

    :raises ConfigError: when the file as a whole is unusable; then no workspace gets a DAG.
    """
    if config is None:
        report = load_config_report(config_path())
        if report.problems:
            log.warning(
                "Skipping %d invalid workspace entr(y/ies) of %s (%s); the import error of "
                "entra_provisioning_config_check.py lists the problems",
                len(report.rejected),
                report.config.path,
                ", ".join(_entry_label(index, name) for index, name in report.rejected),
            )
        config = report.config
    return {ws.dag_id: build_dag(ws, config.settings) for ws in config.enabled_workspaces}


def check_config(path: str | Path | None = None) -> ConfigReport:
    """Validate the workspaces file the DAGs are built from; raise if anything in it is wrong.

    The config-check DAG file calls this, so that a bad entry shows up in Airflow as an import error of
    *that* file (naming file, entry and field) while the workspace DAG file keeps the valid entries' DAGs.

    :param path: the file to check (default: :func:`config_path`).
    :returns: the report, when there is no problem.
    :raises ConfigError: listing every problem, and saying which workspaces still have their DAG.
    """
    report = load_config_report(path or config_path())
    enabled = report.config.enabled_workspaces
    error = report.error(
        note=(
            f"The entries named above get no DAG (an existing one goes stale until they are fixed); "
            f"the {len(enabled)} valid enabled workspace(s) keep theirs."
        )
    )
    if error is not None:
        raise error
    return report


def _entry_label(index: int, name: str | None) -> str:
    return f"workspaces[{index}]" + (f" {name!r}" if name else "")
