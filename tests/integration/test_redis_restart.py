"""Redis restarts under the full pipeline: the processes reconnect by themselves, nothing
accepted is lost, nothing is delivered twice.

The test starts its own redis-server (AOF, fsync every second) and the Procfile's processes
against it, publishes under load through spooling producers, and restarts Redis (graceful stop,
then start on the same port and data directory) in the middle. It never restarts a process.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.chaos import (
    ID_MARK,
    Pipeline,
    build_templates,
    compare,
    inbox_counts,
    quiet,
    warm_up,
)
from city.config import load_city
from city.routing import Router
from queues.connect import PRODUCER_SETTINGS, redis_from_url
from queues.keys import Keys
from queues.metrics import read_stats
from queues.spool import Spool, SpoolFlusher
from queues.streams import Producer
from tests.conftest import require_redis_server, write_city
from workers.standins import LocalRedisServer

pytestmark = pytest.mark.integration
EVENTS = 4000
RATE = 800  # events/s: about 5 s of publishing
STOP_AT, DOWN_S = 1.5, 2.0  # Redis stops 1.5 s in and stays down 2 s


@pytest.fixture
def server() -> Iterator[LocalRedisServer]:
    require_redis_server("this test stops and restarts a real one")
    found = LocalRedisServer(appendonly=True).start()
    yield found
    found.stop()


def test_processes_ride_through_a_redis_restart(server: LocalRedisServer, tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex[:8]
    keys = Keys(f"restart{run_id}")
    config = write_city(tmp_path, claim_idle_ms=2000)
    city, base = load_city(config)
    departments = city.department_ids
    routine, emergency = build_templates(Router.from_config(city, base), keys, departments, 5)
    pipeline = Pipeline(server.url, keys.prefix, config, emergency_workers=1, routine_workers=1)
    checker = redis_from_url(server.url)
    spool = Spool(tmp_path / "spool.db")
    flusher = SpoolFlusher(spool, redis_from_url(server.url), interval=0.05).start()
    client = redis_from_url(server.url, **PRODUCER_SETTINGS)
    producers: dict[str, Producer] = {}
    expected_of = []
    restarted_at = None
    try:
        pipeline.start_all()
        warm_up(checker, keys, routine[0], emergency[0], run_id)
        t0 = time.monotonic()
        n = 0
        while n < EVENTS:
            elapsed = time.monotonic() - t0
            if restarted_at is None and elapsed >= STOP_AT:
                server.stop()  # SIGTERM: Redis writes its AOF and exits
                time.sleep(DOWN_S)  # the processes lose Redis; the producers spool
                server.start()  # same port, same directory: the AOF is loaded
                restarted_at = n
            if n >= elapsed * RATE:
                time.sleep(0.005)
                continue
            chunk = []
            for _ in range(min(20, EVENTS - n)):
                pool = emergency if n % 25 == 0 else routine
                template = pool[n % len(pool)]
                chunk.append(json.loads(template.body.replace(ID_MARK, f"{run_id}-{n}")))
                expected_of.append(template.expected)
                n += 1
            by_dept: dict[str, list[dict]] = {}
            for wire in chunk:
                by_dept.setdefault(wire["department"], []).append(wire)
            for dept, wires in by_dept.items():
                if dept not in producers:
                    producers[dept] = Producer(client, dept, keys, spool=spool, flusher=flusher)
                producers[dept].publish_many(wires)
        deadline = time.monotonic() + 90
        while len(spool) or not quiet(checker, keys, departments):
            assert time.monotonic() < deadline, f"not drained: {read_stats(checker, keys)}"
            time.sleep(0.2)
        counts, _, _ = inbox_counts(checker, keys, departments, run_id, EVENTS)
        lost, duplicated, wrong, deliveries = compare(expected_of, counts)
        assert restarted_at is not None and 0 < restarted_at < EVENTS
        assert (lost, duplicated, wrong) == (0, 0, 0)
        assert deliveries == sum(len(e) for e in expected_of) > 0
        assert checker.xlen(keys.deadletter) == 0
        # The processes were never restarted: the same ones are still running.
        assert all(p.poll() is None for p in pipeline.running.values())
        assert sum(pipeline.restarts.values()) == 0
    finally:
        flusher.stop()
        spool.close()
        pipeline.stop()
        checker.close()
    assert pipeline.ignored_sigterm == []  # every process stopped on SIGTERM
