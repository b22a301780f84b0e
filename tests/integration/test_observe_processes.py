"""The real processes on a real Redis, watched as an operator watches them: their JSON log
lines, the exporter scraped over HTTP, and `cityrelay status --json`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from city.events import Event, source_for
from queues.metrics import wait_until_handled
from queues.streams import Producer
from tests.conftest import ROOT, SEATTLE
from workers.standins import free_port

WEST = {"lat": 47.6205, "lon": -122.3493}


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    deadline = time.monotonic() + 20
    while True:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


@pytest.mark.integration
def test_processes_log_json_lines_and_the_exporter_sees_them(redis_url, redis, keys, tmp_path):
    env = dict(
        os.environ,
        REDIS_URL=redis_url,
        PYTHONPATH=str(ROOT),
        CITYRELAY_LOG_SUMMARY_S="0.5",
        CITYRELAY_LOG_FORMAT="json",
    )
    base = [sys.executable, "-m", "workers.cli", "--prefix", keys.prefix, "--config", str(SEATTLE)]
    port = free_port()
    logs = {name: tmp_path / f"{name}.log" for name in ("ingest", "worker", "metrics")}
    commands = {
        "ingest": ["ingest"],
        "worker": ["worker", "--role", "routine", "--name", f"{keys.prefix}-rt"],
        "metrics": ["metrics", "--port", str(port)],
    }
    running = []
    try:
        for name, args in commands.items():
            with logs[name].open("wb") as err:
                running.append(subprocess.Popen(base + args, env=env, cwd=ROOT, stderr=err))
        events = [
            Event.new("traffic.incident", source_for("sdot"), {"kind": "hazard", "severity": 2},
                      location=WEST)
            for _ in range(20)
        ]  # fmt: skip
        Producer(redis, "sdot", keys).publish_many(events)
        Producer(redis, "sdot", keys).publish_raw(b"not json")
        assert wait_until_handled(redis, keys, 21, timeout=60)
        # (no wait for "one more summary interval": each process flushes its summary at exit)
        got = _scrape(port)
        status = subprocess.run(
            [*base, "status", "--json"], env=env, cwd=ROOT, capture_output=True, check=True
        )
    finally:
        for process in running:
            process.terminate()
        hung = []
        for name, process in zip(commands, running, strict=False):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                hung.append(name)
                process.kill()
                process.wait()
    assert not hung, f"ignored SIGTERM: {hung}"

    key = ("cityrelay_events_in_total", (("department", "sdot"), ("priority", "high")))
    assert got[key] == 20
    assert got[("cityrelay_workers", (("role", "routine"), ("state", "idle")))] in (0, 1)
    assert got[("cityrelay_dead_letters_total", (("reason", "malformed_json"),))] == 1
    consumers = [k for k in got if k[0] == "cityrelay_ingest_consumer_idle_seconds"]
    assert len(consumers) == 1
    report = json.loads(status.stdout)
    assert report["departments"]["spd-west"]["delivered"] == 20
    assert report["priorities"]["high"]["in"] == 20 and report["deadletters"] == 1

    records = {
        name: [json.loads(line) for line in path.read_text().splitlines()]
        for name, path in logs.items()
    }  # fmt: skip  (every line must be JSON)
    for name, role in (("ingest", "ingest"), ("worker", "worker-routine"), ("metrics", "metrics")):
        assert records[name], f"{name} wrote no log line: {logs[name].read_text()[:2000]}"
        assert all({"ts", "level", "logger", "message", "pid"} <= set(r) for r in records[name])
        assert {r["role"] for r in records[name]} == {role}
    ingest = [r for r in records["ingest"] if r["message"] == "ingest summary"]
    assert sum(r["accepted"] for r in ingest) == 20 and sum(r["dead_lettered"] for r in ingest) == 1
    worker = [r for r in records["worker"] if r["message"] == "worker summary"]
    assert sum(r["delivered"] for r in worker) == 20 and sum(r["failed"] for r in worker) == 0
    assert records["metrics"][0]["url"] == f"http://127.0.0.1:{port}/metrics"
