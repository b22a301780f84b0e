"""The HTTP gateway's throughput and the latency it adds to an emergency.

    PYTHONPATH=. python bench/gateway.py [--seconds 5] [--workers 2] [--connections 16]

Starts its own redis-server (so the numbers do not depend on what else the shared Redis holds)
and a real `cityrelay gateway` (uvicorn) on a free port, then measures with a minimal HTTP/1.1
client on keep-alive connections (asyncio streams; each request waits for its 202, ids unique):

1. events/s through ``POST /v1/events`` in batches of 100 (application/cloudevents-batch+json);
2. single-event requests/s (structured mode);
3. emergencies, alternately by HTTP (one keep-alive connection, time to the 202) and by
   `Producer.publish` (time to the XADD reply), side by side in one run: p50/p99 of each and
   the added latency (HTTP minus Producer), first on an idle gateway, then while another
   process keeps routine batches flowing through it.

Then the MQTT way in: bench/mqtt.py in its own process (its own redis-server, Mosquitto and
bridge).

Prints one JSON object per phase and a last line with ``batched_events_per_s``,
``single_requests_per_s``, ``emergency_added_p99_ms`` (idle gateway) and
``mqtt_events_per_s``, plus the load average before and after: the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis import Redis  # noqa: E402

from queues.keys import Keys  # noqa: E402
from queues.streams import Producer  # noqa: E402
from queues.tokens import TokenStore  # noqa: E402
from tests.gateway_support import GatewayProcess  # noqa: E402
from workers.standins import LocalRedisServer, mosquitto_binary  # noqa: E402

PREFIX = "benchgw"
TIME = datetime.now(UTC).isoformat().encode()
EVENT = (
    b'{"id":"%s","source":"/city/sdot","specversion":"1.0","type":"traffic.incident",'
    b'"time":"' + TIME + b'","data":{"kind":"collision","severity":2},'
    b'"location":{"lat":47.6205,"lon":-122.3493}%s}'
)
BATCH = "application/cloudevents-batch+json"
STRUCTURED = "application/cloudevents+json"


RUN = uuid.uuid4().hex[:12].encode()
_seq = iter(range(1, 1 << 62))


def event(priority: bytes = b"") -> bytes:
    """A unique event (ids: this run's random prefix + a counter: cheap for the client)."""
    return EVENT % (b"%s-%d-%d" % (RUN, os.getpid(), next(_seq)), priority)


def request(token: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> int:
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _load(port: int, token: str, seconds: float, connections: int, batch: int) -> dict:
    deadline = time.perf_counter() + seconds
    counts = {"requests": 0, "events": 0, "errors": 0}

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            if batch:
                body = b"[" + b",".join(event(b"") for _ in range(batch)) + b"]"
                data, n = request(token, BATCH, body), batch
            else:
                data, n = request(token, STRUCTURED, event()), 1
            if await exchange(reader, writer, data) == 202:
                counts["requests"] += 1
                counts["events"] += n
            else:
                counts["errors"] += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    took = time.perf_counter() - started
    return {**counts, "seconds": round(took, 2)}


def load(port: int, token: str, seconds: float, connections: int, batch: int) -> dict:
    return asyncio.run(_load(port, token, seconds, connections, batch))


def _background(port: int, token: str, seconds: float, out: multiprocessing.Queue) -> None:
    out.put(load(port, token, seconds, 4, 100))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (the uvicorn workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def measured(pid: int, phase: dict, run) -> dict:  # type: ignore[no-untyped-def]
    """Run a load phase and add the gateway's CPU per event and per request (load-independent:
    what the numbers would be with the cores to itself)."""
    before = cpu_seconds(pid)
    result = run()
    used = cpu_seconds(pid) - before
    result["gateway_cpu_s"] = round(used, 2)
    if result["events"]:
        result["gateway_cpu_us_per_event"] = round(used / result["events"] * 1e6, 1)
        result["gateway_cpu_us_per_request"] = round(used / result["requests"] * 1e6, 1)
    return {**phase, **result}


def percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "p50_ms": round(statistics.median(values), 3),
        "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))], 3),
    }


def emergencies(port: int, token: str, producer: Producer, samples: int) -> dict:
    """Alternate: one emergency by HTTP (to the 202), one by Producer.publish (to the XADD)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stream = sock.makefile("rb")
    http, direct = [], []
    for i in range(samples + 20):
        body = event(b',"priority":"emergency"')
        data = request(token, STRUCTURED, body)
        started = time.perf_counter()
        sock.sendall(data)
        length = 0
        status = int(stream.readline().split(b" ", 2)[1])
        while (line := stream.readline()) not in (b"\r\n", b""):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        stream.read(length)
        took_http = (time.perf_counter() - started) * 1000
        assert status == 202, status
        wire = json.loads(event(b',"priority":"emergency"'))
        started = time.perf_counter()
        producer.publish(wire)
        took_direct = (time.perf_counter() - started) * 1000
        if i >= 20:  # warm-up left out
            http.append(took_http)
            direct.append(took_direct)
    sock.close()
    h, d = percentiles(http), percentiles(direct)
    return {
        "samples": samples,
        "http": h,
        "producer": d,
        "added_p50_ms": round(h["p50_ms"] - d["p50_ms"], 3),
        "added_p99_ms": round(h["p99_ms"] - d["p99_ms"], 3),
    }


def mqtt_events_per_s(messages: int) -> int | None:
    """The MQTT way in, measured by bench/mqtt.py in its own process (its own redis-server,
    Mosquitto and bridge); None when skipped or when Mosquitto is not installed."""
    if messages <= 0 or mosquitto_binary() is None:
        return None
    run = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("mqtt.py")), "--messages", str(messages)],
        capture_output=True, text=True, check=True, timeout=900,
    )  # fmt: skip
    print(run.stdout, end="")
    return int(json.loads(run.stdout.strip().splitlines()[-1])["mqtt_events_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2, help="gateway worker processes")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--samples", type=int, default=1000, help="emergencies per path")
    parser.add_argument(
        "--mqtt-messages", type=int, default=30_000, help="through the MQTT bridge; 0 skips it"
    )
    args = parser.parse_args()
    load_before = os.getloadavg()
    server = LocalRedisServer().start()
    keys = Keys(PREFIX)
    redis = Redis.from_url(server.url)
    token, _ = TokenStore(redis, keys).create("sdot", name="bench")
    gateway = GatewayProcess(server.url, PREFIX, args=("--workers", str(args.workers))).start()
    report: dict[str, object] = {"workers": args.workers, "connections": args.connections}
    try:
        load(gateway.port, token, 1.0, args.connections, 100)  # warm-up
        pid = gateway.process.pid  # type: ignore[union-attr]
        batched = measured(pid, {"phase": "batched", "batch": 100, "connections": 4},
                           lambda: load(gateway.port, token, args.seconds, 4, 100))  # fmt: skip
        batched["events_per_s"] = round(batched["events"] / batched["seconds"])
        print(json.dumps(batched))
        conns = args.connections
        single = measured(pid, {"phase": "single", "connections": conns},
                          lambda: load(gateway.port, token, args.seconds, conns, 0))  # fmt: skip
        single["requests_per_s"] = round(single["requests"] / single["seconds"])
        print(json.dumps(single))
        producer = Producer(redis, "sdot", keys)
        idle = emergencies(gateway.port, token, producer, args.samples)
        print(json.dumps({"phase": "emergency_idle", **idle}))
        queue: multiprocessing.Queue = multiprocessing.Queue()
        background = multiprocessing.Process(
            target=_background, args=(gateway.port, token, args.seconds + 5, queue)
        )
        background.start()
        time.sleep(1.0)
        loaded = emergencies(gateway.port, token, producer, min(args.samples, 500))
        routine = queue.get(timeout=args.seconds + 60)
        background.join()
        loaded["routine_events_per_s_meanwhile"] = round(routine["events"] / routine["seconds"])
        print(json.dumps({"phase": "emergency_under_routine_load", **loaded}))
        report.update(
            batched_events_per_s=batched["events_per_s"],
            single_requests_per_s=single["requests_per_s"],
            emergency_added_p50_ms=idle["added_p50_ms"],
            emergency_added_p99_ms=idle["added_p99_ms"],
            emergency_added_p99_ms_under_load=loaded["added_p99_ms"],
            emergency_http_p99_ms=idle["http"]["p99_ms"],
            batched_cpu_us_per_event=batched.get("gateway_cpu_us_per_event"),
            single_cpu_us_per_request=single.get("gateway_cpu_us_per_request"),
            errors=batched["errors"] + single["errors"],
        )
    finally:
        gateway.stop()
        redis.close()
        server.stop()
    report["mqtt_events_per_s"] = mqtt_events_per_s(args.mqtt_messages)
    report["cpus"] = os.cpu_count()
    report["load_average_before"] = [round(x, 2) for x in load_before]
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
