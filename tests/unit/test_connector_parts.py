"""The connectors' parts without a broker or an endpoint: the MQTT bridge's conversion and its
acknowledgement after the XADD (a stand-in paho client), the pusher's payload and webhook id,
and the CSV drop on fakeredis."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from city.config import parse_city
from city.connectors import CsvMapping
from queues.keys import Keys
from queues.message import Message
from tests.conftest import SEATTLE
from workers.mqtt_bridge import MqttBridge, Received
from workers.push import batch_body, webhook_id

AIR = {"pattern": "sensors/air/+", "department": "environment", "type": "environment.air_quality",
       "mapping": {"id": "seq", "lat": "lat", "lon": "lon",
                   "data": {"sensor_id": "topic[2]", "pm25": "pm25", "aqi": "aqi"}}}  # fmt: skip
CLOUD = {"pattern": "city/#", "department": "transit", "type": "transit.vehicle_position"}


def _config():
    doc = copy.deepcopy(yaml.safe_load(SEATTLE.read_text()))
    doc["mqtt"] = {"url": "mqtt://127.0.0.1:1", "topics": [AIR, CLOUD]}
    return parse_city(doc, "city.yaml")


class _Client:
    def __init__(self):
        self.acked: list[int] = []

    def ack(self, mid, qos):
        self.acked.append(mid)


def _bridge(redis, keys):
    bridge = MqttBridge(redis, keys, _config())
    bridge.client = _Client()  # type: ignore[assignment]
    bridge.generation = 1
    return bridge


def test_bridge_maps_validates_xadds_then_acks(redis):
    keys = Keys("tunitmq")
    bridge = _bridge(redis, keys)
    good = json.dumps({"seq": 1, "lat": 47.6, "lon": -122.3, "pm25": 3.5, "aqi": 9}).encode()
    cloud = json.dumps({"time": "2026-12-07T01:00:00Z", "location": {"lat": 47.6, "lon": -122.3},
                        "data": {"vehicle_id": "b1", "speed_kmh": 3}}).encode()  # fmt: skip
    batch = [Received(1, 1, "sensors/air/aq-1", good, 1), Received(2, 1, "city/bus", cloud, 1),
             Received(3, 1, "sensors/air/aq-1", b"\xff", 1),
             Received(4, 1, "sensors/air/aq-2", good, 0)]  # fmt: skip
    bridge.handle(batch, stop=__import__("threading").Event())
    assert bridge.client.acked == [1, 2, 3]  # mid 4 came on an old connection: resent by then
    env = [json.loads(f[b"e"]) for _, f in redis.xrange(keys.ingest("environment"))]
    assert [e["data"]["sensor_id"] for e in env] == ["aq-1", "aq-2"]
    assert env[0]["id"] != env[1]["id"]  # same payload, other topic: another sensor
    (bus,) = [json.loads(f[b"e"]) for _, f in redis.xrange(keys.ingest("transit"))]
    assert bus["id"].startswith("mqtt-") and bus["source"] == "/city/transit"
    (dead,) = redis.xrange(keys.deadletter)
    assert dead[1][b"topic"] == b"sensors/air/aq-1" and dead[1][b"body"] == b"\xff"
    assert bridge.convert("elsewhere/x", good).reason == "unmapped_topic"


def test_push_payload_and_a_stable_webhook_id():
    messages = [Message("1-0", {"id": "e1", "type": "t"}, {"purpose": "p"}, 5),
                Message("2-0", {"id": "e2", "type": "t"}, {}, 6)]  # fmt: skip
    body = json.loads(batch_body("fire", messages))
    assert body["type"] == "cityrelay.inbox.batch" and body["data"]["department"] == "fire"
    assert [m["event_id"] for m in body["data"]["messages"]] == ["e1", "e2"]
    assert webhook_id("fire", messages) == webhook_id("fire", list(messages))
    assert webhook_id("fire", messages) != webhook_id("fire", messages[:1])


def test_csv_drop_on_fakeredis(redis, tmp_path: Path):
    from city.catalog import EventCatalog
    from queues.csvdrop import CsvDrop
    from queues.streams import Producer

    keys = Keys("tunitcsv")
    config = _config()
    mapping = CsvMapping.model_validate({"type": "traffic.incident", "columns": {
        "lat": "lat", "lon": "lon", "data": {"kind": "kind", "severity": "sev"}}})  # fmt: skip
    path = tmp_path / "f.csv"
    path.write_text("lat,lon,kind,sev\n47.6,-122.3,hazard,2\n47.6,-122.3,hazard,2\n,,x,1\n")
    producer = Producer(redis, "sdot", keys)
    drop = CsvDrop(redis, keys, "sdot", mapping, EventCatalog(config), producer.publish_many)
    first = drop.run(path).to_json()
    assert first == {"rows": 3, "published": 1, "already_published": 1, "dead_lettered": 1}
    assert drop.run(path).to_json()["published"] == 0
    assert redis.xlen(keys.ingest("sdot")) == 1
