"""`cityrelay mqtt-bridge` against a real Mosquitto the test starts on a free port: sensor
payloads mapped to events, CloudEvent payloads, refusals dead-lettered with topic and bytes
(published with `mosquitto_pub`, the real client), and a bridge SIGKILLed mid-stream and
restarted: every published message becomes exactly one event after ingest."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import pytest

from queues.snapshot import city_snapshot
from tests.connector_support import MOSQUITTO, CliProcess, Mosquitto, wait_for, write_connector_city
from tests.unit.test_observe import scrape, value
from workers.cli.status import report

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed"),
]

AIR = {
    "pattern": "sensors/air/+",
    "department": "environment",
    "type": "environment.air_quality",
    "mapping": {
        "id": "seq",
        "time": "ts",
        "lat": "lat",
        "lon": "lon",
        "data": {"sensor_id": "topic[2]", "pm25": "pm25", "aqi": "aqi"},
    },
}
TRANSIT = {"pattern": "city/transit/events", "department": "transit",
           "type": "transit.vehicle_position"}  # fmt: skip


@pytest.fixture
def broker(tmp_path):
    server = Mosquitto(tmp_path).start()
    yield server
    server.stop()


def _city(tmp_path, broker, **mqtt):
    def edit(doc):
        doc["mqtt"] = {"url": broker.url, "client_id": f"bridge-{uuid.uuid4().hex[:8]}",
                       "topics": [AIR, TRANSIT], **mqtt}  # fmt: skip
        doc["routing"]["claim_idle_ms"] = 500

    return write_connector_city(tmp_path, edit)


def _reading(seq: int) -> str:
    return json.dumps({"seq": seq, "ts": 1765069200 + seq, "lat": 47.6205, "lon": -122.3493,
                       "pm25": 10.5, "aqi": 44})  # fmt: skip


def _pub(broker, topic: str, payload: str) -> None:
    subprocess.run(
        [shutil.which("mosquitto_pub") or "mosquitto_pub", "-h", "127.0.0.1", "-p",
         str(broker.port), "-q", "1", "-t", topic, "-m", payload],
        check=True, timeout=10,
    )  # fmt: skip


def _stream(redis, keys, dept):
    return [json.loads(f[b"e"]) for _, f in redis.xrange(keys.ingest(dept))]


def _wait_connected(redis, keys, broker, n: int = 0) -> None:
    """Publish probes until the bridge (subscribed) carries one into the stream."""

    def probe() -> bool:
        _pub(broker, "sensors/air/probe", _reading(10_000_000 + n))
        return any(e["data"]["sensor_id"] == "probe" for e in _stream(redis, keys, "environment"))

    wait_for(probe, 20, "the bridge to subscribe")


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="no mosquitto_pub")
def test_mosquitto_pub_messages_become_events_and_refusals_dead_letters(
    redis_url, redis, keys, tmp_path, broker
):
    bridge = CliProcess(redis_url, keys.prefix, _city(tmp_path, broker)).start("mqtt-bridge")
    try:
        _wait_connected(redis, keys, broker)
        _pub(broker, "sensors/air/aq-17", _reading(1))
        _pub(broker, "sensors/air/aq-17", _reading(1))  # the same reading again: same id
        cloud = {"type": "transit.vehicle_position", "id": "bus-7-0001",
                 "time": "2026-12-07T01:00:00Z", "location": {"lat": 47.61, "lon": -122.33},
                 "data": {"vehicle_id": "bus-7", "speed_kmh": 31.0}}  # fmt: skip
        _pub(broker, "city/transit/events", json.dumps(cloud))
        _pub(broker, "sensors/air/aq-18", "not json at all")
        _pub(broker, "sensors/air/aq-19", json.dumps({"seq": 3, "pm25": 1, "aqi": 2}))  # no lat
        _pub(broker, "sensors/air/aq-20", json.dumps({"seq": 4, "lat": 47.6, "lon": -122.3,
                                                      "pm25": -5, "aqi": 2}))  # fmt: skip
        wait_for(lambda: redis.xlen(keys.deadletter) >= 3, 20, "three dead letters")
        wait_for(lambda: len(_stream(redis, keys, "environment")) >= 3, 20, "the readings")
        wait_for(lambda: len(_stream(redis, keys, "transit")) >= 1, 20, "the CloudEvent")

        def counted() -> dict[str, int]:
            return report(city_snapshot(redis, keys, []))["mqtt"]["in_by_dept"]

        wait_for(lambda: counted().get("transit") == 1, 20, "the bridge's counters")
    finally:
        bridge.stop()
    # `cityrelay status --json`: every event the bridge published, the probes included
    published = {"environment": len(_stream(redis, keys, "environment")), "transit": 1}
    assert counted() == published
    samples = scrape(redis, keys, [])
    assert value(samples, "cityrelay_mqtt_events_in_total", department="transit") == 1
    air = [e for e in _stream(redis, keys, "environment") if e["data"]["sensor_id"] == "aq-17"]
    assert len(air) == 2 and air[0]["id"] == air[1]["id"] and air[0]["id"].startswith("mqtt-")
    assert air[0]["data"] == {"sensor_id": "aq-17", "pm25": 10.5, "aqi": 44}
    assert air[0]["location"] == {"lat": 47.6205, "lon": -122.3493}
    assert _stream(redis, keys, "transit")[0]["id"] == "bus-7-0001"
    dead = {f[b"topic"].decode(): f for _, f in redis.xrange(keys.deadletter)}
    assert dead["sensors/air/aq-18"][b"reason"] == b"malformed_json"
    assert dead["sensors/air/aq-18"][b"body"] == b"not json at all"
    assert dead["sensors/air/aq-19"][b"reason"] == b"unmappable"
    assert dead["sensors/air/aq-20"][b"reason"] == b"invalid_payload"
    assert all(f[b"stage"] == b"mqtt" for f in dead.values())


def test_bridge_killed_mid_stream_loses_nothing_and_ingest_sees_each_once(
    redis_url, redis, keys, tmp_path, broker
):
    import paho.mqtt.client as mqtt

    total = 3000
    config = _city(tmp_path, broker, batch_max=200)
    bridge = CliProcess(redis_url, keys.prefix, config).start("mqtt-bridge")
    ingest = CliProcess(redis_url, keys.prefix, config).start("ingest", "--lanes", "routine")
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    publisher.max_inflight_messages_set(100)
    publisher.max_queued_messages_set(0)
    try:
        _wait_connected(redis, keys, broker)
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        infos = [publisher.publish(f"sensors/air/aq-{n % 50}", _reading(n), qos=1)
                 for n in range(total)]  # fmt: skip
        wait_for(lambda: redis.xlen(keys.ingest("environment")) >= total // 3, 30, "a third")
        bridge.kill()  # SIGKILL mid-stream: a batch XADDed but not acknowledged, more in flight
        for info in infos:
            info.wait_for_publish(timeout=30)  # the broker holds the rest for the session
        bridge.start("mqtt-bridge")
        wanted = total + 1  # + the probe

        def all_in() -> bool:
            return int(redis.hget(keys.stats, "in:environment") or 0) >= wanted

        wait_for(all_in, 60, "every message through ingest")
    finally:
        publisher.loop_stop()
        bridge.stop()
        ingest.stop()
    stats = {k.decode(): int(v) for k, v in redis.hgetall(keys.stats).items()}
    # Ingest trims what it acknowledged, so count with the counters: what the bridge XADDed
    # (a batch XADDed but not acknowledged before the kill is XADDed again after it) ...
    xadded = stats["mqtt_in:environment"]
    assert xadded >= wanted
    # ... and what ingest let through: each of the distinct event ids exactly once (a lost
    # message would leave it short; every redelivered copy is a dropped duplicate).
    assert stats["in:environment"] == wanted
    # (>=: the bridge counts after its XADDs, so a kill between the two leaves it short)
    assert stats.get("ingest_duplicates", 0) >= xadded - wanted
