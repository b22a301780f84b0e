"""The HTTP gateway (`cityrelay gateway`): the way in and out for systems that cannot talk Redis.

An ASGI app on Starlette, served by uvicorn. One idea per module:

- `settings`: limits and options (flags / environment);
- `problem`: RFC 9457 problem+json refusals, each with a machine-readable ``reason``;
- `body`: the request body read against a size limit while it streams (413 before it is whole);
- `cloudevents`: the CloudEvents 1.0 HTTP binding (structured, binary, batch) -> event dicts;
- `auth`: bearer tokens (queues/tokens.py) -> the caller's department, 401 / 403;
- `counters`: refusals and accepted events, added to the stats hash about once a second;
- `idempotency`: stored answers for requests sent with an ``Idempotency-Key``;
- `publish`: ``POST /v1/events`` and ``POST /v1/cap``: the same `EventCatalog.accept` as
  ingest, refused events dead-lettered, the rest through the department's `Producer`;
- `inbox`: ``GET /v1/inbox/{dept}``, its ``/ack`` and its Server-Sent Events ``/stream``;
- `locate`: ``GET /v1/locate``, as ``cityrelay locate``;
- `openapi`: the document served at ``/openapi.json``;
- `app`: the routes, the shared state and its lifespan.

Publishing and acknowledging run the same synchronous code as the Redis path (Producer,
queues/acks.py) in bounded thread pools (an emergency has its own, so a flood of routine
batches never makes it wait for a thread); blocking inbox reads use redis.asyncio, so a
long-poll or a stream never holds the event loop. Nothing logs per request, and tokens are
never logged.
"""
