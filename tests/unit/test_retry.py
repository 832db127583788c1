"""The one retry policy and the error tables, driven by a fake clock and seeded random sources."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from entra_provisioning.errors import ErrorTable, PermanentError, TransientError
from entra_provisioning.hooks.entra import GRAPH_ERRORS, GraphPermissionError, GraphUnavailableError
from entra_provisioning.hooks.key_vault import (
    KEY_VAULT_ERRORS,
    KeyVaultPermissionError,
    KeyVaultUnavailableError,
    SecretDisabledError,
    SecretNotFoundError,
)
from entra_provisioning.hooks.scim import (
    SCIM_ERRORS,
    ScimAuthError,
    ScimError,
    ScimForbiddenError,
    ScimThrottledError,
    ScimUnavailableError,
)
from entra_provisioning.retry import RetryPolicy, parse_retry_after


class FakeClock:
    """Monotonic time that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def policy(clock: FakeClock, seed: int = 1, **overrides: float) -> RetryPolicy:
    values = {"attempts": 5, "backoff_base": 1.0, "backoff_max": 30.0, "deadline": 600.0, **overrides}
    return RetryPolicy(clock=clock, sleep=clock.sleep, random=random.Random(seed).random, **values)  # type: ignore[arg-type]


class Flaky:
    """Fails ``failures`` times with ``error()``, then returns "ok"; records when each attempt happened."""

    def __init__(self, clock: FakeClock, failures: int, error=lambda: TransientError("busy")) -> None:
        self.clock, self.failures, self.error = clock, failures, error
        self.attempted_at: list[float] = []

    def __call__(self) -> str:
        self.attempted_at.append(self.clock.now)
        if len(self.attempted_at) <= self.failures:
            raise self.error()
        return "ok"


def give_up(exc: TransientError, attempts: int) -> BaseException:
    return RuntimeError(f"gave up after {attempts} attempts: {exc}")


QUIET = {"what": "test call", "log": logging.getLogger("test_retry"), "give_up": give_up}


def test_full_jitter_stays_within_the_doubling_cap() -> None:
    p = policy(FakeClock(), backoff_base=0.5, backoff_max=4.0)
    for attempt, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (9, 4.0)]:
        draws = [p.jitter(attempt) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in draws)
        assert max(draws) > cap * 0.8 and min(draws) < cap * 0.2  # spread over the whole range


def test_retry_after_is_a_minimum_and_jitter_comes_on_top() -> None:
    p = policy(FakeClock())
    waits = [p.wait_seconds(1, 5.0) for _ in range(100)]
    assert all(5.0 <= w <= 6.0 for w in waits)
    assert len(set(waits)) > 90


def test_a_call_that_recovers_returns_and_sleeps_between_attempts() -> None:
    clock = FakeClock()
    flaky = Flaky(clock, failures=2)
    assert policy(clock).call(flaky, **QUIET) == "ok"
    assert len(flaky.attempted_at) == 3
    assert len(clock.sleeps) == 2


def test_attempts_are_exactly_the_policy_and_give_up_names_them() -> None:
    clock = FakeClock()
    flaky = Flaky(clock, failures=99)
    with pytest.raises(RuntimeError, match="gave up after 5 attempts: busy"):
        policy(clock).call(flaky, **QUIET)
    assert len(flaky.attempted_at) == 5
    assert len(clock.sleeps) == 4


def test_permanent_errors_are_not_retried() -> None:
    clock = FakeClock()
    flaky = Flaky(clock, failures=99, error=lambda: PermanentError("no"))
    with pytest.raises(PermanentError, match="no"):
        policy(clock).call(flaky, **QUIET)
    assert len(flaky.attempted_at) == 1 and clock.sleeps == []


def test_retry_after_over_the_ceiling_gives_up_at_once_without_sleeping() -> None:
    clock = FakeClock()
    flaky = Flaky(clock, failures=99, error=lambda: TransientError("throttled", retry_after=150.0))
    with pytest.raises(RuntimeError, match="after 1 attempts"):
        policy(clock).call(flaky, **QUIET)
    assert clock.sleeps == []
    assert policy(clock).too_long(150.0) and not policy(clock).too_long(120.0)


def test_the_deadline_bounds_a_call_including_its_waits() -> None:
    clock = FakeClock()
    flaky = Flaky(clock, failures=99, error=lambda: TransientError("throttled", retry_after=40.0))
    with pytest.raises(RuntimeError, match="after 3 attempts"):
        policy(clock, attempts=10, deadline=100.0).call(flaky, **QUIET)
    # Two waits of 40 s + jitter fit in 100 s; a third would end past the deadline, so it is not begun.
    assert len(clock.sleeps) == 2
    assert clock.now <= 100.0


def test_two_workers_throttled_at_once_do_not_retry_at_the_same_instant() -> None:
    # Two task processes (each seeds its own random source) hit the same throttle at t=0, both told
    # Retry-After: 1. With jitter they come back at different instants, both no earlier than asked.
    def first_retry(seed: int, base: float) -> list[float]:
        clock = FakeClock()
        flaky = Flaky(clock, failures=3, error=lambda: TransientError("429", retry_after=1.0))
        policy(clock, seed=seed, backoff_base=base).call(flaky, **QUIET)
        return flaky.attempted_at[1:]

    a, b = first_retry(seed=11, base=0.5), first_retry(seed=12, base=0.5)
    assert all(t >= 1.0 for t in a + b)
    assert all(abs(x - y) > 0.01 for x, y in zip(a, b, strict=True))
    # The same two workers without jitter retry in lockstep, which is what jitter is for.
    assert first_retry(seed=11, base=0.0) == first_retry(seed=12, base=0.0)


def test_async_calls_follow_the_same_policy() -> None:
    clock = FakeClock()
    calls: list[float] = []

    async def attempt() -> str:
        calls.append(clock.now)
        raise TransientError("busy")

    with pytest.raises(RuntimeError, match="after 4 attempts"):
        asyncio.run(policy(clock, attempts=4).acall(attempt, **QUIET))
    assert len(calls) == 4 and len(clock.sleeps) == 3


def test_each_retry_is_logged_once_and_told_to_on_retry(caplog) -> None:
    caplog.set_level(logging.INFO, logger="test_retry")
    clock = FakeClock()
    told: list[tuple[str, int, float]] = []
    policy(clock).call(
        Flaky(clock, failures=2), **QUIET, on_retry=lambda e, n, w: told.append((str(e), n, w))
    )
    assert [(e, n) for e, n, _ in told] == [("busy", 1), ("busy", 2)]
    assert [w for *_, w in told] == clock.sleeps
    lines = [r.getMessage() for r in caplog.records if r.name == "test_retry"]
    assert lines == [
        f"test call failed (busy); attempt {n} of 5, next in {w:.1f} s"
        for n, w in zip((1, 2), clock.sleeps, strict=True)
    ]


def test_the_ceiling_message_is_one_sentence_for_every_system() -> None:
    p = RetryPolicy()
    assert p.ceiling_message("Databricks", 7200) == (
        "Databricks asked to retry after 7200 s, more than the 120 s ceiling; "
        "failing so that Airflow can retry the task later"
    )
    assert p.ceiling_message("Key Vault", 150.4, "reading x").startswith(
        "Key Vault asked to retry reading x after 150 s"
    )


def test_parse_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    when = datetime(2030, 1, 1, 0, 2, tzinfo=UTC)
    now = datetime(2030, 1, 1, 0, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after(format_datetime(when, usegmt=True), now=lambda: now) == 120.0


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(deadline=-1)


# ---------------------------------------------------------------------------------------- error tables


def test_error_table_prefers_the_service_code_then_the_status_then_its_class() -> None:
    table = ErrorTable(
        server_error=ScimUnavailableError,
        client_error=ScimError,
        by_status={403: ScimForbiddenError},
        by_code={"REQUEST_LIMIT_EXCEEDED": ScimThrottledError},
    )
    assert table.classify(500, "REQUEST_LIMIT_EXCEEDED") is ScimThrottledError
    assert table.classify(403, "SOMETHING_ELSE") is ScimForbiddenError
    assert table.classify(502) is ScimUnavailableError
    assert table.classify(None) is ScimUnavailableError  # no answer at all
    assert table.classify(418) is ScimError


@pytest.mark.parametrize(
    ("table", "status", "code", "expected"),
    [
        (SCIM_ERRORS, 500, "REQUEST_LIMIT_EXCEEDED", ScimThrottledError),
        (SCIM_ERRORS, 500, "INTERNAL_ERROR", ScimUnavailableError),
        (SCIM_ERRORS, 503, None, ScimThrottledError),
        (SCIM_ERRORS, 429, None, ScimThrottledError),
        (SCIM_ERRORS, 401, None, ScimAuthError),
        (SCIM_ERRORS, 403, None, ScimForbiddenError),
        (SCIM_ERRORS, 409, "uniqueness", ScimError),
        (GRAPH_ERRORS, 403, "Authorization_RequestDenied", GraphPermissionError),
        (GRAPH_ERRORS, 429, "TooManyRequests", GraphUnavailableError),
        (GRAPH_ERRORS, 504, None, GraphUnavailableError),
        (KEY_VAULT_ERRORS, 403, "SecretDisabled", SecretDisabledError),
        (KEY_VAULT_ERRORS, 403, "AccessDenied", KeyVaultPermissionError),
        (KEY_VAULT_ERRORS, 404, "SecretNotFound", SecretNotFoundError),
        (KEY_VAULT_ERRORS, 429, None, KeyVaultUnavailableError),
        (KEY_VAULT_ERRORS, 500, None, KeyVaultUnavailableError),
    ],
)
def test_each_hook_maps_answers_through_its_table(table, status, code, expected) -> None:
    assert table.classify(status, code) is expected


def test_every_hook_error_is_in_exactly_one_branch() -> None:
    classes = {
        ScimError, ScimAuthError, ScimForbiddenError, ScimUnavailableError, ScimThrottledError,
        GraphPermissionError, GraphUnavailableError,
        SecretDisabledError, SecretNotFoundError, KeyVaultPermissionError, KeyVaultUnavailableError,
    }  # fmt: skip
    for cls in classes:
        assert issubclass(cls, PermanentError) != issubclass(cls, TransientError), cls
        assert cls.retryable == issubclass(cls, TransientError)


@pytest.mark.parametrize(
    ("system", "hook_module", "hook_class"),
    [
        ("Key Vault", "key_vault", "KeyVaultSecretHook"),
        ("Microsoft Graph", "entra", "EntraGroupsHook"),
        ("Databricks SCIM", "scim", "DatabricksScimHook"),
    ],
)
def test_the_operations_page_states_each_hooks_real_policy(
    system: str, hook_module: str, hook_class: str
) -> None:
    import importlib
    import inspect
    from pathlib import Path

    module = importlib.import_module(f"entra_provisioning.hooks.{hook_module}")
    # The module's declared policy, not the fast one the test-wide fixture swaps in.
    declared = next(v for v in vars(module).values() if isinstance(v, RetryPolicy))
    operations = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    row = next(line for line in operations.splitlines() if line.startswith(f"| {system} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == str(declared.attempts)
    assert cells[2] == f"uniform in [0, min({declared.backoff_max:g} s, {declared.backoff_base:g} s · 2ⁿ⁻¹)]"
    assert cells[3].startswith(f"honoured up to {declared.retry_after_ceiling:g} s")
    assert cells[4] == f"{declared.deadline:g} s"
    # Each hook takes a policy of its own (tests inject one), defaulting to the declared one.
    assert "retry_policy" in inspect.signature(getattr(module, hook_class)).parameters
