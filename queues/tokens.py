"""API tokens of the HTTP gateway: one department each, stored only as a hash.

`TokenStore.create` draws a token (``crt_`` + 32 random bytes, URL-safe base64, from
`secrets`), keeps its SHA-256 and a record (department, name, created, expiry) in one Redis hash
(`Keys.tokens`) and returns the token once: nobody can read it back, not even an operator with
the Redis password. The gateway hashes the bearer token of each request and looks the record up
(`record_for`); revoked and expired tokens stay listed, with their state, for `token list`.

A SHA-256 without salt is the right hash here (unlike for passwords): the token has 256 bits of
entropy, so there is nothing to brute-force, and one lookup by hash needs no scan.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson
from redis import Redis

from queues.keys import Keys

TOKEN_PREFIX = "crt_"
TOKEN_PATTERN = re.compile(r"^crt_[A-Za-z0-9_-]{43}$")
DEPT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_token(value: str) -> bool:
    """Shape check before any lookup (an unknown shape is refused without a round trip)."""
    return bool(TOKEN_PATTERN.match(value))


@dataclass(frozen=True)
class TokenRecord:
    """What the store keeps about a token. `id` (the hash's first 12 hex digits) names it in
    `token list|revoke` and in logs; the token itself is never kept."""

    id: str
    dept: str
    name: str
    created: float  # epoch seconds
    expires: float | None = None
    revoked: float | None = None

    def state(self, now: float | None = None) -> str:
        """``active``, ``revoked`` or ``expired``."""
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and (now if now is not None else time.time()) >= self.expires:
            return "expired"
        return "active"

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> TokenRecord:
        doc: dict[str, Any] = orjson.loads(raw)
        return cls(
            id=str(doc["id"]),
            dept=str(doc["dept"]),
            name=str(doc.get("name", "")),
            created=float(doc["created"]),
            expires=None if doc.get("expires") is None else float(doc["expires"]),
            revoked=None if doc.get("revoked") is None else float(doc["revoked"]),
        )


class TokenError(ValueError):
    """A token command that cannot be done (unknown id, bad department name...)."""


class TokenStore:
    """The Redis side of the gateway's API tokens (one hash per key prefix)."""

    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys

    def create(
        self, dept: str, name: str = "", expires: float | None = None
    ) -> tuple[str, TokenRecord]:
        """A new token for `dept`; returns (the token, shown once, and its record)."""
        if not DEPT_PATTERN.match(dept):
            raise TokenError(f"department {dept!r}: use letters, digits, '.', '_' or '-'")
        now = time.time()
        if expires is not None and expires <= now:
            raise TokenError("the expiry is in the past")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = hash_token(token)
        record = TokenRecord(digest[:12], dept, name[:200], now, expires)
        if not self.redis.hsetnx(self.keys.tokens, digest, record.to_json()):  # pragma: no cover
            raise TokenError("token collision (2^-256): run the command again")
        return token, record

    def record_for(self, token: str) -> TokenRecord | None:
        """The record of a presented token (any state), or None if it is unknown."""
        if not looks_like_token(token):
            return None
        raw = self.redis.hget(self.keys.tokens, hash_token(token))
        return TokenRecord.from_json(raw) if raw is not None else None

    def list(self, dept: str | None = None) -> list[TokenRecord]:
        records = [TokenRecord.from_json(v) for v in self.redis.hvals(self.keys.tokens)]
        if dept is not None:
            records = [r for r in records if r.dept == dept]
        return sorted(records, key=lambda r: (r.dept, r.created))

    def revoke(self, token_id: str) -> TokenRecord:
        """Revoke the token whose id (or a unique id prefix of at least 6 digits) is given.

        Kept, marked revoked, so `list` shows it and a replay is refused as revoked."""
        if len(token_id) < 6:
            raise TokenError("give at least 6 digits of the token id (see `token list`)")
        found = [
            (digest, TokenRecord.from_json(raw))
            for digest, raw in self.redis.hgetall(self.keys.tokens).items()
            if digest.decode().startswith(token_id)
        ]
        if not found:
            raise TokenError(f"no token with id {token_id!r}")
        if len(found) > 1:
            raise TokenError(f"id {token_id!r} names {len(found)} tokens: give more digits")
        digest, record = found[0]
        if record.revoked is None:
            record = replace(record, revoked=time.time())
            self.redis.hset(self.keys.tokens, digest, record.to_json())
        return record
