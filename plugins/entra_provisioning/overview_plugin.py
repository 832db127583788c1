"""The Airflow plugin of the "Entra provisioning" overview page: a FastAPI app and its navigation entry.

Airflow loads it from the plugins folder through ``plugins/entra_provisioning_overview.py`` (the package
directory itself is in ``.airflowignore``, so that the plugin manager does not import each module of the
package as a top-level module).

The navigation entry is an ``external_views`` item with a ``url_route``: the UI shows the page inside its
own frame at ``/plugin/entra-provisioning``. The app is built on first use only (see
:attr:`EntraProvisioningPlugin.fastapi_apps`), because every task process loads the plugins folder too.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from entra_provisioning.overview_app import URL_PREFIX, URL_ROUTE, overview_app


class EntraProvisioningPlugin(AirflowPlugin):
    """Mounts the overview page at ``/entra-provisioning`` and adds "Entra provisioning" to Browse."""

    name = "entra_provisioning"
    # The plugin manager may prune this list (a conflicting url_route): it is the plugin's own, not shared.
    external_views = [  # noqa: RUF012
        {
            "name": "Entra provisioning",
            # Relative to the UI's base URL (no leading slash), so a base path is honoured.
            "href": f"{URL_PREFIX.lstrip('/')}/",
            "destination": "nav",
            "category": "browse",
            "url_route": URL_ROUTE,
        }
    ]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        # A property, so that the FastAPI app (and with it Airflow's API modules, seconds of imports) is
        # built only where the api-server mounts plugin apps, not in every task process.
        return [{"app": overview_app(), "url_prefix": URL_PREFIX, "name": "Entra provisioning overview"}]
