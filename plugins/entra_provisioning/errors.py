"""The error taxonomy: every failure this package reports on purpose, in two branches.

- :class:`PermanentError`: a retry cannot help (refused credential, missing group, no permission, the
  guard, a bad config). The task fails at once and Airflow does not retry it.
- :class:`TransientError`: waiting can help (throttling beyond what we sleep through in a task, an
  outage). Each hook retries these itself under its :class:`~entra_provisioning.retry.RetryPolicy`; what
  is still failing after that is left to Airflow's task retries.

Each hook maps a response to one of its own classes (each deriving from one branch) through one
:class:`ErrorTable` (HTTP status, refined by the service's own error code), never by reading the message
text. The task bodies are wrapped once
(:func:`entra_provisioning.tasks.task_errors`), so a task fails with the one-line message below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


class ProvisioningError(Exception):
    """Base class for every failure this package reports on purpose."""

    #: Whether Airflow's task retries can help; each branch below sets it.
    retryable: bool = False


class PermanentError(ProvisioningError):
    """A retry cannot help: the task fails without Airflow retrying it."""

    retryable = False


class TransientError(ProvisioningError):
    """Waiting can help: retried inside the hook, then by Airflow's task retries.

    :param retry_after: seconds the service asked us to wait (its ``Retry-After``), if it said.
    """

    retryable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RetryAfterTooLongError(TransientError):
    """The service asked to wait longer than the policy's ceiling: fail now, let Airflow retry later."""


@dataclass(frozen=True)
class ErrorTable:
    """Maps an HTTP answer to one of a hook's error classes: the service's error code first, then the
    status, then the status class (5xx or no answer at all: ``server_error``; other 4xx: ``client_error``).

    Modelled on databricks-sdk's error mapping: a table, never a test of the message text.

    :param by_code: the service's own error code (Databricks ``error_code`` or ``scimType``, Graph
        ``error.code``, Key Vault ``error.innererror.code``) to a class.
    :param by_status: HTTP status to a class.
    """

    server_error: type[TransientError]
    client_error: type[PermanentError]
    by_status: Mapping[int, type[ProvisioningError]] = field(default_factory=dict)
    by_code: Mapping[str, type[ProvisioningError]] = field(default_factory=dict)

    def classify(self, status: int | None, code: str | None = None) -> type[ProvisioningError]:
        """The class for an answer; ``status`` None means no answer came back (connection failed)."""
        if code and code in self.by_code:
            return self.by_code[code]
        if status is None:
            return self.server_error
        if status in self.by_status:
            return self.by_status[status]
        return self.server_error if status >= 500 else self.client_error


class ConfigChangedError(PermanentError):
    """The workspace entry a task parsed is not the one ``fetch_token`` ran with: the file was edited while
    the run was in flight. A retry would parse the new version again and still differ from the recorded
    one, so the run stops before any write; the next run uses the new version throughout."""
