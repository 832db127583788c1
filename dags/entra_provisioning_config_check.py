"""Airflow DAG file that defines no DAG: it fails to import while the workspaces file has any problem.

Airflow then shows the problems (file, entry, field) as this file's import error, while
entra_provisioning_dags.py keeps the DAGs of the valid entries running (docs/configuration.md: "When the
workspaces file has a problem"). Keep the two files side by side in the DAGs folder.
"""

from entra_provisioning.factory import check_config

check_config()
