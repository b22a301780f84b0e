"""The consent registry in Redis: one hash per citizen pseudonym, purpose -> record JSON.

Giving and withdrawing are one call each (the record is written to the citizen's hash and to
a flat index keyed ``{citizen}/{purpose}``, and the receipt to the consent log, in one
transaction). The route job reads the consent of every (citizen, purpose) pair in a batch
with one HMGET on the index (`lookup`), and never caches it, so a withdrawal takes effect
for the very next event routed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any, cast

from redis import Redis

from city.privacy import ControllerConfig
from city.privacy.consent import ConsentRecord, State, change
from city.privacy.consent import receipt as make_receipt
from queues.keys import Keys

LOG_MAXLEN = 1_000_000


class ConsentRegistry:
    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys

    def get(self, subject: str) -> dict[str, ConsentRecord]:
        raw = self.redis.hgetall(self.keys.consent(subject))
        return {_text(p): ConsentRecord.from_json(v) for p, v in raw.items()}

    def set(
        self,
        subject: str,
        purpose: str,
        state: State,
        days: int = 365,
        now: float | None = None,
        receipt: Any = None,
    ) -> ConsentRecord:
        """Give or withdraw consent; returns the record. Every change logs a receipt:
        `receipt(record) -> dict` builds it (default: the generic controller's)."""
        now = time.time() if now is None else now
        previous = self.get(subject).get(purpose)
        record = change(previous, subject, purpose, state, now, days)
        body = (
            receipt(record) if receipt else make_receipt(record, ControllerConfig(), "", [], False)
        )
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.consent(subject), purpose, record.to_json())
        pipe.hset(self.keys.consent_index, f"{subject}/{purpose}", record.to_json())
        pipe.xadd(
            self.keys.consent_log,
            {"subject": subject, "purpose": purpose, "state": state, "receipt": json.dumps(body)},
            maxlen=LOG_MAXLEN,
            approximate=True,
        )
        pipe.execute()
        return record

    def lookup(self, pairs: Iterable[tuple[str, str]]) -> dict[str, dict[str, ConsentRecord]]:
        """The consent records of (citizen, purpose) pairs: one HMGET, one round trip."""
        unique = list(dict.fromkeys(pairs))
        if not unique:
            return {}
        replies = self.redis.hmget(self.keys.consent_index, [f"{s}/{p}" for s, p in unique])
        out: dict[str, dict[str, ConsentRecord]] = {}
        for (subject, purpose), raw in zip(unique, replies, strict=True):
            if raw is not None:
                out.setdefault(subject, {})[purpose] = ConsentRecord.from_json(raw)
        return out

    def history(self, subject: str, count: int = 1000) -> list[dict[str, Any]]:
        """The receipts logged for one citizen (newest last). Scans the log: for people."""
        out = []
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]], self.redis.xrange(self.keys.consent_log)
        )
        for _id, fields in entries:
            f = {_text(k): _text(v) for k, v in fields.items()}
            if f.get("subject") == subject:
                out.append(json.loads(f["receipt"]))
        return out[-count:]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
