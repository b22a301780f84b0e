"""Limits on a real Redis: the memory guard reads Redis's own figures, and Redis's hard limit
(maxmemory, noeviction) reaches producers as the same retryable `Backpressure`, and ingest waits
it out instead of ending."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from redis import Redis

from city.config import LimitsConfig
from city.events import Event, source_for
from queues.limits import Backpressure, MemoryGuard, read_pressure
from queues.streams import Producer
from tests.conftest import require_redis_server
from workers.ingest import IngestWorker
from workers.standins import LocalRedisServer

pytestmark = pytest.mark.integration
WEST = {"lat": 47.6205, "lon": -122.3493}


def incident(severity: int = 2, note: str = "") -> Event:
    data = {"kind": "collision", "severity": severity, "description": note}
    return Event.new("traffic.incident", source_for("sdot"), data, location=WEST)


def test_the_guard_raises_and_lowers_backpressure_from_redis_memory(redis, keys):
    used_mb = redis.info("memory")["used_memory"] / 2**20
    low = MemoryGuard(redis, keys, LimitsConfig(memory_high_mb=max(1, int(used_mb / 2))))
    state = low.check()
    assert state.pressure and read_pressure(redis, keys)["used_mb"] == pytest.approx(used_mb, 0.5)
    producer = Producer(redis, "sdot", keys)
    with pytest.raises(Backpressure):
        producer.publish(incident())
    high = MemoryGuard(redis, keys, LimitsConfig(memory_high_mb=int(used_mb * 4) + 100))
    assert not high.check().pressure and read_pressure(redis, keys) is None
    producer.gauge.interval = 0  # type: ignore[union-attr]
    producer.publish(incident())
    assert redis.xlen(keys.ingest("sdot")) == 1


@pytest.fixture
def small_redis() -> Iterator[Redis]:
    require_redis_server("this test sets maxmemory on its own server")
    server = LocalRedisServer().start()
    client = Redis.from_url(server.url)
    yield client
    client.close()
    server.stop()


def test_redis_out_of_memory_reaches_the_producer_as_backpressure(small_redis, keys):
    used = small_redis.info("memory")["used_memory"]
    small_redis.config_set("maxmemory-policy", "noeviction")
    small_redis.config_set("maxmemory", used + 512 * 1024)
    producer = Producer(small_redis, "sdot", keys, backpressure=False)
    accepted = 0
    with pytest.raises(Backpressure, match="maxmemory") as refused:
        for _ in range(200):
            producer.publish_many([incident(note="x" * 2000) for _ in range(50)])
            accepted += 50
    assert 0 < accepted < 10_000 and len(refused.value.refused) == 50


def test_ingest_waits_out_a_redis_that_is_out_of_memory_and_loses_nothing(
    small_redis, keys, seattle
):
    config, _ = seattle
    config = config.model_copy(
        update={"routing": config.routing.model_copy(update={"claim_idle_ms": 200})}
    )
    events = [incident() for _ in range(20)]
    Producer(small_redis, "sdot", keys, backpressure=False).publish_many(events)
    worker = IngestWorker(small_redis, keys, config, consumer="oom")
    small_redis.config_set("maxmemory-policy", "noeviction")
    small_redis.config_set("maxmemory", small_redis.info("memory")["used_memory"])
    stop = threading.Event()
    loop = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    loop.start()
    deadline = time.monotonic() + 30
    while _oom_refusals(small_redis) < 2:  # refused, then refused again: it waits and retries
        assert loop.is_alive() and time.monotonic() < deadline, "ingest never met the OOM"
        time.sleep(0.05)
    assert loop.is_alive()  # refused (OOM), waiting: not crashed
    assert small_redis.hget(keys.stats, "in:sdot") is None
    small_redis.config_set("maxmemory", 0)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and small_redis.hget(keys.stats, "in:sdot") != b"20":
        time.sleep(0.1)
    stop.set()
    loop.join(10)
    assert small_redis.hget(keys.stats, "in:sdot") == b"20"
    assert small_redis.xpending(keys.ingest("sdot"), "router")["pending"] == 0


def _oom_refusals(client: Redis) -> int:
    """Commands this server refused with OOM so far (the test's own server: all ingest's)."""
    return int(client.info("errorstats").get("errorstat_OOM", {}).get("count", 0))
