"""A worker's RQ command channel (workers/companions.py `CommandListener`) on Redis Cluster
hears commands again after the primary it listened on is SIGKILLed, with that node left dead.

A cluster pubsub reconnects only to the node it started on (the primary of the channel's
slot): before, the channel stayed deaf (connection refused every 2 s) until someone started
the dead node again, so `rq shutdown`-style commands were lost for as long as it stayed down.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from redis.cluster import ClusterPubSub

from queues.connect import redis_from_url
from tests.integration.acknowledged_load import wait_until
from workers.companions import CommandListener
from workers.standin_cluster import LocalRedisCluster

pytestmark = pytest.mark.integration


def test_the_command_channel_moves_off_a_dead_primary_and_hears_commands(
    cluster: LocalRedisCluster,
) -> None:
    client = redis_from_url(cluster.url)
    channel = "{g" + uuid.uuid4().hex[:8] + "}:rq:pubsub:worker-1"
    heard: list[Any] = []
    pubsub = client.pubsub()
    pubsub.subscribe(**{channel: heard.append})
    assert isinstance(pubsub, ClusterPubSub) and pubsub.node is not None
    listened_on = pubsub.node.port
    assert listened_on == cluster.owner(channel)  # the channel's slot names it
    listener = CommandListener(pubsub, "worker-1")
    listener.start()
    try:
        client.publish(channel, "before")
        wait_until(lambda: [m["data"] for m in heard] == [b"before"], "heard before the kill")
        cluster.kill(listened_on)
        wait_until(lambda: cluster.owner(channel) != listened_on, "the replica took over")

        def subscribed_somewhere() -> bool:  # a PUBLISH reaches subscribers of every node
            for port in cluster.running_ports():
                with cluster.node(port) as node:  # closed: no connection left per poll
                    if node.pubsub_numsub(channel)[0][1]:
                        return True
            return False

        wait_until(subscribed_somewhere, "the listener subscribed on a live node", 20)
        client.publish(channel, "after")  # as `rq` sends a command: one PUBLISH
        wait_until(lambda: [m["data"] for m in heard][-1:] == [b"after"], "heard after it", 10)
    finally:  # stopped whatever happened; a failure above is reported as itself
        stopped = listener.stop(5)
        client.close()
    assert stopped, "the command listener did not stop within 5 s"
