"""The audit chain: every altered, removed or reordered record is caught, and located."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import fakeredis
import pytest

from city.audit import (
    GENESIS,
    AuditRecord,
    Head,
    chain,
    delivery_body,
    make_record,
    verify,
)
from queues.audit import AuditConflict, AuditLog
from queues.keys import Keys

T = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def build(n: int) -> tuple[list[tuple[str, str]], Head]:
    items = [("grant.create", {"grant": f"g-{i}"}, "transportation") for i in range(n)]
    records, head = chain(GENESIS, items, T)
    return [(f"{i + 1}-0", r.to_json()) for i, r in enumerate(records)], head


def test_intact_chain_verifies() -> None:
    entries, head = build(5)
    result = verify(entries, head)
    assert result.ok and result.records == 5
    assert verify([], GENESIS).ok
    first = AuditRecord.from_json(entries[0][1])
    assert first.prev == GENESIS.hash and first.seq == 1


def test_modified_record_is_located() -> None:
    entries, head = build(5)
    data = json.loads(entries[2][1])
    data["body"]["grant"] = "g-forged"
    entries[2] = (entries[2][0], json.dumps(data))
    result = verify(entries, head)
    assert [(p.where, p.seq) for p in result.problems] == [("3-0", 3)]
    assert "altered" in result.problems[0].message


def test_modified_and_rehashed_record_breaks_the_next_link() -> None:
    entries, head = build(5)
    rec = AuditRecord.from_json(entries[2][1])
    forged = make_record(Head(2, rec.prev), rec.kind, {"grant": "g-forged"}, rec.actor, T)
    entries[2] = (entries[2][0], forged.to_json())
    result = verify(entries, head)
    assert [(p.where, p.seq) for p in result.problems] == [("4-0", 4)]
    assert "prev does not match" in result.problems[0].message


def test_deleted_record_is_located() -> None:
    entries, head = build(5)
    del entries[1]
    result = verify(entries, head)
    assert [(p.where, p.seq) for p in result.problems] == [("3-0", 3)]
    assert "expected seq 2, found 3" in result.problems[0].message


def test_swapped_pair_is_located() -> None:
    entries, head = build(5)
    entries[1], entries[2] = entries[2], entries[1]
    result = verify(entries, head)
    assert [p.where for p in result.problems] == ["3-0", "2-0"]
    assert "out of order: seq 2 comes after seq 3" in str(result.problems[1])


def test_records_cut_off_the_end_are_caught_by_the_head() -> None:
    entries, head = build(5)
    result = verify(entries[:-1], head)
    assert not result.ok and "records removed" in result.problems[0].message
    # The last record altered and rehashed: the head no longer matches it.
    rec = AuditRecord.from_json(entries[-1][1])
    forged = make_record(Head(4, rec.prev), rec.kind, {"x": 1}, rec.actor, T)
    result = verify([*entries[:-1], ("5-0", forged.to_json())], head)
    assert "does not match the head hash" in result.problems[0].message
    # A head behind the chain (head rewound) is reported too.
    assert "head mismatch" in verify(entries, Head(3, "x")).problems[0].message


def test_unreadable_record_is_reported() -> None:
    entries, head = build(2)
    result = verify([entries[0], ("2-0", "{not json"), entries[1]], head)
    assert "unreadable record" in str(result.problems[0])
    assert str(result.problems[0]).startswith("2-0: ")


def test_head_codec() -> None:
    assert Head.decode(None) == GENESIS and Head.decode(b"") == GENESIS
    assert Head.decode(b"3:abc") == Head(3, "abc") == Head.decode("3:abc")


def test_delivery_body_names_policy_grant_purpose_and_jurisdiction_version() -> None:
    row = ["e1", "police", "spd", 1, "grant", None, "g-1", "investigation"]
    body = delivery_body("b-1", [row], "pv1", 4, "j7")
    assert body["rows"] == [row] and body["policy_version"] == "pv1"
    assert body["grant_version"] == 4 and body["jurisdiction_version"] == "j7"
    assert body["columns"][6] == "grant"


# --- the Redis stream -----------------------------------------------------------------------


@pytest.fixture
def log() -> AuditLog:
    return AuditLog(fakeredis.FakeRedis(), Keys("t-audit"))


def test_append_and_verify_in_redis(log: AuditLog) -> None:
    assert log.append_many([]) == []
    first = log.append("grant.create", {"grant": "g-1"}, "transportation")
    second = log.append("grant.revoke", {"grant": "g-1"}, "transportation")
    assert second.prev == first.hash and log.head() == Head(2, second.hash)
    assert [r.seq for r in log.records()] == [1, 2]
    assert log.verify().ok


def test_concurrent_writers_keep_one_chain(log: AuditLog) -> None:
    other = AuditLog(log.redis, log.keys)
    log.append("a", {}, "x")
    other.append("b", {}, "y")  # `log` has a stale head now
    log.append("c", {}, "x")  # detects it and re-chains
    assert [r.seq for r in log.records()] == [1, 2, 3]
    assert log.verify().ok


def test_threads_appending_at_once_keep_one_chain() -> None:
    server = fakeredis.FakeServer()
    keys = Keys("t-threads")

    def work(n: int) -> None:
        writer = AuditLog(fakeredis.FakeRedis(server=server), keys)
        for i in range(20):
            writer.append("delivery", {"w": n, "i": i}, f"router-{n}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = AuditLog(fakeredis.FakeRedis(server=server), keys).verify()
    assert result.ok and result.records == 80


def test_pipelined_append_rides_with_other_writes(log: AuditLog) -> None:
    pipe = log.redis.pipeline()
    pipe.xadd("t-audit:inbox:police", {"e": "1"})
    pending = log.queue(pipe, [("delivery", {"batch": "b1"}, "router")])
    results = pipe.execute()
    records = log.confirm(pending, results[-1])
    assert records[0].seq == 1 and log.verify().ok
    # Lost race: someone appended between queue and execute -> confirm re-appends.
    pipe = log.redis.pipeline()
    pending = log.queue(pipe, [("delivery", {"batch": "b2"}, "router")])
    AuditLog(log.redis, log.keys).append("grant.create", {}, "steward")
    results = pipe.execute()
    records = log.confirm(pending, results[-1])
    assert records[0].seq == 3 and log.verify().ok
    assert [r.body.get("batch") for r in log.records()] == ["b1", None, "b2"]


def test_tampering_in_redis_is_detected(log: AuditLog) -> None:
    for i in range(6):
        log.append("grant.create", {"grant": f"g-{i}"}, "transportation")
    entries = list(log.read(count=2))  # paging
    assert len(entries) == 6
    victim_id, raw = entries[3]
    data = json.loads(raw)
    data["actor"] = "mallory"
    # Rewrite the stream with one record altered (stream entries cannot be edited in place).
    log.redis.delete(log.keys.audit)
    for entry_id, rec in entries:
        log.redis.xadd(
            log.keys.audit, {"rec": json.dumps(data) if entry_id == victim_id else rec}, id=entry_id
        )
    result = log.verify()
    assert [p.where for p in result.problems] == [victim_id]
    # And a deleted one.
    log.redis.xdel(log.keys.audit, entries[1][0])
    assert entries[2][0] in {p.where for p in log.verify().problems}


def test_endless_contention_gives_up_loudly(log: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("queues.audit.MAX_RETRIES", 2)
    log._script = lambda keys, args, client=None: [0, b"99:zz"]  # type: ignore[assignment]
    with pytest.raises(AuditConflict):
        log.append("x", {}, "y")


def test_policy_changes_are_recorded_once_per_version(log: AuditLog) -> None:
    first = log.record_policy("v1", {"policies": ["a"]})
    assert first is not None and first.body == {
        "version": "v1",
        "previous": None,
        "policies": ["a"],
    }
    assert log.record_policy("v1", {"policies": ["a"]}) is None  # another worker, same config
    second = log.record_policy("v2", {"policies": ["a", "b"]}, actor="ops")
    assert second is not None and second.body["previous"] == "v1" and second.actor == "ops"
    assert [r.kind for r in log.records()] == ["policy.change", "policy.change"]
