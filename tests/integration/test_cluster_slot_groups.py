"""The Seattle city split into two slot groups of one real 3+3 Redis Cluster (``partitions:``
with ``prefix:``), each group running its own Procfile processes (ingest, the emergency /
routine / escalation workers, the cron scheduler and the relay) under its own prefix, as
``cityrelay`` subprocesses. Group b holds fire, the West precinct and emergency management;
the rest is on a, so deliveries cross both ways through the outboxes and the relays. Under
steady load with producer retries: 0 lost, 0 duplicated, 0 wrong per event id and inbox (each
inbox read at its home group only), some deliveries relayed in each direction, and `cityrelay
status` showing every node and both groups with their outboxes empty."""

from __future__ import annotations

import json
import random
import subprocess
import time
import uuid
from collections import Counter

import pytest

from city.config import load_city
from queues.connect import cluster_client_from_url
from queues.keys import Keys
from queues.metrics import handled, read_stats
from queues.partition import group_keys, outbox_backlog
from queues.streams import Producer
from tests.conftest import ROOT, write_city
from tests.integration.test_processes import Processes, _wire, random_event
from workers.standin_cluster import LocalRedisCluster

ROUNDS, PER_ROUND, ROUND_GAP_S = 10, 60, 0.2  # ~2 s of steady load, 600 events
B_DEPARTMENTS = ["fire", "spd-west", "emergency-management"]
ROLES = ("emergency", "routine", "escalation")


def _settled(redis, groups: dict[str, Keys], published: int) -> bool:  # type: ignore[no-untyped-def]
    """Every event handled in the group it was routed in, and no outbox entry in flight."""
    done = sum(handled(read_stats(redis, keys)) for keys in groups.values())
    if done < published:
        return False
    backlogs = [
        outbox_backlog(redis, keys, dest)
        for name, keys in groups.items()
        for dest in groups
        if dest != name
    ]
    return all(b == {"length": 0, "pending": 0} for b in backlogs)


@pytest.mark.integration
def test_two_slot_groups_deliver_across_groups_losing_duplicating_and_misrouting_nothing(
    cluster: LocalRedisCluster, seattle_router, tmp_path
) -> None:
    name = "t" + uuid.uuid4().hex[:10]
    partitions = {
        "default": "a",
        "shards": {
            "a": {"prefix": f"{{{name}-a}}"},
            "b": {"prefix": f"{{{name}-b}}", "departments": B_DEPARTMENTS},
        },
    }
    path = write_city(tmp_path, partitions=partitions, claim_idle_ms=400)
    config, _ = load_city(path)
    assert config.partitions is not None
    groups = group_keys(config.partitions)
    redis = cluster_client_from_url(cluster.url, socket_timeout=10)
    assert redis.keyslot(groups["a"].stats) != redis.keyslot(groups["b"].stats)
    processes = {g: Processes(cluster.url, keys.prefix, path) for g, keys in groups.items()}
    rng = random.Random(16)
    expected: dict[str, set[str]] = {}
    published = 0
    try:
        for group, procs in processes.items():  # one Procfile per group, under its prefix
            procs.start("ingest", "ingest")
            for role in ROLES:
                procs.start(role, "worker", "--role", role, "--name", f"{name}-{group}-{role}")
            procs.start("scheduler", "scheduler")
            procs.start("relay", "relay")
        for round_ in range(ROUNDS):
            batches: dict[str, list[object]] = {}
            for i in range(PER_ROUND):
                dept, event = random_event(rng, round_ * PER_ROUND + i)
                batches.setdefault(dept, []).append(event)
                expected[event.id] = {d.dept for d in seattle_router.route(_wire(event, dept))}
                published += 1
                if i % 20 == 0:  # a producer retry: the same event again
                    batches[dept].append(event)
                    published += 1
            for dept, events in batches.items():  # each producer writes to its home group
                home = groups[config.partitions.home(dept)]
                Producer(redis, dept, home).publish_many(events)  # type: ignore[arg-type]
            time.sleep(ROUND_GAP_S)  # pacing the load, not waiting for a result
        deadline = time.monotonic() + 120
        while not _settled(redis, groups, published) and time.monotonic() < deadline:
            time.sleep(0.2)
        stats = {g: read_stats(redis, keys) for g, keys in groups.items()}
        assert _settled(redis, groups, published), stats
        crashed = {
            f"{g}/{n}": p.returncode
            for g, procs in processes.items()
            for n, p in procs.running.items()
            if p.poll() is not None
        }
        assert not crashed, f"exited early: {crashed}"
        status = subprocess.run(
            [*processes["a"].base, "status", "--json"],
            env=processes["a"].env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        for procs in processes.values():
            procs.stop_all()

    # Deliveries crossed in both directions, through the relays, and nothing was refused.
    assert stats["a"].get("relayed:relay:b", 0) > 0, stats["a"]
    assert stats["b"].get("relayed:relay:a", 0) > 0, stats["b"]
    got: Counter[tuple[str, str]] = Counter()
    for dept in config.department_ids:
        home = config.partitions.home(dept)
        for group, keys in groups.items():
            for _, fields in redis.xrange(keys.inbox(dept)):
                # An entry in another group's inbox for this department is misplaced: wrong.
                where = dept if group == home else f"{dept}@{group}"
                got[(json.loads(fields[b"e"])["id"], where)] += 1
    wanted = {(eid, dept) for eid, depts in expected.items() for dept in depts}
    crossing = {(e, d) for e, d in wanted if d in B_DEPARTMENTS}
    assert 0 < len(crossing) < len(wanted)  # both groups' inboxes are fed
    lost = wanted - set(got)
    duplicated = {pair for pair, n in got.items() if n > 1}
    wrong = set(got) - wanted
    assert (len(lost), len(duplicated), len(wrong)) == (0, 0, 0), (lost, duplicated, wrong)
    for keys in groups.values():
        assert not redis.xrange(keys.deadletter)

    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)["cluster"]
    nodes = report["nodes"]
    assert Counter(n["role"] for n in nodes) == {"primary": 3, "replica": 3}
    assert sum(n["slot_count"] for n in nodes if n["role"] == "primary") == 16384
    primaries = {n["address"] for n in nodes if n["role"] == "primary"}
    assert {n["primary"] for n in nodes if n["role"] == "replica"} == primaries
    assert set(report["groups"]) == {"a", "b"}
    for group, figures in report["groups"].items():
        assert figures["prefix"] == groups[group].prefix
        assert figures["slot"] == redis.keyslot(groups[group].stats)
        assert figures["primary"] in primaries
        assert figures["ingest"] == {"lag": 0, "pending": 0}
        assert all(o == {"length": 0, "pending": 0} for o in figures["outboxes"].values())
    assert sorted(report["groups"]["b"]["departments"]) == sorted(B_DEPARTMENTS)
