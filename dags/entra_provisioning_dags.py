"""Airflow DAG file: one provisioning DAG per workspace in the workspaces file (README: "Configuration")."""

from entra_provisioning.factory import build_dags

globals().update(build_dags())
