"""docker-compose.yaml and Dockerfile, checked without Docker: everything they name exists in the repo and
agrees with the code, and the topology is the one the distributed end-to-end test runs."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from demo.distributed import COMPONENTS
from entra_provisioning import factory
from entra_provisioning.config import WorkspaceConfig

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_HOME = PurePosixPath("/opt/airflow")
INFRA = {"postgres", "redis"}
ONE_SHOT = "airflow-init"
#: Created by the containers at first start (and git-ignored), so it need not exist in a checkout.
RUNTIME_DIRS = {"logs"}


def _interpolate(value: Any) -> Any:
    """Compose's variable substitution with an empty environment: ``${X:-d}`` → d, ``${X}`` → "", ``$$`` → $."""
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    if not isinstance(value, str):
        return value
    return re.sub(
        r"\$\$|\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}",
        lambda m: "$" if m.group(0) == "$$" else (m.group(1) or ""),
        value,
    )


@pytest.fixture(scope="module")
def raw_text() -> str:
    return (REPO / "docker-compose.yaml").read_text()


@pytest.fixture(scope="module")
def compose(raw_text: str) -> dict[str, Any]:
    document = yaml.safe_load(raw_text)  # merge keys (<<: *anchor) are resolved here
    assert isinstance(document, dict)
    return dict(_interpolate(document))


@pytest.fixture(scope="module")
def airflow_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if name not in INFRA}


def _command(service: dict[str, Any]) -> tuple[str, ...]:
    command = service.get("command")
    return tuple(command.split()) if isinstance(command, str) else tuple(command or ())


def test_services_are_the_production_topology(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "postgres",
        "redis",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-worker",
        "airflow-triggerer",
        "airflow-init",
    }


def test_same_components_as_the_distributed_test(airflow_services: dict[str, dict[str, Any]]) -> None:
    """One container per Airflow component, running exactly the commands the e2e test starts as processes."""
    long_running = {name: svc for name, svc in airflow_services.items() if name != ONE_SHOT}
    commands = sorted(_command(svc) for svc in long_running.values())
    assert commands == sorted(command for _, command in COMPONENTS)


def test_executor_broker_and_metadata_db_point_at_the_compose_services(
    compose: dict[str, Any], airflow_services: dict[str, dict[str, Any]]
) -> None:
    services = set(compose["services"])
    for name, svc in airflow_services.items():
        env = svc["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        for key in (
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "AIRFLOW__CELERY__RESULT_BACKEND",
            "AIRFLOW__CELERY__BROKER_URL",
        ):
            host = urlsplit(env[key]).hostname
            assert host in services, f"{name}: {key} points at {host!r}, not a compose service"
        assert urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]).scheme == "redis"
        assert urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).scheme.startswith("postgresql")
        # Workers report task state to the api-server's execution API, on the port it listens on.
        execution = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
        assert execution.hostname == "airflow-apiserver" and execution.path == "/execution/"
        published = {str(p).split(":")[-1] for p in compose["services"]["airflow-apiserver"]["ports"]}
        assert str(execution.port) in published
        # Components must share these, or task tokens and log requests are refused between containers.
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] and env["AIRFLOW__API__SECRET_KEY"]


def test_every_airflow_service_runs_the_image_built_from_our_dockerfile(
    airflow_services: dict[str, dict[str, Any]],
) -> None:
    for name, svc in airflow_services.items():
        build = svc["build"]
        context = build if isinstance(build, str) else build["context"]
        assert (REPO / context / "Dockerfile").is_file(), name
        assert svc["image"], name


def test_dockerfile_is_the_official_image_plus_our_requirements() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.MULTILINE)
    pinned = re.search(
        r"^apache-airflow(?:\[[\w,-]+\])?==(\S+)$", (REPO / "requirements.txt").read_text(), re.MULTILINE
    )
    assert pinned is not None
    assert base.startswith(f"apache/airflow:{pinned.group(1)}")  # the same Airflow as requirements.txt
    assert re.search(r"^COPY\s+requirements\.txt\s", dockerfile, re.MULTILINE)
    assert re.search(r"^RUN\s+pip install .*-r /requirements\.txt", dockerfile, re.MULTILINE)
    for source in re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)\s+\S+$", dockerfile, re.MULTILINE):
        assert (REPO / source).exists(), f"Dockerfile copies {source}, which is not in the repo"


def test_mounts_exist_and_land_where_airflow_looks(airflow_services: dict[str, dict[str, Any]]) -> None:
    for name, svc in airflow_services.items():
        mounts = {}
        for volume in svc["volumes"]:
            host, container = str(volume).split(":")[:2]
            mounts[PurePosixPath(container)] = host
            relative = Path(host)
            assert host.startswith("./"), f"{name}: {host} is not a repo path"
            if relative.name not in RUNTIME_DIRS:
                assert (REPO / relative).is_dir(), f"{name}: mounts {host}, which is not in the repo"
        # Airflow's defaults under AIRFLOW_HOME=/opt/airflow: dags/ and plugins/ (plugins/ is on sys.path).
        assert mounts[AIRFLOW_HOME / "dags"] == "./dags", name
        assert mounts[AIRFLOW_HOME / "plugins"] == "./plugins", name
        assert mounts[AIRFLOW_HOME / "config"] == "./config", name
        assert mounts[AIRFLOW_HOME / "logs"] == "./logs", name
    assert (REPO / "dags" / "entra_provisioning_dags.py").is_file()
    assert (REPO / "plugins" / "entra_provisioning" / "factory.py").is_file()


def test_config_path_is_the_one_the_dag_file_reads(airflow_services: dict[str, dict[str, Any]]) -> None:
    for name, svc in airflow_services.items():
        configured = PurePosixPath(svc["environment"][factory.CONFIG_ENV_VAR])
        # The file exists in the mounted ./config folder …
        assert configured.parent == AIRFLOW_HOME / "config", name
        assert (REPO / "config" / configured.name).is_file(), name
    # … and it is also where factory.py looks without the variable, once plugins/ is at /opt/airflow/plugins.
    default = factory.DEFAULT_CONFIG_PATH.relative_to(REPO)
    assert AIRFLOW_HOME / default == configured
    init = _command(airflow_services["airflow-init"])
    assert str(configured) in " ".join(init)  # the init container validates that same file


def test_connections_match_the_config_defaults(airflow_services: dict[str, dict[str, Any]]) -> None:
    defaults = {f.name: f.default for f in WorkspaceConfig.__dataclass_fields__.values()}
    expected = {
        f"AIRFLOW_CONN_{str(defaults['azure_conn_id']).upper()}": "azure",
        f"AIRFLOW_CONN_{str(defaults['msgraph_conn_id']).upper()}": "msgraph",
    }
    for name, svc in airflow_services.items():
        env = svc["environment"]
        for variable, conn_type in expected.items():
            connection = json.loads(env[variable])
            assert connection["conn_type"] == conn_type, f"{name}: {variable}"
        # The Azure identity variables azure-identity's DefaultAzureCredential reads.
        assert {"AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"} <= set(env), name


def test_statsd_can_be_turned_on_in_every_component(airflow_services: dict[str, dict[str, Any]]) -> None:
    """README "Metrics": every component, the worker included (its report task sends the workspaces'
    metrics), reads the same [metrics] settings, off by default; the image installs the StatsD client."""
    for name, svc in airflow_services.items():
        env = svc["environment"]
        assert env["AIRFLOW__METRICS__STATSD_ON"] == "false", name
        assert env["AIRFLOW__METRICS__STATSD_HOST"], name
        assert 0 < int(env["AIRFLOW__METRICS__STATSD_PORT"]) < 65536, name
    airflow = re.search(r"^apache-airflow\[([\w,-]+)\]==", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    assert airflow is not None and "statsd" in airflow.group(1).split(",")


def test_every_variable_the_file_reads_is_documented(raw_text: str) -> None:
    """An operator sets these in .env; the "Docker Compose" section of docs/production.md must name each one."""
    production = (REPO / "docs" / "production.md").read_text()
    section = production.split("## Docker Compose", 1)[1].split("\n## ", 1)[0]
    # ``$${X}`` is the container shell's variable, not compose's.
    variables = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", raw_text))
    assert {"AZURE_CLIENT_ID", "GRAPH_CLIENT_SECRET", "AIRFLOW__API_AUTH__JWT_SECRET"} <= variables
    missing = sorted(v for v in variables if f"`{v}`" not in section)
    assert missing == []


def test_the_broker_keeps_queued_tasks_over_a_restart(compose: dict[str, Any]) -> None:
    """tests/e2e/test_faults.py: without persistence a Redis restart loses queued tasks until
    task_queued_timeout; the append-only file (fsync per write) on a named volume keeps them."""
    redis = compose["services"]["redis"]
    command = list(redis["command"])
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options == {"--appendonly": "yes", "--appendfsync": "always"}
    (volume,) = redis["volumes"]
    name, path = str(volume).split(":")
    assert path == "/data" and name in compose["volumes"]


def test_init_creates_the_graph_pool_after_the_migration(
    airflow_services: dict[str, dict[str, Any]],
) -> None:
    """``pool --create`` needs the migrated database (``airflow version`` through the entrypoint migrates) and
    must run before the scheduler starts, which waits for airflow-init to complete."""
    script = _command(airflow_services["airflow-init"])[-1]
    lines = [line.strip() for line in script.splitlines()]
    migrate = next(i for i, line in enumerate(lines) if line == "/entrypoint airflow version")
    create = next(i for i, line in enumerate(lines) if "-m entra_provisioning pool --create" in line)
    assert create > migrate
    configured = airflow_services["airflow-init"]["environment"][factory.CONFIG_ENV_VAR]
    assert lines[create].endswith(f"pool --create {configured} || exit 1")
    # The call itself must not migrate again or re-create the login: both are off on its line.
    assert lines[create - 1].startswith("_AIRFLOW_DB_MIGRATE= _AIRFLOW_WWW_USER_CREATE=")
    depends = airflow_services["airflow-scheduler"]["depends_on"]["airflow-init"]
    assert depends == {"condition": "service_completed_successfully"}
