"""The gateway's ASGI app: shared state, lifespan, routes and the refusal handlers.

`create_app` builds it from a `Runtime` (Redis URL, prefix, city config) and
`GatewaySettings`; with no arguments (uvicorn's ``--factory``, one call per worker process)
both come from the environment. The handlers are in workers/gateway/endpoints.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from workers import logs
from workers.gateway import endpoints
from workers.gateway.problem import Problem, problem_response, reason_for_status
from workers.gateway.settings import GatewaySettings
from workers.gateway.state import Gateway, build_state
from workers.runtime import Runtime

log = logging.getLogger("cityrelay.gateway")
FLUSH_INTERVAL_S = 1.0
SWITCH_INTERVAL_S = 0.001


async def _flush_forever(state: Gateway) -> None:
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_S)
        try:
            await state.counters.flush(state.aredis)
        except Exception as exc:  # noqa: BLE001 - Redis away: kept for the next flush
            log.warning("gateway: counters not flushed: %s", exc)


async def _warm_locator(state: Gateway) -> None:
    try:
        await anyio.to_thread.run_sync(state.locator.warm)
    except Exception as exc:  # noqa: BLE001 - the first request will try again and say why
        log.warning("gateway: jurisdictions not indexed yet: %s", exc)


async def _problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    _count(request, exc.reason)
    return exc.response()


async def _http_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    reason = reason_for_status(exc.status_code)
    _count(request, reason)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    problem = Problem(exc.status_code, reason, detail, dict(exc.headers or {}))
    return problem.response()


async def _error_handler(request: Request, exc: Exception) -> Response:
    """Anything unforeseen: 503 if Redis is the cause, else 500; never the traceback."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        _count(request, "redis_unavailable")
        body = Problem(503, "redis_unavailable", "Redis is unreachable; retry", {}).body()
        return problem_response(503, body, {"Retry-After": "1"})
    log.exception("gateway: %s %s failed", request.method, request.url.path)
    _count(request, "internal_error")
    return problem_response(500, Problem(500, "internal_error", type(exc).__name__).body())


def _count(request: Request, reason: str) -> None:
    state = getattr(request.app.state, "gateway", None)
    if state is not None:
        state.counters.refused(reason)


def create_app(
    runtime: Runtime | None = None, settings: GatewaySettings | None = None
) -> Starlette:
    # Validating a routine batch holds the GIL for milliseconds; hand it over every 1 ms
    # (Python's default is 5) so an emergency request's thread and the event loop wait less.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if not any(h.get_name() == "cityrelay" for h in logging.getLogger().handlers):
        logs.configure(role="gateway")  # a uvicorn worker process (spawned): env settings
    runtime = runtime or Runtime.from_env()
    settings = settings or GatewaySettings.from_env()
    state = build_state(runtime, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.background.append(asyncio.create_task(_flush_forever(state)))
        # index the jurisdictions now, aside, not in the first /v1/locate request
        state.background.append(asyncio.create_task(_warm_locator(state)))
        try:
            yield
        finally:
            for task in state.background:
                task.cancel()
            with contextlib.suppress(Exception):
                await state.counters.flush(state.aredis)
            await state.aredis.aclose()
            state.redis.close()

    routes = [
        Route("/healthz", endpoints.healthz, methods=["GET"]),
        Route("/readyz", endpoints.readyz, methods=["GET"]),
        Route("/openapi.json", endpoints.openapi, methods=["GET"]),
        Route("/v1/events", endpoints.post_events, methods=["POST"]),
        Route("/v1/cap", endpoints.post_cap, methods=["POST"]),
        Route("/v1/inbox/{dept}", endpoints.get_inbox, methods=["GET"]),
        Route("/v1/inbox/{dept}/ack", endpoints.post_ack, methods=["POST"]),
        Route("/v1/inbox/{dept}/stream", endpoints.get_stream, methods=["GET"]),
        Route("/v1/locate", endpoints.get_locate, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            Problem: _problem_handler,
            HTTPException: _http_handler,
            Exception: _error_handler,
        },
    )
    app.state.gateway = state
    return app
