"""Fault injection, limits, request-log evidence, the CLI and the large-tenant generator."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sandbox.client import DEMO_SEED, SandboxProcess, load_endpoints
from sandbox.evidence import fingerprint

ROOT = Path(__file__).resolve().parents[2]


def _scim_get(sandbox, http, workspace="ws-alpha"):
    return http.get(
        sandbox.endpoints["workspaces"][workspace]["scim"] + "/Users",
        params={"attributes": "userName"},
        headers={"Authorization": f"Bearer {sandbox.pat(workspace)}"},
    )


def _outcomes(sandbox, n=40):
    out = []
    with httpx.Client(verify=sandbox.ca_file, timeout=5) as http:
        for _ in range(n):
            try:
                out.append(_scim_get(sandbox, http).status_code)
            except httpx.TransportError:
                out.append("dropped")
    return out


def test_faults_are_repeatable_from_a_seed(sandbox_clean):
    rules = [
        {
            "system": "workspace:*",
            "endpoint": "scim.users.*",
            "rate_429": 0.2,
            "rate_500": 0.1,
            "rate_503": 0.1,
            "rate_drop": 0.1,
            "retry_after": 3,
        }
    ]
    sandbox_clean.control.set_faults(rules, seed=42)
    first = _outcomes(sandbox_clean)
    sandbox_clean.control.set_faults(rules, seed=42)
    second = _outcomes(sandbox_clean)
    assert first == second
    assert {429, 500, 503, "dropped", 200} <= set(first)
    counts = sandbox_clean.control.counts()["workspace:ws-alpha"]["scim.users.list"]
    assert counts["dropped"] == 2 * first.count("dropped")
    sandbox_clean.control.set_faults([{"endpoint": "scim.users.list", "rate_429": 1.0, "retry_after": 7}])
    with httpx.Client(verify=sandbox_clean.ca_file) as http:
        throttled = _scim_get(sandbox_clean, http)
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "7"
    assert throttled.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"


def test_faults_are_scoped_and_bounded(sandbox_clean):
    sandbox_clean.control.set_faults([{"system": "workspace:ws-beta", "rate_500": 1.0, "max_faults": 2}])
    with httpx.Client(verify=sandbox_clean.ca_file) as http:
        assert _scim_get(sandbox_clean, http, "ws-alpha").status_code == 200
        beta = [_scim_get(sandbox_clean, http, "ws-beta").status_code for _ in range(4)]
    assert beta == [500, 500, 200, 200]


def test_latency_and_jitter(sandbox_clean):
    sandbox_clean.control.set_faults([{"system": "workspace:ws-alpha", "latency_ms": 150, "jitter_ms": 50}])
    with httpx.Client(verify=sandbox_clean.ca_file) as http:
        _scim_get(sandbox_clean, http)  # warm the connection
        started = time.perf_counter()
        assert _scim_get(sandbox_clean, http).status_code == 200
        elapsed = time.perf_counter() - started
    assert 0.15 <= elapsed < 1.5


def test_concurrency_limit_answers_500_request_limit_exceeded(sandbox_clean):
    sandbox_clean.control.set_workspace_limits("ws-alpha", max_concurrent=2, concurrent_limit_status=500)
    sandbox_clean.control.set_faults([{"system": "workspace:ws-alpha", "latency_ms": 300}])

    async def burst():
        async with httpx.AsyncClient(verify=sandbox_clean.ca_file, timeout=10) as http:
            url = sandbox_clean.endpoints["workspaces"]["ws-alpha"]["scim"] + "/Users"
            headers = {"Authorization": f"Bearer {sandbox_clean.pat('ws-alpha')}"}
            return await asyncio.gather(*(http.get(url, headers=headers) for _ in range(6)))

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 2 and statuses.count(500) == 4
    refused = next(r for r in responses if r.status_code == 500).json()
    assert refused["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert "concurrent limit of 2" in refused["message"]


def test_token_hosts_evidence_records_hashes_only(sandbox_clean):
    pat = sandbox_clean.pat("ws-alpha")
    with httpx.Client(verify=sandbox_clean.ca_file) as http:
        _scim_get(sandbox_clean, http)
    ws_origin = sandbox_clean.workspace_host("ws-alpha").removeprefix("https://")
    assert sandbox_clean.hosts_for_token(pat) == {ws_origin}
    raw_log = json.dumps(sandbox_clean.control.log()) + json.dumps(sandbox_clean.control.token_hosts())
    assert pat not in raw_log and fingerprint(pat) in raw_log


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_starts_fast_prints_endpoints_and_exits_on_signal(tmp_path, stop_signal):
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "serve", "--seed", str(DEMO_SEED), "--state-dir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        elapsed = time.monotonic() - started
        endpoints = json.loads(line)
        assert elapsed < 5
        assert load_endpoints(tmp_path / "endpoints.json") == endpoints
        assert Path(endpoints["ca_file"]).exists() and Path(endpoints["ca_bundle"]).exists()
        origins = [
            endpoints["identity"]["origin"],
            endpoints["graph"]["origin"],
            endpoints["control"],
            endpoints["account"]["host"],
            *(v["url"] for v in endpoints["vaults"].values()),
            *(w["host"] for w in endpoints["workspaces"].values()),
        ]
        assert len(set(origins)) == len(origins)
        assert all(o.startswith("https://127.0.0.1:") for o in origins)
        with httpx.Client(verify=endpoints["ca_file"]) as http:
            assert http.get(endpoints["control"] + "/control/health").json() == {"ok": True}
            assert (
                http.get(
                    endpoints["identity"]["origin"].replace("127.0.0.1", "localhost")
                    + "/common/discovery/instance"
                ).status_code
                == 200
            )
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=10) == 0
        assert not (tmp_path / "endpoints.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bundle_still_trusts_public_roots(sandbox):
    import certifi

    bundle = Path(sandbox.ca_bundle).read_text()
    assert Path(certifi.where()).read_text().strip() in bundle
    assert Path(sandbox.ca_file).read_text().strip() in bundle


def test_generator_builds_100k_users_in_seconds(tmp_path):
    from sandbox.model import load_world

    started = time.perf_counter()
    world = load_world(
        {"tenant": {"domain": "big.onmicrosoft.com"}, "generate": {"users": 100_000, "groups": 20}}
    )
    elapsed = time.perf_counter() - started
    assert len(world.tenant.users) == 100_000
    top = next(g for g in world.tenant.groups.values() if g.display_name == "gen-all")
    assert len([i for i in world.tenant.transitive_member_ids(top.id) if i in world.tenant.users]) == 100_000
    assert elapsed < 10


def test_sandbox_process_runner(tmp_path):
    with SandboxProcess(tmp_path) as proc:
        assert proc.control is not None
        assert proc.control.state()["workspaces"]["ws-alpha"]["users"] == 4
    assert proc.proc is not None and proc.proc.returncode == 0


def test_fault_sequence_of_one_endpoint_ignores_traffic_elsewhere(sandbox_clean):
    rules = [{"system": "workspace:*", "rate_500": 0.5}]

    def alpha_outcomes(noise: bool) -> list[int]:
        sandbox_clean.control.set_faults(rules, seed=9)
        out = []
        with httpx.Client(verify=sandbox_clean.ca_file) as http:
            for i in range(20):
                if noise and i % 3 == 0:
                    _scim_get(sandbox_clean, http, "ws-beta")
                out.append(_scim_get(sandbox_clean, http, "ws-alpha").status_code)
        return out

    quiet = alpha_outcomes(noise=False)
    assert alpha_outcomes(noise=True) == quiet
    assert {200, 500} <= set(quiet)
