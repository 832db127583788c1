"""The workspaces file edited while a run is in flight (issue 14, fault 5).

An Airflow worker parses the DAG file again when each task starts. Each step below does exactly that: it
loads ``dags/entra_provisioning_dags.py`` into a fresh ``DagBag`` (which reads the workspaces file as it is
now) and runs the task's own callable from the DAG it finds, with the upstream results as XCom would hand
them over. Between the steps the file is edited. A run must apply one version of its entry or write
nothing; a broken file must never make a run write anything.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from demo.sandbox_airflow import REPO, DemoWorkspace, workspaces_yaml
from entra_provisioning import reporting
from entra_provisioning.factory import CONFIG_ENV_VAR
from entra_provisioning.fingerprint import FINGERPRINT_KEY
from entra_provisioning.plan import Resolution

DAG_FILE = REPO / "dags" / "entra_provisioning_dags.py"
DAG_ID = "entra_provisioning__midrun"
SANDBOX_WS = "ws-beta"
FIRST_GROUP = "Analysts & Friends's Club"
FIRST_MEMBERS = {"heidi@contoso.onmicrosoft.com", "o'brien@contoso.onmicrosoft.com"}
SECOND_GROUP = "Data Scientists"
#: Systems the job talks to (the sandbox also logs its own identity endpoint and control calls).
EXTERNAL = ("graph", "vault", "workspace", "account")


class NoDag(Exception):
    """The worker found no DAG for the run: the task cannot start (Airflow reschedules, then fails it)."""


class Worker:
    """Parses the DAG file per task, as an Airflow worker does, and runs the task's callable."""

    def __init__(self, config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.config_file = config_file
        self.records: list[tuple[str, dict[str, Any]]] = []
        monkeypatch.setenv(CONFIG_ENV_VAR, str(config_file))

        def pusher(ws: Any, task: str) -> Callable[[dict[str, Any]], None]:
            return lambda record: self.records.append((task, record))

        # The counts XCom needs a task context; here it is kept in a list.
        monkeypatch.setattr(reporting, "counts_pusher", pusher)

    def write(self, groups: tuple[str, ...], **options: Any) -> None:
        entry = DemoWorkspace("midrun", SANDBOX_WS, groups, "ws-beta-pat", options=options)
        self.config_file.write_text(workspaces_yaml(self.endpoints, [entry]))

    def parse(self) -> Any:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(DAG_FILE))
        if DAG_ID not in bag.dags:
            raise NoDag("; ".join(bag.import_errors.values()) or "the entry has no DAG")
        return bag.dags[DAG_ID]

    def run(self, task_id: str, *args: Any) -> Any:
        return self.parse().task_dict[task_id].python_callable(*args)


@pytest.fixture
def worker(connected, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Worker:
    w = Worker(tmp_path / "workspaces.yaml", monkeypatch)
    w.endpoints = connected.endpoints  # type: ignore[attr-defined]
    w.write((FIRST_GROUP,))
    # The workspace starts without the first group's members, so each test can see whether they were added.
    assert FIRST_MEMBERS.isdisjoint(connected.control.workspace_user_names(SANDBOX_WS))
    return w


def requests_since(sandbox: Any, seq: int) -> list[dict[str, Any]]:
    return [e for e in sandbox.control.log(since=seq) if str(e.get("system", "")).startswith(EXTERNAL)]


def test_a_group_changed_before_add_missing_users_writes_nothing(connected, worker: Worker) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    before = connected.control.workspace_user_names(SANDBOX_WS)
    facts = worker.run("fetch_token")
    assert len(facts[FINGERPRINT_KEY]) == 16
    members = worker.run("resolve_members", facts)
    assert {m.user_name for m in Resolution.from_record(members).members} == FIRST_MEMBERS

    worker.write((FIRST_GROUP, SECOND_GROUP))  # the file is edited while the run is in flight
    seq = connected.control.last_seq()
    with pytest.raises(AirflowFailException) as failed:
        worker.run("add_missing_users", facts, members, {})
    message = str(failed.value)
    assert "the workspace entry 'midrun' changed during the run" in message
    assert "add_missing_users stopped before reading or writing anything" in message
    assert message.endswith("the next run will use the new version")
    assert requests_since(connected, seq) == []  # not even the token was read again
    assert connected.control.workspace_user_names(SANDBOX_WS) == before
    task, record = worker.records[-1]
    assert task == "add_missing_users" and record["outcome"] == "failed" and record["error"] == message

    # The next run uses the new version throughout: both groups' members are added.
    facts = worker.run("fetch_token")
    summary = worker.run("add_missing_users", facts, worker.run("resolve_members", facts), {})
    added = connected.control.workspace_user_names(SANDBOX_WS) - before
    assert FIRST_MEMBERS | {"erin@contoso.onmicrosoft.com"} <= added
    assert set(summary["added_user_names"]) == added


def test_a_group_changed_before_resolve_members_reads_no_graph(connected, worker: Worker) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    facts = worker.run("fetch_token")
    worker.write((SECOND_GROUP,))
    seq = connected.control.last_seq()
    with pytest.raises(AirflowFailException, match="changed during the run"):
        worker.run("resolve_members", facts)
    assert requests_since(connected, seq) == []


def test_an_edit_that_changes_nothing_written_lets_the_run_finish(connected, worker: Worker) -> None:
    before = connected.control.workspace_user_names(SANDBOX_WS)
    facts = worker.run("fetch_token")
    seq = connected.control.last_seq()
    members = worker.run("resolve_members", facts)
    assert {e["system"] for e in requests_since(connected, seq)} == {"graph"}
    # Pace, tags, alerts and schedule decide how and when, not what: the run goes on.
    worker.write((FIRST_GROUP,), scim_concurrency=2, tags=["edited"], runs_per_day=2)
    seq = connected.control.last_seq()
    summary = worker.run("add_missing_users", facts, members, {})
    systems = {e["system"] for e in requests_since(connected, seq)}
    assert {"vault:kv-demo", f"workspace:{SANDBOX_WS}"} <= systems  # what "no request" is measured by
    added = connected.control.workspace_user_names(SANDBOX_WS) - before
    assert added == FIRST_MEMBERS
    assert set(summary["added_user_names"]) == added


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda text: text + "\n  - [unclosed\n", id="not-yaml"),
        pytest.param(lambda text: text.replace("schedule: null", "schedule: every hour"), id="bad-defaults"),
        pytest.param(
            lambda text: text.replace("name: midrun", "name: midrun\n  scim_concurrency: 0"), id="bad-entry"
        ),
        pytest.param(
            lambda text: text.replace("name: midrun", "name: midrun\n  enabled: false"), id="disabled"
        ),
    ],
)
def test_a_broken_file_mid_run_never_writes(connected, worker: Worker, broken: Callable[[str], str]) -> None:
    before = connected.control.workspace_user_names(SANDBOX_WS)
    facts = worker.run("fetch_token")
    members = worker.run("resolve_members", facts)
    good = worker.config_file.read_text()
    worker.config_file.write_text(broken(good))
    assert worker.config_file.read_text() != good
    seq = connected.control.last_seq()
    # The worker finds no DAG for the run, so add_missing_users cannot start (Airflow 3.3.2 reschedules it
    # up to [workers] missing_dag_retries times, then fails it): no task body runs, nothing is written.
    with pytest.raises(NoDag):
        worker.run("add_missing_users", facts, members, {})
    assert requests_since(connected, seq) == []
    assert connected.control.workspace_user_names(SANDBOX_WS) == before

    # Fixed back before the rescheduled attempt: the same version as fetch_token's, so the run finishes.
    worker.config_file.write_text(good)
    summary = worker.run("add_missing_users", facts, members, {})
    assert set(summary["added_user_names"]) == FIRST_MEMBERS
    assert connected.control.workspace_user_names(SANDBOX_WS) - before == FIRST_MEMBERS


def test_fetch_tokens_result_holds_the_fingerprint_and_no_secret(connected, worker: Worker) -> None:
    facts = worker.run("fetch_token")
    text = yaml.safe_dump(facts)
    assert "dapi-" not in text  # the sandbox's PATs all start so
    assert set(facts) >= {FINGERPRINT_KEY, "admin_user_name", "workspace"}
