"""Partition benchmark: the relay between two real redis-servers (two shards on this host).

Throughput: `--entries` outbox entries (copies of a real outbox entry the route job wrote for a
West-precinct traffic incident, each with its own event id; two destination inboxes) wait in
shard a's outbox; one in-process `Relay` moves them into shard b, batch by batch, as
`cityrelay relay` does. Figure: entries/s from the first read to the last acknowledgement.

Latency: the real `cityrelay relay --to b` process runs while entries are appended to the outbox
at a fixed `--rate` for `--seconds` (in pipelined groups every 5 ms, as route jobs append
them). The cross-shard hop's extra latency of an entry is its inbox XADD on b minus its outbox
XADD on a (both stream ids, both servers on this host's clock, ms resolution).

    PYTHONPATH=. python bench/partition.py [--entries 50000] [--rate 2000] [--seconds 10]

Prints JSON lines; the last one holds relay_entries_per_s, hop_p50_ms, hop_p99_ms, hop_max_ms.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import yaml  # noqa: E402
from redis import Redis  # noqa: E402

from bench.pipeline import CONFIG, _exit_on_sigterm, pct  # noqa: E402
from city.config import load_city  # noqa: E402
from city.events import Event, source_for  # noqa: E402
from city.routing import Router  # noqa: E402
from jobs.context import RouteContext  # noqa: E402
from jobs.route import deliver_items  # noqa: E402
from queues.keys import RELAY_GROUP, Keys  # noqa: E402
from queues.partition import SHARD_ENV  # noqa: E402
from queues.relay import Relay  # noqa: E402
from workers.standins import LocalRedisServer  # noqa: E402

WEST = {"lat": 47.6205, "lon": -122.3493}
ON_B = ["spd-west", "traffic-management"]


def city_file(a_url: str, b_url: str) -> Path:
    doc = yaml.safe_load(CONFIG.read_text())
    for layer in doc["layers"].values():
        layer["path"] = str((CONFIG.parent / layer["path"]).resolve())
    doc["partitions"] = {
        "default": "a",
        "shards": {"a": {"url": a_url}, "b": {"url": b_url, "departments": ON_B}},
    }
    path = Path(tempfile.mkstemp(suffix=".yaml", prefix="bench-partition-")[1])
    path.write_text(yaml.safe_dump(doc))
    return path


def real_entries(ra: Redis, keys: Keys, path: Path) -> list[dict[bytes, bytes]]:
    """The outbox entries the route job writes on shard a for one incident (one per b inbox)."""
    config, base = load_city(path)
    context = RouteContext(config, Router.from_config(config, base), keys, shard="a")
    event = Event.new(
        "traffic.incident",
        source_for("sdot"),
        {"kind": "collision", "severity": 3},
        location=WEST,
        department="sdot",
    )
    ing = ra.xadd(keys.ingest("sdot"), {"e": "-"}).decode()
    deliver_items(context, ra, [{"e": event.to_wire(), "ing": ing}], chain_audit=False)
    found = [fields for _, fields in ra.xrange(keys.outbox("b"))]
    ra.delete(keys.outbox("b"))
    return found


def copies(template: list[dict[bytes, bytes]], n: int) -> list[dict[bytes, bytes]]:
    out = []
    for i in range(n):
        fields = dict(template[i % len(template)])
        event = orjson.loads(fields[b"e"])
        event["id"] = uuid.uuid4().hex
        fields[b"e"] = orjson.dumps(event)
        out.append(fields)
    return out


def fill(ra: Redis, keys: Keys, entries: list[dict[bytes, bytes]]) -> dict[str, int]:
    """Append to a's outbox (pipelined); returns event id -> outbox entry time (ms)."""
    appended: dict[str, int] = {}
    for start in range(0, len(entries), 1000):
        chunk = entries[start : start + 1000]
        pipe = ra.pipeline(transaction=False)
        for fields in chunk:
            pipe.xadd(keys.outbox("b"), fields)  # type: ignore[arg-type]
        for fields, eid in zip(chunk, pipe.execute(), strict=True):
            appended[orjson.loads(fields[b"e"])["id"]] = int(eid.split(b"-")[0])
    return appended


def throughput(ra: Redis, rb: Redis, keys: Keys, path: Path, n: int) -> dict[str, float]:
    template = real_entries(ra, keys, path)
    fill(ra, keys, copies(template, n))
    config, _ = load_city(path)
    relay = Relay.for_city(config, keys, ra, rb, "a", "b")
    relay.ensure_group()
    started = time.perf_counter()
    moved = 0
    while step := relay.step(None):
        moved += step["relayed"]
    elapsed = time.perf_counter() - started
    assert moved == n and relay.backlog() == {"length": 0, "pending": 0}
    return {
        "relay_entries": n,
        "relay_seconds": round(elapsed, 3),
        "relay_entries_per_s": round(n / elapsed, 1),
        "entry_bytes": sum(len(k) + len(v) for k, v in template[0].items()),
        "batch": relay.batch,
    }


def latency(
    ra: Redis, rb: Redis, keys: Keys, path: Path, a_url: str, rate: float, seconds: float
) -> dict[str, float | None]:
    template = real_entries(ra, keys, path)
    env = dict(os.environ, REDIS_URL=a_url, PYTHONPATH=str(ROOT), **{SHARD_ENV: "a"})
    base = [sys.executable, "-m", "workers.cli", "--prefix", keys.prefix, "--config", str(path)]
    relay = subprocess.Popen([*base, "relay", "--to", "b"], env=env, cwd=ROOT)
    try:
        fill(ra, keys, copies(template, 1))  # warm-up: wait until the relay moved it
        while rb.xlen(keys.inbox(ON_B[0])) + rb.xlen(keys.inbox(ON_B[1])) < 1:
            time.sleep(0.05)
        sent = 0
        appended: dict[str, int] = {}
        per_tick = max(1, round(rate * 0.005))
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            appended.update(fill(ra, keys, copies(template, per_tick)))
            sent += per_tick
            delay = started + sent / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        send_s = time.perf_counter() - started
        deadline = time.monotonic() + 60
        outbox = keys.outbox("b")
        while ra.xlen(outbox) or ra.xpending(outbox, RELAY_GROUP)["pending"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the relay did not drain the outbox")
            time.sleep(0.05)
    finally:
        relay.terminate()
        relay.wait(timeout=20)
    # Inbox entry id on b minus the outbox id on a of the same event (matched by event id).
    hops: list[float] = []
    for dept in ON_B:
        for eid, fields in rb.xrange(keys.inbox(dept)):
            outbox_ms = appended.get(orjson.loads(fields[b"e"])["id"])
            if outbox_ms is not None:
                hops.append(int(eid.split(b"-")[0]) - outbox_ms)
    assert len(hops) == sent, f"{sent} appended, {len(hops)} relayed"
    return {
        "hop_entries": len(hops),
        "rate_per_s": round(sent / send_s, 1),
        "hop_p50_ms": pct(hops, 0.50),
        "hop_p99_ms": pct(hops, 0.99),
        "hop_max_ms": max(hops) if hops else None,
    }


def main() -> None:
    _exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=50_000, help="throughput phase entries")
    parser.add_argument("--rate", type=float, default=2000, help="latency phase entries/s")
    parser.add_argument("--seconds", type=float, default=10, help="latency phase length")
    args = parser.parse_args()
    if not LocalRedisServer.available():
        raise SystemExit("bench/partition.py starts two redis-servers: install redis-server")
    a, b = LocalRedisServer().start(), LocalRedisServer().start()
    ra, rb = Redis.from_url(a.url), Redis.from_url(b.url)
    path = city_file(a.url, b.url)
    try:
        first = throughput(ra, rb, Keys(f"bench{uuid.uuid4().hex[:8]}"), path, args.entries)
        print(json.dumps(first), flush=True)
        second = latency(
            ra, rb, Keys(f"bench{uuid.uuid4().hex[:8]}"), path, a.url, args.rate, args.seconds
        )
        print(json.dumps(second), flush=True)
        load = os.getloadavg()[0]
        print(json.dumps({**first, **second, "load_average_1m": round(load, 2)}))
    finally:
        a.stop()
        b.stop()
        path.unlink()


if __name__ == "__main__":
    main()
