"""A small ASGI dispatcher shared by every sandboxed system.

Each system (identity, graph, a vault, a workspace, the account API, control) is one ``SystemApp`` bound to
its own port, so the log can say which origin a credential was presented to. The dispatcher matches the
route first so that faults, rate limits and the log can all speak in endpoint names.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from sandbox.evidence import fingerprint

if TYPE_CHECKING:
    from sandbox.hub import Hub
    from sandbox.model import Limits

Handler = Callable[["Ctx"], Awaitable[Response]]
_log = logging.getLogger("sandbox")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        content=json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


class ErrorStyle(Protocol):
    """How a system spells its errors; used for injected faults, throttling and unknown routes."""

    def error(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> Response: ...


@dataclass
class Route:
    method: str
    regex: re.Pattern[str]
    endpoint: str
    handler: Handler


def compile_path(template: str) -> re.Pattern[str]:
    """``/groups/{id}`` -> regex with named groups; ``{name:path}`` may span slashes."""
    parts: list[str] = []
    pos = 0
    for match in re.finditer(r"\{(\w+)(:path)?\}", template):
        parts.append(re.escape(template[pos : match.start()]))
        parts.append(f"(?P<{match.group(1)}>{'.+' if match.group(2) else '[^/]+'})")
        pos = match.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("^" + "".join(parts) + "/?$")


class Ctx:
    """What a handler gets: the request, path parameters, the presented bearer token and the app."""

    def __init__(self, app: SystemApp, request: Request, params: dict[str, str], token: str | None) -> None:
        self.app = app
        self.request = request
        self.params = params
        self.token = token

    @property
    def hub(self) -> Hub:
        return self.app.hub

    def query(self, name: str) -> str | None:
        return self.request.query_params.get(name)

    def header(self, name: str) -> str | None:
        return self.request.headers.get(name)

    async def json(self) -> Any:
        body = await self.request.body()
        return json.loads(body) if body else None


class SystemApp:
    """ASGI app for one system: routing, credential evidence, faults, admission limits, logging."""

    def __init__(
        self,
        hub: Hub,
        system: str,
        style: ErrorStyle,
        *,
        limits: Callable[[], Limits | None] | None = None,
        faultable: bool = True,
        logged: bool = True,
    ) -> None:
        self.hub = hub
        self.system = system
        self.style = style
        self.routes: list[Route] = []
        self.origin = ""  # https://127.0.0.1:port, set once the socket is bound
        self._limits = limits
        self._faultable = faultable
        self._logged = logged
        self.inflight = 0
        self._buckets: dict[str, list[float]] = {}

    def add(self, method: str, template: str, endpoint: str, handler: Handler) -> None:
        self.routes.append(Route(method, compile_path(template), endpoint, handler))

    def reset_limits(self) -> None:
        self._buckets.clear()

    def _match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        path_known = False
        for route in self.routes:
            m = route.regex.match(path)
            if m:
                path_known = True
                if route.method == method:
                    return route, m.groupdict(), True
        return None, {}, path_known

    def _take_rate_token(self, endpoint: str, limits: Limits) -> int | None:
        """Token bucket per endpoint; returns seconds to wait when empty, else None."""
        rate = limits.rates.get(endpoint)
        if not rate:
            return None
        now = time.monotonic()
        bucket = self._buckets.setdefault(endpoint, [max(1.0, rate), now])
        capacity = max(1.0, rate)
        bucket[0] = min(capacity, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return None
        wait = (1.0 - bucket[0]) / rate
        return limits.retry_after_seconds or max(1, math.ceil(wait))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # uvicorn runs with lifespan off; answer politely anyway
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        request = Request(scope, receive)
        method = request.method
        path = scope.get("path", "")
        server = scope.get("server") or ("127.0.0.1", 0)
        origin = f"{server[0]}:{server[1]}"
        token: str | None = None
        token_sha: str | None = None
        auth = request.headers.get("authorization")
        if auth:
            scheme, _, credential = auth.partition(" ")
            credential = credential.strip()
            if credential:
                token_sha = fingerprint(credential)
                if self._logged:
                    self.hub.log.note_token(token_sha, origin)
                if scheme.lower() == "bearer":
                    token = credential
        route, params, path_known = self._match(method, path)
        endpoint = route.endpoint if route else ("method_not_allowed" if path_known else "unmatched")
        fault: str | None = None
        status: int | str = 0
        limits = self._limits() if self._limits else None
        admitted = False
        try:
            if (
                limits is not None
                and limits.max_concurrent is not None
                and self.inflight >= limits.max_concurrent
            ):
                fault = "concurrency"
                status = await self._send(self._concurrency_refusal(limits), scope, receive, send)
                return
            self.inflight += 1
            admitted = True
            decision = self.hub.faults.decide(self.system, endpoint, method) if self._faultable else None
            if decision and decision.latency_s:
                await asyncio.sleep(decision.latency_s)
            if decision and decision.action == "drop":
                fault = "drop"
                status = "dropped"
                await self._drop(send)
                return
            if decision and decision.action and decision.action != "drop_after":
                fault = decision.action
                code = int(decision.action)
                headers = {"Retry-After": str(decision.retry_after)} if code in (429, 503) else None
                response = self.style.error(code, *self._fault_text(code), headers=headers)
            elif route is None:
                response = self.style.error(
                    405 if path_known else 404,
                    "MethodNotAllowed" if path_known else "NotFound",
                    f"No route for {method} {path}",
                )
            else:
                wait = self._take_rate_token(endpoint, limits) if limits is not None else None
                if wait is not None:
                    fault = "rate_limit"
                    response = self.style.error(
                        429,
                        getattr(self.style, "throttle_code", "REQUEST_LIMIT_EXCEEDED"),
                        f"Rate limit exceeded for {endpoint}; retry after {wait} s.",
                        headers={"Retry-After": str(wait)},
                    )
                else:
                    try:
                        response = await route.handler(Ctx(self, request, params, token))
                    except Exception:
                        # A sandbox bug must look like a server error of *this* system, not crash the app.
                        _log.exception("unhandled error in %s %s", self.system, endpoint)
                        fault = "sandbox_error"
                        response = self.style.error(500, "InternalServerError", "Unexpected sandbox error.")
                    if decision and decision.action == "drop_after":
                        # The handler ran (a create is stored); the client never hears about it.
                        fault = "drop_after"
                        status = "dropped"
                        await self._drop(send)
                        return
            status = await self._send(response, scope, receive, send)
        finally:
            if admitted:
                self.inflight -= 1
            if self._logged:
                query = scope.get("query_string", b"").decode("latin-1")
                self.hub.log.record(
                    system=self.system,
                    endpoint=endpoint,
                    method=method,
                    path=path + ("?" + query if query else ""),
                    origin=origin,
                    host_header=request.headers.get("host"),
                    status=status,
                    duration_ms=(time.perf_counter() - started) * 1000,
                    token_sha256=token_sha,
                    fault=fault,
                    user_agent=request.headers.get("user-agent"),
                )

    @staticmethod
    def _fault_text(code: int) -> tuple[str, str]:
        return {
            429: ("TooManyRequests", "Injected throttling."),
            500: ("InternalServerError", "Injected server error."),
            503: ("ServiceUnavailable", "Injected unavailability."),
        }[code]

    def _concurrency_refusal(self, limits: Limits) -> Response:
        message = f"Error in performing the request: exceeded the concurrent limit of {limits.max_concurrent} requests"
        status = limits.concurrent_limit_status
        headers = {"Retry-After": str(limits.retry_after_seconds or 1)} if status != 500 else None
        code = (
            getattr(self.style, "throttle_code", "REQUEST_LIMIT_EXCEEDED")
            if status != 500
            else "REQUEST_LIMIT_EXCEEDED"
        )
        return self.style.error(status, code, message, headers=headers)

    @staticmethod
    async def _send(response: Response, scope: dict[str, Any], receive: Any, send: Any) -> int:
        await response(scope, receive, send)
        return response.status_code

    @staticmethod
    async def _drop(send: Any) -> None:
        """Close the connection without a byte of response, as a crashed front end would."""
        cycle: Any = getattr(send, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if transport is None:
            # Not under uvicorn's protocol: the closest we can get is an aborted response.
            raise ConnectionAbortedError("dropped by fault injection")
        transport.abort()
        # Tell uvicorn the peer is gone so it does not try to write a 500 on the dead socket.
        if hasattr(cycle, "disconnected"):
            cycle.disconnected = True
        await asyncio.sleep(0)
