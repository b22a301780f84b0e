"""Producer(spool=...): publishing never fails while Redis is unreachable; nothing overtakes the
spooled backlog; replay lands every event in its lane's stream."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest
from redis.exceptions import ResponseError, TryAgainError

from city.events import Event, source_for
from queues.connect import PRODUCER_SETTINGS, redis_from_url
from queues.keys import Keys
from queues.spool import Spool
from queues.streams import Producer
from workers.standins import free_port


def emergency(n: int) -> Event:
    return Event.new("health.emergency", source_for("ems"),
                     {"incident_number": f"E-{n}", "kind": "cardiac"})  # fmt: skip


def test_publish_many_spools_when_redis_is_down_and_replays_in_order(tmp_path: Path) -> None:
    keys = Keys("spooltest")
    down = redis_from_url(f"redis://127.0.0.1:{free_port()}/0", **PRODUCER_SETTINGS)
    spool = Spool(tmp_path / "ems.db")
    producer = Producer(down, "ems", keys, spool=spool)
    events = [emergency(n) for n in range(5)]
    assert producer.publish_many(events[:3]) == [e.id for e in events[:3]]
    assert producer.publish(events[3]) == events[3].id
    assert len(spool) == 4
    up = fakeredis.FakeRedis()
    producer.redis = up
    # Redis is back, but the spool still holds older events: this one queues behind them
    producer.publish_many(events[4:])
    assert len(spool) == 5 and up.xlen(keys.ingest("ems", "emergency")) == 0
    assert spool.replay(up) == 5
    stream = up.xrange(keys.ingest("ems", "emergency"))
    assert [Event.model_validate_json(f[b"e"]).id for _, f in stream] == [e.id for e in events]
    # with an empty spool, publishing goes straight to Redis
    later = emergency(9)
    producer.publish_many([later])
    assert len(spool) == 0 and up.xlen(keys.ingest("ems", "emergency")) == 6


def test_a_batch_refused_by_a_migration_past_its_wait_is_spooled_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slot migration that outlasts MIGRATION_WAIT_S ends the send with its refusal (ASK,
    TRYAGAIN): the events wait in the spool like the ones of an unreachable Redis; any other
    refusal is still raised to the caller."""
    keys = Keys("spooltest")
    redis = fakeredis.FakeRedis()
    spool = Spool(tmp_path / "ems.db")
    producer = Producer(redis, "ems", keys, spool=spool)
    events = [emergency(n) for n in range(3)]
    refusals: list[Exception] = [
        ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        TryAgainError("Multiple keys request during rehashing of slot"),
    ]

    def refused(encoded: object) -> list[str]:
        raise refusals.pop()

    monkeypatch.setattr(producer, "_send", refused)
    assert producer.publish_many(events) == [e.id for e in events]
    assert len(spool) == 3
    assert spool.replay(redis) == 3  # the spool empty again: the next batch tries Redis first
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        producer.publish_many([emergency(9)])
    assert redis.xlen(keys.ingest("ems", "emergency")) == 3
