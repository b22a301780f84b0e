"""The Procfile's processes on a real 3+3 Redis Cluster, one slot group (prefix ``{name}``):
ingest, the emergency / routine / escalation workers (each with RQ's scheduler child), the cron
scheduler and the relay, started as ``cityrelay`` subprocesses with ``REDIS_URL=redis+cluster://``
and nothing else cluster-specific (the command sets ``RQ_KEY_PREFIX`` itself). Seattle events
under steady load, with producer retries, reach exactly the inboxes the router names: 0 lost,
0 duplicated, 0 wrong, counted per event id and inbox as bench/chaos.py counts.

The helpers (`start_pipeline`, `Load`, `tally`) serve tests/integration/test_cluster_reshard.py
too.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.cluster import RedisCluster

from city.events import Event, source_for
from city.routing import Router
from queues.connect import cluster_client_from_url
from queues.keys import Keys
from queues.streams import Producer
from tests.conftest import write_city
from tests.integration.test_processes import Processes, _wait_until_handled, _wire, random_event
from workers.standin_cluster import LocalRedisCluster

ROUNDS, PER_ROUND, ROUND_GAP_S = 10, 60, 0.2  # ~2 s of steady load, 600 events
ROLES = ("emergency", "routine", "escalation")


def start_procfile(processes: Processes, name: str) -> None:
    """The Procfile's processes of one slot group (ingest, the three worker roles, the cron
    scheduler, the relay); `name` makes the worker names unique on the cluster."""
    processes.start("ingest", "ingest")
    for role in ROLES:
        processes.start(role, "worker", "--role", role, "--name", f"{name}-{role}")
    processes.start("scheduler", "scheduler")
    processes.start("relay", "relay")


def publish_steady_load(
    redis: RedisCluster,
    router: Router,
    keys_of: Callable[[str], Keys],
    seed: int = 16,
    client_of: Callable[[str], RedisCluster] | None = None,
) -> tuple[dict[str, set[str]], int]:
    """ROUNDS paced rounds of random Seattle events, every 20th published twice (a producer
    retry), each by its department under `keys_of(dept)` (on `client_of(dept)`, say logged in
    as the department, else on `redis`). Returns the recipients the router names per event id,
    and the number of publishes."""
    rng = random.Random(seed)
    expected: dict[str, set[str]] = {}
    published = 0
    for round_ in range(ROUNDS):
        batches: dict[str, list[object]] = {}
        for i in range(PER_ROUND):
            dept, event = random_event(rng, round_ * PER_ROUND + i)
            batches.setdefault(dept, []).append(event)
            expected[event.id] = {d.dept for d in router.route(_wire(event, dept))}
            published += 1
            if i % 20 == 0:  # a producer retry: the same event again
                batches[dept].append(event)
                published += 1
        for dept, events in batches.items():
            client = redis if client_of is None else client_of(dept)
            Producer(client, dept, keys_of(dept)).publish_many(events)  # type: ignore[arg-type]
        time.sleep(ROUND_GAP_S)  # pacing the load, not waiting for a result
    return expected, published


def lost_duplicated_wrong(
    got: Counter[tuple[str, str]], expected: dict[str, set[str]]
) -> tuple[set[tuple[str, str]], ...]:
    """Counted per (event id, inbox) as bench/chaos.py counts: pairs the router named and no
    inbox holds, pairs held more than once, pairs held that the router did not name."""
    wanted = {(eid, dept) for eid, depts in expected.items() for dept in depts}
    assert len(wanted) > len(expected)  # the Seattle load fans out to several inboxes
    lost = wanted - set(got)
    duplicated = {pair for pair, n in got.items() if n > 1}
    return lost, duplicated, set(got) - wanted


def inbox_pairs(redis: RedisCluster, keys: Keys, depts: Iterable[str]) -> Counter[tuple[str, str]]:
    """(event id, department) of every entry in these departments' inboxes under `keys`."""
    got: Counter[tuple[str, str]] = Counter()
    for dept in depts:
        for _, fields in redis.xrange(keys.inbox(dept)):
            got[(json.loads(fields[b"e"])["id"], dept)] += 1
    return got


@dataclass
class Load:
    """Seattle events published in rounds, a producer retry (the same event again) every 20th,
    and one emergency per round (its own lane; `emergencies`: their ids); `expected` is each
    event id's inboxes as the router names them."""

    redis: Any
    keys: Keys
    router: Any
    rng: random.Random
    expected: dict[str, set[str]] = field(default_factory=dict)
    published: int = 0
    rounds: int = 0
    emergencies: list[str] = field(default_factory=list)

    def publish_round(self, per_round: int = PER_ROUND) -> None:
        batches: dict[str, list[object]] = {}
        for i in range(per_round):
            dept, event = random_event(self.rng, self.rounds * per_round + i)
            batches.setdefault(dept, []).append(event)
            self.expected[event.id] = {d.dept for d in self.router.route(_wire(event, dept))}
            self.published += 1
            if i % 20 == 0:  # a producer retry: the same event again
                batches[dept].append(event)
                self.published += 1
        where = {"lat": self.rng.uniform(47.55, 47.70), "lon": self.rng.uniform(-122.38, -122.28)}
        data = {"incident_number": f"E-{self.rounds}", "kind": "cardiac"}
        emergency = Event.new("health.emergency", source_for("ems"), data, location=where)
        batches.setdefault("ems", []).append(emergency)
        self.expected[emergency.id] = {d.dept for d in self.router.route(_wire(emergency, "ems"))}
        self.emergencies.append(emergency.id)
        self.published += 1
        for dept, events in batches.items():
            Producer(self.redis, dept, self.keys).publish_many(events)  # type: ignore[arg-type]
        self.rounds += 1


def untracked(redis: Any, keys: Keys, emergencies: list[str]) -> list[str]:
    """Emergencies with no tracking record (their acknowledgement deadlines, jobs/emergency/)."""
    return [eid for eid in emergencies if not redis.exists(keys.emergency(eid))]


def tally(
    redis: Any, keys: Keys, router: Any, expected: dict[str, set[str]]
) -> tuple[set[tuple[str, str]], ...]:
    """(lost, duplicated, wrong) (event id, inbox) pairs over every department of the city."""
    return lost_duplicated_wrong(inbox_pairs(redis, keys, router.config.department_ids), expected)


@pytest.mark.integration
def test_the_procfile_processes_on_a_cluster_lose_duplicate_and_misroute_nothing(
    cluster: LocalRedisCluster, seattle_router, tmp_path
) -> None:
    keys = Keys("{t" + uuid.uuid4().hex[:10] + "}")
    redis = cluster_client_from_url(cluster.url, socket_timeout=10)
    processes = Processes(cluster.url, keys.prefix, write_city(tmp_path, claim_idle_ms=400))
    load = Load(redis, keys, seattle_router, random.Random(16))
    try:
        start_procfile(processes, keys.name)
        for _ in range(ROUNDS):
            load.publish_round()
            time.sleep(ROUND_GAP_S)  # pacing the load, not waiting for a result
        _wait_until_handled(redis, keys, load.published, timeout=90)
        # Each worker's RQ scheduler child (retry intervals, `enqueue_at`) runs on the cluster:
        # the one holding the locks has registered itself in the group's slot.
        assert list(redis.scan_iter(match=f"{{{keys.name}}}:rq:scheduler:*"))
        crashed = {n: p.returncode for n, p in processes.running.items() if p.poll() is not None}
        assert not crashed, f"exited early: {crashed}"
    finally:
        processes.stop_all()
    lost, duplicated, wrong = tally(redis, keys, seattle_router, load.expected)
    assert (len(lost), len(duplicated), len(wrong)) == (0, 0, 0), (lost, duplicated, wrong)
    assert not redis.xrange(keys.deadletter)
    assert not untracked(redis, keys, load.emergencies)
