"""Partial outage: Redis (a redis-server with AOF that this test starts on its own port) stops
while emergencies are being published and routed, and comes back. The producer spools what it
cannot send; after the restart every emergency reaches every recipient exactly once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from city.events import Event, source_for
from queues.connect import PRODUCER_SETTINGS, redis_from_url
from queues.inbox import Inbox
from queues.keys import Keys
from queues.spool import Spool, SpoolFlusher
from queues.streams import Producer
from tests.conftest import require_redis_server
from tests.scenarios.emergency_city import Webhooks, city, harness, status
from workers.standins import LocalRedisServer

pytestmark = pytest.mark.integration
RECIPIENTS = ("fire", "ems", "emergency-management")
CENTER = {"lat": 47.6205, "lon": -122.3493}


@pytest.fixture
def server() -> Iterator[LocalRedisServer]:
    require_redis_server("this scenario stops and restarts a real one")
    found = LocalRedisServer(appendonly=True).start()
    yield found
    found.stop()


def emergency(n: int) -> Event:
    return Event.new("health.emergency", source_for("ems"),
                     {"incident_number": f"MCI-{n}", "kind": "mass_casualty", "patients": n},
                     location=CENTER)  # fmt: skip


def test_emergencies_published_through_a_redis_restart_arrive_once(
    server: LocalRedisServer, tmp_path: Path
) -> None:
    keys = Keys("outage")
    hooks = Webhooks()
    redis = redis_from_url(server.url)  # the workers' client: reconnects with backoff
    h = harness(redis, keys, city(hooks, tmp_path / "drop"))
    spool = Spool(tmp_path / "ems-spool.db")
    flusher = SpoolFlusher(spool, redis_from_url(server.url), interval=0.05).start()
    producer = Producer(redis_from_url(server.url, **PRODUCER_SETTINGS), "ems", keys,
                        spool=spool, flusher=flusher)  # fmt: skip
    events = [emergency(n) for n in range(40)]
    try:
        # 1. Redis up: published and routed.
        producer.publish_many(events[:10])
        h.run()
        # 2. Published and ingested (jobs queued), not yet routed when Redis stops.
        for event in events[10:20]:
            producer.publish(event)
        h.ingest_all()
        server.stop()  # SIGTERM: Redis writes its AOF and exits
        # 3. Redis down: the producer answers at once and spools, in order.
        started = time.monotonic()
        for event in events[20:25]:
            producer.publish(event)
        producer.publish_many(events[25:30])
        assert len(spool) == 10 and time.monotonic() - started < 10
        # 4. Redis back (same port, same AOF): the spool drains, routing resumes.
        server.start()
        deadline = time.monotonic() + 10
        while len(spool) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(spool) == 0, f"spool did not drain: {flusher.last_error}"
        producer.publish_many(events[30:35])
        for event in events[35:]:
            producer.publish(event)
        h.run()
        h.run()  # nothing left: a second pass delivers nothing twice

        expected = [e.id for e in events]
        for dept in RECIPIENTS:
            delivered = Counter(m.event_id for m in Inbox(redis, dept, keys).history(1000))
            assert set(delivered) == set(expected), dept
            assert max(delivered.values()) == 1, f"{dept} got duplicates"
        for event in events:
            assert set(status(redis, keys, event.id).recipients) == set(RECIPIENTS)
        assert h.deadletters() == []
    finally:
        flusher.stop()
        spool.close()
        hooks.close()
