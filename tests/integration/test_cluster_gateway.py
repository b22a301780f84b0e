"""`cityrelay gateway` for a city of two slot groups on a real 3+3 Redis Cluster: the gateway
runs among group a's processes (tokens under a's prefix); requests made by curl and by the
official CloudEvents SDK for a department at home on b (sdot) land in b's ingest streams, the
ones b's ingest reads (routine through a worker thread, a small batch with an emergency on the
event loop), a's department's in a's, nothing under the wrong prefix; and the inbox of a
department at home on b is read and acknowledged at b, not under a's keys."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from cloudevents.v1.conversion import to_structured
from cloudevents.v1.http import CloudEvent

from city.config import load_city
from queues.connect import cluster_client_from_url
from queues.keys import Keys
from queues.partition import group_keys, home_departments
from queues.tokens import TokenStore
from tests.conftest import write_city
from tests.gateway_support import WEST, GatewayProcess, curl_binary_incident, incident
from workers.standin_cluster import LocalRedisCluster

pytestmark = pytest.mark.integration


def _ids(redis, keys: Keys, dept: str, lane: str = "routine") -> list[str]:  # type: ignore[no-untyped-def]
    return [json.loads(f[b"e"])["id"] for _, f in redis.xrange(keys.ingest(dept, lane))]


@pytest.fixture
def city(cluster: LocalRedisCluster, tmp_path) -> Iterator[tuple[GatewayProcess, Keys, Keys]]:  # type: ignore[no-untyped-def]
    name = "t" + uuid.uuid4().hex[:10]
    partitions = {
        "default": "a",
        "shards": {
            "a": {"prefix": f"{{{name}-a}}"},
            "b": {"prefix": f"{{{name}-b}}", "departments": ["sdot"]},
        },
    }
    path = write_city(tmp_path, partitions=partitions)
    config, _ = load_city(path)
    assert config.partitions is not None
    groups = group_keys(config.partitions)
    assert home_departments(config, {}, groups["b"].prefix) == ["sdot"]  # what b's ingest reads
    gateway = GatewayProcess(cluster.url, groups["a"].prefix, path).start()
    yield gateway, groups["a"], groups["b"]
    assert gateway.alive(), gateway.output()
    assert gateway.stop() in (0, -15), gateway.output()


def test_events_go_to_each_departments_home_group_and_foreign_inboxes_are_refused(
    cluster: LocalRedisCluster, city: tuple[GatewayProcess, Keys, Keys]
) -> None:
    gateway, a, b = city
    redis = cluster_client_from_url(cluster.url, socket_timeout=10)
    tokens = TokenStore(redis, a)  # type: ignore[arg-type]
    sdot, _ = tokens.create("sdot")
    fire, _ = tokens.create("fire")

    event_id = uuid.uuid4().hex
    body, status = curl_binary_incident(gateway.url, sdot, event_id)
    assert status == "202", body
    # A small batch carrying an emergency: published on the event loop (redis.asyncio cluster).
    pair = [incident(), incident(priority="emergency")]
    reply = httpx.post(
        gateway.url + "/v1/events",
        headers={"Authorization": f"Bearer {sdot}",
                 "Content-Type": "application/cloudevents-batch+json"},
        content=json.dumps(pair),
    )  # fmt: skip
    assert reply.status_code == 202, reply.text
    assert reply.json()["accepted"] == [e["id"] for e in pair]
    dispatch = CloudEvent(
        {"type": "safety.dispatch", "source": "/city/fire", "location": json.dumps(WEST)},
        {"incident_number": "F-1", "nature": "aid response"},
    )
    headers, content = to_structured(dispatch)
    reply = httpx.post(
        gateway.url + "/v1/events",
        headers={**headers, "Authorization": f"Bearer {fire}"},
        content=content,
    )
    assert reply.status_code == 202, reply.text

    assert _ids(redis, b, "sdot") == [event_id, pair[0]["id"]]
    assert _ids(redis, b, "sdot", "emergency") == [pair[1]["id"]]
    assert _ids(redis, a, "fire") == [dispatch["id"]]
    assert not redis.exists(a.ingest("sdot"), a.ingest("sdot", "emergency"), b.ingest("fire"))
    assert not redis.exists(a.deadletter)

    # sdot's inbox is b's: read and acknowledged there through a's gateway.
    delivered = redis.xadd(b.inbox("sdot"), {"e": json.dumps(pair[0]), "via": "{}", "ing": "1"})
    auth = {"Authorization": f"Bearer {sdot}"}
    reply = httpx.get(gateway.url + "/v1/inbox/sdot", headers=auth)
    assert reply.status_code == 200, reply.text
    [message] = reply.json()["messages"]
    assert (message["id"], message["event_id"]) == (delivered.decode(), pair[0]["id"])
    reply = httpx.post(
        gateway.url + "/v1/inbox/sdot/ack", headers=auth, json={"ids": [message["id"]]}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["acked"] == 1
    assert redis.xpending(b.inbox("sdot"), "sdot")["pending"] == 0
    assert not redis.exists(a.inbox("sdot"))
    reply = httpx.get(gateway.url + "/v1/inbox/fire", headers={"Authorization": f"Bearer {fire}"})
    assert reply.status_code == 200, reply.text
