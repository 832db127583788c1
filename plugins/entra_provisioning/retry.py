"""The one retry policy: how often, how long and how far apart a hook retries a transient failure.

Each hook holds a :class:`RetryPolicy` instance (its own numbers, the same rules) and is the only layer
that retries its requests: the SDKs' own retry machinery (azure-core's ``RetryPolicy``, kiota's
``RetryHandler``) is switched off for our requests, so the attempt count, the ``Retry-After`` ceiling and
the request count are exactly what the policy says.

- **Attempts**: at most ``attempts`` requests per call.
- **Backoff with full jitter**: before attempt *n + 1*, a uniform wait in ``[0, min(backoff_max,
  backoff_base · 2^(n-1))]``. Without jitter, workers throttled at the same instant retry at the same
  instant, and are throttled together again.
- **Retry-After**: a server's ``Retry-After`` is a minimum: we wait that long plus the jitter above. A
  ``Retry-After`` above ``retry_after_ceiling`` fails the call at once (a
  :class:`~entra_provisioning.errors.TransientError`, so Airflow retries the task later) instead of
  holding a worker slot asleep.
- **Deadline**: no call spends more than ``deadline`` seconds in total: a retry whose wait would end past
  it is not made.

``clock``, ``sleep`` and ``random`` are injectable so that tests can drive the policy with a fake clock
and a seeded random source.
"""

from __future__ import annotations

import asyncio
import random as _random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, TypeVar

from entra_provisioning.errors import TransientError

if TYPE_CHECKING:
    import tenacity

_T = TypeVar("_T")

#: One ceiling for Key Vault, Graph and Databricks (docs/operations.md, "Retries and failures").
MAX_RETRY_AFTER_SECONDS = 120.0

#: Called before each retry's wait with (the error, the attempt that failed, the seconds to wait).
OnRetry = Callable[[TransientError, int, float], None]
#: Builds the error a call finally raises from (the last error, the attempts made).
GiveUp = Callable[[TransientError, int], BaseException]


def parse_retry_after(raw: object, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or an HTTP date); ``None`` if unusable."""
    if raw is None:
        return None
    text = str(raw).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(text).timestamp() - now())
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True)
class RetryPolicy:
    """How one hook retries a transient failure; see the module docstring for the rules.

    :param attempts: requests per call, the first included (≥ 1).
    :param backoff_base: seconds; the jitter range before the second attempt.
    :param backoff_max: seconds; the largest jitter range.
    :param retry_after_ceiling: the longest ``Retry-After`` slept through inside a task.
    :param deadline: seconds one call may take in all, waits included.
    :param clock: monotonic seconds (for the deadline).
    :param sleep: blocking sleep (async calls await ``asyncio.sleep`` unless this is replaced).
    :param random: uniform in ``[0, 1)``; each worker process seeds its own.
    """

    attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_ceiling: float = MAX_RETRY_AFTER_SECONDS
    deadline: float = 600.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    random: Callable[[], float] = field(default=_random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if min(self.backoff_base, self.backoff_max, self.retry_after_ceiling, self.deadline) < 0:
            raise ValueError("backoff, ceiling and deadline must not be negative")

    def too_long(self, retry_after: float | None) -> bool:
        """Whether a ``Retry-After`` exceeds the ceiling (the call must fail instead of sleeping)."""
        return retry_after is not None and retry_after > self.retry_after_ceiling

    def jitter(self, attempt: int) -> float:
        """Full jitter after the ``attempt``-th failure: uniform in ``[0, min(max, base · 2^(attempt-1))]``."""
        return self.random() * min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))

    def wait_seconds(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait after the ``attempt``-th failure: the server's ``Retry-After`` (a minimum) plus jitter."""
        return (retry_after or 0.0) + self.jitter(attempt)

    def ceiling_message(self, service: str, seconds: float, action: str = "") -> str:
        """The one-line failure for a ``Retry-After`` over the ceiling, the same for every system."""
        return (
            f"{service} asked to retry {action + ' ' if action else ''}after {seconds:.0f} s, more than the "
            f"{self.retry_after_ceiling:.0f} s ceiling; failing so that Airflow can retry the task later"
        )

    # ------------------------------------------------------------------------------------- running

    def call(
        self,
        attempt: Callable[[], _T],
        *,
        what: str,
        log: Any,
        give_up: GiveUp,
        on_retry: OnRetry | None = None,
    ) -> _T:
        """Run ``attempt`` until it returns, raises a non-transient error, or the policy gives up.

        :param attempt: one request; raises :class:`TransientError` (with ``retry_after`` if the server
            said) for what may be retried, anything else to stop at once.
        :param what: the call, for the retry log line ("SCIM GET Users", …).
        :param log: the hook's logger; each retry is logged once, the same way for every system.
        :param give_up: builds what to raise from the last transient error and the attempts made.
        :param on_retry: also told of each retry before its wait (for counting).
        """
        import tenacity

        retrying = tenacity.Retrying(sleep=self.sleep, **self._tenacity_args(what, log, on_retry))
        try:
            return retrying(attempt)
        except TransientError as exc:
            raise give_up(exc, retrying.statistics.get("attempt_number", 1)) from None

    async def acall(
        self,
        attempt: Callable[[], Awaitable[_T]],
        *,
        what: str,
        log: Any,
        give_up: GiveUp,
        on_retry: OnRetry | None = None,
    ) -> _T:
        """:meth:`call` for a coroutine function."""
        import tenacity

        async def sleep(seconds: float) -> None:
            if self.sleep is time.sleep:
                await asyncio.sleep(seconds)
            else:  # an injected (fake) sleep
                self.sleep(seconds)

        retrying = tenacity.AsyncRetrying(sleep=sleep, **self._tenacity_args(what, log, on_retry))
        try:
            return await retrying(attempt)
        except TransientError as exc:
            raise give_up(exc, retrying.statistics.get("attempt_number", 1)) from None

    def _tenacity_args(self, what: str, log: Any, on_retry: OnRetry | None) -> dict[str, Any]:

        started = self.clock()

        def should_retry(state: tenacity.RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            return isinstance(exc, TransientError) and not self.too_long(exc.retry_after)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            hint = exc.retry_after if isinstance(exc, TransientError) else None
            return self.wait_seconds(state.attempt_number, hint)

        def stop(state: tenacity.RetryCallState) -> bool:
            if state.attempt_number >= self.attempts:
                return True
            return self.clock() - started + (state.upcoming_sleep or 0.0) > self.deadline

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if not isinstance(exc, TransientError):
                return
            log.info(
                "%s failed (%s); attempt %d of %d, next in %.1f s",
                what,
                exc,
                state.attempt_number,
                self.attempts,
                state.upcoming_sleep,
            )
            if on_retry is not None:
                on_retry(exc, state.attempt_number, state.upcoming_sleep)

        return {
            "stop": stop,
            "wait": wait,
            "retry": should_retry,
            "before_sleep": before_sleep,
            "reraise": True,
        }
