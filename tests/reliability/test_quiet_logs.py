"""The task log holds what we say and real warnings, not the SDKs' request headers or connection dumps."""

from __future__ import annotations

import logging
import re

from entra_provisioning import tasks

from .conftest import workspace

#: Loggers that speak for this package: our modules, and our hooks under Airflow's hook logger prefix.
OURS = ("entra_provisioning", "airflow.task.hooks.entra_provisioning")
# Airflow's console renderer ends each line with "[logger.name] loc=file.py:line".
LOGGER_OF_LINE = re.compile(r"\[(?P<level>\w+)\s*\].*\[(?P<logger>[\w.]+)\] loc=")


def foreign_lines(caplog, out: str) -> list[str]:
    """Loggers below WARNING that are not ours: records that reach the root logger, and lines Airflow's
    own (structlog) handlers print."""
    seen = {(logging.getLevelName(r.levelno).lower(), r.name) for r in caplog.records}
    seen |= {(m["level"], m["logger"]) for m in LOGGER_OF_LINE.finditer(out)}
    return sorted(name for level, name in seen if level in ("info", "debug") and not name.startswith(OURS))


def test_a_run_logs_only_our_lines_below_warning(connected, caplog, capsys) -> None:
    caplog.set_level(logging.INFO)
    ws = workspace(connected, groups=("Data Engineers",))
    summary = tasks.add_missing_users(ws, tasks.fetch_token(ws), tasks.resolve_members(ws), {})
    assert summary["added"] == 4

    out = capsys.readouterr().out
    assert foreign_lines(caplog, out) == []
    ours = [r.getMessage() for r in caplog.records if r.name.startswith(OURS)]
    assert any(m.startswith("Token from secret ws-beta-pat") for m in ours)
    assert any(m.startswith("Run summary for reliability") for m in ours)
    assert "Request headers" not in out and "Client id:" not in out


def test_an_account_run_with_a_managed_identity_logs_only_our_lines_below_warning(
    connected, caplog, capsys
) -> None:
    from .test_account_target import account_workspace

    caplog.set_level(logging.INFO)
    ws = account_workspace(connected, groups=("Data Engineers",))
    summary = tasks.add_missing_users(ws, tasks.fetch_token(ws), tasks.resolve_members(ws), {})
    assert summary["target"] == "account" and summary["failed"] == 0

    out = capsys.readouterr().out
    assert foreign_lines(caplog, out) == []
    ours = [r.getMessage() for r in caplog.records if r.name.startswith(OURS)]
    assert any(m.startswith("Connection databricks_mi (managed identity) authenticates to") for m in ours)
    assert "sbx-at." not in out and not any("sbx-at." in m for m in ours)
