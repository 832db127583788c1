"""Latency and failure injection, per system and per endpoint, repeatable from a random seed.

A rule matches a request by shell-style patterns on the system name (``graph``, ``identity``,
``vault:<name>``, ``workspace:<name>``, ``account``, ``control`` is never faulted) and on the endpoint name
(e.g. ``scim.users.create``). Latency of every matching rule adds up; the first matching rule whose dice
roll says "fail" decides the failure. ``max_faults`` bounds how many failures a rule may inject.

Each (rule, system, endpoint) has its own random stream derived from the fault seed, so what one endpoint
sees does not depend on how much traffic other endpoints got in between: a pipeline that talks to Graph,
Key Vault and SCIM concurrently still gets the same per-endpoint fault sequence on every run.
"""

from __future__ import annotations

import fnmatch
import random
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

ACTIONS = ("drop", "429", "500", "503", "drop_after")


@dataclass
class FaultRule:
    system: str = "*"
    endpoint: str = "*"
    method: str = "*"
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_429: float = 0.0
    retry_after: int = 1
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_drop: float = 0.0
    # Apply the request, then close the socket before answering: the client cannot tell it succeeded.
    rate_drop_after: float = 0.0
    max_faults: int | None = None
    injected: int = field(default=0)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FaultRule:
        allowed = {f for f in cls.__dataclass_fields__ if f != "injected"}
        unknown = set(raw) - allowed
        if unknown:
            raise ValueError(f"unknown fault rule keys: {sorted(unknown)}")
        rule = cls(**raw)
        rates = (rule.rate_429, rule.rate_500, rule.rate_503, rule.rate_drop, rule.rate_drop_after)
        if min(rates) < 0 or sum(rates) > 1:
            raise ValueError("fault rates must be >= 0 and sum to at most 1")
        if rule.latency_ms < 0 or rule.jitter_ms < 0:
            raise ValueError("latency_ms and jitter_ms must be >= 0")
        if rule.max_faults is not None and rule.max_faults < 0:
            raise ValueError("max_faults must be >= 0")
        return rule

    def matches(self, system: str, endpoint: str, method: str) -> bool:
        return (
            fnmatch.fnmatchcase(system, self.system)
            and fnmatch.fnmatchcase(endpoint, self.endpoint)
            and (self.method == "*" or self.method.upper() == method)
        )


@dataclass(frozen=True)
class Decision:
    latency_s: float = 0.0
    action: str | None = None  # one of ACTIONS
    retry_after: int = 1


NO_FAULT = Decision()


class FaultInjector:
    """Holds the active rules and one seeded RNG; thread-safe because the control API may swap rules."""

    def __init__(self, rules: list[FaultRule] | None = None, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self.seed = seed
        self._streams: dict[tuple[int, str, str], random.Random] = {}
        self.rules: list[FaultRule] = list(rules or [])

    def configure(self, rules: list[dict[str, Any]], seed: int | None = None) -> None:
        parsed = [FaultRule.from_dict(dict(r)) for r in rules]
        with self._lock:
            self.rules = parsed
            if seed is not None:
                self.seed = seed
            self._streams = {}

    def clear(self) -> None:
        self.configure([], None)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"seed": self.seed, "rules": [asdict(r) for r in self.rules]}

    def decide(self, system: str, endpoint: str, method: str) -> Decision:
        if not self.rules:
            return NO_FAULT
        with self._lock:
            latency_ms = 0.0
            action: str | None = None
            retry_after = 1
            for index, rule in enumerate(self.rules):
                if not rule.matches(system, endpoint, method):
                    continue
                key = (index, system, endpoint)
                rng = self._streams.get(key)
                if rng is None:
                    # A string seed is hashed with SHA-512 by random, so it is stable across processes.
                    rng = self._streams[key] = random.Random(f"{self.seed}:{index}:{system}:{endpoint}")
                # Two draws per matching request, always, keep each stream independent of the rates.
                jitter = rng.random()
                roll = rng.random()
                if rule.latency_ms or rule.jitter_ms:
                    latency_ms += rule.latency_ms + jitter * rule.jitter_ms
                if action is not None:
                    continue
                if rule.max_faults is not None and rule.injected >= rule.max_faults:
                    continue
                edge = 0.0
                for name, rate in (
                    ("drop", rule.rate_drop),
                    ("429", rule.rate_429),
                    ("500", rule.rate_500),
                    ("503", rule.rate_503),
                    ("drop_after", rule.rate_drop_after),  # last, so existing sequences do not move
                ):
                    edge += rate
                    if rate and roll < edge:
                        action = name
                        retry_after = rule.retry_after
                        rule.injected += 1
                        break
            return Decision(latency_s=latency_ms / 1000.0, action=action, retry_after=retry_after)
