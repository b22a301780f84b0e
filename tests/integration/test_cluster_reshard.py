"""A resharding under load: the slot of a busy city's slot group (prefix ``{name}``) moved to
another primary with ``redis-cli --cluster reshard`` while the Procfile's processes run on a
real 3+3 cluster (tests/integration/test_cluster_processes.py's helpers). Nothing is restarted:
the processes ride out the migration by themselves (queues/cluster_migration.py), and every
event still reaches exactly the inboxes the router names: 0 lost, 0 duplicated, 0 wrong, per
event id and inbox.

While the slot migrates, its keys are split between the two primaries (MIGRATE moves them in
batches, each key - a whole stream - atomically), and a command naming several keys of it gets
``TRYAGAIN`` (some here, some there; or one not created yet) or ``ASK`` (none here); once the
slot is handed over, ``MOVED``. The test asserts the processes met TRYAGAIN (INFO errorstats of
the two primaries), so it cannot pass on a migration that happened while nothing ran.
"""

from __future__ import annotations

import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from redis.crc import key_slot

from queues.connect import cluster_client_from_url
from queues.keys import Keys
from queues.metrics import handled, read_stats, wait_until_handled
from tests.conftest import write_city
from tests.integration.test_cluster_processes import Load, start_procfile, tally, untracked
from tests.integration.test_processes import Processes
from workers.standin_cluster import LocalRedisCluster, tag_in_slot

ROUNDS_BEFORE, ROUNDS_AFTER, ROUND_GAP_S = 5, 5, 0.2
# The dedupe markers of a day of earlier events (what makes a busy group's slot hold many keys),
# moved one key per MIGRATE (redis-cli's --cluster-pipeline): a migration of a few seconds
# instead of a few tenths, so the load runs into it for many rounds.
EARLIER_MARKERS, MIGRATE_BATCH = 4000, 1
REFUSALS = ("ASK", "TRYAGAIN", "MOVED")


def assert_running(processes: Processes) -> None:
    crashed = {n: p.returncode for n, p in processes.running.items() if p.poll() is not None}
    assert not crashed, f"exited early: {crashed}"


def refusals(cluster: LocalRedisCluster, ports: list[int]) -> dict[str, int]:
    """ASK / TRYAGAIN / MOVED replies the nodes have given so far (INFO errorstats)."""
    counts = dict.fromkeys(REFUSALS, 0)
    for port in ports:
        with cluster.node(port) as client:
            stats = client.info("errorstats")
        for name in REFUSALS:
            counts[name] += int(stats.get(f"errorstat_{name}", {}).get("count", 0))
    return counts


@pytest.mark.integration
def test_resharding_a_busy_slot_group_under_load_loses_duplicates_and_misroutes_nothing(
    cluster: LocalRedisCluster, seattle_router, tmp_path
) -> None:
    source, destination = cluster.primary_ports()[:2]
    slot = cluster.lowest_slot(source)  # the slot `redis-cli --cluster reshard` moves first
    keys = Keys("{" + tag_in_slot(slot, "t" + uuid.uuid4().hex[:6]) + "}")
    assert key_slot(keys.inbox("fire").encode()) == slot
    redis = cluster_client_from_url(cluster.url, socket_timeout=10)
    processes = Processes(cluster.url, keys.prefix, write_city(tmp_path, claim_idle_ms=400))
    load = Load(redis, keys, seattle_router, random.Random(1616))
    try:
        start_procfile(processes, keys.name)
        marking = redis.pipeline(transaction=False)
        for n in range(EARLIER_MARKERS):
            marking.set(keys.seen("fire", f"earlier-{n}"), "delivered", ex=86_400)
        marking.execute()
        # The resharding starts once the pipeline delivers (the processes take seconds to start).
        while load.rounds < ROUNDS_BEFORE or not read_stats(redis, keys).get("delivered"):
            assert load.rounds < 100, read_stats(redis, keys)
            load.publish_round()
            time.sleep(ROUND_GAP_S)  # pacing the load, not waiting for a result
        with cluster.node(source) as client:
            keys_in_slot = int(client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))
        before = refusals(cluster, [source, destination])
        handled_before = handled(read_stats(redis, keys))
        began = time.monotonic()
        with ThreadPoolExecutor(1) as pool:
            resharding = pool.submit(cluster.reshard, source, destination, 1, MIGRATE_BATCH)
            while not resharding.done():  # the load goes on through the migration
                load.publish_round()
                time.sleep(ROUND_GAP_S)
            resharding.result()
        migration_s = time.monotonic() - began
        met = {k: v - before[k] for k, v in refusals(cluster, [source, destination]).items()}
        for _ in range(ROUNDS_AFTER):
            load.publish_round()
            time.sleep(ROUND_GAP_S)
        waited = time.monotonic()
        while not wait_until_handled(redis, keys, load.published, timeout=1):
            assert_running(processes)
            assert time.monotonic() - waited < 120, read_stats(redis, keys)
        assert_running(processes)
    finally:
        processes.stop_all()
    assert cluster.slot_owner(slot) == destination
    print(
        f"slot {slot}: {keys_in_slot} keys moved in {migration_s:.2f} s, {handled_before} "
        f"events handled before; refusals met during the migration: {met}"
    )
    assert keys_in_slot > EARLIER_MARKERS  # and the inboxes, ingest streams, RQ's keys
    # The processes ran into the migration: TRYAGAIN answers only commands naming several keys,
    # which the test's producer (one XADD per stream) never sends.
    assert met["TRYAGAIN"] > 0, met
    lost, duplicated, wrong = tally(redis, keys, seattle_router, load.expected)
    assert (len(lost), len(duplicated), len(wrong)) == (0, 0, 0), (lost, duplicated, wrong)
    assert not redis.xrange(keys.deadletter)
    assert not untracked(redis, keys, load.emergencies)
