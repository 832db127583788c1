"""Start every sandboxed system in one process: one uvicorn server per origin, all in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from sandbox.certs import TlsFiles, generate_tls
from sandbox.control import ControlApp
from sandbox.graph import GraphApp
from sandbox.http import SystemApp
from sandbox.hub import Hub
from sandbox.identity import MSI_PATH, build_identity_app
from sandbox.keyvault import VaultApp, vault_resource_for
from sandbox.scim import ACCOUNT_OIDC_PREFIX, ACCOUNT_PREFIX, WORKSPACE_OIDC_PREFIX, WORKSPACE_PREFIX, ScimApp

log = logging.getLogger("sandbox")


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


def build_apps(hub: Hub) -> list[tuple[str, SystemApp]]:
    """Every system in a fixed order, so ``--port-base`` gives each one a predictable port."""
    world = hub.world
    apps: list[tuple[str, SystemApp]] = [
        ("control", ControlApp(hub)),
        ("identity", build_identity_app(hub)),
        ("graph", GraphApp(hub)),
    ]
    apps += [(f"vault:{name}", VaultApp(hub, name)) for name in world.vaults]
    apps += [(f"workspace:{name}", ScimApp(hub, "workspace", name)) for name in world.workspaces]
    if world.account is not None:
        apps.append(("account", ScimApp(hub, "account", "account")))
    return apps


def describe(hub: Hub, tls: TlsFiles, state_dir: Path) -> dict[str, Any]:
    """The endpoints document printed at start and written to ``<state-dir>/endpoints.json``."""
    world = hub.world
    o = hub.origins
    identity = o["identity"]
    return {
        "version": 1,
        "pid": os.getpid(),
        "state_dir": str(state_dir),
        "ca_file": str(tls.ca_file),
        "ca_bundle": str(tls.bundle_file),
        "tenant_id": world.tenant.id,
        "tenant_domain": world.tenant.domain,
        "identity": {
            "origin": identity,
            "msi_endpoint": identity + MSI_PATH,
            "identity_header": world.identity_header,
            "authority_host": identity,
            "token_endpoint": f"{identity}/{world.tenant.id}/oauth2/v2.0/token",
        },
        "identities": {
            i.name: {
                "type": i.kind,
                "client_id": i.client_id,
                "object_id": i.object_id,
                **({"client_secret": i.client_secret} if i.client_secret else {}),
                "graph_permissions": list(i.graph_permissions),
            }
            for i in world.tenant.identities.values()
        },
        "graph": {"origin": o["graph"], "base_url": o["graph"] + "/v1.0"},
        "vaults": {
            name: {
                "url": o[f"vault:{name}"],
                "resource": hub.vault_resources[name],
                "secrets": {s.name: f"{o[f'vault:{name}']}/secrets/{s.name}" for s in vault.secrets.values()},
            }
            for name, vault in world.vaults.items()
        },
        "workspaces": {
            name: {
                "host": o[f"workspace:{name}"],
                "workspace_id": ws.ident,
                "scim": o[f"workspace:{name}"] + WORKSPACE_PREFIX,
                "identity_federated": ws.identity_federated,
                "oidc_token_endpoint": o[f"workspace:{name}"] + WORKSPACE_OIDC_PREFIX + "/v1/token",
            }
            for name, ws in world.workspaces.items()
        },
        "account": None
        if world.account is None
        else {
            "host": o["account"],
            "account_id": world.account.ident,
            "scim": o["account"] + ACCOUNT_PREFIX.replace("{account_id}", world.account.ident),
            "oidc_token_endpoint": o["account"]
            + ACCOUNT_OIDC_PREFIX.replace("{account_id}", world.account.ident)
            + "/v1/token",
            # append /{workspace_id}/permissionassignments
            "assignments": f"{o['account']}/api/2.0/accounts/{world.account.ident}/workspaces",
        },
        "control": o["control"],
    }


async def serve(
    seed: dict[str, Any],
    state_dir: Path,
    *,
    port_base: int | None = None,
    fault_rules: list[dict[str, Any]] | None = None,
    fault_seed: int = 0,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT when run from the CLI)."""
    import uvicorn

    started = time.perf_counter()
    state_dir = state_dir.resolve()
    tls = generate_tls(state_dir)
    hub = Hub(seed, fault_rules, fault_seed)
    apps = build_apps(hub)
    hub.apps = [app for _, app in apps]
    sockets: list[socket.socket] = []
    for index, (system, app) in enumerate(apps):
        sock = _bind(0 if port_base is None else port_base + index)
        sockets.append(sock)
        port = sock.getsockname()[1]
        app.origin = f"https://127.0.0.1:{port}"
        hub.origins[system] = app.origin
        if isinstance(app, VaultApp):
            hub.vault_resources[app.vault_name] = vault_resource_for(port)

    servers: list[Any] = []
    for (_, app), _sock in zip(apps, sockets, strict=True):
        config = uvicorn.Config(
            app,
            ssl_certfile=str(tls.cert_file),
            ssl_keyfile=str(tls.key_file),
            lifespan="off",
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=2,
        )
        servers.append(uvicorn.Server(config))

    tasks = [
        asyncio.create_task(server._serve(sockets=[sock]))  # our own signal handling: see below
        for server, sock in zip(servers, sockets, strict=True)
    ]
    deadline = time.monotonic() + 10
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks) or time.monotonic() > deadline:
            for s in servers:
                s.should_exit = True
            await asyncio.gather(*tasks, return_exceptions=True)
            raise RuntimeError("the sandbox servers did not start")
        await asyncio.sleep(0.01)

    endpoints = describe(hub, tls, state_dir)
    endpoints["startup_seconds"] = round(time.perf_counter() - started, 3)
    for _, app in apps:
        if isinstance(app, ControlApp):
            app.endpoints = endpoints
    target = state_dir / "endpoints.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(endpoints, indent=2))
    tmp.replace(target)
    sys.stdout.write(json.dumps(endpoints) + "\n")
    sys.stdout.flush()

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for s in servers:
        s.should_exit = True
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=10)
    stopper.cancel()
    for sock in sockets:
        sock.close()
    target.unlink(missing_ok=True)


def run(seed: dict[str, Any], state_dir: Path, **kwargs: Any) -> None:
    """Blocking entry point; uses uvloop when installed (it is, with uvicorn[standard])."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    with runner:
        runner.run(serve(seed, state_dir, **kwargs))
