"""End-to-end: the real ``airflow`` CLI on a throwaway SQLite home, against the sandbox."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from demo.distributed import services_verdict
from demo.sandbox_airflow import airflow, airflow_env, latest_xcom, workspaces_yaml


def require_services(problem: str | None) -> None:
    """Skip the calling test (or fixture) when ``problem`` says its servers are missing; fail instead under
    ``ENTRA_PROVISIONING_REQUIRE_SERVICES=1`` (CI), so that CI never passes without running it."""
    verdict = services_verdict(problem)
    if verdict is not None:
        action, reason = verdict
        if action == "fail":
            pytest.fail(reason)
        pytest.skip(reason)


@dataclass
class AirflowSandbox:
    sandbox: Any
    home: Path
    config_file: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300) -> Any:
        return airflow(self.env, *args, timeout=timeout)

    def summary(self, dag_id: str) -> Any:
        return latest_xcom(self.home, dag_id)

    def counts(self, dag_id: str, task_id: str = "add_missing_users") -> Any:
        """The newest counts record (XCom ``counts``) of ``task_id``."""
        return latest_xcom(self.home, dag_id, task_id, key="counts")

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import sqlite3

        with sqlite3.connect(self.home / "airflow.db") as db:
            return list(db.execute(sql, params))

    def creates(self, workspace: str) -> int:
        counts = self.sandbox.control.counts().get(f"workspace:{workspace}", {})
        return sum((counts.get("scim.users.create") or {}).values())


@pytest.fixture(scope="module")
def airflow_sandbox(sandbox, tmp_path_factory: pytest.TempPathFactory) -> AirflowSandbox:
    """A migrated SQLite Airflow whose DAGs point at the sandbox (shared by a module's tests)."""
    root = tmp_path_factory.mktemp("airflow-e2e")
    config_file = root / "workspaces.yaml"
    config_file.write_text(workspaces_yaml(sandbox.endpoints))
    env = airflow_env(sandbox.endpoints, root / "home", config_file)
    # Each test starts from the seed; the fixture's own environment must not leak into this process.
    env.pop("PYTEST_CURRENT_TEST", None)
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    result = airflow(env, "db", "migrate")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return AirflowSandbox(sandbox, root / "home", config_file, env)
