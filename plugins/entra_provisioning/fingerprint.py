"""One run, one version of its workspace entry.

Airflow workers parse the DAG file again when each task starts, so a workspaces file edited while a run is
in flight could give ``fetch_token`` one version of an entry and ``add_missing_users`` another: members
resolved from the old groups written with the new options, or the other way round. ``fetch_token`` records
:func:`config_fingerprint` of the entry it ran with; the later tasks compare it with their own entry's
before they read or write anything (:func:`check_unchanged`), and refuse to continue with a different one.

The fingerprint covers every field of the resolved entry (defaults and aliases applied) except those in
:data:`FINGERPRINT_IGNORES`, which change how fast, when or who is told, never what a run writes. A new
field is covered unless it is added there with its reason: an unknown field refuses rather than mixes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from entra_provisioning.config import WorkspaceConfig
from entra_provisioning.errors import ConfigChangedError

__all__ = ["FINGERPRINT_IGNORES", "FINGERPRINT_KEY", "check_unchanged", "config_fingerprint"]

#: The key under which ``fetch_token`` records the fingerprint in its result (its XCom).
FINGERPRINT_KEY = "config_fingerprint"

#: Fields left out of the fingerprint, each with why a change of it mid-run cannot mix two versions.
FINGERPRINT_IGNORES: Mapping[str, str] = {
    "schedule": "when runs start, not what one writes (runs_per_day is resolved into it)",
    "enabled": "a disabled entry has no DAG, so no task of it starts",
    "owner": "shown in the UI only",
    "tags": "shown in the UI only",
    "description": "shown in the UI only",
    "notify": "who is told about the run, read by the report task",
    "secret_expiry_warning_days": "a log warning's threshold",
    "scim_concurrency": "how many creates are in flight, not which",
    "scim_max_creates_per_second": "the pace of creates, not which",
    "account_max_assignments_per_second": "the pace of assignments, not which",
    "account_max_reads_per_second": "the pace of reads",
    "account_max_list_calls_per_minute": "the pace of list calls",
    "group_patch_batch_size": "how memberships are batched, not which",
    "retries": "how often Airflow retries a failed task; every attempt re-reads what exists",
    "retry_delay_seconds": "when Airflow retries a failed task",
}

#: Lists whose order does not change what is written: the union of the groups' members is the same, and
#: entitlements are a set.
_UNORDERED = frozenset(("entra_groups", "entitlements"))


def _covered(ws: WorkspaceConfig) -> dict[str, Any]:
    values = {
        f.name: getattr(ws, f.name) for f in dataclasses.fields(ws) if f.name not in FINGERPRINT_IGNORES
    }
    for name in _UNORDERED:
        values[name] = sorted(values[name])
    return values


def config_fingerprint(ws: WorkspaceConfig) -> str:
    """A stable hash of what in ``ws`` decides what a run writes (every field but :data:`FINGERPRINT_IGNORES`).

    Pure and deterministic across processes: the same resolved entry gives the same 16 hex digits whatever
    the order of keys in the file, an alias or a default spelled out. It holds no secret (the entry holds
    none: a Key Vault URL names a secret, it is not one).
    """
    text = json.dumps(_covered(ws), sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def check_unchanged(ws: WorkspaceConfig, token_facts: Mapping[str, Any], task: str) -> str | None:
    """Raise :class:`ConfigChangedError` unless ``ws`` is the version of the entry ``fetch_token`` ran with.

    :param token_facts: ``fetch_token``'s result; its :data:`FINGERPRINT_KEY` is the recorded fingerprint.
    :param task: the task asking, for the message.
    :returns: the fingerprint recorded, or ``None`` when there is none (a run whose ``fetch_token`` ran under
        a version of this package that did not record one: nothing to compare; the caller logs it).
    """
    recorded = token_facts.get(FINGERPRINT_KEY)
    if recorded is None:
        return None
    current = config_fingerprint(ws)
    if current != str(recorded):
        raise ConfigChangedError(
            f"the workspace entry {ws.name!r} changed during the run (fetch_token ran with version "
            f"{recorded}, {task} parsed version {current}): {task} stopped before reading or writing "
            "anything; the next run will use the new version"
        )
    return str(recorded)
