"""Bearer tokens -> the caller's department (queues/tokens.py holds them, as hashes).

``Authorization: Bearer crt_...``. Missing, malformed, unknown, revoked or expired -> 401 with
``WWW-Authenticate: Bearer`` (RFC 6750); a valid token of another department -> 403 (see
`require_dept`). A looked-up record is kept for `cache_s` seconds (default 1 s), so a revoked
token is refused within that time on every gateway process, and a burst of requests costs one
HGET per token per second. Expiry is checked on every request against the local clock. The
token itself is never logged or echoed; refusals name the token only by its id.
"""

from __future__ import annotations

import time
from typing import Any

from queues.keys import Keys
from queues.tokens import TokenRecord, hash_token, looks_like_token
from workers.gateway.problem import Problem

CACHE_MAX = 10_000  # distinct token hashes kept (unknown ones included, so junk is cheap)
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="cityrelay"'}


class Authenticator:
    def __init__(self, redis: Any, keys: Keys, cache_s: float = 1.0):
        self.redis = redis  # redis.asyncio client
        self.keys = keys
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, TokenRecord | None]] = {}

    async def authenticate(self, authorization: str | None) -> TokenRecord:
        if not authorization:
            raise Problem(401, "unauthorized", "send Authorization: Bearer <token>", CHALLENGE)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Problem(401, "unauthorized", "use the Bearer scheme with an API token", CHALLENGE)
        if not looks_like_token(token):
            raise Problem(401, "unauthorized", "not a cityrelay API token", CHALLENGE)
        record = await self._lookup(hash_token(token))
        if record is None:
            raise Problem(401, "unauthorized", "unknown token", CHALLENGE)
        state = record.state()
        if state != "active":
            raise Problem(401, "unauthorized", f"token {record.id} is {state}", CHALLENGE)
        return record

    async def _lookup(self, digest: str) -> TokenRecord | None:
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self.cache_s:
            return cached[1]
        raw = await self.redis.hget(self.keys.tokens, digest)
        record = TokenRecord.from_json(raw) if raw is not None else None
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (now, record)
        return record


def require_dept(record: TokenRecord, dept: str, what: str) -> None:
    """403 unless the token's department is `dept`."""
    if record.dept != dept:
        raise Problem(
            403,
            "forbidden",
            f"token {record.id} belongs to department {record.dept!r}; {what} is {dept!r}'s",
        )
