"""The overview page's web app, mounted in Airflow's api-server by the plugin (``overview_plugin.py``).

Two routes, both behind Airflow's own authentication (a plugin's app is not by itself):

- ``GET {prefix}/`` the page (``overview.html``: self-contained, no CDN), which fetches
- ``GET {prefix}/api/workspaces`` one JSON row per workspace DAG the user may read.

Each request resolves its user exactly as Airflow's REST API does
(``airflow.api_fastapi.core_api.security.get_user``: an ``Authorization: Bearer`` JWT, else the UI's
``_token`` cookie), so no credentials is 401, a bad or expired token 401/403; the rows are then limited
to the DAGs the auth manager lets that user read (``get_authorized_dag_ids``).

This module imports FastAPI and Airflow's API modules only inside :func:`create_app`, which the plugin
calls when the api-server asks for its apps: every task process loads the plugins folder too, and must
not pay for them.

No ``from __future__ import annotations`` here: FastAPI reads the route functions' annotations at run
time, and those name dependencies defined inside :func:`create_app`.
"""

import logging
import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from entra_provisioning.config import ConfigError, load_config_report
from entra_provisioning.factory import config_path
from entra_provisioning.overview_data import DEFAULT_WARNING_DAYS, missing_pools, overview_rows

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)

#: Where the app is mounted in the api-server, and the UI route of its navigation entry.
URL_PREFIX = "/entra-provisioning"
URL_ROUTE = "entra-provisioning"
PAGE = Path(__file__).with_name("overview.html")


@cache
def _thresholds_of(path: str, mtime_ns: int) -> tuple[dict[str, int], str]:
    report = load_config_report(path)
    days = {ws.name: ws.secret_expiry_warning_days for ws in report.config.workspaces}
    return days, f"secret_expiry_warning_days from {path}"


def warning_thresholds() -> tuple[dict[str, int], str]:
    """Each workspace's token-expiry warning threshold, and where it came from (shown on the page).

    The threshold is configuration, not metadata: it is read from the workspaces file the DAGs are built
    from, when the api-server can read it (it can in ``make ui`` and in the compose deployment), and
    cached until the file changes. Otherwise every workspace gets the field's default.
    """
    path = config_path()
    try:
        return _thresholds_of(str(path), os.stat(path).st_mtime_ns)
    except (OSError, ConfigError) as exc:
        log.info("Overview page: token-expiry thresholds default to %d days (%s)", DEFAULT_WARNING_DAYS, exc)
        return {}, f"the default {DEFAULT_WARNING_DAYS} days (the workspaces file could not be read here)"


def page_data(session: Any, readable: set[str]) -> dict[str, Any]:
    """The JSON the page renders: rows, the threshold's source and the tags/states to filter by."""
    thresholds, source = warning_thresholds()
    rows = overview_rows(session, readable, warning_days=thresholds)
    return {
        "rows": [row.to_json() for row in rows],
        "threshold_source": source,
        "default_warning_days": DEFAULT_WARNING_DAYS,
        "missing_pools": missing_pools(session, [row.dag_id for row in rows]),
    }


def create_app() -> "FastAPI":
    """The FastAPI app the plugin mounts at :data:`URL_PREFIX`."""
    from typing import Annotated

    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
    from airflow.api_fastapi.common.db.common import SessionDep
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import Depends, FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse

    app = FastAPI(
        title="Entra provisioning overview",
        description="One row per Entra ID → Databricks provisioning DAG the caller may read.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    user_dep = Annotated[BaseUser, Depends(get_user)]
    no_store = {"Cache-Control": "no-store"}

    @app.get("/", response_class=HTMLResponse)
    def page(user: user_dep) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers=no_store)

    @app.get("/api/workspaces")
    def workspaces(user: user_dep, session: SessionDep) -> JSONResponse:
        readable = get_auth_manager().get_authorized_dag_ids(user=user, method="GET")
        return JSONResponse(page_data(session, set(readable)), headers=no_store)

    return app


@cache
def overview_app() -> "FastAPI":
    """The one app instance (the plugin manager may ask for the plugin's apps more than once)."""
    return create_app()
