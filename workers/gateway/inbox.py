"""A department's inbox over HTTP: a page, the acknowledgement, and a Server-Sent Events stream.

The inbox is the same stream and consumer group (named after the department) that `Inbox`
reads; an HTTP reader is a consumer of that group (``?consumer=``, default ``http``), so what
it was given and did not acknowledge stays pending for it:

- ``GET /v1/inbox/{dept}?count=&wait_ms=``: first the consumer's pending (unacknowledged)
  messages, then new ones, waiting up to ``wait_ms`` if there are none. Each message has the
  body and ``via`` of `Inbox.read` (`queues.inbox.parse_message`) and its entry ``id``.
- ``POST /v1/inbox/{dept}/ack`` ``{"ids": [entry ids]}`` and/or ``{"event_ids": [...]}``:
  XACK plus the emergency acknowledgement of `Inbox.ack` (queues/acks.py: an acknowledged
  emergency stops its escalation); ``event_ids`` acknowledges emergencies like
  ``cityrelay ack``.
- ``GET /v1/inbox/{dept}/stream``: ``text/event-stream``, one ``message`` event per inbox
  entry (``id:`` the entry id). On connect it sends the consumer's pending messages after the
  ``Last-Event-ID`` the client gives (all of them without one), then new messages as they
  arrive. A message sent but not acknowledged stays pending, so a reconnect loses nothing and
  repeats only unacknowledged messages; a comment line every `keepalive_s` keeps proxies open.

Reads use redis.asyncio (a blocking XREADGROUP never holds the event loop); acknowledgements
run the synchronous acks code in a thread.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from redis import Redis
from redis.exceptions import ResponseError

from queues.acks import AckResult, acknowledge, record_inbox_acks
from queues.inbox import Message, parse_message
from queues.keys import Keys
from workers.gateway.homes import Homes
from workers.gateway.problem import Problem

ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
CONSUMER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
STREAM_BLOCK_MS = 5000  # one blocking read; disconnects are noticed between reads
MAX_ACK_IDS = 10_000


def message_json(message: Message) -> dict[str, Any]:
    return {
        "id": message.entry_id,
        "event_id": message.event_id,
        "event": message.event,
        "via": message.via,
        "ingested_ms": message.ingested_ms,
    }


def check_entry_id(value: str, what: str) -> str:
    if not ENTRY_ID.match(value):
        raise Problem(400, "bad_entry_id", f"{what}: {value[:40]!r} is not a stream entry id")
    return value


def check_consumer(value: str | None) -> str:
    consumer = value or "http"
    if not CONSUMER.match(consumer):
        raise Problem(400, "bad_consumer", "consumer: 1-64 letters, digits, '.', '_' or '-'")
    return consumer


class InboxReader:
    """Async reads of department inboxes through their consumer groups."""

    def __init__(self, redis: Any, keys: Keys, homes: Homes | None = None):
        self.redis = redis  # redis.asyncio client, bytes replies
        self.keys = keys
        self.homes = homes or Homes(keys)  # a slot group's department: its group's inbox
        self._groups: set[str] = set()

    def inbox(self, dept: str) -> str:
        return self.homes.keys_for(dept, "reads its inbox").inbox(dept)

    async def ensure_group(self, dept: str) -> None:
        if dept in self._groups:
            return
        try:
            await self.redis.xgroup_create(self.inbox(dept), dept, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(dept)

    async def _read(
        self, dept: str, consumer: str, start: str, count: int, block_ms: int | None
    ) -> list[tuple[str, dict[bytes, bytes] | None]]:
        reply = await self.redis.xreadgroup(
            dept, consumer, {self.inbox(dept): start}, count=count, block=block_ms or None
        )
        return [
            (eid.decode() if isinstance(eid, bytes) else eid, fields)
            for _, items in reply or []
            for eid, fields in items
        ]

    async def page(self, dept: str, consumer: str, count: int, wait_ms: int) -> list[Message]:
        """The consumer's pending messages, then new ones (waiting only if there are none)."""
        await self.ensure_group(dept)
        items = await self._read(dept, consumer, "0", count, None)
        messages = [parse_message(eid, f) for eid, f in items if f]
        if len(messages) < count:
            fresh = await self._read(dept, consumer, ">", count - len(messages), None)
            # nothing at all: wait for new messages, in blocking reads of at most
            # STREAM_BLOCK_MS (each within the client's socket timeout)
            deadline = time.monotonic() + wait_ms / 1000
            while not messages and not fresh and wait_ms:
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    break
                fresh = await self._read(dept, consumer, ">", count, min(left_ms, STREAM_BLOCK_MS))
            messages += [parse_message(eid, f) for eid, f in fresh if f]
        return messages

    async def stream(
        self, dept: str, consumer: str, last_id: str | None, keepalive_s: float
    ) -> AsyncIterator[bytes]:
        await self.ensure_group(dept)
        yield b"retry: 2000\n\n"
        cursor = last_id or "0"
        while True:  # pending after the client's Last-Event-ID: sent, never acknowledged
            items = await self._read(dept, consumer, cursor, 100, None)
            if not items:
                break
            for eid, fields in items:
                cursor = eid
                if fields:
                    yield sse(parse_message(eid, fields))
        quiet_since = time.monotonic()
        while True:
            block = int(min(keepalive_s * 1000, STREAM_BLOCK_MS))
            items = await self._read(dept, consumer, ">", 100, max(block, 1))
            for eid, fields in items:
                if fields:
                    yield sse(parse_message(eid, fields))
            if items:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= keepalive_s:
                yield b": keepalive\n\n"
                quiet_since = time.monotonic()


def sse(message: Message) -> bytes:
    return b"id: %s\nevent: message\ndata: %s\n\n" % (
        message.entry_id.encode(),
        orjson.dumps(message_json(message)),
    )


def parse_ack_body(body: bytes) -> tuple[list[str], list[str]]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "malformed_json", f"ack body: {exc}") from None
    if not isinstance(doc, dict):
        raise Problem(400, "malformed_json", 'ack body: {"ids": [...]} or {"event_ids": [...]}')
    ids, event_ids = doc.get("ids", []), doc.get("event_ids", [])
    for name, values in (("ids", ids), ("event_ids", event_ids)):
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise Problem(400, "bad_ack", f"{name} must be a list of strings")
    if len(ids) + len(event_ids) > MAX_ACK_IDS:
        raise Problem(413, "too_large", f"at most {MAX_ACK_IDS} ids per acknowledgement")
    for value in ids:
        check_entry_id(value, "ids")
    for value in event_ids:
        if not 0 < len(value) <= 128:
            raise Problem(400, "bad_ack", "event_ids: 1-128 characters each")
    return ids, event_ids


def acknowledge_sync(
    redis: Redis, keys: Keys, dept: str, ids: list[str], event_ids: list[str], by: str
) -> tuple[int, list[AckResult]]:
    """What `Inbox.ack` does (XACK, then the emergency hook), plus `cityrelay ack` for
    emergencies named by event id. Runs in a worker thread."""
    stream = keys.inbox(dept)
    acked = 0
    results: list[AckResult] = []
    if ids:
        try:
            acked = int(redis.xack(stream, dept, *ids))
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
        results += record_inbox_acks(redis, keys, dept, stream, ids, by)
    if event_ids:
        results += acknowledge(redis, keys, list(dict.fromkeys(event_ids)), dept, by)
    return acked, results
