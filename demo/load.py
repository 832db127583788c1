"""Many workspaces at once on a real Celery deployment: a bounded load driver.

One sandbox tenant serves ``N`` workspaces ``ws-load-001`` … (none of their members in Databricks yet).
Each workspace entry lists its own Entra group ``load-001`` … of ``members`` users, and every entry also
lists the one shared group ``load-shared`` (``shared_members`` users), so a shared user must end up in
every workspace exactly once. Graph is rate-limited tenant-wide and each workspace limits its writes, as
the real services do (:data:`GRAPH_LIMITS`, :data:`WORKSPACE_LIMITS`).

The sandbox serves one origin per workspace, fixed when it starts, so the workspaces come from the seed:

    plan = LoadPlan(workspaces=10)
    seed = write_seed(tmp / "load-seed.yaml", plan)
    with SandboxProcess(tmp / "sandbox", seed) as box:               # or Sandbox(box)
        config.write_text(workspaces_file(box.endpoints, plan))      # manual schedule, one entry each
        cluster = AirflowCluster(airflow_env(box.endpoints, home, config), workdir, database)
        ... migrate, start, cluster.wait_ready(plan.dag_ids())
        prepare(box.control, faults)                                 # reset to the seed, latency on
        result = run_load(cluster, box.control, plan)                # trigger all, wait, verify
        assert result.ok, result.problems

:func:`run_load` unpauses and triggers every chosen DAG through the REST API (what the UI does), waits
for all runs to finish (bounded), then checks from the sandbox that every member exists exactly once in
its workspace and that the 201 answers to creates equal the members: nothing lost, nothing doubled.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from demo.sandbox_airflow import DemoWorkspace, workspaces_yaml
from sandbox.client import DEMO_SEED, ControlClient
from sandbox.model import read_seed_file

SANDBOX_PREFIX = "ws-load-"
ENTRY_PREFIX = "load_"
GROUP_PREFIX = "load-"
SHARED_GROUP = "load-shared"
DOMAIN = "contoso.onmicrosoft.com"
ADMIN = "admin@contoso.com"
VAULT = "kv-demo"

#: Graph's budget for a tenant of 50-500 users is 5,000 resource units per 10 s per application; a
#: ``transitiveMembers`` read with ``$select`` costs 4, a group look-up 1. The sandbox limits each
#: endpoint separately (a token bucket per second), so the budget is split: ~100 member pages/s and ~100
#: look-ups/s (4 x 100 + 100 = 500 units/s). Beyond it Graph answers 429 with ``Retry-After``.
GRAPH_LIMITS: Mapping[str, Any] = {
    "rates": {"graph.groups.transitiveMembers": 100, "graph.groups.list": 100},
}
#: Each workspace: at most 4 concurrent requests (more are refused with HTTP 500 REQUEST_LIMIT_EXCEEDED,
#: as the workspace SCIM API does) and creates throttled to 2/s (the workspace API's writes are reported
#: at tens per minute); beyond the rate, 429 with ``Retry-After``.
WORKSPACE_LIMITS: Mapping[str, Any] = {
    "max_concurrent": 4,
    "concurrent_limit_status": 500,
    "rates": {"scim.users.create": 2},
}


class SandboxLike(Protocol):
    """What the driver needs of a sandbox: ``sandbox.pytest_plugin.Sandbox`` and ``SandboxProcess`` fit."""

    endpoints: dict[str, Any]


@dataclass(frozen=True)
class LoadPlan:
    """``workspaces`` workspaces, each with its own group of ``members`` users plus the shared group."""

    workspaces: int
    members: int = 6
    shared_members: int = 4
    #: The entries' client-side create pace (``scim_max_creates_per_second``): the workspaces' limit.
    creates_per_second: float = 2.0
    graph_limits: Mapping[str, Any] = field(default_factory=lambda: dict(GRAPH_LIMITS))
    workspace_limits: Mapping[str, Any] = field(default_factory=lambda: dict(WORKSPACE_LIMITS))

    def __post_init__(self) -> None:
        if not 1 <= self.workspaces <= 999:
            raise ValueError("workspaces must be between 1 and 999")
        if self.members < 1 or self.shared_members < 0:
            raise ValueError("members must be >= 1 and shared_members >= 0")

    def indices(self) -> range:
        return range(1, self.workspaces + 1)

    @staticmethod
    def sandbox_workspace(i: int) -> str:
        return f"{SANDBOX_PREFIX}{i:03d}"

    @staticmethod
    def entry_name(i: int) -> str:
        return f"{ENTRY_PREFIX}{i:03d}"

    @staticmethod
    def dag_id(i: int) -> str:
        return f"entra_provisioning__{ENTRY_PREFIX}{i:03d}"

    def dag_ids(self, count: int | None = None) -> list[str]:
        return [self.dag_id(i) for i in self.indices()[: count or self.workspaces]]

    @staticmethod
    def own_user(i: int, k: int) -> str:
        return f"load{i:03d}.u{k:02d}@{DOMAIN}"

    @staticmethod
    def shared_user(k: int) -> str:
        return f"load.shared{k:02d}@{DOMAIN}"

    def expected_members(self, i: int) -> set[str]:
        """The userNames workspace ``i`` must hold after a run (lower-case, as SCIM stores them)."""
        own = {self.own_user(i, k) for k in range(self.members)}
        return own | {self.shared_user(k) for k in range(self.shared_members)}


def load_seed(plan: LoadPlan, base: Path = DEMO_SEED) -> dict[str, Any]:
    """The demo seed's identities, with the plan's users, groups, PATs and empty workspaces only."""
    seed = read_seed_file(base)
    seed.pop("account", None)
    seed.pop("generate", None)
    seed["servicePrincipals"] = []
    seed["devices"] = []
    shared = [plan.shared_user(k) for k in range(plan.shared_members)]
    users = list(shared)
    groups: list[dict[str, Any]] = []
    if shared:
        groups.append({"displayName": SHARED_GROUP, "members": shared})
    secrets: list[dict[str, Any]] = []
    workspaces: list[dict[str, Any]] = []
    for i in plan.indices():
        own = [plan.own_user(i, k) for k in range(plan.members)]
        users += own
        groups.append({"displayName": f"{GROUP_PREFIX}{i:03d}", "members": own})
        token = f"dapi-load-{i:03d}-admin"
        secrets.append(
            {"name": f"{plan.sandbox_workspace(i)}-pat", "versions": [{"value": token, "exp": "+90d"}]}
        )
        workspaces.append(
            {
                "name": plan.sandbox_workspace(i),
                "workspace_id": f"{7_000_000_000_000_000 + i}",
                "users": [],
                "groups": [{"displayName": "admins", "members": [ADMIN]}],
                "tokens": [{"token": token, "user": ADMIN, "admin": True}],
                "limits": dict(plan.workspace_limits),
            }
        )
    seed["users"] = [{"userPrincipalName": u, "displayName": u.split("@")[0], "mail": u} for u in users]
    seed["groups"] = groups
    for vault in seed["vaults"]:
        if vault["name"] == VAULT:
            vault["secrets"] = secrets
    seed["workspaces"] = workspaces
    seed["graph"] = {"limits": dict(plan.graph_limits)}
    return seed


def write_seed(path: Path, plan: LoadPlan) -> Path:
    """Write :func:`load_seed` as YAML (what ``SandboxProcess`` starts from); returns ``path``."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(load_seed(plan), sort_keys=False))
    return path


def workspace_entries(plan: LoadPlan) -> list[DemoWorkspace]:
    return [
        DemoWorkspace(
            name=plan.entry_name(i),
            sandbox_workspace=plan.sandbox_workspace(i),
            groups=(f"{GROUP_PREFIX}{i:03d}", *((SHARED_GROUP,) if plan.shared_members else ())),
            secret=f"{plan.sandbox_workspace(i)}-pat",
        )
        for i in plan.indices()
    ]


def workspaces_file(endpoints: Mapping[str, Any], plan: LoadPlan) -> str:
    """The workspaces file: one manual entry per workspace, pacing creates at the workspaces' limit."""
    return workspaces_yaml(
        endpoints,
        workspace_entries(plan),
        defaults={"schedule": None, "scim_max_creates_per_second": plan.creates_per_second},
    )


def prepare(control: ControlClient, faults: Sequence[Mapping[str, Any]] = ()) -> None:
    """Back to the seed (every workspace empty, limits as seeded, log cleared), then ``faults`` on."""
    control.reset()
    if faults:
        control.set_faults([dict(f) for f in faults], seed=11)


@contextmanager
def load_cluster(
    sandbox: SandboxLike,
    plan: LoadPlan,
    workdir: Path,
    *,
    worker_concurrency: int = 2,
    ready_timeout: float = 420,
    extra_env: Mapping[str, str] | None = None,
    services: Any = None,
) -> Iterator[Any]:
    """A started :class:`demo.distributed.AirflowCluster` (fresh PostgreSQL database, its own Celery
    queue) serving the plan's workspaces file, every DAG parsed; stopped and dropped on exit.

    ``services``: a :class:`demo.distributed.Endpoints` (private PostgreSQL/Redis); the machine's if omitted.
    """
    from demo.distributed import MACHINE_SERVICES, AirflowCluster, fresh_database
    from demo.sandbox_airflow import airflow_env

    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "workspaces.yaml"
    config.write_text(workspaces_file(sandbox.endpoints, plan))
    env = airflow_env(sandbox.endpoints, workdir / "home", config)
    env.update(extra_env or {})
    services = services or MACHINE_SERVICES
    with fresh_database("entra_prov_load_", services) as database:
        cluster = AirflowCluster(
            env, workdir / "cluster", database, services, worker_concurrency=worker_concurrency
        )
        try:
            cluster.migrate()
            cluster.start()
            cluster.wait_ready(plan.dag_ids(), timeout=ready_timeout)
            yield cluster
        finally:
            cluster.stop()


# ------------------------------------------------------------------------------------------ the run


@dataclass
class LoadResult:
    workspaces: int
    members_per_workspace: int
    #: From the first trigger to the last run's end (the metadata database's ``end_date``).
    wall_seconds: float
    runs_per_hour: float
    #: Each run's ``end_date - start_date``, in trigger order.
    run_seconds: list[float]
    states: dict[str, int]
    graph_requests: int
    graph_429: int
    #: Graph resource units spent in the busiest 10 s (a member page 4, anything else 1): the budget is
    #: 3,500 / 5,000 / 8,000 per 10 s by tenant size.
    graph_peak_units_per_10s: int
    scim_requests: int
    scim_429: int
    #: Creates refused for exceeding the workspace's concurrent-request limit (HTTP 500).
    scim_concurrency_refusals: int
    creates_201: int
    creates_409: int
    members_expected: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def median_run_seconds(self) -> float:
        return statistics.median(self.run_seconds) if self.run_seconds else 0.0

    @property
    def max_run_seconds(self) -> float:
        return max(self.run_seconds, default=0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "ok": self.ok,
            "median_run_seconds": self.median_run_seconds,
            "max_run_seconds": self.max_run_seconds,
        }


def default_timeout(runs: int, worker_concurrency: int) -> float:
    """A generous bound for ``runs`` runs at once: 4 tasks a run at up to ~30 s a task on a busy box."""
    return 300.0 + 4 * 30.0 * runs / max(1, worker_concurrency)


def run_load(
    cluster: Any,
    control: ControlClient,
    plan: LoadPlan,
    *,
    count: int | None = None,
    timeout: float | None = None,
    poll_seconds: float = 3.0,
) -> LoadResult:
    """Unpause and trigger the first ``count`` (default all) workspace DAGs at once through the REST
    API; wait (at most ``timeout`` s) for every run to finish; verify every workspace from the sandbox.

    ``cluster`` is a started, ready :class:`demo.distributed.AirflowCluster`; the sandbox should be fresh
    (:func:`prepare`), since the 201s are counted from its log. Raises ``TimeoutError`` if runs are still
    going at the deadline; a failed run or a wrong workspace is reported in ``problems``.
    """
    count = count or plan.workspaces
    if not 1 <= count <= plan.workspaces:
        raise ValueError(f"count must be between 1 and {plan.workspaces}")
    chosen = list(plan.indices())[:count]
    dag_ids = [plan.dag_id(i) for i in chosen]
    if timeout is None:
        timeout = default_timeout(count, int(getattr(cluster, "worker_concurrency", 1)))
    for dag_id in dag_ids:
        cluster.unpause(dag_id)
    triggered_at = datetime.now(UTC)
    runs = {dag_id: cluster.trigger(dag_id) for dag_id in dag_ids}
    rows = _wait_all(cluster, runs, timeout, poll_seconds)
    problems: list[str] = []
    states = Counter(row["state"] for row in rows.values())
    failed = [dag_id for dag_id, row in rows.items() if row["state"] != "success"]
    for dag_id in failed[:3]:
        problems.append(
            f"{dag_id} run {runs[dag_id]} ended {rows[dag_id]['state']}"
            + cluster.task_log_tails(dag_id, runs[dag_id], chars=1500)
        )
    if len(failed) > 3:
        problems.append(f"... and {len(failed) - 3} more runs did not succeed")
    last_end = max(row["end_date"] for row in rows.values())
    wall = (last_end - triggered_at).total_seconds()
    durations = [(rows[d]["end_date"] - rows[d]["start_date"]).total_seconds() for d in dag_ids]
    counts = control.counts()
    checked = verify_workspaces(control, plan, chosen, counts)
    problems += checked["problems"]
    graph = counts.get("graph", {})
    scim = {s: eps for s, eps in counts.items() if s.startswith(f"workspace:{SANDBOX_PREFIX}")}
    return LoadResult(
        workspaces=count,
        members_per_workspace=plan.members + plan.shared_members,
        wall_seconds=wall,
        runs_per_hour=count / wall * 3600 if wall > 0 else 0.0,
        run_seconds=durations,
        states=dict(states),
        graph_requests=_sum(graph.values()),
        graph_429=_sum(graph.values(), "429"),
        graph_peak_units_per_10s=graph_peak_units(control),
        scim_requests=sum(_sum(eps.values()) for eps in scim.values()),
        scim_429=sum(_sum(eps.values(), "429") for eps in scim.values()),
        scim_concurrency_refusals=sum(_sum(eps.values(), "500") for eps in scim.values()),
        creates_201=checked["creates_201"],
        creates_409=checked["creates_409"],
        members_expected=checked["members_expected"],
        problems=problems,
    )


def verify_workspaces(
    control: ControlClient,
    plan: LoadPlan,
    indices: Iterable[int],
    counts: Mapping[str, Mapping[str, Mapping[str, int]]] | None = None,
) -> dict[str, Any]:
    """Every member of workspace ``i`` exists there exactly once, nobody else but its admin, and the
    workspace answered exactly one 201 per member (nothing created twice, nobody lost)."""
    counts = control.counts() if counts is None else counts
    problems: list[str] = []
    created = conflicts = expected_total = 0
    for i in indices:
        ws = plan.sandbox_workspace(i)
        expected = plan.expected_members(i)
        expected_total += len(expected)
        names = Counter(str(u["userName"]).lower() for u in control.workspace_users(ws))
        doubled = sorted(n for n, c in names.items() if c > 1)
        missing = sorted(expected - set(names))
        extra = sorted(set(names) - expected - {ADMIN})
        creates = counts.get(f"workspace:{ws}", {}).get("scim.users.create", {})
        ok_201, n_409 = int(creates.get("201", 0)), int(creates.get("409", 0))
        created += ok_201
        conflicts += n_409
        if doubled or missing or extra or ok_201 != len(expected):
            problems.append(
                f"{ws}: {len(missing)} missing {missing[:3]}, {len(doubled)} doubled {doubled[:3]}, "
                f"{len(extra)} unexpected {extra[:3]}, {ok_201} creates answered 201 for "
                f"{len(expected)} members"
            )
    return {
        "problems": problems,
        "creates_201": created,
        "creates_409": conflicts,
        "members_expected": expected_total,
    }


#: Graph's cost per request of an endpoint (resource units), others 1: ``transitiveMembers`` costs 5,
#: less 1 for ``$select``, which the Graph hook always sends.
GRAPH_UNITS = {"graph.groups.transitiveMembers": 4}


def graph_peak_units(control: ControlClient, window: float = 10.0) -> int:
    """The most Graph resource units spent in any ``window`` seconds of the sandbox's log."""
    entries = sorted(
        (float(e["ts"]), GRAPH_UNITS.get(str(e["endpoint"]), 1))
        for e in control.log(system="graph", limit=100_000)
    )
    peak = spent = start = 0
    for ts, units in entries:
        spent += units
        while entries[start][0] <= ts - window:
            spent -= entries[start][1]
            start += 1
        peak = max(peak, spent)
    return peak


def _sum(statuses: Iterable[Mapping[str, int]], status: str | None = None) -> int:
    return sum(n for by in statuses for s, n in by.items() if status is None or s == status)


def _wait_all(
    cluster: Any, runs: Mapping[str, str], timeout: float, poll_seconds: float
) -> dict[str, dict[str, Any]]:
    """Poll the metadata database until every run is finished; their rows by DAG id."""
    deadline = time.monotonic() + timeout
    wanted = dict(runs)
    while True:
        cluster.check_alive()
        found = cluster.query(
            "SELECT dag_id, run_id, state, start_date, end_date FROM dag_run WHERE dag_id = ANY(%s)",
            (list(wanted),),
        )
        rows = {
            dag_id: {"state": state, "start_date": start, "end_date": end}
            for dag_id, run_id, state, start, end in found
            if wanted.get(dag_id) == run_id
        }
        done = {d: r for d, r in rows.items() if r["state"] in ("success", "failed") and r["end_date"]}
        if len(done) == len(wanted):
            return done
        if time.monotonic() >= deadline:
            left = sorted(set(wanted) - set(done))
            raise TimeoutError(
                f"timed out after {timeout:.0f} s: {len(left)} of {len(wanted)} runs not finished "
                f"({left[:5]}){cluster.log_tails(1500)}"
            )
        time.sleep(poll_seconds)
