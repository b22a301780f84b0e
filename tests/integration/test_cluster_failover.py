"""A primary of a real 3+3 Redis Cluster SIGKILLed under load: the Procfile's processes (ingest,
the emergency / routine / escalation workers, the cron scheduler and the relay, subprocesses
with ``REDIS_URL=redis+cluster://``) carry on by themselves once the cluster has promoted the
dead primary's replica, with no restart by the test.

The city's keys are one slot group (prefix ``{t...}``), so the primary killed is the one that
holds all of them. Same contract as the Sentinel failover test
(tests/integration/test_sentinel_failover.py): the producer publishes with ``min_replicas=1``
and retries a batch (same event ids) until it is acknowledged; every acknowledged event must
then sit in exactly the inboxes the router names, once each, counted per event id and inbox.

While the killed node is still down, events published without ``min_replicas`` (held by the
promoted replica alone) must go through: the processes do not depend on the dead node coming
back. Then it is started again, as an operator's supervisor would: on a 3+3 cluster the
promoted replica has no replica of its own, so until the old primary rejoins (as its replica)
a ``min_replicas=1`` producer is refused, by design (docs/operations.md, Redis Cluster). No
process may exit or log an error (a worker's RQ scheduler child that dies leaves only that).
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest

from city.routing import Router
from queues.connect import redis_from_url
from queues.keys import Keys
from queues.streams import Producer
from tests.conftest import write_city
from tests.integration.acknowledged_load import (
    LoadProducer,
    LoggedProcesses,
    assert_delivered_once_each,
    inbox_contents,
    load_through,
    wait_until,
    wait_until_delivered,
)
from tests.integration.test_cluster_processes import start_procfile
from tests.integration.test_processes import random_event
from workers.standin_cluster import LocalRedisCluster

pytestmark = pytest.mark.integration


def test_a_killed_primary_fails_over_and_the_processes_carry_on_losing_and_doubling_nothing(
    cluster: LocalRedisCluster, seattle_router: Router, tmp_path: Path
) -> None:
    keys = Keys("{t" + uuid.uuid4().hex[:10] + "}")
    departments = seattle_router.config.department_ids
    group_key = keys.inbox(departments[0])  # any key of the group: they share one slot
    victim = cluster.owner(group_key)
    wait_until(lambda: cluster.replicated(victim), "the group's primary has its replica", 30)
    config = write_city(tmp_path, claim_idle_ms=1000)
    processes = LoggedProcesses(cluster.url, keys.prefix, config, tmp_path)
    load = LoadProducer(cluster.url, keys, seattle_router)
    redis = redis_from_url(cluster.url)
    promoted: list[int] = []

    def failover() -> None:
        cluster.kill(victim)  # SIGKILL mid-load
        wait_until(
            lambda: cluster.owner(group_key) != victim and cluster.healthy(),
            "the replica took the dead primary's slots",
        )
        promoted.append(cluster.owner(group_key))
        # Before anyone restarts the dead node, the pipeline carries on: events the promoted
        # primary alone holds (no min_replicas: nothing can replicate them yet) go through.
        rng = random.Random(2)
        alone = [random_event(rng, n) for n in range(30)]
        for dept, event in alone:
            load.acknowledged[event.id] = load.expected(dept, event)
            Producer(redis, dept, keys).publish(event)

        def delivered() -> bool:
            received = inbox_contents(redis, keys, departments)
            return all(load.acknowledged[e.id] <= set(received.get(e.id, [])) for _, e in alone)

        wait_until(delivered, "events published while the old primary is down delivered", 60)
        cluster.restart(victim)  # the supervisor: it comes back as the promoted one's replica
        wait_until(lambda: cluster.replicated(promoted[0]), "the old primary replicates", 30)

    try:
        start_procfile(processes, keys.name)
        load_through(load, redis, departments, failover)
        wait_until_delivered(redis, departments, load, processes, timeout=180)
        for name, process in processes.running.items():  # each carried on by itself
            assert process.poll() is None, f"{name} exited:\n{processes.output()}"
        assert not processes.errors(), "\n".join(processes.errors())
    finally:
        load.stop.set()
        processes.stop_all()
    assert not processes.hung, f"ignored SIGTERM: {processes.hung}\n{processes.output()}"
    assert promoted[0] != victim
    assert_delivered_once_each(redis, departments, load)
    assert load.refused, "the failover never interrupted the producer: nothing was tested"
