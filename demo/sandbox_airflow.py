"""Point a real Airflow at a running sandbox: connections, workspaces file and environment.

Used by ``make demo``, ``make ui`` and the end-to-end tests, so that all three run the product exactly
as an operator would, with only endpoints and the CA differing from a real tenant.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parents[1]

#: The app registration the Graph connection signs in as (it exists in the demo seed).
GRAPH_IDENTITY = "graph-reader"
#: The same with Application.Read.All, so that service principal members carry their appId: the
#: connection of entries that provision service principals.
GRAPH_APPS_IDENTITY = "graph-reader-apps"
GRAPH_APPS_CONN_ID = "msgraph_apps"
#: The managed identity the Databricks connection of account-target entries uses (an account admin in
#: the demo seed), and that connection's id.
DATABRICKS_IDENTITY = "airflow-mi"
DATABRICKS_CONN_ID = "databricks_mi"


@dataclass(frozen=True)
class DemoWorkspace:
    """One workspace entry to provision in the sandbox."""

    name: str
    sandbox_workspace: str
    groups: Sequence[str]
    secret: str | None
    options: Mapping[str, Any] = field(default_factory=dict)
    target: str = "workspace"


#: The demo: one workspace that already has some users (and one in no group), one that starts empty,
#: both with a Key Vault PAT; and an identity-federated one provisioned through the account with a
#: managed identity.
DEMO_WORKSPACES: tuple[DemoWorkspace, ...] = (
    DemoWorkspace(
        name="alpha",
        sandbox_workspace="ws-alpha",
        groups=("Data Engineers", "Data Scientists"),
        secret="ws-alpha-pat",
        # Also mirrors both groups as workspace groups, with the service principal in Data Engineers.
        options={
            "user_name_attribute": "mail",
            "mirror_groups": True,
            "include_service_principals": True,
            "msgraph_conn_id": GRAPH_APPS_CONN_ID,
        },
    ),
    DemoWorkspace(
        name="beta",
        sandbox_workspace="ws-beta",
        groups=("Analysts & Friends's Club", "Large Team", "Empty Group"),
        secret="ws-beta-pat",
    ),
    DemoWorkspace(
        name="gamma",
        sandbox_workspace="ws-gamma",
        groups=("Data Engineers", "Data Scientists"),
        secret=None,
        options={"user_name_attribute": "mail"},
        target="account",
    ),
)


def load_endpoints(path: str | os.PathLike[str]) -> dict[str, Any]:
    return dict(json.loads(Path(path).read_text()))


def connections_env(endpoints: Mapping[str, Any]) -> dict[str, str]:
    """Airflow connections as ``AIRFLOW_CONN_*`` variables, the way an operator would define them.

    Key Vault: an ``azure`` connection with no secret, i.e. ``DefaultAzureCredential`` → managed identity
    (``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``). Graph: an ``msgraph`` connection with a client secret.
    """
    graph = urlsplit(endpoints["graph"]["origin"])
    reader = endpoints["identities"][GRAPH_IDENTITY]
    apps_reader = endpoints["identities"][GRAPH_APPS_IDENTITY]
    msgraph = {
        "conn_type": "msgraph",
        "host": graph.netloc,
        "schema": "https",
        "login": reader["client_id"],
        "password": reader["client_secret"],
        "extra": {
            "tenant_id": endpoints["tenant_id"],
            "authority": endpoints["identity"]["authority_host"],
            "disable_instance_discovery": True,
            # Hosts the bearer token may be sent to (the provider defaults this to the authority).
            "allowed_hosts": graph.hostname,
            # Lets httpx honour SSL_CERT_FILE, which points at a bundle holding the sandbox's CA.
            "trust_env": True,
        },
    }
    # Databricks: the provider's connection type, credentials only (no host: the entry decides it).
    databricks = {
        "conn_type": "databricks",
        "extra": {
            "use_azure_managed_identity": True,
            "azure_managed_identity_client_id": endpoints["identities"][DATABRICKS_IDENTITY]["client_id"],
        },
    }
    msgraph_apps = {**msgraph, "login": apps_reader["client_id"], "password": apps_reader["client_secret"]}
    return {
        "AIRFLOW_CONN_AZURE_DEFAULT": json.dumps({"conn_type": "azure"}),
        "AIRFLOW_CONN_MSGRAPH_DEFAULT": json.dumps(msgraph),
        f"AIRFLOW_CONN_{GRAPH_APPS_CONN_ID.upper()}": json.dumps(msgraph_apps),
        f"AIRFLOW_CONN_{DATABRICKS_CONN_ID.upper()}": json.dumps(databricks),
    }


def workspaces_yaml(
    endpoints: Mapping[str, Any],
    workspaces: Sequence[DemoWorkspace] = DEMO_WORKSPACES,
    defaults: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> str:
    """A workspaces file for the sandbox: loopback hosts are allow-listed explicitly; ``settings`` adds to
    the file's ``settings:`` (``graph_pool``, for instance)."""
    entries = []
    for ws in workspaces:
        sandbox_ws = endpoints["workspaces"][ws.sandbox_workspace]
        entry: dict[str, Any] = {
            "name": ws.name,
            "databricks_instance": sandbox_ws["host"],
            "entra_groups": list(ws.groups),
        }
        if ws.target == "account":
            entry.update(
                {
                    "target": "account",
                    "databricks_conn_id": DATABRICKS_CONN_ID,
                    "account_id": endpoints["account"]["account_id"],
                    "account_host": endpoints["account"]["host"],
                    # Loopback hosts do not carry the id the way adb-<id>.<n>.azuredatabricks.net does.
                    "workspace_id": int(sandbox_ws["workspace_id"]),
                }
            )
        else:
            entry["pat_secret_url"] = endpoints["vaults"]["kv-demo"]["secrets"][str(ws.secret)]
        entries.append({**entry, **dict(ws.options)})
    document = {
        "settings": {
            "allowed_workspace_hosts": ["127.0.0.1"],
            "allowed_key_vault_hosts": ["127.0.0.1"],
            "allowed_account_hosts": ["127.0.0.1"],
            **dict(settings or {}),
        },
        "defaults": {
            "schedule": None,
            "max_new_users_per_run": 1000,
            "scim_max_creates_per_second": 50,
            **dict(defaults or {}),
        },
        "workspaces": entries,
    }
    return "# Generated for the local sandbox; loopback hosts are allowed on purpose.\n" + yaml.safe_dump(
        document, sort_keys=False
    )


def airflow_env(
    endpoints: Mapping[str, Any],
    airflow_home: Path,
    config_file: Path,
    *,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for ``airflow`` commands: an isolated home, our DAGs, the sandbox's trust."""
    from sandbox.client import env_for

    env = dict(os.environ if base is None else base)
    env.update(env_for(dict(endpoints)))
    env.update(connections_env(endpoints))
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "ENTRA_PROVISIONING_CONFIG": str(config_file),
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO / "plugins"), str(REPO), env.get("PYTHONPATH")])
            ),
        }
    )
    return env


def airflow(env: Mapping[str, str], *args: str, timeout: float = 600) -> Any:
    """Run an ``airflow`` CLI command with ``env``; returns the CompletedProcess (output captured)."""
    import subprocess
    import sys

    executable = str(Path(sys.executable).with_name("airflow"))
    return subprocess.run(
        [executable, *args], env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def latest_xcom(
    airflow_home: Path, dag_id: str, task_id: str = "add_missing_users", key: str = "return_value"
) -> Any:
    """The newest XCom ``key`` (default: the return value) of ``task_id`` in ``dag_id``, from the SQLite DB."""
    import sqlite3

    with sqlite3.connect(airflow_home / "airflow.db") as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = ? ORDER BY timestamp DESC LIMIT 1",
            (dag_id, task_id, key),
        ).fetchone()
    if row is None:
        return None
    value = row[0]
    return json.loads(value) if isinstance(value, str | bytes) else value
