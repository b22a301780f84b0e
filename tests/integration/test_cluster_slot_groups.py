"""The Seattle city split into two slot groups of one real 3+3 Redis Cluster (``partitions:``
with ``prefix:``), each group running its own Procfile processes (ingest, the emergency /
routine / escalation workers, the cron scheduler and the relay) under its own prefix, as
``cityrelay`` subprocesses. Group b holds fire, the West precinct and emergency management;
the rest is on a, so deliveries cross both ways through the outboxes and the relays. Under
steady load with producer retries: 0 lost, 0 duplicated, 0 wrong per event id and inbox (each
inbox read at its home group only), some deliveries relayed in each direction, emergencies
routed in a tracked for b's recipients in b (the relay's handover, scheduling on b's RQ keys),
the events a rule derives from them crossing into b's ingest and back, and `cityrelay status`
showing every node and both groups with their outboxes empty."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from city.config import CityConfig, PartitionsConfig, load_city
from city.events import Event, source_for
from queues.connect import cluster_client_from_url
from queues.keys import Keys
from queues.metrics import handled, read_stats
from queues.partition import group_keys
from queues.relay import outbox_backlog
from queues.streams import Producer
from tests.conftest import ROOT, write_city
from tests.integration.test_cluster_processes import (
    inbox_pairs,
    lost_duplicated_wrong,
    publish_steady_load,
    start_procfile,
)
from tests.integration.test_processes import WEST, Processes, _wire
from workers.standin_cluster import LocalRedisCluster

B_DEPARTMENTS = ["fire", "spd-west", "emergency-management"]
EMERGENCIES = 5  # from ems (group a) to, among others, fire and emergency management (b)


def _settled(redis: RedisCluster, groups: dict[str, Keys], published: int) -> bool:
    """Every event handled in the group it was routed in, and no outbox entry in flight."""
    done = sum(handled(read_stats(redis, keys)) for keys in groups.values())  # type: ignore[arg-type]
    if done < published:
        return False
    backlogs = [
        outbox_backlog(redis, keys, dest)  # type: ignore[arg-type]
        for name, keys in groups.items()
        for dest in groups
        if dest != name
    ]
    return all(b == {"length": 0, "pending": 0} for b in backlogs)


def two_group_city(
    tmp_path: Path,
) -> tuple[str, Path, CityConfig, PartitionsConfig, dict[str, Keys]]:
    """A Seattle config in two slot groups, a (the default) and b (`B_DEPARTMENTS`), under a
    fresh name: (the name, the config file, the config, its partitions, each group's keys)."""
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
    parts = config.partitions
    assert parts is not None
    groups = group_keys(parts)
    return name, path, config, parts, groups


@pytest.mark.integration
def test_two_slot_groups_deliver_across_groups_losing_duplicating_and_misrouting_nothing(
    cluster: LocalRedisCluster, seattle_router, tmp_path
) -> None:
    name, path, config, parts, groups = two_group_city(tmp_path)
    redis = cluster_client_from_url(cluster.url, socket_timeout=10)
    assert redis.keyslot(groups["a"].stats) != redis.keyslot(groups["b"].stats)
    processes = {g: Processes(cluster.url, keys.prefix, path) for g, keys in groups.items()}
    try:
        for group, procs in processes.items():  # one Procfile per group, under its prefix
            start_procfile(procs, f"{name}-{group}")
        expected, published = publish_steady_load(
            redis, seattle_router, lambda dept: groups[parts.home(dept)]
        )
        mcis = [
            Event.new(
                "health.emergency",
                source_for("ems"),
                {"incident_number": f"MCI-{i}", "kind": "mass_casualty", "patients": 4},
                location=WEST,
            )
            for i in range(EMERGENCIES)
        ]
        for mci in mcis:
            wire = _wire(mci, "ems")
            expected[mci.id] = {d.dept for d in seattle_router.route(wire)}
            assert {"fire", "emergency-management"} <= expected[mci.id]
            # The mci-response rule derives two events issued by emergency management (b):
            # they travel a -> b's ingest stream, are routed in b, and reach transit (a) and
            # spd-west (b). Each is handled (routed) once, like a published event.
            for derived in seattle_router.rules.derive(wire).events:
                expected[derived["id"]] = {d.dept for d in seattle_router.route(derived)}
                published += 1
        Producer(redis, "ems", groups["a"]).publish_many(mcis)  # type: ignore[arg-type]
        published += EMERGENCIES
        deadline = time.monotonic() + 120
        while not _settled(redis, groups, published) and time.monotonic() < deadline:
            time.sleep(0.2)  # polling for the end of the run
        stats = {g: read_stats(redis, keys) for g, keys in groups.items()}  # type: ignore[arg-type]
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

    # Deliveries crossed in both directions, through the relays.
    assert stats["a"].get("relayed:relay:b", 0) > 0, stats["a"]
    assert stats["b"].get("relayed:relay:a", 0) > 0, stats["b"]
    got: Counter[tuple[str, str]] = Counter()
    for group, keys in groups.items():
        for (event_id, dept), n in inbox_pairs(redis, keys, config.department_ids).items():
            # An entry in another group's inbox for this department is misplaced: wrong.
            got[(event_id, dept if parts.home(dept) == group else f"{dept}@{group}")] += n
    lost, duplicated, wrong = lost_duplicated_wrong(got, expected)
    assert (len(lost), len(duplicated), len(wrong)) == (0, 0, 0), (lost, duplicated, wrong)
    crossing = sum(1 for _, dept in got if dept in B_DEPARTMENTS)
    assert 0 < crossing < len(got)  # both groups' inboxes are fed
    for keys in groups.values():
        assert not redis.xrange(keys.deadletter)
    # The emergencies relayed into b are tracked there (deadline, escalation), not on a.
    for mci in mcis:
        for dept in ("fire", "emergency-management"):  # both with an escalation plan, on b
            assert redis.hexists(groups["b"].emergency(mci.id), f"{dept}|deadline")
            assert not redis.hexists(groups["a"].emergency(mci.id), f"{dept}|deadline")

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
