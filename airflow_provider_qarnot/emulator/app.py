"""The ASGI application: routes (served with and without ``/v1``), auth, fault injection, request stats.

``EmulatorMiddleware`` wraps the Starlette app as pure ASGI so it can delay, fail or drop a request
before (``drop_before``) or after (``drop_after``) the app acted on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import responses as r
from .exceptions import EmulatorError, MethodNotAllowed, NotFound, Unauthorized
from .faults import REASONS, Decision, drop_connection, normalise_path
from .responses import ServiceContext, error_response, json_response

log = logging.getLogger(__name__)

ROUTE_KEY = "qarnot_emulator.route"
MAX_BODY_BYTES = 64 * 1024 * 1024

Endpoint = Callable[[Request], Awaitable[Response]]

ROUTES: list[tuple[str, str, Endpoint]] = [
    ("GET", "/settings", r.get_settings),
    ("GET", "/info", r.get_info),
    ("GET", "/versions", r.get_versions),
    ("GET", "/profiles", r.list_profiles),
    ("GET", "/profiles/{name}", r.get_profile),
    ("GET", "/hardware-constraints", r.hardware_constraints),
    ("GET", "/hardware-constraints/cpu-model-constraints/search", r.cpu_model_search),
    ("GET", "/quotas/computing-quotas/{scope}", r.computing_quotas),
    # tasks
    ("POST", "/tasks", r.create_tasks),
    ("GET", "/tasks", r.list_tasks),
    ("GET", "/tasks/summaries", r.task_summaries),
    ("POST", "/tasks/paginate", r.paginate_tasks),
    ("POST", "/tasks/summaries/paginate", r.paginate_task_summaries),
    ("POST", "/tasks/search", r.search_tasks),
    ("GET", "/tasks/{uuid}", r.get_task),
    ("PUT", "/tasks/{uuid}", r.update_task),
    ("PATCH", "/tasks/{uuid}", r.patch_task),
    ("DELETE", "/tasks/{uuid}", r.delete_task),
    ("POST", "/tasks/{uuid}/abort", r.abort_task),
    ("POST", "/tasks/{uuid}/retry", r.derive_task),
    ("POST", "/tasks/{uuid}/resume", r.derive_task),
    ("POST", "/tasks/{uuid}/recover", r.derive_task),
    ("POST", "/tasks/{uuid}/clone", r.derive_task),
    ("GET", "/tasks/{uuid}/stdout", r.get_stdout),
    ("POST", "/tasks/{uuid}/stdout", r.fresh_stdout),
    ("GET", "/tasks/{uuid}/stderr", r.get_stderr),
    ("POST", "/tasks/{uuid}/stderr", r.fresh_stderr),
    ("GET", "/tasks/{uuid}/stdout/{instance}", r.get_stdout),
    ("POST", "/tasks/{uuid}/stdout/{instance}", r.fresh_stdout),
    ("GET", "/tasks/{uuid}/stderr/{instance}", r.get_stderr),
    ("POST", "/tasks/{uuid}/stderr/{instance}", r.fresh_stderr),
    ("POST", "/tasks/{uuid}/snapshot", r.instant_snapshot),
    ("POST", "/tasks/{uuid}/snapshot/periodic", r.periodic_snapshot),
    ("GET", "/tasks/{uuid}/snapshot/{snapshot}", r.get_snapshot),
    ("GET", "/carbon/v1/tasks/{uuid}/carbon-facts", r.task_carbon_facts),
    ("GET", "/credits/v1/tasks/{uuid}/credits", r.task_credits),
    ("GET", "/carbon/v1/pools/{uuid}/carbon-facts", r.pool_carbon_facts),
    ("GET", "/credits/v1/pools/{uuid}/credits", r.pool_credits),
    ("GET", "/credits/v1/accounts/credits", r.account_credits),
    # jobs
    ("POST", "/jobs", r.create_job),
    ("GET", "/jobs", r.list_jobs),
    ("POST", "/jobs/paginate", r.paginate_jobs),
    ("POST", "/jobs/search", r.search_jobs),
    ("GET", "/jobs/{uuid}", r.get_job),
    ("DELETE", "/jobs/{uuid}", r.delete_job),
    ("GET", "/jobs/{uuid}/tasks", r.job_tasks),
    ("POST", "/jobs/{uuid}/terminate", r.terminate_job),
    # pools
    ("POST", "/pools", r.create_pool),
    ("GET", "/pools", r.list_pools),
    ("GET", "/pools/summaries", r.pool_summaries),
    ("POST", "/pools/paginate", r.paginate_pools),
    ("POST", "/pools/summaries/paginate", r.paginate_pool_summaries),
    ("POST", "/pools/search", r.search_pools),
    ("GET", "/pools/{uuid}", r.get_pool),
    ("PUT", "/pools/{uuid}", r.update_pool),
    ("PATCH", "/pools/{uuid}", r.update_pool),
    ("DELETE", "/pools/{uuid}", r.delete_pool),
    ("POST", "/pools/{uuid}/close", r.close_pool),
    ("GET", "/pools/{uuid}/stdout", r.pool_output),
    ("POST", "/pools/{uuid}/stdout", r.pool_output),
    ("GET", "/pools/{uuid}/stderr", r.pool_output),
    ("POST", "/pools/{uuid}/stderr", r.pool_output),
    ("GET", "/pools/{uuid}/stdout/{instance}", r.pool_output),
    ("POST", "/pools/{uuid}/stdout/{instance}", r.pool_output),
    ("GET", "/pools/{uuid}/stderr/{instance}", r.pool_output),
    ("POST", "/pools/{uuid}/stderr/{instance}", r.pool_output),
    # emulator administration (not part of Qarnot)
    ("GET", "/_emulator/faults", r.admin_get_faults),
    ("PUT", "/_emulator/faults", r.admin_put_faults),
    ("DELETE", "/_emulator/faults", r.admin_delete_faults),
    ("GET", "/_emulator/stats", r.admin_stats),
    ("POST", "/_emulator/reset", r.admin_reset),
]


def _tagged(method: str, path: str, endpoint: Endpoint) -> Endpoint:
    """Wrap an endpoint so the middleware learns which route template served the request."""
    key = f"{method} {path}"

    async def wrapper(request: Request) -> Response:
        request.scope[ROUTE_KEY] = key
        return await endpoint(request)

    wrapper.__doc__ = endpoint.__doc__
    wrapper.__name__ = getattr(endpoint, "__name__", "endpoint")
    return wrapper


def _build_routes() -> list[Route]:
    grouped: dict[str, dict[str, Endpoint]] = {}
    for method, path, endpoint in ROUTES:
        grouped.setdefault(path, {})[method] = endpoint
    routes: list[Route] = []
    for path, by_method in grouped.items():
        for method, endpoint in by_method.items():
            routes.append(Route(path, _tagged(method, path, endpoint), methods=[method]))
    return routes


async def _emulator_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EmulatorError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(MethodNotAllowed())
    if exc.status_code == 404:
        return error_response(NotFound("Not found."))
    return json_response({"message": exc.detail}, exc.status_code)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error in the emulator", exc_info=exc)
    return json_response({"message": f"Internal emulator error: {type(exc).__name__}"}, 500)


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode("utf-8")


class EmulatorMiddleware:
    """Normalise paths (``/v1``, trailing ``/``), inject faults, check the token, count requests."""

    def __init__(self, app: ASGIApp, ctx: ServiceContext, routes: list[Route]) -> None:
        self.app = app
        self.ctx = ctx
        self.routes = routes

    def _template(self, scope: Scope) -> str:
        """``METHOD /route-template`` of a request the app did not serve (faulted or refused)."""
        partial: str | None = None
        for route in self.routes:
            match, _child = route.matches(scope)
            if match == Match.FULL:
                return f"{scope['method']} {route.path}"
            if match == Match.PARTIAL and partial is None:
                partial = f"{scope['method']} {route.path}"
        return partial or f"{scope['method']} <unmatched>"

    async def _send_json(
        self, send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
    ) -> None:
        payload = _json_bytes(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = normalise_path(scope["path"])
        scope = dict(scope)
        scope["path"] = path  # routing reads "path"; "raw_path" keeps what the client sent
        method: str = scope["method"]
        decision: Decision | None = None
        if not path.startswith("/_emulator"):
            decision = self.ctx.faults.decide(method, path)
        if decision is not None:
            if decision.latency > 0:
                receive = await _received_in_full(receive)
                await asyncio.sleep(decision.latency)
            if decision.outcome == "drop_before":
                self.ctx.stats.record(self._template(scope))
                if await drop_connection(send):
                    return
                decision.outcome = "rate_503"  # no transport to drop: degrade to a 503
            status = decision.status
            if status is not None:
                self.ctx.stats.record(self._template(scope))
                headers: list[tuple[bytes, bytes]] = []
                if status == 429:
                    headers.append((b"retry-after", f"{decision.retry_after:g}".encode()))
                await self._send_json(send, status, {"message": REASONS[status]}, headers)
                return
        token = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                token = value.decode("latin-1")
                break
        if token != self.ctx.token:
            self.ctx.stats.record(self._template(scope))
            await self._send_json(send, 401, Unauthorized().body(), [])
            return
        if decision is not None and decision.outcome == "drop_after":

            async def swallow(message: Message) -> None:
                return None

            await self.app(scope, receive, swallow)
            self.ctx.stats.record(scope.get(ROUTE_KEY) or self._template(scope))
            await drop_connection(send)
            return
        await self.app(scope, receive, send)
        self.ctx.stats.record(scope.get(ROUTE_KEY) or self._template(scope))


async def _received_in_full(receive: Receive) -> Receive:
    """Read the request body now and replay it to the app: a slow server has the whole request before it
    acts, and acts on it even when its client has given up and gone meanwhile."""
    buffered: list[Message] = []
    size = 0
    while size <= MAX_BODY_BYTES:
        message = await receive()
        buffered.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
        size += len(message.get("body", b""))
    pending = iter(buffered)

    async def replay() -> Message:
        message = next(pending, None)
        return message if message is not None else await receive()

    return replay


def build_app(ctx: ServiceContext) -> ASGIApp:
    """The full ASGI application for one emulator."""
    routes = _build_routes()
    app = Starlette(
        routes=routes,
        exception_handlers={
            EmulatorError: _emulator_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
        max_body_size=MAX_BODY_BYTES,
    )
    app.router.redirect_slashes = False
    app.state.ctx = ctx
    return EmulatorMiddleware(app, ctx, routes)
