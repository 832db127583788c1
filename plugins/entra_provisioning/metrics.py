"""A run's metrics: what the ``report`` task sends through Airflow's metrics facility, once per run.

:func:`run_metrics` is pure: it maps the run's counts records (:mod:`entra_provisioning.run_record`) to
metrics. :func:`emit` is the thin part that hands them to Airflow, which sends them the way the
deployment's ``[metrics]`` section says (StatsD, DogStatsD, OpenTelemetry, or nowhere).

Two kinds, chosen for what each number is:

- **gauges** hold the state the workspace's *last* run found (members, users to add, drift, skips, the
  token's days left, and what that run added and failed). A dashboard shows one value per workspace, and
  the next run overwrites it;
- **counters** add up what happened across runs (users added, users failed, throttled requests), which a
  gauge cannot: a sum of gauges over time is meaningless, and two runs between flushes would lose one.

A value the run did not learn (a task that failed before it knew it) is not sent: unknown is not zero.
A dry run sends what it found (``users_to_add`` is what a real run would add) but no ``users_added`` or
``users_failed``, since it writes nothing. Airflow already emits task and run durations and task
success/failure counts (``ti.finish``, ``task.duration``, ``dagrun.duration.*``): none are repeated here.

Task code must use the task SDK's ``airflow.sdk.observability.stats``: it is the module the task runner
initialises from ``[metrics]`` in the worker's task process. ``airflow.stats`` is a deprecated shim for it;
core's ``airflow.observability.stats`` is initialised only by the core components (scheduler, api-server,
dag-processor, triggerer, executor), so in a task on a worker it is a silent no-op.

Names: ``entra_provisioning.<metric>``, with the workspace (and a metric's own dimension, such as the skip
reason) as **tags** when the backend keeps tags (DogStatsD with ``statsd_datadog_metrics_tags``, StatsD
with ``statsd_influxdb_enabled``, OpenTelemetry); plain StatsD drops tags, so there they become the last
parts of the name instead: ``entra_provisioning.<metric>[.<dimension>].<workspace>``. Airflow's
``statsd_prefix`` (``airflow``) goes in front of both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COUNTER",
    "GAUGE",
    "METRICS",
    "PREFIX",
    "Metric",
    "MetricSpec",
    "emit",
    "metrics_backend",
    "run_metrics",
    "stat_name",
]

#: The first part of every name we emit (after Airflow's own ``statsd_prefix``).
PREFIX = "entra_provisioning"
GAUGE = "gauge"
COUNTER = "counter"
#: The tag naming the workspace: the entry's ``name`` in the workspaces file.
WORKSPACE_TAG = "workspace"

# What Airflow's stat-name check accepts is letters, digits, "_", ".", "-" (and "/"); "." separates the
# parts of a plain StatsD name, so a tag value put into the name must not contain one.
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

Records = Mapping[str, Mapping[str, Any] | None]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric we emit: its name under :data:`PREFIX`, its kind, the tag of its own dimension (if any),
    and what it means (the README's table says the same)."""

    name: str
    kind: str
    meaning: str
    dimension: str | None = None


#: Every metric, once: the README's "Metrics" table lists exactly these (a unit test checks it).
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("members_resolved", GAUGE, "group members the last run resolved to a Databricks userName"),
    MetricSpec(
        "skipped",
        GAUGE,
        "group members the last run skipped, per reason (every reason is sent, zeros included)",
        dimension="reason",
    ),
    MetricSpec(
        "users_to_add",
        GAUGE,
        "members the workspace lacked when the last run planned (after a dry run: those a real run would add)",
    ),
    MetricSpec(
        "drift",
        GAUGE,
        "users with access to the workspace who are in none of the groups (reported, never removed)",
    ),
    MetricSpec("users_added", GAUGE, "users the last real run added, over all its attempts"),
    MetricSpec("users_failed", GAUGE, "users the last real run could not add"),
    MetricSpec(
        "token_expires_in_days",
        GAUGE,
        "days until the Key Vault PAT secret expires (only for a secret with an expiry date)",
    ),
    MetricSpec("users_added_total", COUNTER, "users added, summed over real runs"),
    MetricSpec("users_failed_total", COUNTER, "users that could not be added, summed over real runs"),
    MetricSpec(
        "throttled_requests_total",
        COUNTER,
        "requests answered with 429 (and retried) in the run's last attempt of the task that talks to "
        "the service: `graph` (resolve_members) or `databricks` (add_missing_users)",
        dimension="service",
    ),
)
_SPECS = {spec.name: spec for spec in METRICS}


@dataclass(frozen=True, slots=True)
class Metric:
    """One value to send: ``tags`` in name order (the metric's own dimension first, the workspace last)."""

    kind: str
    name: str
    value: int
    tags: tuple[tuple[str, str], ...]


def run_metrics(records: Records, *, workspace: str) -> list[Metric]:
    """The metrics of a run whose work tasks have all finished, from their counts records.

    ``records`` maps ``fetch_token``, ``resolve_members`` and ``add_missing_users`` to their counts record
    (``None`` when the task left none).
    """
    token = records.get("fetch_token") or {}
    resolve = records.get("resolve_members") or {}
    add = records.get("add_missing_users") or {}
    out: list[Metric] = []

    def put(name: str, value: Any, dimension: str | None = None) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            return  # not learnt by the run (or not a count): sending 0 would claim something false
        spec = _SPECS[name]
        tags = ((spec.dimension, dimension),) if spec.dimension and dimension is not None else ()
        out.append(Metric(spec.kind, name, value, (*tags, (WORKSPACE_TAG, workspace))))

    put("members_resolved", _first_known("members_resolved", resolve, add))
    skipped = _first_known("skipped", resolve, add)
    if isinstance(skipped, Mapping):
        for reason, count in sorted(skipped.items()):
            put("skipped", count, str(reason))
    put("users_to_add", add.get("to_add"))
    put("drift", add.get("drift"))
    if add and add.get("dry_run") is not True:
        added = add.get("added_in_run", add.get("added"))
        put("users_added", added)
        put("users_failed", add.get("failed"))
        put("users_added_total", added)
        put("users_failed_total", add.get("failed"))
    put("token_expires_in_days", token.get("token_expires_in_days"))
    put("throttled_requests_total", resolve.get("throttled"), "graph")
    put("throttled_requests_total", add.get("throttled"), "databricks")
    return out


def stat_name(metric: Metric, *, tagged: bool) -> tuple[str, dict[str, str] | None]:
    """The name (without Airflow's ``statsd_prefix``) and tags to send ``metric`` with.

    ``tagged``: the backend keeps tags, so the name is the same for every workspace; otherwise the tag
    values become the name's last parts.
    """
    if tagged:
        return f"{PREFIX}.{metric.name}", {key: _safe(value) for key, value in metric.tags}
    return ".".join([PREFIX, metric.name, *(_safe(value) for _, value in metric.tags)]), None


def metrics_backend(getboolean: Callable[[str, bool], bool]) -> tuple[str | None, bool]:
    """Which backend Airflow's task SDK sends metrics to, and whether it keeps tags.

    ``getboolean(option, default)`` reads an option of ``[metrics]``. The order is the SDK's own
    (``airflow.sdk.observability.metrics.stats_utils.get_stats_factory``): DogStatsD, then StatsD, then
    OpenTelemetry; ``None`` when metrics are off.
    """
    if getboolean("statsd_datadog_enabled", False):
        return "dogstatsd", getboolean("statsd_datadog_metrics_tags", True)
    if getboolean("statsd_on", False):
        # Airflow's StatsD logger drops tags unless it writes them InfluxDB-style into the name.
        return "statsd", getboolean("statsd_influxdb_enabled", False)
    if getboolean("otel_on", False):
        return "otel", True
    return None, False


def emit(metrics: Iterable[Metric]) -> str | None:
    """Send ``metrics`` through the task SDK's metrics API; return the backend's name (``None``: off)."""
    from airflow.sdk.configuration import conf
    from airflow.sdk.observability import stats

    backend, tagged = metrics_backend(
        lambda option, default: conf.getboolean("metrics", option, fallback=default)
    )
    if backend is None:
        return None
    for metric in metrics:
        name, tags = stat_name(metric, tagged=tagged)
        if metric.kind == GAUGE:
            stats.gauge(name, metric.value, tags=tags)
        else:
            stats.incr(name, count=metric.value, tags=tags)
    return backend


def _first_known(key: str, *records: Mapping[str, Any]) -> Any:
    return next((record[key] for record in records if record.get(key) is not None), None)


def _safe(value: str) -> str:
    return _UNSAFE.sub("_", value)
