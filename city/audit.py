"""Hash-chained audit records and their verification (pure; the Redis side is queues/audit.py).

Every record carries its sequence number, the SHA-256 of the previous record (``prev``) and its
own SHA-256 over a canonical JSON of everything else. Altering a record breaks its own hash;
deleting or reordering records breaks the ``prev`` links and the sequence; cutting records off
the end is caught against the *head* (the last sequence number and hash, kept apart from the
records). `verify` reports each problem with the record's position so people can find it.

Kinds used by cityrelay: ``grant.create``, ``grant.revoke``, ``grant.delegate``,
``grant.break_glass``, ``policy.change``, ``acl.apply`` and ``delivery`` (one per routed batch:
which policy, grant, purpose and jurisdiction version let each event through, see
`delivery_body`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class Head:
    """Where the chain ends: the last record's sequence number and hash."""

    seq: int
    hash: str

    def encode(self) -> str:
        return f"{self.seq}:{self.hash}"

    @classmethod
    def decode(cls, text: str | bytes | None) -> Head:
        """Parse a stored head; nothing stored means the empty chain."""
        if not text:
            return GENESIS
        if isinstance(text, bytes):
            text = text.decode()
        seq, _, digest = text.partition(":")
        return cls(int(seq), digest)


GENESIS = Head(0, GENESIS_HASH)


def canonical(value: Any) -> bytes:
    """The one byte form that is hashed: sorted keys, no spaces, UTF-8."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    ts: str
    kind: str
    actor: str
    body: dict[str, Any]
    prev: str
    hash: str

    def content(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "actor": self.actor,
            "body": self.body,
            "prev": self.prev,
        }

    def to_json(self) -> str:
        return canonical({**self.content(), "hash": self.hash}).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> AuditRecord:
        data = json.loads(text)
        return cls(
            seq=data["seq"],
            ts=data["ts"],
            kind=data["kind"],
            actor=data["actor"],
            body=data["body"],
            prev=data["prev"],
            hash=data["hash"],
        )

    def computed_hash(self) -> str:
        return hashlib.sha256(canonical(self.content())).hexdigest()


def make_record(
    head: Head, kind: str, body: dict[str, Any], actor: str, ts: datetime | None = None
) -> AuditRecord:
    """The record that follows `head`."""
    stamp = (ts or datetime.now(UTC)).astimezone(UTC).isoformat()
    unsigned = AuditRecord(head.seq + 1, stamp, kind, actor, body, head.hash, "")
    return AuditRecord(**{**unsigned.content(), "hash": unsigned.computed_hash()})


def chain(
    head: Head, items: Iterable[tuple[str, dict[str, Any], str]], ts: datetime | None = None
) -> tuple[list[AuditRecord], Head]:
    """Records for `(kind, body, actor)` items following `head`, and the new head."""
    records: list[AuditRecord] = []
    for kind, body, actor in items:
        record = make_record(head, kind, body, actor, ts)
        records.append(record)
        head = Head(record.seq, record.hash)
    return records, head


def delivery_body(
    batch: str,
    rows: Sequence[Sequence[Any]],
    policy_version: str,
    grant_version: int | str,
    jurisdiction_version: int | str,
) -> dict[str, Any]:
    """A per-batch delivery record body.

    `rows` are `Decision.audit_row(event_id, dept, sub_id)`: event, recipient, subscription,
    allowed (1/0), reason, policy, grant, purpose, then the privacy note of the view sent
    (transform, lawful basis, consent state, action, key ids; null without a privacy section).
    """
    return {
        "batch": batch,
        "policy_version": policy_version,
        "grant_version": grant_version,
        "jurisdiction_version": jurisdiction_version,
        "columns": [
            "event",
            "dept",
            "sub",
            "allow",
            "reason",
            "policy",
            "grant",
            "purpose",
            "privacy",
        ],  # fmt: skip
        "rows": [list(r) for r in rows],
    }


def deliveries_of(record: AuditRecord, event_id: str) -> list[dict[str, Any]]:
    """The decisions a ``delivery`` record holds for one event, with the versions used."""
    if record.kind != "delivery":
        return []
    body = record.body
    columns = body.get("columns", [])
    versions = {
        k: body.get(k) for k in ("batch", "policy_version", "grant_version", "jurisdiction_version")
    }
    return [
        {**dict(zip(columns, row, strict=False)), **versions, "seq": record.seq, "ts": record.ts}
        for row in body.get("rows", [])
        if row and row[0] == event_id
    ]


@dataclass(frozen=True, slots=True)
class Problem:
    where: str  # the record's position (e.g. the stream entry id)
    seq: int | None
    message: str

    def __str__(self) -> str:
        seq = f" (seq {self.seq})" if self.seq is not None else ""
        return f"{self.where}{seq}: {self.message}"


@dataclass
class VerifyResult:
    records: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(entries: Iterable[tuple[str, str | bytes]], head: Head | None = None) -> VerifyResult:
    """Check a chain given as `(position, record JSON)` in stored order, and the head.

    Reports: a record whose content does not match its hash (altered), a record whose ``prev``
    or sequence number does not follow the one before (removed or reordered), unreadable
    records, and a head that is not the last record (records cut off the end).
    """
    result = VerifyResult()
    expected = GENESIS
    last_where = "<start>"
    for where, raw in entries:
        result.records += 1
        last_where = where
        try:
            record = AuditRecord.from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            result.problems.append(Problem(where, None, f"unreadable record: {exc}"))
            continue
        if record.computed_hash() != record.hash:
            result.problems.append(
                Problem(where, record.seq, "altered: content does not match its hash")
            )
        if record.seq != expected.seq + 1:
            if record.seq <= expected.seq:
                what = f"out of order: seq {record.seq} comes after seq {expected.seq}"
            else:
                what = (
                    f"expected seq {expected.seq + 1}, found {record.seq}: "
                    "records removed or out of order before this one"
                )
            result.problems.append(Problem(where, record.seq, what))
        elif record.prev != expected.hash:
            result.problems.append(
                Problem(where, record.seq, "prev does not match the previous record's hash")
            )
        if record.seq > expected.seq:  # a record out of order does not rewind the check
            expected = Head(record.seq, record.hash)
    if head is not None and head != expected:
        if head.seq > expected.seq:
            what = f"head says seq {head.seq}, the chain ends at {expected.seq}: records removed"
        else:
            what = f"chain ends at seq {expected.seq} but the head is seq {head.seq}: head mismatch"
        if head.seq == expected.seq:
            what = f"last record (seq {expected.seq}) does not match the head hash: altered"
        result.problems.append(Problem(last_where, expected.seq or None, what))
    return result
