"""One hook per external system: Key Vault (``key_vault``), Microsoft Graph (``entra``), Databricks SCIM
(``scim``). A hook speaks its system only; it knows nothing of plans, summaries or the config file."""

from __future__ import annotations

import logging

#: Loggers of the SDKs under our hooks that write every request's and response's headers, or a dump of
#: the connection, at INFO. The task log keeps what we say plus real warnings; lower these in Airflow's
#: logging config to see the traffic again when debugging.
PROVIDER_HOOK_LOGGER = (
    "airflow.task.hooks.airflow.providers.microsoft.azure.hooks.msgraph.KiotaRequestAdapterHook"
)
SDK_CHATTY_LOGGERS = (
    "azure.core.pipeline.policies.http_logging_policy",
    "azure.identity",
    PROVIDER_HOOK_LOGGER,
)


def quiet_sdk_loggers() -> None:
    """Keep the SDKs' INFO chatter out of the task log (warnings and errors still pass)."""
    for name in SDK_CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
