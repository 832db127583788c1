"""``python -m entra_provisioning pool [--create]``: the Airflow pool of ``settings.graph_pool``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from entra_provisioning import cli

ENTRY = {
    "name": "analytics",
    "databricks_instance": "https://adb-1234.5.azuredatabricks.net",
    "entra_groups": ["Data Engineers"],
    "pat_secret_url": "https://kv-dbx.vault.azure.net/secrets/pat",
}


class FakeAirflow:
    """Stands in for ``python -m airflow``: records each command and answers with the exit code given."""

    def __init__(self, returncode: int = 0, stdout: str = "", stderr: str = "") -> None:
        self.calls: list[tuple[str, ...]] = []
        self.answer = (returncode, stdout, stderr)

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        code, out, err = self.answer
        return subprocess.CompletedProcess(["airflow", *args], code, out, err)


def config(tmp_path: Path, **settings: object) -> str:
    path = tmp_path / "ws.yaml"
    document: dict[str, object] = {"workspaces": [ENTRY]}
    if settings:
        document["settings"] = settings
    path.write_text(yaml.safe_dump(document))
    return str(path)


def test_create_sets_the_configured_pool_and_slots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    airflow = FakeAirflow()
    monkeypatch.setattr(cli, "_airflow", airflow)
    assert cli.main(["pool", "--create", config(tmp_path, graph_pool="entra_graph", graph_pool_slots=3)]) == 0
    assert airflow.calls == [("pools", "set", "entra_graph", "3", cli.POOL_DESCRIPTION)]
    assert "pool 'entra_graph': 3 slot(s)" in capsys.readouterr().out


def test_create_uses_the_default_slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    airflow = FakeAirflow()
    monkeypatch.setattr(cli, "_airflow", airflow)
    assert cli.main(["pool", "--create", config(tmp_path, graph_pool="entra_graph")]) == 0
    assert airflow.calls == [("pools", "set", "entra_graph", "4", cli.POOL_DESCRIPTION)]


def test_without_graph_pool_nothing_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    airflow = FakeAirflow()
    monkeypatch.setattr(cli, "_airflow", airflow)
    assert cli.main(["pool", "--create", config(tmp_path)]) == 0
    assert cli.main(["pool", config(tmp_path)]) == 0
    assert airflow.calls == []
    assert "settings.graph_pool is not set" in capsys.readouterr().out


def test_a_failed_create_fails_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "_airflow", FakeAirflow(1, stderr="database is locked"))
    assert cli.main(["pool", "--create", config(tmp_path, graph_pool="entra_graph")]) == 1
    err = capsys.readouterr().err
    assert "airflow pools set entra_graph failed" in err and "database is locked" in err


def test_check_says_a_missing_pool_blocks_the_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = FakeAirflow(1, stderr="Pool entra_graph does not exist")
    monkeypatch.setattr(cli, "_airflow", missing)
    assert cli.main(["pool", config(tmp_path, graph_pool="entra_graph")]) == 1
    assert missing.calls == [("pools", "get", "entra_graph", "--output", "plain")]
    err = capsys.readouterr().err
    assert "pool 'entra_graph' does not exist" in err
    assert "Airflow never schedules the task" in err and "pool --create" in err

    monkeypatch.setattr(cli, "_airflow", FakeAirflow(0, stdout="entra_graph 4"))
    assert cli.main(["pool", config(tmp_path, graph_pool="entra_graph")]) == 0


def test_an_unusable_file_fails_before_airflow_is_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    airflow = FakeAirflow()
    monkeypatch.setattr(cli, "_airflow", airflow)
    broken = tmp_path / "broken.yaml"
    broken.write_text("workspaces: [\n")
    assert cli.main(["pool", "--create", str(broken)]) == 1
    assert airflow.calls == []
    assert "not valid YAML" in capsys.readouterr().err


def test_validate_names_the_pool_and_how_to_create_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["validate", config(tmp_path, graph_pool="entra_graph", graph_pool_slots=2)]) == 0
    out = capsys.readouterr().out
    assert "resolve_members runs in the Airflow pool 'entra_graph' (2 slot(s))" in out
    assert "python -m entra_provisioning pool --create" in out
