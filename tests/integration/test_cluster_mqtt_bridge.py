"""`cityrelay mqtt-bridge` for a city of two slot groups on a real 3+3 Redis Cluster: the bridge
runs among group a's processes, messages come from `mosquitto_pub` (the real client), and each
department's events land in its home group's ingest stream (environment at home on b: b's),
the stream that group's ingest reads, never under the bridge's own prefix."""

from __future__ import annotations

import json
import uuid

import pytest

from city.config import load_city
from queues.connect import cluster_client_from_url
from queues.metrics import MQTT_IN
from queues.partition import group_keys, home_departments
from tests.connector_support import MOSQUITTO, CliProcess, Mosquitto, wait_for, write_connector_city
from tests.integration.test_mqtt_bridge import AIR, TRANSIT, _pub, _reading
from workers.standin_cluster import LocalRedisCluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed"),
]


def test_bridge_writes_each_department_to_its_home_groups_ingest_stream(
    cluster: LocalRedisCluster, tmp_path
) -> None:
    name = "t" + uuid.uuid4().hex[:10]
    broker = Mosquitto(tmp_path).start()

    def edit(doc: dict[str, object]) -> None:
        doc["mqtt"] = {"url": broker.url, "client_id": f"bridge-{name}", "topics": [AIR, TRANSIT]}
        doc["partitions"] = {
            "default": "a",
            "shards": {
                "a": {"prefix": f"{{{name}-a}}"},
                "b": {"prefix": f"{{{name}-b}}", "departments": ["environment"]},
            },
        }

    path = write_connector_city(tmp_path, edit)
    config, _ = load_city(path)
    assert config.partitions is not None
    groups = group_keys(config.partitions)
    a, b = groups["a"], groups["b"]
    assert "environment" in home_departments(config, {}, b.prefix)  # what b's ingest reads
    redis = cluster_client_from_url(cluster.url, socket_timeout=10)

    def stream(keys, dept):  # type: ignore[no-untyped-def]
        return [json.loads(f[b"e"]) for _, f in redis.xrange(keys.ingest(dept))]

    bridge = CliProcess(cluster.url, a.prefix, path).start("mqtt-bridge")
    try:

        def probe() -> bool:  # until the bridge has subscribed
            _pub(broker, "sensors/air/probe", _reading(10_000_000))
            return bool(stream(b, "environment"))

        wait_for(probe, 30, "the bridge to subscribe")
        for seq in range(1, 4):
            _pub(broker, f"sensors/air/aq-{seq}", _reading(seq))
        cloud = {"type": "transit.vehicle_position", "id": f"bus-{name}",
                 "time": "2026-12-07T01:00:00Z", "location": {"lat": 47.61, "lon": -122.33},
                 "data": {"vehicle_id": "bus-7", "speed_kmh": 31.0}}  # fmt: skip
        _pub(broker, "city/transit/events", json.dumps(cloud))
        wait_for(lambda: len({e["id"] for e in stream(b, "environment")}) >= 4, 20, "readings")
        wait_for(lambda: bool(stream(a, "transit")), 20, "the CloudEvent")
        assert bridge.process is not None and bridge.process.poll() is None
    finally:
        bridge.stop()
        broker.stop()
    sensors = {e["data"]["sensor_id"] for e in stream(b, "environment")}
    assert {"aq-1", "aq-2", "aq-3"} <= sensors
    assert [e["id"] for e in stream(a, "transit")] == [f"bus-{name}"]
    # Nothing under a department's prefix other than its home group's.
    assert not redis.exists(a.ingest("environment")) and not redis.exists(b.ingest("transit"))
    # The bridge counts and dead-letters where it runs (group a).
    counted = redis.hgetall(a.stats)
    assert int(counted[f"{MQTT_IN}:transit".encode()]) == 1
    assert int(counted[f"{MQTT_IN}:environment".encode()]) == len(stream(b, "environment"))
    assert not redis.exists(a.deadletter)
