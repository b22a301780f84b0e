"""The real processes, as the Procfile runs them, on a real Redis: nothing lost, nothing twice."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from city.events import Event, source_for
from queues.metrics import handled, read_stats, wait_until_handled
from queues.streams import Producer
from tests.conftest import ROOT, write_city

WEST = {"lat": 47.6205, "lon": -122.3493}


class Processes:
    def __init__(self, redis_url: str, prefix: str, config: Path):
        self.env = dict(os.environ, REDIS_URL=redis_url, PYTHONPATH=str(ROOT))
        self.base = [
            sys.executable,
            "-m",
            "workers.cli",
            "--prefix",
            prefix,
            "--config",
            str(config),
        ]
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        self.running[name] = subprocess.Popen(self.base + list(args), env=self.env, cwd=ROOT)

    def kill(self, name: str) -> None:
        process = self.running.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        """SIGTERM each; one still running 20 s later is killed, and the stop fails."""
        for process in self.running.values():
            process.terminate()
        hung = []
        for name, process in self.running.items():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                hung.append(name)
                process.kill()
                process.wait()
        assert not hung, f"ignored SIGTERM: {hung}"


def random_event(rng: random.Random, n: int) -> tuple[str, Event]:
    lat, lon = rng.uniform(47.52, 47.72), rng.uniform(-122.41, -122.26)
    where = {"lat": lat, "lon": lon}
    if n % 3 == 0:
        data = {"kind": "collision", "severity": 2}
        return "sdot", Event.new("traffic.incident", source_for("sdot"), data, location=where)
    if n % 3 == 1:
        data = {"meter_id": f"m{n}", "utility": "gas", "alarm": "leak"}
        return "gas-utility", Event.new(
            "utility.meter_alarm", source_for("gas-utility"), data, location=where
        )
    data = {"incident_number": f"F{n}", "nature": "aid response"}
    return "fire", Event.new("safety.dispatch", source_for("fire"), data, location=where)


@pytest.mark.integration
def test_killing_ingest_mid_stream_loses_and_duplicates_nothing(
    redis_url, redis, keys, seattle_router, tmp_path
):
    processes = Processes(redis_url, keys.prefix, write_city(tmp_path, claim_idle_ms=400))
    rng = random.Random(5)
    expected: dict[str, set[str]] = {}
    published = malformed = 0
    try:
        processes.start("ingest", "ingest")
        processes.start("emergency", "worker", "--role", "emergency", "--name", f"{keys.prefix}-em")
        processes.start("routine", "worker", "--role", "routine", "--name", f"{keys.prefix}-rt")
        for round_ in range(6):
            batches: dict[str, list[object]] = {}
            for i in range(400):
                dept, event = random_event(rng, round_ * 400 + i)
                batches.setdefault(dept, []).append(event)
                expected[event.id] = {d.dept for d in seattle_router.route(_wire(event, dept))}
                if i % 50 == 0:  # a producer retry: same event again
                    batches[dept].append(event)
                    published += 1
                published += 1
            batches["sdot"].append({"type": "traffic.incident", "data": {}, "location": WEST})
            malformed += 1
            published += 1
            for dept, events in batches.items():
                Producer(redis, dept, keys).publish_many(events)  # type: ignore[arg-type]
            if round_ == 2:
                time.sleep(0.05)
                processes.kill("ingest")  # SIGKILL: whatever it read and did not ack is in limbo
                processes.start("ingest-2", "ingest")
        _wait_until_handled(redis, keys, published, timeout=60)
    finally:
        processes.stop_all()
    received: dict[str, list[str]] = {}
    for dept in seattle_router.config.department_ids:
        for _, fields in redis.xrange(keys.inbox(dept)):
            received.setdefault(json.loads(fields[b"e"])["id"], []).append(dept)
    lost = [eid for eid, depts in expected.items() if depts and eid not in received]
    twice = {eid: d for eid, d in received.items() if len(d) != len(set(d))}
    wrong = {eid: d for eid, d in received.items() if set(d) != expected[eid]}
    assert not lost and not twice and not wrong
    reasons = [f[b"reason"] for _, f in redis.xrange(keys.deadletter)]
    assert reasons == [b"invalid_payload"] * malformed


def _wire(event: Event, dept: str) -> dict:
    return event.to_wire() | {"department": dept}


def _wait_until_handled(redis, keys, published: int, timeout: float) -> None:
    if not wait_until_handled(redis, keys, published, timeout):
        stats = read_stats(redis, keys)
        raise AssertionError(
            f"only {handled(stats)} of {published} handled in {timeout} s: {stats}"
        )
