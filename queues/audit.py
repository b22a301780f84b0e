"""The audit chain in Redis: a stream of hash-chained records plus a head key.

Each record must carry the hash of the one before, so appends are compare-and-append: the
client chains its records after the head it last saw and a Lua script adds them only if the
head is still that one (else it returns the current head and the client re-chains and retries).

Delivery decisions do not append directly. The route job's atomic delivery script writes them
to an audit inbox (``{p}:audit:in``) together with the deliveries themselves, so no delivery can
happen without its record, whatever crashes. `drain_inbox` then chains inbox entries into the
audit stream and removes them in one script; a short lock lets one worker chain at a time, so
busy workers never race each other for the head.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from redis import Redis
from redis.client import Pipeline

from city.audit import AuditRecord, Head, VerifyResult, chain, deliveries_of, verify
from queues.keys import Keys

Item = tuple[str, dict[str, Any], str]  # (kind, body, actor)

_APPEND = """
local cur = redis.call('GET', KEYS[2])
if not cur then cur = '' end
if cur ~= ARGV[1] then return {0, cur} end
for i = 3, #ARGV do redis.call('XADD', KEYS[1], '*', 'rec', ARGV[i]) end
redis.call('SET', KEYS[2], ARGV[2])
return {1, ARGV[2]}
"""

# As _APPEND, and the consumed audit inbox entries (ARGV after the records) go in the same step.
_APPEND_CONSUME = """
local cur = redis.call('GET', KEYS[2])
if not cur then cur = '' end
if cur ~= ARGV[1] then return {0, cur} end
local n = tonumber(ARGV[3])
for i = 4, 3 + n do redis.call('XADD', KEYS[1], '*', 'rec', ARGV[i]) end
for i = 4 + n, #ARGV do redis.call('XDEL', KEYS[3], ARGV[i]) end
redis.call('SET', KEYS[2], ARGV[2])
return {1, ARGV[2]}
"""

MAX_RETRIES = 50
DRAIN_LOCK_MS = 10_000
# After a lost race, wait a random share of a window that doubles per loss (capped): writers
# that retried at once kept colliding, and the slowest one (the one busy hashing while the
# others wrote) could lose 50 times running on a loaded host. At most ~2 s over 50 losses.
BACKOFF_FIRST_S, BACKOFF_CAP_S = 0.001, 0.05


def _back_off(attempt: int) -> None:
    time.sleep(random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2**attempt)))


class AuditConflict(RuntimeError):
    """The head kept moving: too many concurrent appenders."""


@dataclass
class Pending:
    """An append queued in a pipeline; pass the pipeline's result to `AuditLog.confirm`."""

    items: list[Item]
    records: list[AuditRecord]


class AuditLog:
    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys
        self._script = redis.register_script(_APPEND)
        self._consume = redis.register_script(_APPEND_CONSUME)
        self._head: Head | None = None  # last head seen; None: unknown

    def _expected(self, head: Head) -> str:
        return "" if head.seq == 0 else head.encode()

    def _args(self, records: list[AuditRecord], head: Head, new_head: Head) -> list[str]:
        return [self._expected(head), new_head.encode(), *(r.to_json() for r in records)]

    def head(self) -> Head:
        """The stored head (the empty chain's when nothing was ever appended)."""
        return Head.decode(self.redis.get(self.keys.audit_head))

    def append_many(self, items: Iterable[Item]) -> list[AuditRecord]:
        """Append records atomically in order; retries when another writer got there first."""
        items = list(items)
        if not items:
            return []
        head = self._head if self._head is not None else self.head()
        for attempt in range(MAX_RETRIES):
            if attempt:
                _back_off(attempt)
            records, new_head = chain(head, items)
            ok, current = self._script(
                keys=[self.keys.audit, self.keys.audit_head],
                args=self._args(records, head, new_head),
            )
            if ok:
                self._head = new_head
                return records
            head = Head.decode(current)
        raise AuditConflict(f"audit head kept moving after {MAX_RETRIES} attempts")

    def append(self, kind: str, body: dict[str, Any], actor: str) -> AuditRecord:
        return self.append_many([(kind, body, actor)])[0]

    def queue(self, pipe: Pipeline, items: Iterable[Item]) -> Pending:
        """Add an append to `pipe` (chained after the last head this log saw)."""
        items = list(items)
        head = self._head if self._head is not None else self.head()
        records, new_head = chain(head, items)
        self._script(
            keys=[self.keys.audit, self.keys.audit_head],
            args=self._args(records, head, new_head),
            client=pipe,
        )
        return Pending(items, records)

    def confirm(self, pending: Pending, result: Any) -> list[AuditRecord]:
        """Finish a queued append with its pipeline result; re-appends if it lost a race."""
        ok, current = result
        if ok:
            self._head = Head.decode(current)
            return pending.records
        self._head = Head.decode(current)
        return self.append_many(pending.items)

    def drain_inbox(self, limit: int = 200, actor: str = "router") -> int:
        """Chain pending audit inbox entries (delivery decisions) into the audit stream.

        Returns how many were chained; 0 when another process holds the drain lock (it will
        chain them) or nothing waits. Safe to call after every batch.
        """
        lock = self.keys.audit_inbox + ":lock"
        if not self.redis.set(lock, actor, nx=True, px=DRAIN_LOCK_MS):
            return 0
        try:
            total = 0
            while True:
                entries = self.redis.xrange(self.keys.audit_inbox, count=limit)
                if not entries:
                    return total
                ids = [entry_id for entry_id, _ in entries]
                items: list[Item] = [
                    (_text(f.get(b"kind", b"delivery")), orjson.loads(f[b"body"]), actor)
                    for _, f in entries
                ]
                self._append_consuming(items, ids)
                total += len(items)
                if len(entries) < limit:
                    return total
        finally:
            self.redis.delete(lock)

    def _append_consuming(self, items: list[Item], inbox_ids: list[Any]) -> None:
        head = self._head if self._head is not None else self.head()
        for attempt in range(MAX_RETRIES):
            if attempt:
                _back_off(attempt)
            records, new_head = chain(head, items)
            ok, current = self._consume(
                keys=[self.keys.audit, self.keys.audit_head, self.keys.audit_inbox],
                args=[
                    self._expected(head),
                    new_head.encode(),
                    len(records),
                    *(r.to_json() for r in records),
                    *inbox_ids,
                ],
            )
            if ok:
                self._head = new_head
                return
            head = Head.decode(current)
        raise AuditConflict(f"audit head kept moving after {MAX_RETRIES} attempts")

    def pending_inbox(self) -> int:
        """Delivery records written but not chained yet."""
        return int(self.redis.xlen(self.keys.audit_inbox))

    def record_policy(
        self, version: str, body: dict[str, Any], actor: str = "config"
    ) -> AuditRecord | None:
        """Append ``policy.change`` when `version` differs from the last one recorded.

        Call it whenever a process loads the sharing config (e.g. `PolicySet.version` and the
        rules); GETSET makes exactly one of several workers loading the same change record it.
        """
        previous = self.redis.getset(self.keys.audit_policy, version)
        if previous is not None and _text(previous) == version:
            return None
        prior = _text(previous) if previous is not None else None
        return self.append("policy.change", {"version": version, "previous": prior, **body}, actor)

    def read(self, count: int = 1000) -> Iterator[tuple[str, bytes | str]]:
        """Every (entry id, record JSON) in stored order, fetched `count` at a time."""
        start = "-"
        while True:
            entries: list[Any] = self.redis.xrange(self.keys.audit, min=start, count=count)  # type: ignore[assignment]
            for entry_id, fields in entries:
                yield _text(entry_id), fields.get(b"rec", fields.get("rec", b""))
            if len(entries) < count:
                return
            start = "(" + _text(entries[-1][0])

    def records(self) -> Iterator[AuditRecord]:
        for _, raw in self.read():
            yield AuditRecord.from_json(raw)

    def trace(self, event_id: str) -> list[dict[str, Any]]:
        """Every recorded delivery decision about one event (a full scan: an operator tool)."""
        return [row for record in self.records() for row in deliveries_of(record, event_id)]

    def verify(self) -> VerifyResult:
        return verify(self.read(), self.head())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
