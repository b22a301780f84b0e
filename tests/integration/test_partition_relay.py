"""Two real redis-servers as two shards; the relay a real `cityrelay relay` process, killed with
SIGKILL mid-stream and restarted, four times: every cross-shard delivery arrives exactly
once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from redis import Redis
from redis.exceptions import NoPermissionError

from city.config import load_city
from city.events import Event, source_for
from jobs.context import RouteContext
from jobs.route import deliver_items
from queues.inbox import Inbox
from queues.keys import RELAY_GROUP, Keys
from queues.partition import SHARD_ENV
from queues.streams import Producer
from tests.conftest import ROOT, require_redis_server, write_city
from tests.pipeline_harness import Harness
from workers.relay import EmergencyHandover
from workers.standins import LocalRedisServer

pytestmark = pytest.mark.integration
WEST = {"lat": 47.6205, "lon": -122.3493}  # Seattle Center: West precinct
ON_B = ["spd-west", "traffic-management"]


@pytest.fixture
def shards() -> Iterator[tuple[LocalRedisServer, LocalRedisServer]]:
    require_redis_server("this test runs two shards of its own")
    a, b = LocalRedisServer().start(), LocalRedisServer().start()
    yield a, b
    a.stop()
    b.stop()


def partitioned_city(tmp_path: Path, a: LocalRedisServer, b: LocalRedisServer) -> Path:
    path = write_city(tmp_path, claim_idle_ms=300)
    doc = yaml.safe_load(path.read_text())
    doc["partitions"] = {
        "default": "a",
        "relay_batch": 25,  # small batches: a kill lands mid-stream, between write and ack
        "shards": {"a": {"url": a.url}, "b": {"url_env": "SHARD_B_URL", "departments": ON_B}},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def start_relay(
    config: Path, keys: Keys, a: LocalRedisServer, b: LocalRedisServer
) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ, REDIS_URL=a.url, SHARD_B_URL=b.url, PYTHONPATH=str(ROOT), **{SHARD_ENV: "a"}
    )
    args = ["--prefix", keys.prefix, "--config", str(config), "relay"]  # to every other shard
    args += ["--block-ms", "100"]  # the default consumer name: relay-a-b, stable over restarts
    return subprocess.Popen([sys.executable, "-m", "workers.cli", *args], env=env, cwd=ROOT)


def test_relay_killed_mid_stream_loses_and_duplicates_nothing(
    shards, keys, tmp_path, monkeypatch, seattle_router
):
    a, b = shards
    path = partitioned_city(tmp_path, a, b)
    config, base = load_city(path)
    monkeypatch.setenv(SHARD_ENV, "a")
    ra, rb = Redis.from_url(a.url), Redis.from_url(b.url)
    harness = Harness(ra, keys, config, base, seattle_router)  # partitions change no routing
    rng = random.Random(8)
    published: list[str] = []
    relay = start_relay(path, keys, a, b)
    outbox = keys.outbox("b")
    left_at_kill: list[int] = []
    caught_done = 0  # rounds the relay had finished when frozen: no kill, another round
    try:
        while True:
            events = [
                Event.new(
                    "traffic.incident",
                    source_for("sdot"),
                    {"kind": "collision", "severity": 2},
                    location=WEST,
                )
                for _ in range(250)
            ]
            Producer(ra, "sdot", keys).publish_many(events)
            published += [e.id for e in events]
            relay.send_signal(signal.SIGSTOP)  # the whole round waits in the outbox...
            harness.run()  # routed on a: spd-west and traffic-management go to a's outbox for b
            relay.send_signal(signal.SIGCONT)  # ...so the kill below lands mid-stream
            if len(left_at_kill) == 4:
                break  # the last relay started moves the last round, then stops on SIGTERM
            # Kill the relay while it is moving this round's entries, then start it again.
            deadline = time.monotonic() + 20
            while rb.xlen(keys.inbox("spd-west")) < len(published) - 225:
                assert time.monotonic() < deadline, "the relay made no progress"
                time.sleep(0.0005)
            time.sleep(rng.uniform(0, 0.002) if left_at_kill else 0)  # the first kill: at once
            # Freeze it where it is and look: mid-stream is then a fact, not a likely timing
            # (on a loaded machine this process can lose the CPU until the round is over).
            relay.send_signal(signal.SIGSTOP)
            left = ra.xlen(outbox)
            if not left:
                caught_done += 1
                assert caught_done < 20, "the relay finished every round before the kill"
                relay.send_signal(signal.SIGCONT)
                continue
            relay.send_signal(signal.SIGKILL)
            relay.wait()
            left_at_kill.append(left)
            relay = start_relay(path, keys, a, b)
        deadline = time.monotonic() + 30
        while ra.xlen(outbox) or ra.xpending(outbox, RELAY_GROUP)["pending"]:
            assert time.monotonic() < deadline, "the outbox was not drained"
            time.sleep(0.05)
    finally:
        relay.send_signal(signal.SIGCONT)
        relay.terminate()
        relay.wait(timeout=20)
    assert relay.returncode == 0  # SIGTERM: a clean stop between two batches
    assert len(left_at_kill) == 4 and min(left_at_kill) > 0  # each killed mid-stream
    for dept in ON_B:
        counts = Counter(m.event_id for m in Inbox(rb, dept, keys).history(100_000))
        assert set(counts) == set(published), f"{dept}: lost {len(set(published) - set(counts))}"
        assert max(counts.values()) == 1, f"{dept}: delivered twice"
        assert ra.xlen(keys.inbox(dept)) == 0
    stats = {k.decode(): int(v) for k, v in ra.hgetall(keys.stats).items()}
    # Each entry is acknowledged once, in the MULTI that counts it as written now (relayed) or
    # as written before a kill and absorbed by its marker (redelivered).
    assert stats["relayed:relay:b"] + stats.get("redelivered:relay:b", 0) == 2 * len(published)


def test_the_derived_acl_users_can_route_into_the_outbox_and_relay_it(
    shards, keys, tmp_path, seattle_router
):
    """With `cityrelay acl apply` on both shards, the router user writes the outbox and the
    relay user moves it, and the relay user can touch nothing else."""
    from queues import acl
    from queues.relay import Relay

    a, b = shards
    path = partitioned_city(tmp_path, a, b)
    config, base = load_city(path)
    passwords: dict[str, str] = {}
    for server in shards:
        passwords, _ = acl.apply(Redis.from_url(server.url), keys, config.department_ids, passwords)

    def login(server: LocalRedisServer, role: str) -> Redis:
        user = keys.acl_worker_user(role)
        return Redis.from_url(server.url, username=user, password=passwords[user])

    router_a = login(a, "router")
    context = RouteContext(config, seattle_router, keys, shard="a")
    event = Event.new(
        "traffic.incident",
        source_for("sdot"),
        {"kind": "collision", "severity": 2},
        location=WEST,
        department="sdot",
    )
    fire = Event.new(
        "safety.dispatch",
        source_for("fire"),
        {"incident_number": "F-1", "nature": "structure fire"},
        location=WEST,
        department="fire",
        priority="emergency",
    )
    items = [
        {"e": e.to_wire(), "ing": Redis.from_url(a.url).xadd(keys.ingest("x"), {"e": "-"}).decode()}
        for e in (event, fire)
    ]
    assert deliver_items(context, router_a, items)["delivered"] == 2
    relay_b = login(b, "relay")
    handover = EmergencyHandover.for_city(config, base, keys, relay_b)
    relay = Relay.for_city(config, keys, login(a, "relay"), relay_b, "a", "b", on_written=handover)
    relay.ensure_group()
    assert relay.step(None)["relayed"] >= 3
    history = Inbox(Redis.from_url(b.url), "spd-west", keys).history()
    assert sorted(m.event_id for m in history) == sorted([event.id, fire.id])
    # The emergency is tracked on b for spd-west, with its escalation check scheduled there.
    assert Redis.from_url(b.url).hexists(keys.emergency(fire.id), "spd-west|delivered")
    with pytest.raises(NoPermissionError):
        login(a, "relay").get(keys.grants_version)


def test_drain_moves_what_waits_including_a_dead_relays_batch(
    shards, keys, tmp_path, monkeypatch, capsys
):
    import json

    from workers import cli

    a, b = shards
    path = partitioned_city(tmp_path, a, b)
    monkeypatch.setenv("SHARD_B_URL", b.url)
    ra, rb = Redis.from_url(a.url), Redis.from_url(b.url)
    outbox = keys.outbox("b")
    ra.xgroup_create(outbox, RELAY_GROUP, id="0", mkstream=True)
    for n in range(30):
        ra.xadd(outbox, {"to": keys.inbox("spd-west"), "e": json.dumps({"id": f"e{n}"})})
    ra.xreadgroup(RELAY_GROUP, "relay-dead", {outbox: ">"}, count=10)  # read, then died
    args = ["--redis-url", a.url, "--prefix", keys.prefix, "--config", str(path)]
    assert cli.main([*args, "relay", "--from", "a", "--drain"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"outbox": outbox, "relayed": 30, "length": 0, "pending": 0}
    ids = [json.loads(f[b"e"])["id"] for _, f in rb.xrange(keys.inbox("spd-west"))]
    assert sorted(ids) == sorted(f"e{n}" for n in range(30))
