"""Entra ID → Azure Databricks provisioning for Airflow (add-only).

The version is declared here once; ``pyproject.toml`` and the ``User-Agent`` sent to Graph and Databricks
carry the same one (a test checks).
"""

__version__ = "0.1.0"

#: Sent on every request to Microsoft Graph and Databricks, so that their support and audit logs can tell
#: this job's traffic apart.
USER_AGENT = f"entra-provisioning/{__version__}"
