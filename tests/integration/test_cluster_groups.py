"""Two shards of a partitioned city as two slot groups of one Redis Cluster: the outbox and
relay mechanism of `partitions:` with one cluster client on both ends. Shard a's keys are
``{name-a}:...``, shard b's ``{name-b}:...``; a delivery for a department at home on b goes to
a's outbox naming b's key, and the relay writes it there with its marker in b's slot, once,
even when the same batch is relayed again (a relay killed between write and acknowledgement).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import yaml
from redis.cluster import RedisCluster

from city.config import parse_city
from queues.connect import cluster_client_from_url
from queues.inbox import Deliverer, EventDelivery, Inbox
from queues.keys import Keys
from queues.partition import Placement
from queues.relay import Relay
from tests.conftest import SEATTLE
from workers.standin_cluster import LocalRedisCluster

PARTITIONS = {
    "default": "a",
    "shards": {
        "a": {"url_env": "SHARD_A_URL"},
        "b": {"url_env": "SHARD_B_URL", "departments": ["spd-west", "emergency-management"]},
    },
}


@pytest.fixture
def client(cluster: LocalRedisCluster) -> Iterator[RedisCluster]:
    redis = cluster_client_from_url(cluster.url, decode_responses=False)
    yield redis
    redis.close()


def test_a_delivery_crosses_slot_groups_through_the_outbox_once(client: RedisCluster) -> None:
    doc = yaml.safe_load(SEATTLE.read_text())
    doc["partitions"] = PARTITIONS
    config = parse_city(doc, SEATTLE)
    assert config.partitions is not None
    name = f"t{uuid.uuid4().hex[:10]}"
    on_a, on_b = Keys(f"{{{name}-a}}"), Keys(f"{{{name}-b}}")
    assert client.keyslot(on_a.stats) != client.keyslot(on_b.stats)

    placement = Placement(on_a, config.partitions, "a", shard_keys={"b": on_b})
    body = json.dumps({"id": "e1", "type": "public-safety.incident"})
    fields: list[tuple[str, str | bytes]] = [("e", body), ("via", "{}"), ("ing", "1-0")]
    delivery = EventDelivery(
        seen_key=on_a.seen("sdot", "e1"),
        outputs=[
            placement.output("ems", on_a.inbox("ems"), fields),
            placement.output("spd-west", on_a.inbox("spd-west"), fields),
        ],
    )
    deliverer = Deliverer(client, dedupe_ttl_s=60)  # type: ignore[arg-type]
    assert deliverer.deliver([delivery]).flags == [True]  # one script, all in a's slot
    assert client.xlen(on_a.outbox("b")) == 1

    relay = Relay.for_city(
        config,
        on_a,
        client,
        client,
        "a",
        "b",
        dest_keys=on_b,  # type: ignore[arg-type]
    )
    relay.ensure_group()
    batch = relay.read()
    assert relay.relay(batch) == {"relayed": 1}
    assert relay.relay(batch) == {"redelivered": 1}  # the marker in b's slot absorbs it

    received = Inbox(client, "spd-west", on_b).read()  # type: ignore[arg-type]
    assert [m.event_id for m in received] == ["e1"]
    assert [m.event_id for m in Inbox(client, "ems", on_a).read()] == ["e1"]  # type: ignore[arg-type]
    assert client.xlen(on_a.outbox("b")) == 0  # acknowledged and deleted on a
