"""Airflow's plugin manager imports the top-level modules of the plugins folder and registers the
AirflowPlugin classes it finds in them: this one is the overview page's (``entra_provisioning/``
itself is in ``.airflowignore``)."""

from entra_provisioning.overview_plugin import EntraProvisioningPlugin

__all__ = ["EntraProvisioningPlugin"]
