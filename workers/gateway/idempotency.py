"""Stored answers for requests sent with an ``Idempotency-Key`` header.

The first request with a key claims it (``SET NX GET``, a short-lived ``pending`` marker), is
handled, and its final answer (202, or 422 when every event was refused) is stored under the
key with an expiry (`GatewaySettings.idempotency_ttl_s`, default 24 h), with a fingerprint of
the request. A retry with the same key and the same request gets the stored answer (header
``Idempotency-Replayed: true``) and publishes nothing; the same key with another request
-> 422; while the first is still being handled -> 409 with ``Retry-After``. An answer that
invites a retry (429, 503) is not stored: the marker is dropped so the retry is handled anew.
Without a key, a retry with the same event ids gets the same answer anyway and ingest drops
the duplicates by event id, so either way each event is delivered once.

Keys are per department (`Keys.idempotency`), by the key's SHA-256, so one department's keys
never collide with another's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from queues.keys import Keys
from workers.gateway.problem import Problem

PENDING = b"pending"
PENDING_TTL_S = 60  # a gateway killed mid-request frees the key after this
MAX_KEY_CHARS = 255
STORED_STATUSES = frozenset({202, 422})


@dataclass(frozen=True)
class Stored:
    status: int
    body: bytes
    media_type: str


class IdempotencyStore:
    def __init__(self, redis: Any, keys: Keys, ttl_s: int):
        self.redis = redis  # redis.asyncio client
        self.keys = keys
        self.ttl_s = ttl_s

    @staticmethod
    def fingerprint(*parts: bytes | str) -> str:
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part.encode() if isinstance(part, str) else part)
            digest.update(b"\x00")
        return digest.hexdigest()

    def key(self, dept: str, idempotency_key: str) -> str:
        if not idempotency_key or len(idempotency_key) > MAX_KEY_CHARS:
            raise Problem(
                400, "bad_idempotency_key", f"Idempotency-Key must be 1-{MAX_KEY_CHARS} chars"
            )
        return self.keys.idempotency(dept, hashlib.sha256(idempotency_key.encode()).hexdigest())

    async def claim(self, key: str, fingerprint: str) -> Stored | None:
        """None: this request owns the key now (handle it, then `store` or `release`); else
        the stored answer of the first request."""
        previous = await self.redis.set(key, PENDING, nx=True, get=True, ex=PENDING_TTL_S)
        if previous is None:
            return None
        if previous == PENDING:
            raise Problem(
                409,
                "idempotency_in_progress",
                "a request with this Idempotency-Key is being handled; retry shortly",
                {"Retry-After": "1"},
            )
        doc = orjson.loads(previous)
        if doc["fp"] != fingerprint:
            raise Problem(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            )
        return Stored(int(doc["status"]), doc["body"].encode(), doc["media_type"])

    async def finish(self, key: str, fingerprint: str, stored: Stored) -> None:
        if stored.status in STORED_STATUSES:
            doc = {
                "fp": fingerprint,
                "status": stored.status,
                "body": stored.body.decode(),
                "media_type": stored.media_type,
            }
            await self.redis.set(key, orjson.dumps(doc), ex=self.ttl_s)
        else:
            await self.release(key)

    async def release(self, key: str) -> None:
        await self.redis.delete(key)
