"""`cityrelay demo`: a city's event traffic through the real processes, then a readable summary.

With no ``REDIS_URL`` the demo starts an embedded Redis stand-in (fakeredis's TCP server); with
no S3 endpoint, moto's server. It runs the same processes as the Procfile (ingest per lane,
emergency and routine workers, the webhook pusher and, with Mosquitto, the MQTT bridge:
workers/demo_connectors.py), publishes a realistic mix for the seconds asked - vehicle GPS,
traffic incidents, utility alarms, air quality, 911 dispatches, a few malformed events and one
emergency - and reports what went where, how fast, what was refused and why.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely
from redis import Redis
from tqdm import tqdm

from city.config import CityConfig, load_city
from city.events import Event, source_for
from city.routing import load_zones
from queues.cleanup import delete_city
from queues.inbox import Inbox
from queues.keys import Keys
from queues.metrics import read_stats, wait_until_handled
from queues.streams import Producer
from workers.demo_connectors import ConnectorsDemo
from workers.demo_gateway import GatewayDemo
from workers.standins import EmbeddedRedis, EmbeddedS3

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO_ROOT / "examples" / "seattle" / "city.yaml"
SEATTLE_CENTER = {"lat": 47.6205, "lon": -122.3493}


@dataclass
class DemoReport:
    published: Counter[str] = field(default_factory=Counter)
    malformed: int = 0
    emergency_id: str = ""
    seconds: float = 0.0
    embedded: bool = False  # ran on the embedded Redis stand-in


class CityTraffic:
    """Generates the demo's event mix at random places inside the city limits."""

    def __init__(self, config: CityConfig, base: Path, seed: int = 11):
        self.rng = random.Random(seed)
        city = [z.geometry for z in load_zones(config, base) if z.layer == "city"]
        area = shapely.union_all(city)
        shapely.prepare(area)
        minx, miny, maxx, maxy = area.bounds
        self.points: list[dict[str, float]] = []
        while len(self.points) < 2000:
            lon, lat = self.rng.uniform(minx, maxx), self.rng.uniform(miny, maxy)
            if shapely.contains_xy(area, lon, lat):
                self.points.append({"lat": round(lat, 6), "lon": round(lon, 6)})

    def where(self) -> dict[str, float]:
        return self.rng.choice(self.points)

    def next(self, n: int) -> tuple[str, Event | dict[str, Any]]:
        r = self.rng.random()
        loc = self.where()
        if r < 0.45:
            return "transit", Event.new(
                "transit.vehicle_position", source_for("transit"),
                {"vehicle_id": f"bus-{n % 350}",
                 "route": str(self.rng.choice([7, 8, 40, 44, 49, 62])),
                 "speed_kmh": round(self.rng.uniform(0, 55), 1),
                 "heading": self.rng.choice([0.0, 90.0, 180.0, 270.0])},
                location=loc,
            )  # fmt: skip
        if r < 0.60:
            return "sdot", Event.new(
                "traffic.incident", source_for("sdot"),
                {"kind": self.rng.choice(["collision", "congestion", "hazard", "signal_failure"]),
                 "severity": self.rng.randint(1, 4), "lanes_blocked": self.rng.randint(0, 2)},
                location=loc,
            )  # fmt: skip
        if r < 0.70:
            utility = self.rng.choice(["water", "power", "gas"])
            dept = {"water": "spu-water", "power": "city-light", "gas": "gas-utility"}[utility]
            return dept, Event.new(
                "utility.meter_alarm", source_for(dept),
                {"meter_id": f"m-{self.rng.randint(1, 90000)}", "utility": utility,
                 "alarm": self.rng.choice(["leak", "outage", "pressure_drop"])},
                location=loc,
            )  # fmt: skip
        if r < 0.85:
            pm25 = round(self.rng.uniform(2, 80), 1)
            return "environment", Event.new(
                "environment.air_quality", source_for("environment"),
                {"sensor_id": f"aq-{n % 120}", "pm25": pm25, "aqi": int(pm25 * 2.1)},
                location=loc,
            )  # fmt: skip
        if r < 0.99:
            return "fire", Event.new(
                "safety.dispatch", source_for("fire"),
                {"incident_number": f"F{n:07d}",
                 "nature": self.rng.choice(["aid response", "fire alarm", "rescue"]),
                 "units": [f"E{self.rng.randint(2, 40)}"]},
                location=loc,
            )  # fmt: skip
        return self.malformed(loc)

    def malformed(self, loc: dict[str, float]) -> tuple[str, dict[str, Any]]:
        """What real integrations send on a bad day."""
        kind = self.rng.randrange(4)
        if kind == 0:  # payload missing a required field
            return "sdot", {
                "type": "traffic.incident",
                "data": {"kind": "collision"},
                "location": loc,
            }
        if kind == 1:  # a type nobody registered
            return "parks", {"type": "parks.sprinkler_state", "data": {"on": True}, "location": loc}
        if kind == 2:  # claims to be another department
            return "transit", {
                "type": "safety.dispatch", "department": "spd-north",
                "data": {"incident_number": "X1", "nature": "spoof"}, "location": loc,
            }  # fmt: skip
        return "environment", {  # impossible coordinates
            "type": "environment.air_quality", "data": {"sensor_id": "aq-x", "pm25": 3.0, "aqi": 6},
            "location": {"lat": 147.6, "lon": -122.3},
        }  # fmt: skip


def start_processes(
    prefix: str, config: Path, redis_url: str, log: Path, extra: list[list[str]] | None = None
) -> list[subprocess.Popen[bytes]]:
    env = dict(
        os.environ, REDIS_URL=redis_url, CITYRELAY_PREFIX=prefix, CITYRELAY_CONFIG=str(config)
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    base = [sys.executable, "-m", "workers.cli"]
    commands = [
        ["ingest", "--lanes", "emergency"],
        ["ingest", "--lanes", "routine"],
        ["worker", "--role", "emergency", "--name", f"{prefix}-emergency"],
        ["worker", "--role", "routine", "--name", f"{prefix}-routine-1"],
        ["worker", "--role", "routine", "--name", f"{prefix}-routine-2"],
        *(extra or []),  # push, mqtt-bridge (demo_connectors.py), gateway (demo_gateway.py)
    ]
    out = log.open("ab")
    return [subprocess.Popen(base + c, env=env, stdout=out, stderr=out) for c in commands]


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        p.terminate()
    for p in processes:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def run_demo(
    seconds: float, rate: float | None, config_path: Path | None = None, keep: bool = False
) -> int:
    config_path = config_path or DEMO_CONFIG
    config, base = load_city(config_path)
    standins: list[Any] = []
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        embedded = EmbeddedRedis().start()
        standins.append(embedded)
        redis_url = embedded.url
        print(f"No REDIS_URL: using an embedded Redis stand-in (fakeredis) at {redis_url}")
        # The stand-in is a Python server: it serves a modest rate, not a city's peak.
        rate = rate or 60.0
    rate = rate or 1000.0
    if not (os.environ.get("CITYRELAY_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")):
        s3 = EmbeddedS3().start()
        standins.append(s3)
        os.environ["AWS_ENDPOINT_URL"] = s3.endpoint
        # moto accepts any credentials; boto3 insists on having some.
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "cityrelay-demo")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "cityrelay-demo")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        print(f"No S3 endpoint: using moto's S3 server at {s3.endpoint}")
    prefix = f"demo{uuid.uuid4().hex[:6]}"
    keys = Keys(prefix)
    redis = Redis.from_url(redis_url)
    log = Path(tempfile.gettempdir()) / f"cityrelay-{prefix}.log"
    print(
        f"City: {config.city}, {len(config.departments)} departments, {len(config.layers)} layers"
    )
    print(f"Key prefix: {prefix}   process log: {log}")
    tmp = Path(tempfile.mkdtemp(prefix=f"cityrelay-{prefix}-"))
    connectors = ConnectorsDemo.prepare(config_path, tmp, prefix)
    gateway = GatewayDemo.prepare(redis, keys)
    extra = connectors.commands() + gateway.commands()
    processes = start_processes(prefix, connectors.config_path, redis_url, log, extra)
    try:
        wait_for_workers(redis, prefix, processes, log)
        connectors.start_sensors(rate / 10, CityTraffic(config, base, seed=5).points)
        gateway.start(rate / 10, CityTraffic(config, base, seed=9).points)
        report = publish_traffic(redis, keys, config, base, seconds, rate)
        connectors.stop_sensors()
        gateway.stop()
        report.published["transit"] += gateway.sent
        connectors.drop_csv(redis, keys, config, tmp, CityTraffic(config, base, seed=7).points)
        report.published["environment"] += connectors.sensors_sent
        report.published["sdot"] += connectors.csv.published + connectors.csv.dead_lettered
        report.embedded = any(isinstance(s, EmbeddedRedis) for s in standins)
        drained = wait_for_drain(redis, keys, report, timeout=max(30.0, seconds))
        if any(p.poll() is not None for p in processes):
            print(
                f"A process exited early; see {log}:\n" + log.read_text()[-3000:], file=sys.stderr
            )
            return 1
        print_summary(redis, keys, config, report, drained)
        connectors.summary(redis, keys, config, gateway.sent)
        archive_and_retrieve(redis, keys, config)
    finally:
        gateway.stop()
        stop_processes(processes)
        connectors.stop()
        if not keep:
            delete_city(redis, keys)
        for standin in standins:
            standin.stop()
    return 0


def wait_for_workers(
    redis: Redis, prefix: str, processes: list[subprocess.Popen[bytes]], log: Path
) -> None:
    """Publish only once every worker has loaded the city and registered with RQ."""
    from rq import Worker

    wanted = {f"{prefix}-emergency", f"{prefix}-routine-1", f"{prefix}-routine-2"}
    deadline = time.monotonic() + 120
    while not wanted <= {w.name for w in Worker.all(connection=redis)}:
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            raise RuntimeError(f"the demo's workers did not start; see {log}")
        time.sleep(0.2)


def publish_traffic(
    redis: Redis, keys: Keys, config: CityConfig, base: Path, seconds: float, rate: float
) -> DemoReport:
    traffic = CityTraffic(config, base)
    producers = {d: Producer(redis, d, keys) for d in config.department_ids}
    report = DemoReport()
    started = time.monotonic()
    total = int(seconds * rate)
    tick = 0.1
    per_tick = max(1, int(rate * tick))
    emergency_at = total // 2
    sent = 0
    with tqdm(total=total, unit="ev", desc="publishing", file=sys.stdout) as bar:
        while sent < total:
            batch: dict[str, list[Any]] = defaultdict(list)
            for _ in range(min(per_tick, total - sent)):
                if sent == emergency_at:
                    report.emergency_id = publish_emergency(producers["ems"], report)
                dept, event = traffic.next(sent)
                batch[dept].append(event)
                if isinstance(event, dict):
                    report.malformed += 1
                report.published[dept] += 1
                sent += 1
            for dept, events in batch.items():
                producers[dept].publish_many(events)
            bar.update(sum(len(v) for v in batch.values()))
            delay = started + tick * (bar.n / per_tick) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    report.seconds = time.monotonic() - started
    return report


def publish_emergency(producer: Producer, report: DemoReport) -> str:
    event = Event.new(
        "health.emergency",
        source_for("ems"),
        {"incident_number": "MCI-0001", "kind": "mass_casualty", "patients": 14,
         "description": "Structural collapse at Seattle Center, multiple injured"},
        location=SEATTLE_CENTER,
        subject="Seattle Center",
    )  # fmt: skip
    producer.publish(event)
    report.published["ems"] += 1
    return event.id


def wait_for_drain(redis: Redis, keys: Keys, report: DemoReport, timeout: float) -> bool:
    return wait_until_handled(redis, keys, sum(report.published.values()), timeout)


def latency_by_priority(redis: Redis, keys: Keys, departments: list[str]) -> dict[str, list[int]]:
    per_event: dict[str, tuple[str, int]] = {}
    for dept in departments:
        for entry_id, fields in redis.xrange(keys.inbox(dept)):
            delivered = int(entry_id.split(b"-")[0])
            ingested = int(fields[b"ing"].split(b"-")[0])
            event_id = json.loads(fields[b"e"])["id"]
            per_event[event_id] = (fields[b"pri"].decode(), delivered - ingested)
    result: dict[str, list[int]] = defaultdict(list)
    for priority, latency in per_event.values():
        result[priority].append(latency)
    return result


def _pct(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def print_summary(
    redis: Redis, keys: Keys, config: CityConfig, report: DemoReport, drained: bool
) -> None:
    stats = read_stats(redis, keys)
    published = sum(report.published.values())
    delivered_events = stats.get("delivered", 0)
    deliveries = sum(v for k, v in stats.items() if k.startswith("delivered:"))
    dead = sum(v for k, v in stats.items() if k.startswith("deadletter:"))
    print()
    print(f"=== {config.city}: {published} events in {report.seconds:.1f} s "
          f"({published / max(report.seconds, 1e-9):.0f}/s) ===")  # fmt: skip
    print(f"accepted and routed: {delivered_events}   deliveries to inboxes: {deliveries}   "
          f"dead letters: {dead}   duplicates: {stats.get('ingest_duplicates', 0)}")  # fmt: skip
    if not drained:
        print("WARNING: not everything was processed before the demo stopped waiting")
    print("\nPer department                              sent   received")
    for dept in config.departments:
        sent = report.published.get(dept.id, 0)
        got = stats.get(f"delivered:{dept.id}", 0)
        print(f"  {dept.id:22s} {dept.name[:18]:18s} {sent:7d} {got:10d}")
    print("\nLatency, ingest XADD -> inbox XADD (Redis clock, ms)")
    if report.embedded:
        print("  (on the embedded Python stand-in; real Redis is far faster: docs/performance.md)")
    for priority, values in sorted(latency_by_priority(redis, keys, config.department_ids).items()):
        print(f"  {priority:9s} events={len(values):6d}  p50={_pct(values, 0.5):4d}  "
              f"p99={_pct(values, 0.99):4d}  max={max(values):4d}")  # fmt: skip
    print("\nDead letters by reason (never dropped; `cityrelay deadletters` lists them)")
    examples: dict[str, str] = {}
    for _, fields in redis.xrange(keys.deadletter):
        examples.setdefault(fields[b"reason"].decode(), fields[b"message"].decode())
    for reason, message in sorted(examples.items()):
        print(f"  {reason:16s} x{stats.get(f'deadletter:{reason}', 0):<4d} e.g. {message[:90]}")
    explain_emergency(redis, keys, config, report.emergency_id)


def explain_emergency(redis: Redis, keys: Keys, config: CityConfig, event_id: str) -> None:
    print(f"\nOne delivery explained: emergency {event_id} (mass casualty at Seattle Center)")
    for dept in config.department_ids:
        for message in Inbox(redis, dept, keys).history(50_000):
            if message.event_id == event_id:
                via = message.via
                where = ", ".join(via["zones"]) if via["zones"] else "city-wide subscription"
                took = int(message.entry_id.split("-")[0]) - message.ingested_ms
                subs = ", ".join(via["subscriptions"])
                print(f"  -> {dept:22s} via {subs} [{where}] in {took} ms")


def archive_and_retrieve(redis: Redis, keys: Keys, config: CityConfig) -> None:
    """Move the hot tier to S3 as the scheduler would days later, then read a slice back."""
    if not config.retention:
        return
    from datetime import UTC, datetime, timedelta

    from city.retention import parse_retention
    from jobs import lake
    from jobs.archive import Archiver
    from jobs.retrieval import History, Query

    settings = lake.S3Settings.from_env()
    s3 = settings.client()
    lake.ensure_buckets(s3, settings)
    later = datetime.now(UTC) + timedelta(days=3)  # every hot window of the demo has ended
    schedule = parse_retention(config.retention)
    summary = (
        Archiver(redis, keys, s3, settings.bucket, schedule, now=lambda: later).run().summary()
    )
    print(f"\nArchive (as the scheduler would run it in 3 days) -> s3://{settings.bucket}")
    print(f"  windows {summary['windows']}, rows {summary['rows']}, Parquet objects "
          f"{summary['objects']}, trimmed from Redis {summary['trimmed']}")  # fmt: skip
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    query = Query("traffic.incident", today, today + timedelta(days=1), dept="spd-west")
    table = History(s3, settings.bucket).table(query)
    print(
        f"  history: traffic.incident today delivered to spd-west -> {table.num_rows} rows "
        "read back from the Parquet lake"
    )
