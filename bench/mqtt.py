"""MQTT events/s through `cityrelay mqtt-bridge` into the ingest streams.

    PYTHONPATH=. python bench/mqtt.py [--messages 50000] [--batch 500]

Starts its own redis-server and Mosquitto on free ports and a real bridge process (QoS 1,
manual acks after the XADD, persistent session), then publishes sensor readings with
`mosquitto_pub -l -q 1` (one C client per topic, in parallel) in two phases:

1. ``drain``: the bridge is stopped (its session kept by the broker), the messages are
   published, then the bridge is started and timed from its first XADD until every one is
   in the ingest stream: the bridge's own rate (map, `EventCatalog.accept`, XADD, PUBACK);
2. ``live``: the bridge runs while the publishers publish; time from the first publish to
   the last XADD.

No ingest process runs, so the stream keeps every entry and XLEN counts them. Prints one JSON
object per phase and a last line with ``mqtt_events_per_s`` (the drain rate), the events per
CPU-second of the bridge process (what one core sustains, whatever else runs) and the load
average before and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis import Redis  # noqa: E402

from queues.keys import Keys  # noqa: E402
from tests.connector_support import (  # noqa: E402
    CliProcess,
    Mosquitto,
    wait_for,
    write_connector_city,
)
from workers.standins import LocalRedisServer  # noqa: E402

TOPICS = 4
MAPPING = {
    "pattern": "sensors/air/+",
    "department": "environment",
    "type": "environment.air_quality",
    "mapping": {"id": "seq", "time": "ts", "lat": "lat", "lon": "lon",
                "data": {"sensor_id": "topic[2]", "pm25": "pm25", "aqi": "aqi"}},
}  # fmt: skip


def readings(start: int, count: int) -> bytes:
    line = '{"seq":%d,"ts":1765069200,"lat":47.6205,"lon":-122.3493,"pm25":12.5,"aqi":52}\n'
    return "".join(line % n for n in range(start, start + count)).encode()


def publish(port: int, start: int, count: int) -> float:
    """`count` readings spread over TOPICS parallel mosquitto_pub -l; returns seconds."""
    began = time.perf_counter()
    share = count // TOPICS
    procs = []
    for t in range(TOPICS):
        proc = subprocess.Popen(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-l",
             "-t", f"sensors/air/aq-{t}", "-i", f"bench-pub-{t}-{start}"],
            stdin=subprocess.PIPE,
        )  # fmt: skip
        procs.append(proc)
    for t, proc in enumerate(procs):
        assert proc.stdin is not None
        proc.stdin.write(readings(start + t * share, share))
        proc.stdin.close()
    for proc in procs:
        proc.wait(timeout=600)
    return time.perf_counter() - began


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc): a rate per CPU-second does not
    depend on how many other processes share the cores."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="cityrelay-bench-mqtt-"))
    redis_server = LocalRedisServer().start()
    broker = Mosquitto(tmp).start()
    keys = Keys(f"benchmq{uuid.uuid4().hex[:6]}")
    redis = Redis.from_url(redis_server.url)

    def edit(doc: dict) -> None:  # type: ignore[type-arg]
        doc["mqtt"] = {"url": broker.url, "client_id": "bench-bridge", "topics": [MAPPING],
                       "batch_max": args.batch}  # fmt: skip

    config = write_connector_city(tmp, edit)
    bridge = CliProcess(redis_server.url, keys.prefix, config)
    stream = keys.ingest("environment")
    results = []
    try:
        bridge.start("--log-level", "WARNING", "mqtt-bridge")

        def probed() -> bool:
            publish(broker.port, 10**9, TOPICS)
            return bool(redis.xlen(stream))

        wait_for(probed, 30, "the bridge to subscribe")
        time.sleep(0.5)
        base = redis.xlen(stream)
        bridge.stop()  # the broker keeps the session and queues for it
        n = args.messages // TOPICS * TOPICS
        published_s = publish(broker.port, 0, n)
        bridge.start("--log-level", "WARNING", "mqtt-bridge")
        wait_for(lambda: redis.xlen(stream) > base, 120, "the bridge's first XADD")
        began, first = time.perf_counter(), redis.xlen(stream)  # timed from its first XADD
        assert bridge.process is not None
        cpu_began = cpu_seconds(bridge.process.pid)
        wait_for(lambda: redis.xlen(stream) >= base + n, 600, "the drain")
        drain_s = time.perf_counter() - began
        cpu_s = cpu_seconds(bridge.process.pid) - cpu_began
        drained = base + n - first
        results.append({"phase": "drain", "messages": n, "timed": drained,
                        "seconds": round(drain_s, 3), "events_per_s": round(drained / drain_s),
                        "bridge_cpu_s": round(cpu_s, 2),
                        "events_per_bridge_cpu_s": round(drained / max(cpu_s, 1e-6)),
                        "publish_s": round(published_s, 3)})  # fmt: skip
        print(json.dumps(results[-1]), flush=True)
        base = redis.xlen(stream)
        began = time.perf_counter()
        published_s = publish(broker.port, 10**7, n)
        wait_for(lambda: redis.xlen(stream) >= base + n, 600, "the live run")
        live_s = time.perf_counter() - began
        results.append({"phase": "live", "messages": n, "seconds": round(live_s, 3),
                        "events_per_s": round(n / live_s),
                        "publish_s": round(published_s, 3)})  # fmt: skip
        print(json.dumps(results[-1]), flush=True)
    finally:
        bridge.stop()
        broker.stop()
        redis_server.stop()
    print(json.dumps({
        "mqtt_events_per_s": results[0]["events_per_s"],
        "mqtt_live_events_per_s": results[1]["events_per_s"],
        "mqtt_events_per_bridge_cpu_s": results[0]["events_per_bridge_cpu_s"],
        "batch_max": args.batch,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
