"""`cityrelay mqtt-bridge`: sensor networks over MQTT -> the departments' ingest streams.

The bridge subscribes (QoS 1) to the topic patterns of the city's ``mqtt:`` section, each
mapped to a department and an event type. A message is turned into a CloudEvent (the topic's
field mapping, city/mapping.py, or the payload itself when it is a CloudEvent), validated by
the same `EventCatalog.accept` as ingest and XADDed to its department's stream (`Producer`,
one pipeline per department per batch of up to ``batch_max`` messages or ``batch_max_ms``) at
the department's home in a partitioned city (`home_writers`: the home slot group's prefix on
the same cluster, or the home URL shard's Redis; dead letters and counters stay here).
Only then is it acknowledged: paho-mqtt 2.x with ``manual_ack=True`` sends the PUBACK when we
call ``client.ack(mid, qos)``. A payload that cannot be mapped or is refused is dead-lettered
(queues/streams/deadletter.py: reason, topic and the payload bytes) and then acknowledged.

Nothing is lost when the bridge is killed: it connects with a fixed client id and
``clean_session=False``, so the broker keeps the session while it is away and sends again
every message not acknowledged. Nothing arrives twice downstream: event ids are deterministic
(``mqtt-`` + SHA-256 of the topic and the payload's own id when the mapping names one, else of
the topic and the payload bytes), so a redelivered message is the same event and ingest drops
the copy. After a reconnect, messages still buffered from the old connection are XADDed but
not acknowledged (their packet ids belong to the old connection); the broker resends them.

Broker settings this relies on (Mosquitto): ``max_queued_messages`` large enough (0: no limit)
for the messages that arrive while the bridge is away, and ``max_inflight_messages`` at least
``batch_max`` for throughput (the broker sends no more than that many unacknowledged).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from redis import Redis
from redis.exceptions import RedisError

from city.catalog import EventCatalog, InvalidEvent
from city.config import CityConfig
from city.connectors import MqttConfig, MqttTopic, broker_address
from city.mapping import MappingError, derived_id, json_lookup, map_record
from queues.connect import WORKER_SETTINGS, redis_from_url
from queues.keys import Keys
from queues.limits import Backpressure
from queues.metrics import MQTT_IN
from queues.partition import home_writers
from queues.streams import Producer, dead_letter

log = logging.getLogger("cityrelay.mqtt")
ROUTE_CACHE = 100_000  # topics whose route is remembered


def _connect(url: str) -> Redis:
    """Another URL shard's Redis, riding out restarts and failovers as the bridge's own."""
    return redis_from_url(url, **WORKER_SETTINGS)


@dataclass(frozen=True)
class Received:
    mid: int
    qos: int
    topic: str
    payload: bytes
    generation: int  # the connection it came on


@dataclass
class Converted:
    """A message as the bridge decided: an accepted wire event, or a refusal."""

    dept: str
    wire: dict[str, Any] | None = None
    reason: str = ""
    detail: str = ""


class MqttBridge:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        config: CityConfig,
        *,
        url: str | None = None,
        client_id: str | None = None,
        connect: Callable[[str], Redis] | None = None,
    ):
        if config.mqtt is None:
            raise ValueError("the city config has no mqtt: section")
        self.settings: MqttConfig = config.mqtt
        self.redis, self.keys = redis, keys
        self.catalog = EventCatalog(config)
        # Each department's events go to its home's ingest stream (a slot group's prefix, a
        # URL shard's Redis): under this process's own they would land where no ingest reads.
        homes = home_writers(config, keys, redis, connect or _connect)
        self.producers = {d: Producer(r, d, k) for d, (r, k) in homes.items()}
        self.url = url or self.settings.url or os.environ.get(self.settings.url_env or "", "")
        self.client_id = client_id or self.settings.client_id
        self.inbox: queue.Queue[Received] = queue.Queue()
        self.generation = 0
        self.connected = threading.Event()
        self.counts: Counter[str] = Counter()
        self._routes: dict[str, MqttTopic | None] = {}
        self.client = self._client()

    # -- MQTT side (paho's network thread) -----------------------------------------------------
    def _client(self) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,  # a persistent session: the broker keeps what we did not ack
            protocol=mqtt.MQTTv311,
            transport=self.settings.transport,
            manual_ack=True,  # PUBACK only once the XADD succeeded (`_ack`)
        )
        if self.settings.username:
            password = os.environ.get(self.settings.password_env or "") or None
            client.username_pw_set(self.settings.username, password)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:  # fmt: skip
        if reason.is_failure:
            log.warning("mqtt: connection refused: %s", reason)
            return
        self.generation += 1
        client.subscribe([(topic.pattern, 1) for topic in self.settings.topics])
        self.connected.set()
        log.info("mqtt: connected to %s as %s (session present: %s)", self.url, self.client_id,
                 flags.session_present)  # fmt: skip

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:  # fmt: skip
        self.connected.clear()
        log.warning("mqtt: disconnected (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.inbox.put(
            Received(
                message.mid, message.qos, message.topic, bytes(message.payload), self.generation
            )
        )

    # -- mapping -------------------------------------------------------------------------------
    def route(self, topic: str) -> MqttTopic | None:
        """The first topic pattern that matches (remembered per topic: sensors repeat)."""
        if topic in self._routes:
            return self._routes[topic]
        found = next(
            (t for t in self.settings.topics if mqtt.topic_matches_sub(t.pattern, topic)), None
        )
        if len(self._routes) >= ROUTE_CACHE:
            self._routes.clear()
        self._routes[topic] = found
        return found

    def convert(self, topic: str, payload: bytes) -> Converted:
        route = self.route(topic)
        if route is None:
            return Converted("", reason="unmapped_topic", detail=f"no mqtt topic matches {topic}")
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return Converted(route.department, reason="malformed_json", detail=str(exc)[:200])
        try:
            event = self._event(route, topic, payload, document)
            raw = orjson.dumps(event)
            return Converted(route.department, self.catalog.accept(raw, route.department))
        except MappingError as exc:
            return Converted(route.department, reason=exc.reason, detail=str(exc))
        except InvalidEvent as exc:
            return Converted(route.department, reason=exc.reason, detail=str(exc))

    def _event(self, route: MqttTopic, topic: str, payload: bytes, document: Any) -> Any:
        def fallback() -> str:
            return derived_id("mqtt", topic, payload)

        if route.mapping is None:  # a CloudEvent: fill what a sensor may leave out
            if isinstance(document, dict):
                document.setdefault("id", fallback())
                document.setdefault("specversion", "1.0")
                document.setdefault("source", f"/city/{route.department}")
                document.setdefault("type", route.type)
            return document
        if not isinstance(document, dict):
            raise MappingError("the payload is not a JSON object")
        return map_record(
            route.mapping, json_lookup(document, topic), event_type=route.type,
            department=route.department, fallback_id=fallback, id_kind="mqtt", id_scope=topic,
        )  # fmt: skip

    # -- Redis side (the main thread) ----------------------------------------------------------
    def handle(self, batch: list[Received], stop: threading.Event) -> None:
        """Convert, XADD (retrying while Redis refuses), dead-letter, then acknowledge."""
        accepted: dict[str, list[dict[str, Any]]] = defaultdict(list)
        refused: list[tuple[Received, Converted]] = []
        for item in batch:
            converted = self.convert(item.topic, item.payload)
            if converted.wire is not None:
                accepted[converted.dept].append(converted.wire)
            else:
                refused.append((item, converted))
        delay = 0.1
        while not stop.is_set():
            try:
                self._write(accepted, refused)
                break
            except Backpressure as exc:
                log.warning("mqtt: backpressure, waiting %.1f s: %s", exc.retry_after_s, exc)
                stop.wait(exc.retry_after_s)
            except RedisError as exc:
                log.warning("mqtt: Redis unavailable, retrying in %.1f s: %s", delay, exc)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
        else:
            return  # stopping: nothing acknowledged, the broker sends it all again
        for item in batch:
            if item.generation == self.generation:
                self.client.ack(item.mid, item.qos)
        for dept, wires in accepted.items():
            self.counts[dept] += len(wires)
        self.counts["refused"] += len(refused)

    def _write(
        self, accepted: dict[str, list[dict[str, Any]]], refused: list[tuple[Received, Converted]]
    ) -> None:
        for dept, wires in accepted.items():  # again after a failure: ingest drops the copies
            producer = self.producers[dept]
            producer.publish_encoded([producer.encode_wire(wire) for wire in wires])
        pipe = self.redis.pipeline(transaction=False)
        for item, converted in refused:
            dead_letter(pipe, self.keys, reason=converted.reason, message=converted.detail,
                        stage="mqtt", dept=converted.dept, body=item.payload,
                        extra={"topic": item.topic})  # fmt: skip
        for dept, wires in accepted.items():
            pipe.hincrby(self.keys.stats, f"{MQTT_IN}:{dept}", len(wires))
        pipe.execute()

    def gather(self, timeout: float = 0.5) -> list[Received]:
        """Up to `batch_max` messages: wait `timeout` for the first, then `batch_max_ms`."""
        try:
            batch = [self.inbox.get(timeout=timeout)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.settings.batch_max_ms / 1000
        while len(batch) < self.settings.batch_max:
            try:
                batch.append(self.inbox.get_nowait())
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(self.inbox.get(timeout=left))
                except queue.Empty:
                    break
        return batch

    def run(self, stop: threading.Event) -> None:
        host, port = broker_address(self.url)
        self.client.connect_async(host, port, keepalive=self.settings.keepalive_s)
        self.client.loop_start()
        last_log = time.monotonic()
        try:
            while not stop.is_set():
                batch = self.gather()
                if batch:
                    self.handle(batch, stop)
                if time.monotonic() - last_log > 30:
                    last_log = time.monotonic()
                    log.info("mqtt summary", extra={"bridged": dict(self.counts)})
        finally:
            self.client.disconnect()
            self.client.loop_stop()


def run_bridge(
    redis: Redis,
    keys: Keys,
    config: CityConfig,
    stop: threading.Event,
    *,
    url: str | None = None,
    client_id: str | None = None,
) -> int:
    bridge = MqttBridge(redis, keys, config, url=url, client_id=client_id)
    if not bridge.url:
        log.error("mqtt: no broker URL (mqtt.url, mqtt.url_env or --url)")
        return 2
    bridge.run(stop)
    return 0
