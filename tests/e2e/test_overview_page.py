"""The "Entra provisioning" overview page through a real ``airflow api-server``, and in headless Chromium.

One Airflow home (SQLite) with the FAB auth manager, as the compose deployment uses; the demo workspaces
against the sandbox plus one whose token cannot be read. Real runs with ``airflow dags test``: alpha a
real run (users added), gamma a dry run (account target, a connection: no token expiry), delta a failure
(its Key Vault secret is disabled); beta never runs. alpha's expiry warning is set to 120 days, so its
90-day token is highlighted.

The browser tests drive the system Chromium through playwright; they skip when it is absent, unless
``ENTRA_PROVISIONING_REQUIRE_BROWSER=1`` (``.ci/run`` sets it after installing Chromium), which makes
that a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from demo.distributed import free_port, wait_for
from demo.sandbox_airflow import REPO, airflow, airflow_env, workspaces_yaml

# The module's server takes a few minutes to seed on two shared cores (three real runs, FAB users).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

PREFIX = "entra_provisioning__"
ALPHA, BETA, GAMMA, DELTA = (f"{PREFIX}{name}" for name in ("alpha", "beta", "gamma", "delta"))
REQUIRE_BROWSER_ENV = "ENTRA_PROVISIONING_REQUIRE_BROWSER"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
SCREENSHOT = REPO / ".tmp" / "overview-page.png"
#: The users the tests sign in as: an admin, and a reader allowed alpha and gamma only.
ADMIN, READER = "admin", "reader"


@dataclass
class OverviewServer:
    url: str
    env: dict[str, str]
    passwords: dict[str, str]
    log_file: Path

    def token(self, user: str) -> str:
        response = httpx.post(
            f"{self.url}/auth/token", json={"username": user, "password": self.passwords[user]}, timeout=30
        )
        assert response.status_code in (200, 201), response.text
        return str(response.json()["access_token"])

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def rows(self, token: str) -> dict[str, dict[str, Any]]:
        response = self.get("/entra-provisioning/api/workspaces", token)
        assert response.status_code == 200, response.text
        return {row["dag_id"]: row for row in response.json()["rows"]}


def _config(endpoints: dict[str, Any]) -> str:
    """The demo workspaces, alpha warned 120 days ahead, and delta with a disabled token secret."""
    document = yaml.safe_load(workspaces_yaml(endpoints))
    by_name = {entry["name"]: entry for entry in document["workspaces"]}
    by_name["alpha"]["secret_expiry_warning_days"] = 120
    delta = dict(by_name["beta"], name="delta", tags=["team-payments"])
    delta["pat_secret_url"] = endpoints["vaults"]["kv-demo"]["secrets"]["disabled-pat"]
    document["workspaces"].append(delta)
    return yaml.safe_dump(document, sort_keys=False)


#: Runs airflow CLI commands in one process, in order (each airflow start costs seconds, minutes on a
#: loaded machine), and prints each one's outcome: "ok", or why it stopped (SystemExit or an exception).
_MANY_COMMANDS = """
import json, sys, traceback
from airflow.cli import cli_parser
parser = cli_parser.get_parser()
outcomes = []
for argv in json.loads(sys.argv[1]):
    print("$ airflow", *argv, flush=True)
    try:
        args = parser.parse_args(argv)
        args.func(args)
        outcomes.append("ok")
    except (SystemExit, Exception) as exc:
        traceback.print_exc()
        outcomes.append(f"{type(exc).__name__}: {exc}")
print(json.dumps(outcomes))
"""


def airflow_commands(env: dict[str, str], commands: list[list[str]], timeout: float = 900) -> list[str]:
    """Run ``commands`` in one process; their outcomes in order (the process itself must succeed)."""
    done = subprocess.run(
        [sys.executable, "-c", _MANY_COMMANDS, json.dumps(commands)],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    _check(done, "the airflow commands")
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def _check(result: Any, what: str) -> None:
    assert result.returncode == 0, f"{what} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def overview_server(sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OverviewServer]:
    root = tmp_path_factory.mktemp("overview")
    config_file = root / "workspaces.yaml"
    config_file.write_text(_config(sandbox.endpoints))
    port = free_port()
    env = airflow_env(sandbox.endpoints, root / "home", config_file)
    for leaked in ("PYTEST_CURRENT_TEST", "AIRFLOW__CORE__UNIT_TEST_MODE"):
        env.pop(leaked, None)
    env.update(
        {
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        }
    )
    _check(airflow(env, "db", "migrate"), "airflow db migrate")
    sandbox.reset()
    passwords = {ADMIN: secrets.token_urlsafe(12), READER: secrets.token_urlsafe(12)}
    commands = [
        # Real runs: a real one, a dry one, a failure (beta never runs).
        ["dags", "test", ALPHA],
        ["dags", "test", GAMMA, "--conf", json.dumps({"dry_run": True})],
        ["dags", "test", DELTA],
        # dags test parses only the DAG it runs: register them all, then their FAB permission resources.
        ["dags", "reserialize"],
        ["sync-perm", "--include-dags"],
    ]
    for user, role in ((ADMIN, "Admin"), (READER, "Public")):
        commands.append(
            ["users", "create", "--username", user, "--password", passwords[user], "--role", role,
             "--firstname", user, "--lastname", "test", "--email", f"{user}@example.com"]
        )  # fmt: skip
    commands += [
        ["roles", "create", "AlphaGammaReader"],
        ["roles", "add-perms", "AlphaGammaReader", "-a", "can_read", "-r", f"DAG:{ALPHA}", f"DAG:{GAMMA}"],
        ["users", "add-role", "--username", READER, "--role", "AlphaGammaReader"],
    ]
    outcomes = airflow_commands(env, commands)
    # delta's token secret is disabled: its run fails; everything else succeeds.
    assert outcomes[2] == "SystemExit: DagRun failed", outcomes
    assert outcomes[:2] + outcomes[3:] == ["ok"] * (len(commands) - 1), list(
        zip(commands, outcomes, strict=True)
    )

    log_file = root / "api-server.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("airflow")), "api-server", "--host", "127.0.0.1", "--port",
             str(port), "--workers", "1"],
            env=env, cwd=root, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    server = OverviewServer(f"http://127.0.0.1:{port}", env, passwords, log_file)

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the api-server exited:\n{log_file.read_text(errors='replace')[-4000:]}")
        return server.get("/api/v2/monitor/health").status_code == 200

    try:
        wait_for("the api-server", up, timeout=180, interval=1.0)
        yield server
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            with suppress(subprocess.TimeoutExpired):
                process.wait(15)


# ------------------------------------------------------------------------------- through the API


def test_every_request_needs_credentials(overview_server: OverviewServer) -> None:
    for path in ("/entra-provisioning/", "/entra-provisioning/api/workspaces"):
        assert overview_server.get(path).status_code == 401
        # A forged token is refused too (Airflow's own rule: 403 for an invalid JWT).
        assert overview_server.get(path, "not-a-jwt").status_code in (401, 403)
    page = overview_server.get("/entra-provisioning/", overview_server.token(ADMIN))
    assert page.status_code == 200 and "<title>Entra provisioning</title>" in page.text
    # The UI's cookie works as well as a bearer token (the page's own fetch sends the cookie).
    cookie = overview_server.get(
        "/entra-provisioning/api/workspaces", cookies={"_token": overview_server.token(ADMIN)}
    )
    assert cookie.status_code == 200 and cookie.json()["rows"]


def test_rows_of_real_runs(overview_server: OverviewServer) -> None:
    """The rows as a script gets them: ``curl -H "Authorization: Bearer …" …/entra-provisioning/api/workspaces``
    is this request."""
    rows = overview_server.rows(overview_server.token(ADMIN))
    assert set(rows) == {ALPHA, BETA, GAMMA, DELTA}
    alpha, beta, gamma, delta = rows[ALPHA], rows[BETA], rows[GAMMA], rows[DELTA]
    # alpha: a real run that added ws-alpha's four missing users (tests/e2e/test_dags_test.py's facts).
    assert alpha["last_run"]["state"] == "success" and alpha["last_run"]["dry_run"] is False
    assert alpha["last_run"]["url"].startswith(f"dags/{ALPHA}/runs/")
    # Nothing is left to add after it (the run added all four), two users are drift.
    assert (alpha["added"], alpha["to_add"], alpha["drift"], alpha["failed_users"]) == (4, 0, 2, 0)
    assert alpha["members_resolved"] >= 6 and alpha["target"] == "workspace"
    # Its Key Vault secret expires in 90 days, under the 120-day warning set for alpha.
    assert 88 <= alpha["token_expires_in_days"] <= 90 and alpha["token_warning"] is True
    assert alpha["warning_days"] == 120 and alpha["last_failure"] is None
    # beta never ran: it says so, and has no figures.
    assert beta["never_run"] is True and beta["last_run"] is None and beta["members_resolved"] is None
    assert beta["warning_days"] == 14  # the field's default, read from the same workspaces file
    # gamma: a dry run through the account with a managed identity's connection.
    assert gamma["last_run"]["dry_run"] is True and gamma["target"] == "account"
    assert gamma["to_add_from_dry_run"] is True and gamma["to_add"] == 3 and gamma["added"] is None
    assert gamma["token_no_expiry"] is True and gamma["token_expires_in_days"] is None
    # delta: the run failed in fetch_token, and the one-line reason says why.
    assert delta["last_run"]["state"] == "failed" and delta["last_failure"]["state"] == "failed"
    assert delta["last_failure_reason"].startswith("fetch_token: ")
    assert "disabled" in delta["last_failure_reason"].lower()
    assert "\n" not in delta["last_failure_reason"]
    assert "team-payments" in delta["tags"] and "entra-provisioning" in delta["tags"]


def test_no_token_or_secret_on_the_page(overview_server: OverviewServer, sandbox) -> None:
    body = overview_server.get("/entra-provisioning/api/workspaces", overview_server.token(ADMIN)).text
    for secret in (sandbox.pat("ws-alpha"), sandbox.pat("ws-beta"), "dapi-"):
        assert secret not in body


def test_a_user_sees_only_the_dags_they_may_read(overview_server: OverviewServer) -> None:
    """FAB: the reader's role grants can_read on alpha and gamma only."""
    reader = overview_server.token(READER)
    assert set(overview_server.rows(reader)) == {ALPHA, GAMMA}
    # Airflow's own API agrees: the reader cannot read beta.
    assert overview_server.get(f"/api/v2/dags/{BETA}", reader).status_code == 403


def test_the_plugin_is_registered_with_its_navigation_entry(overview_server: OverviewServer) -> None:
    plugins = overview_server.get("/api/v2/plugins", overview_server.token(ADMIN)).json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "entra_provisioning")
    assert ours["source"] == "$PLUGINS_FOLDER/entra_provisioning_overview.py"
    assert ours["fastapi_apps"][0]["url_prefix"] == "/entra-provisioning"
    view = ours["external_views"][0]
    assert view["url_route"] == "entra-provisioning" and view["href"] == "entra-provisioning/"
    assert view["destination"] == "nav" and view["category"] == "browse"


# ------------------------------------------------------------------------------ in a real browser


def chromium_problem() -> str | None:
    """Why the browser tests cannot run here, or ``None``."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"the playwright package is not installed ({exc})"
    if chromium_path() is None:
        return f"no Chromium at {' or '.join(CHROMIUM_CANDIDATES)} (apt-get install chromium)"
    return None


def chromium_path() -> str | None:
    return next((path for path in CHROMIUM_CANDIDATES if os.access(path, os.X_OK)), None) or shutil.which(
        "chromium"
    )


def browser_verdict(problem: str | None, required: bool) -> tuple[str, str] | None:
    """``None`` (run), or ``("skip" | "fail", reason)``: a missing browser fails when it is required."""
    if problem is None:
        return None
    if required:
        return "fail", f"{problem} ({REQUIRE_BROWSER_ENV}=1, so this is a failure, not a skip)"
    return "skip", f"the overview page's browser test needs Chromium: {problem}"


def test_browser_verdict() -> None:
    assert browser_verdict(None, True) is None
    assert browser_verdict("no Chromium", False) == (
        "skip",
        "the overview page's browser test needs Chromium: no Chromium",
    )
    action, reason = browser_verdict("no Chromium", True) or ("", "")
    assert action == "fail" and REQUIRE_BROWSER_ENV in reason


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    verdict = browser_verdict(chromium_problem(), os.environ.get(REQUIRE_BROWSER_ENV) == "1")
    if verdict is not None:
        action, reason = verdict
        if action == "fail":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        chromium = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"], timeout=60_000
        )
        try:
            yield chromium
        finally:
            chromium.close()


def _signed_in_page(browser: Any, server: OverviewServer, user: str) -> Any:
    context = browser.new_context(viewport={"width": 1500, "height": 760})
    context.add_cookies([{"name": "_token", "value": server.token(user), "url": server.url}])
    context.set_default_timeout(30_000)
    return context.new_page()


def test_page_sorts_filters_and_links_in_chromium(browser: Any, overview_server: OverviewServer) -> None:
    page = _signed_in_page(browser, overview_server, ADMIN)
    try:
        page.goto(f"{overview_server.url}/entra-provisioning/")
        page.wait_for_selector("body[data-loaded=yes]")
        names = lambda: page.locator("tbody tr td:first-child a").all_inner_texts()  # noqa: E731
        assert names() == ["alpha", "beta", "delta", "gamma"]
        page.click("th[data-key=workspace]")  # the same header again: descending
        assert names() == ["gamma", "delta", "beta", "alpha"]
        page.click("th[data-key=members_resolved]")  # unknown figures sort last
        assert names()[-1] in ("beta", "delta")
        page.select_option("#state", "never")
        assert names() == ["beta"]
        assert "never run" in page.locator("tbody tr").inner_text()
        page.select_option("#state", "failed")
        assert names() == ["delta"]
        assert "fetch_token: " in page.locator("tbody tr td.reason").inner_text()
        page.select_option("#state", "")
        page.select_option("#tag", "team-payments")
        assert names() == ["delta"]
        page.select_option("#tag", "")
        # alpha's token cell is highlighted; the run link points at the run's page in the Airflow UI.
        alpha = page.locator(f"tr[data-dag-id={ALPHA}]")
        assert alpha.locator("td[data-warn=yes]").count() == 1
        href = alpha.locator("td:nth-child(4) a").get_attribute("href") or ""
        assert href.startswith(f"{overview_server.url}/dags/{ALPHA}/runs/")
        assert "workspaces.yaml" in page.locator("footer").inner_text()
        assert page.locator("#pools").is_hidden()  # every pool the tasks use exists
        # A task waiting for a pool nobody created (settings.graph_pool without `pool --create`): the page
        # names the pool, the DAG and the command, above the table.
        with _task_waiting_for_a_missing_pool(overview_server, BETA, "entra_graph"):
            page.reload()
            page.wait_for_selector("body[data-loaded=yes]")
            notice = page.locator("#pools")
            assert notice.is_visible()
            text = notice.inner_text()
            assert "entra_graph" in text and BETA in text and "pool --create" in text
    finally:
        page.context.close()


@contextmanager
def _task_waiting_for_a_missing_pool(server: OverviewServer, dag_id: str, pool: str) -> Iterator[None]:
    """A scheduled ``resolve_members`` of ``dag_id`` in ``pool`` (which does not exist), removed after."""
    import sqlite3
    import uuid

    db = Path(server.env["AIRFLOW_HOME"]) / "airflow.db"
    ti_id = str(uuid.uuid4())
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO task_instance (id, dag_id, task_id, run_id, map_index, try_number, max_tries, pool,"
            " pool_slots, state, queue, priority_weight, hostname, unixname, executor_config, span_status)"
            " VALUES (?, ?, 'resolve_members', 'manual__waiting', -1, 0, 3, ?, 1, 'scheduled', 'default', 1,"
            " '', 'airflow', X'80047D942E', 'not_started')",
            (ti_id.replace("-", ""), dag_id, pool),
        )
    try:
        yield
    finally:
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM task_instance WHERE id = ?", (ti_id.replace("-", ""),))


def test_reader_sees_two_rows_in_chromium(browser: Any, overview_server: OverviewServer) -> None:
    page = _signed_in_page(browser, overview_server, READER)
    try:
        page.goto(f"{overview_server.url}/entra-provisioning/")
        page.wait_for_selector("body[data-loaded=yes]")
        assert page.locator("tbody tr").count() == 2
        assert page.locator("#count").inner_text() == "2 of 2 workspaces"
    finally:
        page.context.close()


def test_page_in_the_airflow_ui_and_screenshot(browser: Any, overview_server: OverviewServer) -> None:
    """The navigation entry opens the page inside Airflow's UI; the screenshot goes to .tmp/."""
    page = _signed_in_page(browser, overview_server, ADMIN)
    try:
        page.goto(f"{overview_server.url}/plugin/entra-provisioning")
        frame = page.frame_locator("iframe")
        frame.locator("body[data-loaded=yes]").wait_for()
        assert frame.locator("tbody tr").count() == 4
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
        assert SCREENSHOT.stat().st_size > 10_000
    finally:
        page.context.close()
