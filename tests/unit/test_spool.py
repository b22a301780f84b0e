"""The producer's local spool: durable, ordered, idempotent replay, survives a killed process."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from redis import Redis
from redis.exceptions import AskError
from redis.exceptions import ConnectionError as RedisConnectionError

from queues.keys import Keys
from queues.spool import (
    Spool,
    SpoolFlusher,
    SpoolReplayError,
    xadd_or_spool,
)

STREAM = "t:ingest:fire"


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def redis(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    s = Spool(tmp_path / "spool" / "producer.db")
    yield s
    s.close()


def stream_ids(redis: Redis, stream: str = STREAM) -> list[str]:
    return [fields[b"id"].decode() for _, fields in redis.xrange(stream)]


def test_entries_are_kept_in_order_with_their_field_types(spool: Spool) -> None:
    first = spool.append(STREAM, {"id": "e1", "event": '{"a": 1}', "n": 3, "raw": b"\x00\xff"})
    second = spool.append("t:ingest:police", {"id": "e2"}, event_id="e2", maxlen=1000)
    assert second > first and len(spool) == 2 and spool.has_pending()
    a, b = spool.pending()
    assert a.fields == {"id": "e1", "event": '{"a": 1}', "n": "3", "raw": b"\x00\xff"}
    assert (a.event_id, a.maxlen) == (None, None)
    assert (b.stream, b.event_id, b.maxlen) == ("t:ingest:police", "e2", 1000)
    assert [e.seq for e in spool.pending(limit=1)] == [first]


def test_unsupported_field_values_are_refused(spool: Spool) -> None:
    with pytest.raises(TypeError, match="'flag': bool"):
        spool.append(STREAM, {"flag": True})
    with pytest.raises(TypeError, match="'data': dict"):
        spool.append(STREAM, {"data": {"x": 1}})  # type: ignore[dict-item]
    assert len(spool) == 0  # nothing half-written


def test_replay_moves_everything_in_order_in_batches(spool: Spool, redis: Redis) -> None:
    spool.append_many([(STREAM, {"id": f"e{i}"}, f"e{i}") for i in range(25)])
    spool.append(STREAM, {"id": "no-id"})  # entries without an event id replay too
    assert spool.replay(redis, batch=4) == 26
    assert stream_ids(redis) == [f"e{i}" for i in range(25)] + ["no-id"]
    assert len(spool) == 0 and not spool.has_pending()
    assert spool.replay(redis) == 0


def test_replay_repeated_after_a_crash_adds_nothing_twice(spool: Spool, redis: Redis) -> None:
    spool.append_many([(STREAM, {"id": f"e{i}"}, f"e{i}") for i in range(3)])
    entries = spool.pending()
    spool.replay(redis)
    # simulate "XADD done, delete lost": put the same entries back and replay again
    spool.append_many([(e.stream, e.fields, e.event_id) for e in entries])
    assert spool.replay(redis) == 3
    assert stream_ids(redis) == ["e0", "e1", "e2"]
    assert redis.ttl(Keys.replay_marker(STREAM, "e0")) > 0


def test_replay_respects_maxlen(spool: Spool, redis: Redis) -> None:
    spool.append_many([(STREAM, {"id": f"e{i}"}, f"e{i}") for i in range(300)], maxlen=10)
    spool.append_many([(STREAM, {"id": f"x{i}"}, None) for i in range(300)], maxlen=10)
    spool.replay(redis)
    assert redis.xlen(STREAM) < 600


def test_redis_down_keeps_everything_spooled(spool: Spool, server, redis) -> None:  # type: ignore[no-untyped-def]
    spool.append(STREAM, {"id": "e1"}, event_id="e1")
    server.connected = False
    with pytest.raises(RedisConnectionError):
        spool.replay(redis)
    assert len(spool) == 1
    server.connected = True
    assert spool.replay(redis) == 1


def test_refused_entry_stops_replay_after_the_good_ones(spool: Spool, redis: Redis) -> None:
    redis.set("t:ingest:wrongtype", "not a stream")
    spool.append(STREAM, {"id": "e1"}, event_id="e1")
    spool.append("t:ingest:wrongtype", {"id": "e2"}, event_id="e2")
    spool.append(STREAM, {"id": "e3"}, event_id="e3")
    with pytest.raises(SpoolReplayError, match="e2"):
        spool.replay(redis)
    assert stream_ids(redis) == ["e1"]
    assert [e.event_id for e in spool.pending()] == ["e2", "e3"]  # kept, in order


def test_xadd_or_spool_goes_direct_while_redis_answers(spool: Spool, redis: Redis) -> None:
    published = xadd_or_spool(redis, spool, STREAM, {"id": "e1"}, event_id="e1")
    assert published.where == "redis" and published.ref == redis.xrange(STREAM)[0][0].decode()
    assert len(spool) == 0


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_xadd_or_spool_spools_promptly_when_redis_is_unreachable(spool: Spool) -> None:
    down = Redis(port=closed_port(), socket_connect_timeout=0.5, retry=None)
    started = time.monotonic()
    published = xadd_or_spool(down, spool, STREAM, {"id": "e1"}, event_id="e1")
    assert published.where == "spool" and time.monotonic() - started < 1.0
    assert [e.event_id for e in spool.pending()] == ["e1"]


def test_nothing_overtakes_spooled_entries(spool: Spool, server, redis) -> None:  # type: ignore[no-untyped-def]
    server.connected = False
    assert xadd_or_spool(redis, spool, STREAM, {"id": "e1"}, event_id="e1").where == "spool"
    server.connected = True
    # Redis is back but e1 still waits: e2 must queue behind it
    assert xadd_or_spool(redis, spool, STREAM, {"id": "e2"}, event_id="e2").where == "spool"
    spool.replay(redis)
    assert xadd_or_spool(redis, spool, STREAM, {"id": "e3"}, event_id="e3").where == "redis"
    assert stream_ids(redis) == ["e1", "e2", "e3"]


def wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_flusher_replays_when_redis_returns(spool: Spool, server, redis) -> None:  # type: ignore[no-untyped-def]
    server.connected = False
    flusher = SpoolFlusher(spool, redis, interval=0.05, backoff_base=0.01, backoff_cap=0.05).start()
    try:
        for i in range(5):
            xadd_or_spool(redis, spool, STREAM, {"id": f"e{i}"}, event_id=f"e{i}", flusher=flusher)
        wait_for(lambda: flusher.failures >= 2)
        assert isinstance(flusher.last_error, RedisConnectionError) and len(spool) == 5
        assert 0 <= flusher.next_delay() <= 0.05  # backing off, with jitter, capped
        server.connected = True
        wait_for(lambda: len(spool) == 0)
        wait_for(lambda: flusher.failures == 0)
        assert flusher.replayed == 5 and flusher.next_delay() == 0.05
    finally:
        flusher.stop()
    assert stream_ids(redis) == [f"e{i}" for i in range(5)]


def test_flusher_keeps_a_refused_entry_and_reports_it(spool: Spool, redis: Redis) -> None:
    redis.set("t:bad", "x")
    spool.append("t:bad", {"id": "e1"}, event_id="e1")
    flusher = SpoolFlusher(spool, redis)
    assert flusher.flush_once() == 0
    assert isinstance(flusher.last_error, SpoolReplayError) and len(spool) == 1


def test_flusher_outlives_an_unexpected_error_and_replays_afterwards(
    spool: Spool, redis: Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A refusal outside SpoolReplayError and the connection errors (an ASK after a migration
    outlasted its wait) is logged and backed off; the thread does not end with the spool full."""
    replay = spool.replay
    refusals = [AskError("3999 127.0.0.1:7001")] * 2

    def refused_twice(*args: Any) -> int:
        if refusals:
            raise refusals.pop()
        return replay(*args)

    monkeypatch.setattr(spool, "replay", refused_twice)
    spool.append(STREAM, {"id": "e1"}, event_id="e1")
    flusher = SpoolFlusher(spool, redis, interval=0.05, backoff_base=0.01, backoff_cap=0.05)
    with caplog.at_level("ERROR", logger="queues.spool"):
        flusher.start()
        try:
            wait_for(lambda: len(spool) == 0)
        finally:
            flusher.stop()
    assert stream_ids(redis) == ["e1"] and flusher.replayed == 1 and flusher.failures == 0
    assert sum("replay failed unexpectedly" in r.getMessage() for r in caplog.records) == 2


WRITER = """
import sys
from queues.spool import Spool
spool = Spool(sys.argv[1])
i = 0
while True:
    spool.append("t:ingest:fire", {"id": f"e{i}", "pad": "x" * 200}, event_id=f"e{i}")
    print(i, flush=True)
    i += 1
"""


def test_appends_survive_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    confirmed = -1
    while confirmed < 200:
        confirmed = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the writer went on while this process waited for a CPU: what it confirmed before the
    # kill is still in the pipe (each line one write, whole)
    for line in proc.stdout:
        confirmed = int(line)
    # every append the writer saw return is there, in order, and the file is sound
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    spool = Spool(path)
    ids = [e.event_id for e in spool.pending()]
    assert ids[: confirmed + 1] == [f"e{i}" for i in range(confirmed + 1)]
    assert len(ids) in (confirmed + 1, confirmed + 2)  # at most the one in flight beyond
    spool.close()


def test_a_batch_is_spooled_whole_or_not_at_all(spool: Spool) -> None:
    with pytest.raises(sqlite3.Error):
        spool.append_many([(STREAM, {"id": "e1"}, "e1"), (STREAM, {"id": "e2"}, object())])  # type: ignore[list-item]
    assert len(spool) == 0
