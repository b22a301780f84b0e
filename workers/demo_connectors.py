"""The demo's other ways in and out (issue #13): air-quality sensors over MQTT (where Mosquitto
is installed: one is started on a free port and `cityrelay mqtt-bridge` runs beside the other
processes), a CSV drop from the traffic management system (`publish --csv`), and webhook push
of public-health's inbox (`cityrelay push`) to a receiver on loopback. The demo's config is the
demo city plus these sections, written to a temporary file. The HTTP way in is
workers/demo_gateway.py.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from redis import Redis

from city.catalog import EventCatalog
from city.config import CityConfig
from city.connectors import CsvMapping
from jobs.channels.signed import new_secret
from queues.csvdrop import CsvDrop, CsvReport
from queues.keys import Keys
from queues.streams import Producer
from workers.standins import LocalMosquitto, LoopbackWebhook, mosquitto_binary

PUSH_DEPT = "public-health"
SECRET_ENV = "CITYRELAY_DEMO_WEBHOOK_SECRET"
AIR_TOPIC = "sensors/air/+"
WAYS_IN = ("mqtt-", "csv-", "http-")  # event id prefixes of the ways in other than Redis
CSV_MAPPING = {
    "type": "traffic.incident",
    "columns": {"id": "incident_no", "time": "reported_at", "lat": "latitude", "lon": "longitude",
                "data": {"kind": "kind", "severity": "severity", "road": "road"}},
}  # fmt: skip
AIR_MAPPING = {
    "pattern": AIR_TOPIC,
    "department": "environment",
    "type": "environment.air_quality",
    "mapping": {"id": "seq", "time": "ts", "lat": "lat", "lon": "lon",
                "data": {"sensor_id": "topic[2]", "pm25": "pm25", "aqi": "aqi"}},
}  # fmt: skip


@dataclass
class ConnectorsDemo:
    config_path: Path
    receiver: LoopbackWebhook
    broker: LocalMosquitto | None = None
    sensors_sent: int = 0
    csv: CsvReport = field(default_factory=CsvReport)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def prepare(cls, config_path: Path, tmp: Path, prefix: str) -> ConnectorsDemo:
        """Write the demo city + connectors config; start Mosquitto and the receiver."""
        doc = yaml.safe_load(config_path.read_text())
        for layer in doc["layers"].values():
            layer["path"] = str((config_path.parent / layer["path"]).resolve())
        receiver = LoopbackWebhook()
        os.environ[SECRET_ENV] = new_secret()
        for dept in doc["departments"]:
            if dept["id"] == PUSH_DEPT:
                dept["delivery"] = {"webhook": f"{receiver.url}/{PUSH_DEPT}",
                                    "secret_env": SECRET_ENV}  # fmt: skip
            if dept["id"] == "sdot":
                dept["csv"] = [CSV_MAPPING]
        broker = LocalMosquitto(directory=tmp).start() if mosquitto_binary() else None
        if broker is not None:
            doc["mqtt"] = {"url": broker.url, "client_id": f"{prefix}-bridge",
                           "topics": [AIR_MAPPING]}  # fmt: skip
        path = tmp / "city-connectors.yaml"
        path.write_text(yaml.safe_dump(doc))
        return cls(path, receiver, broker)

    def commands(self) -> list[list[str]]:
        return [["push"]] + ([["mqtt-bridge"]] if self.broker is not None else [])

    def start_sensors(self, rate: float, points: list[dict[str, float]]) -> None:
        """Sensors publish readings over MQTT (QoS 1) at `rate` per second until `stop`."""
        if self.broker is None:
            return
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-sensors")
        client.max_inflight_messages_set(200)
        client.connect("127.0.0.1", self.broker.port)
        client.loop_start()
        rng = random.Random(3)

        def run() -> None:
            started = time.monotonic()
            while not self._stop.is_set():
                due = int((time.monotonic() - started) * rate)
                while self.sensors_sent < due:
                    where = rng.choice(points)
                    pm25 = round(rng.uniform(2, 80), 1)
                    reading = {"seq": self.sensors_sent, "ts": time.time(), **where,
                               "pm25": pm25, "aqi": int(pm25 * 2.1)}  # fmt: skip
                    topic = f"sensors/air/aq-{self.sensors_sent % 40}"
                    client.publish(topic, json.dumps(reading), qos=1)
                    self.sensors_sent += 1
                time.sleep(0.05)
            client.loop_stop()
            client.disconnect()

        self._thread = threading.Thread(target=run, name="demo-sensors", daemon=True)
        self._thread.start()

    def stop_sensors(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def drop_csv(
        self, redis: Redis, keys: Keys, config: CityConfig, tmp: Path, points: list[Any]
    ) -> None:
        """The traffic management system's nightly file, published twice (the second run
        publishes nothing: every row is remembered)."""
        path = tmp / "tms-nightly.csv"
        rows = ["incident_no,reported_at,latitude,longitude,kind,severity,road"]
        for n, where in enumerate(points[:40]):
            rows.append(f"TMS-{n:04d},2026-12-06T22:{n % 60:02d}:00Z,{where['lat']},{where['lon']},"
                        f"{'hazard' if n % 3 else 'closure'},{1 + n % 4},Road {n}")  # fmt: skip
        rows.append("TMS-9999,2026-12-06T23:00:00Z,47.6,-122.3,meteor,2,Bad row")
        path.write_text("\n".join(rows) + "\n")
        mapping = CsvMapping.model_validate(CSV_MAPPING)
        producer = Producer(redis, "sdot", keys)
        drop = CsvDrop(redis, keys, "sdot", mapping, EventCatalog(config), producer.publish_many)
        self.csv = drop.run(path)
        drop.run(path)  # again: nothing twice

    def expected(self) -> int:
        """Events this part sent into the pipeline (for the demo's drain wait)."""
        return self.sensors_sent + self.csv.published + self.csv.dead_lettered

    def summary(self, redis: Redis, keys: Keys, config: CityConfig, http_sent: int) -> None:
        """Deliveries per way in (by event id: ``mqtt-``, ``csv-``, ``http-``, else the Redis
        producer)."""
        ways: Counter[str] = Counter()
        for dept in config.department_ids:
            for _, fields in redis.xrange(keys.inbox(dept)):
                event_id = json.loads(fields[b"e"])["id"]
                way = event_id.split("-", 1)[0] if event_id.startswith(WAYS_IN) else ""
                ways[way] += 1
        csv = self.csv
        print("\nDeliveries per way in (inbox entries, by event id)")
        print(f"  Redis producers (Producer.publish)      {ways['']:8d}")
        if self.broker is not None:
            print(f"  MQTT sensors -> cityrelay mqtt-bridge   {ways['mqtt']:8d}"
                  f"   ({self.sensors_sent} readings published, QoS 1)")  # fmt: skip
        else:
            print("  MQTT sensors: skipped (mosquitto is not installed)")
        print(f"  CSV drop (publish --csv, sdot)          {ways['csv']:8d}   ({csv.published} rows"
              f" published, {csv.dead_lettered} dead-lettered; re-run: 0)")  # fmt: skip
        print(f"  HTTP gateway (POST /v1/events, transit) {ways['http']:8d}"
              f"   ({http_sent} vehicle positions posted with an API token)")  # fmt: skip
        pushed = len(self.receiver.messages(f"/{PUSH_DEPT}"))
        print(f"\nWebhook push: {pushed} messages POSTed to {PUSH_DEPT}'s endpoint, signed "
              "(Standard Webhooks), acknowledged in its inbox after each 2xx")  # fmt: skip

    def stop(self) -> None:
        self.stop_sensors()
        self.receiver.close()
        if self.broker is not None:
            self.broker.stop()
