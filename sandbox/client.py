"""Client side of the sandbox: the control API client, a process runner and ``env_for``.

Nothing here imports the server; tests, benchmarks and the demo use these to drive a sandbox that runs in
another process.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sandbox.evidence import fingerprint

PACKAGE_DIR = Path(__file__).resolve().parent
DEMO_SEED = PACKAGE_DIR / "demo_seed.yaml"


def load_endpoints(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``endpoints.json`` (as written by ``python -m sandbox serve``)."""
    return dict(json.loads(Path(path).read_text()))


def env_for(endpoints: dict[str, Any]) -> dict[str, str]:
    """Environment variables a client process needs to use the sandbox with unmodified SDKs.

    - ``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``: the bundle (system roots + our CA),
      so other HTTPS keeps working.
    - ``IDENTITY_ENDPOINT`` / ``IDENTITY_HEADER``: the App Service managed-identity protocol.
    - ``AZURE_AUTHORITY_HOST`` / ``AZURE_TENANT_ID``: for client-secret credentials (pass
      ``disable_instance_discovery=True``; see README).
    - ``SANDBOX_ENDPOINTS``: path of ``endpoints.json``.
    """
    bundle = str(endpoints["ca_bundle"])
    return {
        "SSL_CERT_FILE": bundle,
        "REQUESTS_CA_BUNDLE": bundle,
        "CURL_CA_BUNDLE": bundle,
        "IDENTITY_ENDPOINT": str(endpoints["identity"]["msi_endpoint"]),
        "IDENTITY_HEADER": str(endpoints["identity"]["identity_header"]),
        "AZURE_AUTHORITY_HOST": str(endpoints["identity"]["authority_host"]),
        "AZURE_TENANT_ID": str(endpoints["tenant_id"]),
        "SANDBOX_ENDPOINTS": str(Path(endpoints["state_dir"]) / "endpoints.json"),
    }


def _named(groups: list[dict[str, Any]], display_name: str) -> dict[str, Any] | None:
    low = display_name.lower()
    return next((g for g in groups if str(g["displayName"]).lower() == low), None)


class ControlClient:
    """Thin synchronous client of the control API (``/control/...`` on its own origin)."""

    def __init__(self, base_url: str, ca_file: str | os.PathLike[str], timeout: float = 30.0) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, verify=ssl.create_default_context(cafile=str(ca_file)), timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        response = self._http.request(
            method,
            "/control" + path,
            json=body,
            params={k: v for k, v in (params or {}).items() if v is not None},
        )
        if response.status_code >= 400:
            raise RuntimeError(f"control API {method} {path}: {response.status_code} {response.text}")
        return response.json()

    # ---------------------------------------------------------------- state
    def health(self) -> bool:
        return bool(self._call("GET", "/health").get("ok"))

    def endpoints(self) -> dict[str, Any]:
        return dict(self._call("GET", "/endpoints"))

    def state(self) -> dict[str, Any]:
        """Counts of tenant objects, vault secret names, workspace and account user counts."""
        return dict(self._call("GET", "/state"))

    def tenant(self) -> dict[str, Any]:
        return dict(self._call("GET", "/state/tenant"))

    def workspace_users(self, workspace: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/state/workspaces/{workspace}/users")["users"])

    def workspace_user(self, workspace: str, user_name: str) -> dict[str, Any] | None:
        """One workspace user by userName (case-insensitive), with ``entitlements``, or ``None``."""
        low = user_name.lower()
        return next((u for u in self.workspace_users(workspace) if u["userName"] == low), None)

    def workspace_user_names(self, workspace: str) -> set[str]:
        return {u["userName"] for u in self.workspace_users(workspace)}

    def workspace_groups(self, workspace: str) -> list[dict[str, Any]]:
        """``[{id, displayName, externalId, external, member_ids, members: [{id, kind, name}]}]``; ``kind``
        is ``user`` (name = userName), ``group`` (displayName) or ``service_principal`` (applicationId)."""
        return list(self._call("GET", f"/state/workspaces/{workspace}/groups")["groups"])

    def workspace_group(self, workspace: str, display_name: str) -> dict[str, Any] | None:
        """The workspace group of that display name (case-insensitive), or ``None``."""
        return _named(self.workspace_groups(workspace), display_name)

    def add_workspace_group(
        self,
        workspace: str,
        display_name: str,
        *,
        external_id: str | None = None,
        external: bool = False,
        members: list[str] | tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """Create a group in the store behind the API's back (someone else's group, or ``external=True``
        for one kept in sync by automatic identity management, whose PATCH answers 500). ``members`` are
        ids, userNames, applicationIds or ``group:<displayName>``."""
        body = {
            "displayName": display_name,
            "externalId": external_id,
            "external": external,
            "members": list(members),
        }
        return dict(self._call("POST", f"/state/workspaces/{workspace}/groups", body))

    def add_workspace_user(self, workspace: str, user_name: str, **fields: Any) -> dict[str, Any]:
        """Create a user directly in the store (not through SCIM, not logged): drift or a racing creator."""
        return dict(
            self._call("POST", f"/state/workspaces/{workspace}/users", {"userName": user_name, **fields})
        )

    def account_users(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/state/account/users")["users"])

    def add_account_user(self, user_name: str, **fields: Any) -> dict[str, Any]:
        return dict(self._call("POST", "/state/account/users", {"userName": user_name, **fields}))

    def workspace_limits(self, workspace: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/state/workspaces/{workspace}/limits"))

    def set_workspace_limits(self, workspace: str, **limits: Any) -> dict[str, Any]:
        """Merge limits, e.g. ``max_concurrent=4, concurrent_limit_status=500, rates={...}``."""
        return dict(self._call("PUT", f"/state/workspaces/{workspace}/limits", limits))

    def account_groups(self) -> list[dict[str, Any]]:
        """Like :meth:`workspace_groups`, for the account."""
        return list(self._call("GET", "/state/account/groups")["groups"])

    def account_group(self, display_name: str) -> dict[str, Any] | None:
        return _named(self.account_groups(), display_name)

    def add_account_group(
        self,
        display_name: str,
        *,
        external_id: str | None = None,
        external: bool = False,
        members: list[str] | tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """Like :meth:`add_workspace_group`, in the account."""
        body = {
            "displayName": display_name,
            "externalId": external_id,
            "external": external,
            "members": list(members),
        }
        return dict(self._call("POST", "/state/account/groups", body))

    def account_service_principals(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/state/account/service_principals")["service_principals"])

    def workspace_service_principals(self, workspace: str) -> list[dict[str, Any]]:
        return list(
            self._call("GET", f"/state/workspaces/{workspace}/service_principals")["service_principals"]
        )

    def account_assignments(self, workspace: str) -> list[dict[str, Any]]:
        """``[{principal_id, kind (user|group|service_principal), name, permissions}]`` for a workspace name."""
        return list(self._call("GET", f"/state/account/assignments/{workspace}")["assignments"])

    def account_limits(self) -> dict[str, Any]:
        return dict(self._call("GET", "/state/account/limits"))

    def set_account_limits(self, **limits: Any) -> dict[str, Any]:
        return dict(self._call("PUT", "/state/account/limits", limits))

    def set_graph_limits(self, **limits: Any) -> dict[str, Any]:
        """Rate/concurrency limits for Graph, e.g. ``rates={"graph.groups.transitiveMembers": 20}``."""
        return dict(self._call("PUT", "/state/graph/limits", limits))

    def set_graph_next_link_origin(self, origin: str | None) -> None:
        """Make Graph's ``@odata.nextLink`` point at ``origin`` (e.g. another host) until the next reset."""
        self._call("PUT", "/state/graph/next_link_origin", {"origin": origin})

    def vault(self, name: str) -> dict[str, Any]:
        """Secret names, versions and attributes (never values) and the access list."""
        return dict(self._call("GET", f"/state/vaults/{name}"))

    def reset(
        self,
        seed: dict[str, Any] | None = None,
        *,
        keep_faults: bool = False,
        keep_log: bool = False,
        drop_tokens: bool = False,
    ) -> None:
        """Reload the start seed (or ``seed``), restore the start-up faults, clear the log and the rate-limit
        buckets. Issued Entra tokens stay valid unless ``drop_tokens``."""
        body = {"seed": seed, "keep_faults": keep_faults, "keep_log": keep_log, "drop_tokens": drop_tokens}
        self._call("POST", "/reset", body)

    # ---------------------------------------------------------------- faults
    def faults(self) -> dict[str, Any]:
        return dict(self._call("GET", "/faults"))

    def set_faults(self, rules: list[dict[str, Any]], seed: int | None = None) -> dict[str, Any]:
        """Replace the fault rules (see ``sandbox.faults.FaultRule`` for the keys)."""
        return dict(self._call("PUT", "/faults", {"rules": rules, "seed": seed}))

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    # ---------------------------------------------------------------- evidence
    def log(
        self, *, since: int = 0, system: str | None = None, endpoint: str | None = None, limit: int = 10_000
    ) -> list[dict[str, Any]]:
        params = {"since": since, "system": system, "endpoint": endpoint, "limit": limit}
        return list(self._call("GET", "/log", params=params)["entries"])

    def last_seq(self) -> int:
        return int(self._call("GET", "/log", params={"limit": 0})["last_seq"])

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """``{system: {endpoint: {status: n}}}``."""
        return dict(self._call("GET", "/log/counts"))

    def clear_log(self) -> None:
        self._call("DELETE", "/log")

    def token_hosts(self) -> dict[str, dict[str, int]]:
        """``{sha256(token): {"127.0.0.1:port": n}}`` for every credential presented to any system."""
        return dict(self._call("GET", "/tokens"))

    def hosts_for_token(self, token: str) -> set[str]:
        """The ``127.0.0.1:port`` origins this exact credential was presented to."""
        return set(self.token_hosts().get(fingerprint(token), {}))

    def expire_tokens(self) -> int:
        """Make every issued Entra token expire now (PATs are not affected)."""
        return int(self._call("POST", "/tokens/expire")["expired"])


class SandboxProcess:
    """Runs ``python -m sandbox serve`` as a child process and waits until it answers."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        seed: str | os.PathLike[str] = DEMO_SEED,
        *,
        extra_args: list[str] | None = None,
        python: str = sys.executable,
        start_timeout: float = 20.0,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.seed = Path(seed).resolve()
        self.extra_args = list(extra_args or [])
        self.python = python
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoints: dict[str, Any] = {}
        self.control: ControlClient | None = None

    def start(self) -> dict[str, Any]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        endpoints_file = self.state_dir / "endpoints.json"
        endpoints_file.unlink(missing_ok=True)
        env = dict(os.environ)
        root = str(PACKAGE_DIR.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd = [
            self.python,
            "-m",
            "sandbox",
            "serve",
            "--seed",
            str(self.seed),
            "--state-dir",
            str(self.state_dir),
        ]
        out = open(self.state_dir / "server.out", "wb")  # noqa: SIM115 - owned by the child for its lifetime
        try:
            self.proc = subprocess.Popen(
                cmd + self.extra_args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root
            )
        finally:
            out.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.state_dir / "server.out").read_text(errors="replace")
                raise RuntimeError(f"sandbox exited with {self.proc.returncode}:\n{log}")
            if endpoints_file.exists():
                try:
                    self.endpoints = load_endpoints(endpoints_file)
                    break
                except ValueError:
                    pass
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"sandbox did not start within {self.start_timeout} s")
        self.control = ControlClient(self.endpoints["control"], self.endpoints["ca_file"])
        self.control.health()
        return self.endpoints

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def __enter__(self) -> SandboxProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
