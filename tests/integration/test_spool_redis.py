"""Spool and reconnect against real Redis: a producer keeps accepting events through an outage
and nothing is lost or duplicated when Redis comes back; Sentinel URLs reach the master."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from redis import Redis

from queues.connect import PRODUCER_SETTINGS, redis_from_url
from queues.keys import Keys
from queues.spool import Spool, SpoolFlusher, xadd_or_spool

pytestmark = pytest.mark.integration
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_SERVER = shutil.which("redis-server")


@pytest.fixture
def keys() -> Iterator[Keys]:
    """A unique prefix on the shared Redis; only its own keys are deleted afterwards."""
    k = Keys(f"t{uuid4().hex[:8]}")
    yield k
    client = Redis.from_url(REDIS_URL)
    stale = list(client.scan_iter(match=f"{k.prefix}:*", count=1000))
    if stale:
        client.delete(*stale)


def ids(client: Redis, stream: str) -> list[str]:
    return [fields[b"id"].decode() for _, fields in client.xrange(stream)]


def test_replay_into_real_redis_is_ordered_and_idempotent(keys: Keys, tmp_path: Path) -> None:
    client = redis_from_url(REDIS_URL)
    spool = Spool(tmp_path / "spool.db")
    fire, police = keys.ingest("fire"), keys.ingest("police", "emergency")
    spool.append_many(
        [(fire if i % 3 else police, {"id": f"e{i}", "n": i}, f"e{i}") for i in range(1000)]
    )
    entries = spool.pending()
    assert spool.replay(client, batch=128) == 1000
    # a crash between XADD and delete would replay them again: nothing is added twice
    spool.append_many([(e.stream, e.fields, e.event_id) for e in entries])
    assert spool.replay(client) == 1000
    assert ids(client, fire) == [f"e{i}" for i in range(1000) if i % 3]
    assert ids(client, police) == [f"e{i}" for i in range(1000) if not i % 3]
    assert len(spool) == 0
    spool.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - the server is still starting; retried until timeout
            pass
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class OwnRedis:
    """A redis-server of our own (AOF on, no RDB) that the test may stop and restart."""

    def __init__(self, directory: Path):
        self.port, self.dir = free_port(), directory
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS_SERVER, "redis-server is not installed"
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--dir",
                str(self.dir),
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
        )
        probe = Redis(port=self.port)
        wait_until(lambda: probe.ping())

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()  # SIGTERM: Redis flushes the AOF and exits
        self.proc.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.stop()


def test_producer_keeps_accepting_through_an_outage_and_loses_nothing(
    own_redis: OwnRedis, tmp_path: Path
) -> None:
    url = f"redis://127.0.0.1:{own_redis.port}/0"
    producer = redis_from_url(url, **PRODUCER_SETTINGS)
    spool = Spool(tmp_path / "producer-spool.db")
    flusher = SpoolFlusher(
        spool, redis_from_url(url, retries=0), interval=0.05, backoff_base=0.02, backoff_cap=0.2
    ).start()
    stream = Keys("t").ingest("fire", "emergency")
    where: list[str] = []

    def publish(i: int) -> None:
        started = time.monotonic()
        result = xadd_or_spool(
            producer, spool, stream, {"id": f"e{i}"}, event_id=f"e{i}", flusher=flusher
        )
        assert time.monotonic() - started < 1.0  # prompt, whether Redis is up or not
        where.append(result.where)

    try:
        for i in range(20):
            publish(i)
        own_redis.stop()
        for i in range(20, 40):
            publish(i)
        assert where[:20] == ["redis"] * 20 and where[20:] == ["spool"] * 20
        assert len(spool) == 20  # all held locally while Redis is away
        own_redis.start()
        for i in range(40, 50):
            publish(i)  # spooled behind the backlog, or direct once it has drained
        wait_until(lambda: len(spool) == 0)
        # a worker-style client (reconnect with backoff) reads everything, in order, once
        worker = redis_from_url(url)
        assert ids(worker, stream) == [f"e{i}" for i in range(50)]
    finally:
        flusher.stop()
        spool.close()


def test_worker_client_reconnects_after_a_restart(own_redis: OwnRedis) -> None:
    worker = redis_from_url(f"redis://127.0.0.1:{own_redis.port}/0", retries=8, backoff_cap=0.5)
    worker.set("k", "before")
    own_redis.stop()
    own_redis.start()
    assert worker.get("k") == b"before"  # same client object: reconnected, AOF kept the value


def test_sentinel_url_reaches_the_monitored_master(own_redis: OwnRedis, tmp_path: Path) -> None:
    sentinel_port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor citymain 127.0.0.1 {own_redis.port} 1\n"
    )
    assert REDIS_SERVER
    sentinel = subprocess.Popen([REDIS_SERVER, str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
    try:
        probe = Redis(port=sentinel_port)
        wait_until(lambda: probe.sentinel_get_master_addr_by_name("citymain"))
        client = redis_from_url(f"redis+sentinel://127.0.0.1:{sentinel_port}/citymain/2")
        client.set("via-sentinel", "yes")
        assert Redis(port=own_redis.port, db=2).get("via-sentinel") == b"yes"
    finally:
        sentinel.terminate()
        sentinel.wait(timeout=10)
