"""Task bodies of a workspace DAG: fetch_token → resolve_members → add_missing_users.

Each returns only non-secret, JSON-safe facts (they become XComs). The token (a PAT read from Key Vault,
or one obtained from the entry's Databricks connection) is obtained inside the task that needs it, masked
at once, and dropped when the task ends. Failures that a retry
cannot fix (bad config, missing group, refused token, guard) fail the task without retries; throttling
and outages are left to Airflow's retries, which are safe because every run re-reads what exists.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from entra_provisioning import group_sync
from entra_provisioning.config import WorkspaceConfig
from entra_provisioning.errors import PermanentError, TransientError
from entra_provisioning.fingerprint import FINGERPRINT_KEY, check_unchanged, config_fingerprint
from entra_provisioning.plan import (
    AccountPlan,
    Plan,
    Resolution,
    WorkspaceAccess,
    build_account_plan,
    build_plan,
    check_guard,
)
from entra_provisioning.plan import resolve_members as resolve_plan_members
from entra_provisioning.run_record import CountsRecord, outcome_of_result
from entra_provisioning.summary import CreateOutcome, build_summary

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")


class UsersNotAddedError(TransientError):
    """Some users could not be added while the others were; a retry adds only what is still missing."""

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        #: The run summary of the attempt, for the counts record pushed before the task fails.
        self.summary = summary or {}


class GroupsNotMirroredError(PermanentError):
    """Some groups could not be mirrored (someone else's group of that name, a refused change): a retry
    cannot change that, so Airflow does not retry; the rest of the run is done."""

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = summary or {}


class GroupsNotMirroredYetError(TransientError):
    """Some groups could not be mirrored because Databricks kept failing or throttling their changes
    (which is also how a group Databricks keeps in sync itself answers): Airflow retries the task."""

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = summary or {}


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

            failure = AirflowFailException(str(exc))
            # Kept for the counts record (which outcome this was); the log shows only the message.
            failure.provisioning_error = exc  # type: ignore[attr-defined]
            raise failure from None

    return wrapper


def recorded(
    task: str,
    body: Callable[[CountsRecord], dict[str, Any]],
    push: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Run a task body and push its counts record (:mod:`entra_provisioning.run_record`) in every outcome.

    On failure the record is pushed before the error propagates, so a failed attempt has its counts and its
    one-line reason in XCom. ``push`` stores the record (the task instance's ``xcom_push``); a failure to
    store it is logged, never hides the task's own outcome.
    """
    counts = CountsRecord(task)
    try:
        result = body(counts)
    except Exception as exc:
        original = getattr(exc, "provisioning_error", exc)
        summary = getattr(original, "summary", None)
        if summary:
            counts.update_from_summary(summary)
        _push_quietly(push, counts.finish(failure_outcome(original), str(exc), at=datetime.now(UTC)))
        raise
    if task == "add_missing_users":
        counts.update_from_summary(result)
    _push_quietly(push, counts.finish(outcome_of_result(result), at=datetime.now(UTC)))
    return result


def failure_outcome(error: BaseException) -> str:
    """The counts record's ``outcome`` for a task that raised ``error``."""
    from entra_provisioning.plan import GuardExceeded

    if isinstance(error, GuardExceeded):
        return "guard_stop"
    if isinstance(error, UsersNotAddedError):
        return "partial"
    return "failed"


def _push_quietly(push: Callable[[dict[str, Any]], None], record: dict[str, Any]) -> None:
    try:
        push(record)
    except Exception as exc:
        log.warning("Could not store the counts record (%s: %s)", type(exc).__name__, exc)


def _read_token(ws: WorkspaceConfig, version: str | None = None) -> tuple[str, Any]:
    from airflow.sdk.log import mask_secret

    from entra_provisioning.hooks.key_vault import KeyVaultSecretHook

    assert ws.pat_secret_url is not None  # the loader gives every entry a PAT or a connection
    token, facts = KeyVaultSecretHook(azure_conn_id=ws.azure_conn_id).get_secret(ws.pat_secret_url, version)
    mask_secret(token)
    return token, facts


def _connection_tokens(ws: WorkspaceConfig) -> Any:
    """The entry's Databricks connection as a token source, bound to the entry's own host(s)."""
    from entra_provisioning.hooks.databricks_auth import DatabricksConnectionTokens

    assert ws.databricks_conn_id is not None  # called only for entries with a connection
    if ws.is_account:
        return DatabricksConnectionTokens(
            ws.databricks_conn_id,
            allowed_origins=(ws.account_host, ws.databricks_instance),
            token_origin=ws.account_host,
            account_id=ws.account_id,
        )
    return DatabricksConnectionTokens(
        ws.databricks_conn_id,
        allowed_origins=(ws.databricks_instance,),
        token_origin=ws.databricks_instance,
        allow_pat=True,
    )


def _masked(tokens: Any) -> Callable[[], str]:
    """``tokens.token`` with every new token masked in the task log before anything can print it."""
    from airflow.sdk.log import mask_secret

    masked: set[str] = set()

    def current() -> str:
        token: str = tokens.token()
        if token not in masked:
            mask_secret(token)
            masked.add(token)
        return token

    return current


def _scim_hook(ws: WorkspaceConfig, token: str | Callable[[], str]) -> Any:
    from entra_provisioning.hooks.scim import AccountPace, DatabricksScimHook

    if ws.is_account:
        return DatabricksScimHook(
            ws.account_host,
            token,
            account_id=ws.account_id,
            max_concurrency=ws.scim_concurrency,
            max_creates_per_second=ws.scim_max_creates_per_second,
            account_pace=AccountPace(
                assignments_per_second=ws.account_max_assignments_per_second,
                reads_per_second=ws.account_max_reads_per_second,
                list_calls_per_minute=ws.account_max_list_calls_per_minute,
            ),
        )
    return DatabricksScimHook(
        ws.databricks_instance,
        token,
        max_concurrency=ws.scim_concurrency,
        max_creates_per_second=ws.scim_max_creates_per_second,
    )


def _fetch_connection_token(ws: WorkspaceConfig) -> dict[str, Any]:
    tokens = _connection_tokens(ws)
    method = tokens.check()
    token = _masked(tokens)
    result: dict[str, Any] = {
        "credential": method,
        "databricks_conn_id": ws.databricks_conn_id,
        "target": ws.target,
        "workspace": ws.databricks_instance,
    }
    with _scim_hook(ws, token) as scim:
        if ws.is_account:
            scim.check_account_admin()
            result["account"] = f"{ws.account_host} (account {ws.account_id})"
        else:
            result["admin_user_name"] = scim.check_admin()
    if tokens.expires_on is not None:
        result["token_expires_in_minutes"] = int((tokens.expires_on - datetime.now(UTC).timestamp()) // 60)
    log.info(
        "Connection %s (%s) authenticates to %s as %s",
        ws.databricks_conn_id,
        method,
        ws.account_host if ws.is_account else ws.databricks_instance,
        f"an admin of account {ws.account_id}"
        if ws.is_account
        else f"workspace admin {result['admin_user_name']}",
    )
    return result


@task_errors
def fetch_token(ws: WorkspaceConfig, counts: CountsRecord | None = None) -> dict[str, Any]:
    """Obtain the token, check it is usable and belongs to an admin; return facts, not the token.

    With a PAT, that is a Key Vault read and the workspace's ``/Me``; with a Databricks connection, a token
    from the connection's identity and, in account mode, a read of the account's users. The facts include the
    entry's :func:`~entra_provisioning.fingerprint.config_fingerprint`, which the later tasks of the run check.
    """
    counts = counts or CountsRecord("fetch_token")
    counts.update(token_expires_in_days=None, token_expires_on=None)
    if ws.databricks_conn_id is not None:
        result = _fetch_connection_token(ws)
    else:
        result = _fetch_key_vault_token(ws, counts)
    result[FINGERPRINT_KEY] = config_fingerprint(ws)
    return result


def _fetch_key_vault_token(ws: WorkspaceConfig, counts: CountsRecord) -> dict[str, Any]:
    token, facts = _read_token(ws)
    result = facts.to_dict()
    if facts.expires_on is not None:
        left = facts.expires_on - datetime.now(UTC)
        result["expires_in_days"] = left.days
        counts.update(token_expires_in_days=left.days, token_expires_on=facts.expires_on.isoformat())
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


def _same_entry(ws: WorkspaceConfig, token_facts: dict[str, Any], task: str) -> None:
    """Refuse to go on with another version of the entry than ``fetch_token``'s (before any I/O)."""
    if check_unchanged(ws, token_facts, task) is None:
        log.warning(
            "fetch_token recorded no config fingerprint (it ran under an older version of this package): "
            "%s cannot check that the workspace entry is unchanged",
            task,
        )


@task_errors
def resolve_members(
    ws: WorkspaceConfig, counts: CountsRecord | None = None, token_facts: dict[str, Any] | None = None
) -> dict[str, Any]:
    """List the configured groups' transitive members and map them to Databricks userNames.

    :param token_facts: ``fetch_token``'s result; when given (the DAG always gives it), the entry must be
        the version ``fetch_token`` ran with, or the task fails before calling Graph.
    """
    from entra_provisioning.hooks.entra import EntraGroupsHook

    if token_facts is not None:
        _same_entry(ws, token_facts, "resolve_members")
    counts = counts or CountsRecord("resolve_members")
    hook = EntraGroupsHook(msgraph_conn_id=ws.msgraph_conn_id)
    try:
        return _resolve_members(ws, hook, counts)
    finally:
        counts.update(throttled=hook.throttled_responses, graph_pages=hook.pages_read)


def _resolve_members(ws: WorkspaceConfig, hook: Any, counts: CountsRecord) -> dict[str, Any]:
    # Pages stream from Graph into the plan, which keeps only what it needs of each object: 100,000 raw
    # Graph dicts (~80 MB) never stay alive beside the resolution, one page (≤ 999) at most.
    with hook.stream_members_by_group(ws.entra_groups, with_app_id=ws.include_service_principals) as objects:
        resolution = resolve_plan_members(
            objects,
            ws.user_name_attribute,
            include_service_principals=ws.include_service_principals,
            group_objects=[hook.group_objects[group] for group in ws.entra_groups],
        )
    for group in resolution.empty_groups:
        log.warning("Entra group %r has no members; nothing to provision from it", group)
    skipped = {reason: n for reason, n in resolution.skipped_counts().items() if n}
    counts.update(members_resolved=len(resolution.members), skipped=resolution.skipped_counts())
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
    ws: WorkspaceConfig,
    token_facts: dict[str, Any],
    members: dict[str, Any],
    params: dict[str, Any],
    counts: CountsRecord | None = None,
) -> dict[str, Any]:
    """Create the members the workspace lacks (add-only) and return the run summary.

    ``counts`` (the attempt's counts record) learns the plan's counts before the guard and any write, so
    a guard stop or a failure part-way is recorded with what was known. Before anything else, the entry
    must be the version ``fetch_token`` ran with (``token_facts``' fingerprint), so that one run never
    writes with one version's options what it resolved from another version's groups.
    """
    _same_entry(ws, token_facts, "add_missing_users")
    counts = counts or CountsRecord("add_missing_users")
    dry_run = bool(params.get("dry_run", False))
    override = params.get("max_new_users_per_run")
    limit = ws.max_new_users_per_run if override is None else int(override)
    resolution = Resolution.from_record(members)
    counts.update(
        dry_run=dry_run,
        target=ws.target,
        members_resolved=len(resolution.members),
        skipped=resolution.skipped_counts(),
        skipped_total=len(resolution.skipped),
    )

    token: str | Callable[[], str]
    if ws.databricks_conn_id is not None:
        token = _masked(_connection_tokens(ws))
    else:
        # Pin the version fetch_token checked, so one run uses one token even if it is rotated meanwhile.
        token, _ = _read_token(ws, token_facts.get("secret_version") or None)
    if ws.is_account:
        return _add_to_account(ws, token, resolution, dry_run=dry_run, limit=limit, counts=counts)
    extras_outcome: group_sync.ExtrasOutcome | None = None
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
        extras = group_sync.prepare(scim, ws, resolution, existing)
        _count_plan(counts, plan)
        check_guard(plan, limit, extras.principals_to_add)
        outcome: CreateOutcome | None = None
        if not dry_run and plan.to_add:
            # A throttling ceiling or an outage propagates to Airflow's retries; nothing is lost, because
            # the next attempt lists users again and adds only what is still missing.
            outcome = scim.create_users(plan.to_add, ws.entitlements, want_ids=ws.mirror_groups)
        elif not dry_run:
            outcome = CreateOutcome()
        if outcome is not None:
            extras_outcome = group_sync.apply(scim, ws, extras, outcome.ids)
        if scim.throttled_responses:
            log.info("Databricks throttled %d request(s); they were retried", scim.throttled_responses)
        counts.update(throttled=scim.throttled_responses)

    return _finish(ws, resolution, plan, outcome, dry_run=dry_run, extras=(extras, extras_outcome))


def _add_to_account(
    ws: WorkspaceConfig,
    token: str | Callable[[], str],
    resolution: Resolution,
    *,
    dry_run: bool,
    limit: int | None,
    counts: CountsRecord,
) -> dict[str, Any]:
    """Account target: create the members the account lacks, and give every member without access to the
    workspace a ``USER`` assignment; nobody who has any assignment is assigned again."""
    assert ws.workspace_id is not None  # the loader derives or requires it for target: account
    extras_outcome: group_sync.ExtrasOutcome | None = None
    with _scim_hook(ws, token) as scim:
        account_users = scim.list_users()
        assignments = scim.list_permission_assignments(ws.workspace_id)
        direct = {
            str(entry["principal"].get("principal_id")): tuple(entry.get("permissions") or ())
            for entry in assignments
        }
        groups = [
            str(entry["principal"]["principal_id"])
            for entry in assignments
            if entry["principal"].get("group_name")
        ]
        via_group = frozenset(scim.group_member_ids(groups)) if groups else frozenset()
        access = WorkspaceAccess(direct, via_group)
        through_groups = ws.mirror_groups and not ws.assign_users_directly
        plan = build_account_plan(
            resolution, account_users, access, access_through_mirrored_groups=through_groups
        )
        log.info(
            "Account has %d user(s); workspace %s has %d direct assignment(s) and %d assigned group(s) "
            "(%d user(s) through groups); %d member(s) already have access, %d to assign (%d to create first), "
            "%d drift",
            len(account_users),
            ws.workspace_id,
            len(direct),
            len(groups),
            len(via_group),
            len(plan.already_present),
            len(plan.to_add),
            len(plan.to_create),
            len(plan.drift),
        )
        extras = group_sync.prepare(scim, ws, resolution, account_users, access)
        _count_plan(counts, plan)
        check_guard(plan, limit, extras.principals_to_add)
        outcome: CreateOutcome | None = None
        if not dry_run:
            outcome = CreateOutcome()
            if plan.to_add:
                outcome = scim.provision_account_users(
                    ws.workspace_id, plan.to_create, plan.to_assign, assign=not through_groups
                )
            extras_outcome = group_sync.apply(scim, ws, extras, outcome.ids, access)
            if scim.throttled_responses:
                log.info("Databricks throttled %d request(s); they were retried", scim.throttled_responses)
        counts.update(throttled=scim.throttled_responses)
    return _finish(ws, resolution, plan, outcome, dry_run=dry_run, extras=(extras, extras_outcome))


def _finish(
    ws: WorkspaceConfig,
    resolution: Resolution,
    plan: Plan | AccountPlan,
    outcome: CreateOutcome | None,
    *,
    dry_run: bool,
    extras: tuple[group_sync.Extras, group_sync.ExtrasOutcome | None] | None = None,
) -> dict[str, Any]:
    summary = build_summary(resolution, plan, outcome, dry_run=dry_run)
    extra_record = group_sync.record(extras[0], extras[1], resolution, ws) if extras else {}
    log.info("Run summary for %s:\n%s%s", ws.name, summary.render_table(), group_sync.render(extra_record))
    record = {**summary.to_dict(), **extra_record}
    extras_outcome = extras[1] if extras else None
    sps_failed = extras_outcome.sps_failed if extras_outcome else {}
    groups_failed = extras_outcome.groups_failed if extras_outcome else {}
    if outcome is not None and (outcome.failed or sps_failed):
        failed = {**outcome.failed, **sps_failed}
        failures = "; ".join(f"{name}: {reason}" for name, reason in sorted(failed.items())[:50])
        groups_note = f" Groups not mirrored: {', '.join(sorted(groups_failed))}." if groups_failed else ""
        raise UsersNotAddedError(
            f"{len(failed)} user(s) could not be added (the others were): {failures}. "
            f"A retry adds only what is still missing.{groups_note}",
            summary=record,
        )
    if groups_failed:
        problems = "; ".join(f"{name}: {reason}" for name, reason in sorted(groups_failed.items()))
        transient = extras_outcome is not None and bool(extras_outcome.groups_failed_transient)
        message = (
            f"{len(groups_failed)} group(s) could not be mirrored (users and the other groups were "
            f"provisioned): {problems}"
        )
        if transient:
            raise GroupsNotMirroredYetError(message, summary=record)
        raise GroupsNotMirroredError(message, summary=record)
    return record


def _count_plan(counts: CountsRecord, plan: Plan | AccountPlan) -> None:
    """What the plan knows, recorded before the guard and any write."""
    counts.update(
        already_present=len(plan.already_present),
        to_add=len(plan.to_add),
        drift=len(plan.drift),
    )
