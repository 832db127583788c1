"""Airflow DAG file: one provisioning DAG per valid workspace entry (docs/configuration.md).

An invalid entry is skipped here, not raised: an import error would make Airflow mark every DAG of this
file stale. entra_provisioning_config_check.py reports it instead. A file that is unusable as a whole
(not YAML, not a mapping, a broken settings or defaults block) still fails this file.
"""

from entra_provisioning.factory import build_dags

globals().update(build_dags())
