"""Task bodies of a workspace DAG: fetch_token → resolve_members → add_missing_users.

Each returns only non-secret, JSON-safe facts (they become XComs). The PAT is read from Key Vault
inside the task that needs it, masked at once, and dropped when the task ends. Failures that a retry
cannot fix (bad config, missing group, refused token, guard) fail the task without retries; throttling
and outages are left to Airflow's retries, which are safe because every run re-reads what exists.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from entra_provisioning.config import WorkspaceConfig
from entra_provisioning.errors import PermanentError, TransientError
from entra_provisioning.plan import Resolution, build_plan, check_guard
from entra_provisioning.plan import resolve_members as resolve_plan_members
from entra_provisioning.summary import CreateOutcome, build_summary

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")


class UsersNotAddedError(TransientError):
    """Some users could not be added while the others were; a retry adds only what is still missing."""


def task_errors(body: Callable[_P, _R]) -> Callable[_P, _R]:
    """Fail a task the way its error's branch says, with the error's one-line message.

    A :class:`PermanentError` becomes ``AirflowFailException`` (Airflow does not retry it); a
    :class:`TransientError` propagates as it is, for Airflow's task retries. Raised ``from None`` either way:
    the task log shows the message, not an SDK traceback under it.
    """

    @functools.wraps(body)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return body(*args, **kwargs)
        except PermanentError as exc:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(str(exc)) from None

    return wrapper


def _read_token(ws: WorkspaceConfig, version: str | None = None) -> tuple[str, Any]:
    from airflow.sdk.log import mask_secret

    from entra_provisioning.hooks.key_vault import KeyVaultSecretHook

    token, facts = KeyVaultSecretHook(azure_conn_id=ws.azure_conn_id).get_secret(ws.pat_secret_url, version)
    mask_secret(token)
    return token, facts


def _scim_hook(ws: WorkspaceConfig, token: str) -> Any:
    from entra_provisioning.hooks.scim import DatabricksScimHook

    return DatabricksScimHook(
        ws.databricks_instance,
        token,
        max_concurrency=ws.scim_concurrency,
        max_creates_per_second=ws.scim_max_creates_per_second,
    )


@task_errors
def fetch_token(ws: WorkspaceConfig) -> dict[str, Any]:
    """Read the PAT, check it is usable and belongs to a workspace admin; return facts, not the token."""
    token, facts = _read_token(ws)
    result = facts.to_dict()
    if facts.expires_on is not None:
        left = facts.expires_on - datetime.now(UTC)
        result["expires_in_days"] = left.days
        if left <= timedelta(days=ws.secret_expiry_warning_days):
            log.warning(
                "The token secret %s expires in %d day(s), on %s: rotate it before then",
                facts.name,
                left.days,
                facts.expires_on.isoformat(),
            )
    with _scim_hook(ws, token) as scim:
        admin = scim.check_admin()
    result["admin_user_name"] = admin
    result["workspace"] = ws.databricks_instance
    log.info(
        "Token from secret %s (version %s) authenticates to %s as workspace admin %s",
        facts.name,
        facts.version,
        ws.databricks_instance,
        admin,
    )
    return result


@task_errors
def resolve_members(ws: WorkspaceConfig) -> dict[str, Any]:
    """List the configured groups' transitive members and map them to Databricks userNames."""
    from entra_provisioning.hooks.entra import EntraGroupsHook

    hook = EntraGroupsHook(msgraph_conn_id=ws.msgraph_conn_id)
    # Pages stream from Graph into the plan, which keeps only what it needs of each object: 100,000 raw
    # Graph dicts (~80 MB) never stay alive beside the resolution, one page (≤ 999) at most.
    with hook.stream_members_by_group(ws.entra_groups) as objects:
        resolution = resolve_plan_members(objects, ws.user_name_attribute)
    for group in resolution.empty_groups:
        log.warning("Entra group %r has no members; nothing to provision from it", group)
    skipped = {reason: n for reason, n in resolution.skipped_counts().items() if n}
    log.info(
        "Resolved %d member(s) from %d group(s) in %d Graph page(s); skipped: %s",
        len(resolution.members),
        len(ws.entra_groups),
        hook.pages_read,
        skipped or "none",
    )
    return resolution.to_record()


@task_errors
def add_missing_users(
    ws: WorkspaceConfig, token_facts: dict[str, Any], members: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any]:
    """Create the members the workspace lacks (add-only) and return the run summary."""
    dry_run = bool(params.get("dry_run", False))
    override = params.get("max_new_users_per_run")
    limit = ws.max_new_users_per_run if override is None else int(override)
    resolution = Resolution.from_record(members)

    # Pin the version fetch_token checked, so one run uses one token even if it is rotated meanwhile.
    token, _ = _read_token(ws, token_facts.get("secret_version") or None)
    with _scim_hook(ws, token) as scim:
        existing = scim.list_users()
        plan = build_plan(resolution, existing)
        log.info(
            "Workspace has %d user(s); %d member(s) already present, %d to add, %d drift",
            len(existing),
            len(plan.already_present),
            len(plan.to_add),
            len(plan.drift),
        )
        check_guard(plan, limit)
        outcome: CreateOutcome | None = None
        if not dry_run and plan.to_add:
            # A throttling ceiling or an outage propagates to Airflow's retries; nothing is lost, because
            # the next attempt lists users again and adds only what is still missing.
            outcome = scim.create_users(plan.to_add)
            if scim.throttled_responses:
                log.info("Databricks throttled %d request(s); they were retried", scim.throttled_responses)
        elif not dry_run:
            outcome = CreateOutcome()

    summary = build_summary(resolution, plan, outcome, dry_run=dry_run)
    log.info("Run summary for %s:\n%s", ws.name, summary.render_table())
    if outcome is not None and outcome.failed:
        failures = "; ".join(f"{name}: {reason}" for name, reason in sorted(outcome.failed.items())[:50])
        raise UsersNotAddedError(
            f"{len(outcome.failed)} user(s) could not be added (the others were): {failures}. "
            "A retry adds only what is still missing."
        )
    return summary.to_dict()
