"""Test-wide setup: a throwaway Airflow home before anything imports Airflow."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Airflow reads its configuration at import time, so these must be set before any test module imports it.
_airflow_home = Path(tempfile.mkdtemp(prefix="entra-prov-airflow-"))
os.environ.setdefault("AIRFLOW_HOME", str(_airflow_home))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")

pytest_plugins = ["sandbox.pytest_plugin"]


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every hook keeps its retry policy (attempts, ceiling, deadline) with near-zero backoff, so tests that
    exhaust retries take milliseconds, not the seconds real back-off takes. A server's Retry-After is still
    honoured; tests that check the policy itself build their own."""
    from dataclasses import replace

    from entra_provisioning.hooks.entra import EntraGroupsHook
    from entra_provisioning.hooks.key_vault import KeyVaultSecretHook
    from entra_provisioning.hooks.scim import DatabricksScimHook

    for hook in (EntraGroupsHook, KeyVaultSecretHook, DatabricksScimHook):
        fast = replace(hook.default_retry_policy, backoff_base=0.01, backoff_max=0.05)
        monkeypatch.setattr(hook, "default_retry_policy", fast)
