"""The request handlers. Each authenticates, reads what it needs within its limits, and hands
the Redis work to the modules that own it (publish, inbox, locate); every refusal is a
`Problem` (counted by the app's handler)."""

from __future__ import annotations

import anyio
import orjson
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from queues.limits import Backpressure
from queues.streams import NotReplicatedError
from queues.tokens import TokenRecord
from workers.gateway import cloudevents
from workers.gateway.auth import require_dept
from workers.gateway.body import read_body
from workers.gateway.cloudevents import media_type
from workers.gateway.idempotency import Stored
from workers.gateway.inbox import acknowledge_sync, check_consumer, message_json, parse_ack_body
from workers.gateway.locate import parse_point
from workers.gateway.openapi import document
from workers.gateway.problem import PROBLEM_JSON, Problem
from workers.gateway.publish import Outcome, claimed_departments
from workers.gateway.state import Gateway

JSON = "application/json"
CAP_TYPES = ("application/cap+xml", "application/xml", "text/xml")
INLINE_MAX_EVENTS = 5  # emergency requests of at most this many events: on the event loop


def _state(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


def json_response(
    doc: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(doc), status, headers=headers, media_type=JSON)


async def _caller(request: Request) -> TokenRecord:
    return await _state(request).auth.authenticate(request.headers.get("authorization"))


async def _publisher(request: Request) -> TokenRecord:
    """The caller, if its department is one of this city's (ingest reads only theirs)."""
    record = await _caller(request)
    state = _state(request)
    if record.dept not in state.config.department_ids:
        raise Problem(403, "forbidden", f"department {record.dept!r} is not in this city")
    state.homes.keys_for(record.dept)  # 421 before anything is written, when out of reach
    return record


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise Problem(400, "bad_query", f"{name} must be an integer from {low} to {high}")
    return int(raw)


# --- health ---------------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = _state(request)
    try:
        with anyio.fail_after(2):
            await state.aredis.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        raise Problem(503, "not_ready", f"Redis unreachable: {type(exc).__name__}") from None
    return json_response(
        {"status": "ready", "city": state.config.city, "prefix": state.keys.prefix}
    )


async def openapi(request: Request) -> Response:
    return json_response(document())


# --- publishing -----------------------------------------------------------------------------


async def post_events(request: Request) -> Response:
    state = _state(request)
    record = await _publisher(request)
    settings = state.settings
    min_replicas = _int_param(request, "min_replicas", 0, 0, settings.max_min_replicas)
    body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
    idem_header = request.headers.get("idempotency-key")
    if idem_header is None:
        return await _publish_events(state, request, record.dept, body, min_replicas)
    store = state.idempotency
    key = store.key(record.dept, idem_header)
    ce = sorted((k, v) for k, v in request.headers.items() if k.startswith("ce-"))
    fingerprint = store.fingerprint(
        request.headers.get("content-type", ""), orjson.dumps(ce), str(min_replicas), body
    )
    stored = await store.claim(key, fingerprint)
    if stored is not None:
        return Response(
            stored.body,
            stored.status,
            headers={"Idempotency-Replayed": "true"},
            media_type=stored.media_type,
        )
    try:
        response = await _publish_events(state, request, record.dept, body, min_replicas)
    except Problem as exc:
        await store.finish(
            key, fingerprint, Stored(exc.status, orjson.dumps(exc.body()), PROBLEM_JSON)
        )
        raise
    except BaseException:
        await store.release(key)
        raise
    await store.finish(key, fingerprint, Stored(response.status_code, bytes(response.body), JSON))
    return response


async def _publish_events(
    state: Gateway, request: Request, dept: str, body: bytes, min_replicas: int
) -> Response:
    mode, candidates = cloudevents.parse(request.headers, body, state.settings.batch_max_events)
    claimed_departments(candidates, dept)
    publisher = state.publisher
    emergency = publisher.carries_emergency(candidates)
    try:
        if emergency and len(candidates) <= INLINE_MAX_EVENTS and not min_replicas:
            # a few events with an emergency: validated and XADDed right here (one async
            # pipeline, well under a millisecond of the loop), never waiting for a thread or
            # for the GIL behind routine batches. Routine requests take the thread pool, which
            # measured faster for them (bench/gateway.py).
            outcome: Outcome = await publisher.events_async(state.aredis, dept, candidates)
        else:
            limiter = state.emergency_limiter if emergency else state.publish_limiter
            outcome = await anyio.to_thread.run_sync(
                publisher.events, dept, candidates, min_replicas, limiter=limiter
            )
    except NotReplicatedError as exc:
        raise Problem(
            503,
            "not_replicated",
            f"{exc}; send the same request again (duplicates are dropped by event id)",
            {"Retry-After": "1"},
            ids=exc.event_ids,
        ) from None
    counters = state.counters
    counters.accepted(dept, len(outcome.accepted))
    for refusal in outcome.refused:
        counters.refused(refusal.reason)
    refused = [r.to_json() for r in outcome.refused]
    if outcome.pressure is not None:
        pressure = outcome.pressure
        raise Problem(
            429,
            "backpressure",
            f"{pressure}; emergencies were accepted, send the others again later",
            {"Retry-After": str(max(1, round(pressure.retry_after_s)))},
            accepted=outcome.accepted,
            retry=pressure.refused,
            refused=refused,
        )
    if not outcome.accepted and refused:
        reason = outcome.refused[0].reason if len(refused) == 1 else "invalid_events"
        detail = outcome.refused[0].detail if len(refused) == 1 else "every event was refused"
        raise Problem(422, reason, detail, accepted=[], refused=refused)
    doc = {"mode": mode, "accepted": outcome.accepted, "refused": refused}
    return json_response(doc, 202)


async def post_cap(request: Request) -> Response:
    state = _state(request)
    record = await _publisher(request)
    media = media_type(request.headers.get("content-type"))
    if media not in CAP_TYPES:
        raise Problem(
            415, "unsupported_media_type", f"send CAP XML as one of {', '.join(CAP_TYPES)}"
        )
    min_replicas = _int_param(request, "min_replicas", 0, 0, state.settings.max_min_replicas)
    body = await read_body(request, state.settings.max_cap_bytes, state.settings.body_timeout_s)
    try:
        ids, entry, _ = await anyio.to_thread.run_sync(
            state.publisher.cap, record.dept, body, min_replicas, limiter=state.emergency_limiter
        )
    except Backpressure as exc:
        raise Problem(429, "backpressure", str(exc), {"Retry-After": "1"}) from None
    except NotReplicatedError as exc:
        raise Problem(503, "not_replicated", str(exc), {"Retry-After": "1"}) from None
    state.counters.accepted(record.dept, len(ids))
    return json_response({"accepted": ids, "entry": entry}, 202)


# --- inbox ----------------------------------------------------------------------------------


async def _inbox_caller(request: Request) -> tuple[Gateway, str, str, TokenRecord]:
    state = _state(request)
    record = await _caller(request)
    dept = request.path_params["dept"]
    require_dept(record, dept, f"inbox {dept!r}")
    if dept not in state.config.department_ids:
        raise Problem(404, "not_found", f"no department {dept!r} in this city")
    state.homes.keys_for(dept, "reads its inbox")  # 421 when out of reach
    return state, dept, check_consumer(request.query_params.get("consumer")), record


async def get_inbox(request: Request) -> Response:
    state, dept, consumer, _ = await _inbox_caller(request)
    settings = state.settings
    count = _int_param(request, "count", 100, 1, settings.inbox_page_max)
    wait_ms = _int_param(request, "wait_ms", 0, 0, settings.inbox_block_max_ms)
    messages = await state.reader.page(dept, consumer, count, wait_ms)
    return json_response(
        {"dept": dept, "consumer": consumer, "messages": [message_json(m) for m in messages]}
    )


async def post_ack(request: Request) -> Response:
    state, dept, _, record = await _inbox_caller(request)
    body = await read_body(request, 1024 * 1024, state.settings.body_timeout_s)
    ids, event_ids = parse_ack_body(body)
    acked, results = await anyio.to_thread.run_sync(
        acknowledge_sync,
        state.redis,
        state.homes.keys_for(dept),  # acks and emergency tracking: the inbox's group
        dept,
        ids,
        event_ids,
        f"gateway:{record.name or record.id}",
        limiter=state.emergency_limiter,
    )
    emergencies = [
        {"event_id": r.event_id, "outcome": r.outcome, "at_ms": r.at_ms} for r in results
    ]
    return json_response({"acked": acked, "emergencies": emergencies})


async def get_stream(request: Request) -> Response:
    state, dept, consumer, _ = await _inbox_caller(request)
    last_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if last_id:
        from workers.gateway.inbox import check_entry_id

        check_entry_id(last_id, "Last-Event-ID")
    if state.streams_open >= state.settings.max_streams:
        raise Problem(503, "too_many_streams", "stream limit reached", {"Retry-After": "5"})
    await state.reader.ensure_group(dept)

    async def events():  # type: ignore[no-untyped-def]
        state.streams_open += 1  # counted once it runs: a stream never started holds nothing
        try:
            async for chunk in state.reader.stream(
                dept, consumer, last_id, state.settings.stream_keepalive_s
            ):
                yield chunk
        finally:
            state.streams_open -= 1

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


# --- locate ---------------------------------------------------------------------------------


async def get_locate(request: Request) -> Response:
    state = _state(request)
    await _caller(request)
    lat, lon, at = parse_point(request.query_params)
    doc = await anyio.to_thread.run_sync(state.locator.locate, lat, lon, at)
    return json_response(doc)
