"""What the three hooks share about a server's ``Retry-After``: how to read it and how long to honour it."""

from __future__ import annotations

import time

#: A Retry-After beyond this fails the task (Airflow retries it later) instead of holding a worker slot
#: asleep inside it for hours. The same ceiling for Key Vault, Graph and Databricks.
MAX_RETRY_AFTER_SECONDS = 120.0


def parse_retry_after(raw: object) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or an HTTP date); ``None`` if unusable."""
    if raw is None:
        return None
    text = str(raw).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(text).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
