"""Producer(min_replicas=N): a publish is acknowledged only once N replicas hold it.

On the shared Redis (no replicas) every durable publish is refused with a typed error, or kept
in the spool; on a primary with a real replica it is acknowledged and the replica already holds
every event when publish returns. The CLI exposes it as ``--min-replicas`` (exit code 3).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from city.events import Event, source_for
from queues.keys import Keys
from queues.spool import Spool, SpoolReplayError
from queues.streams import NotReplicatedError, Producer
from tests.conftest import SEATTLE, require_redis_server
from workers.cli import main
from workers.standins import LocalRedisServer

pytestmark = pytest.mark.integration


def incident(n: int) -> Event:
    return Event.new(
        "traffic.incident",
        source_for("sdot"),
        {"kind": "collision", "severity": 2},
        location={"lat": 47.6205, "lon": -122.3493},
        id=f"durable-{n}",
    )


def ids_in(client: Redis, stream: str) -> list[str]:
    return [Event.model_validate_json(f[b"e"]).id for _, f in client.xrange(stream)]


@pytest.fixture
def primary_and_replica(tmp_path: Path) -> Iterator[tuple[LocalRedisServer, LocalRedisServer]]:
    require_redis_server("this test runs a primary and a replica of its own")
    primary = LocalRedisServer(directory=tmp_path / "p").start()
    replica = LocalRedisServer(directory=tmp_path / "r", replicaof=("127.0.0.1", primary.port))
    replica.start()
    try:
        # Started is not in sync: wait for the replica to confirm a write (its initial sync
        # done), so each test's WAIT times only its own writes' replication.
        deadline = time.monotonic() + 30
        while not _confirmed_by_replica(primary):
            assert time.monotonic() < deadline, "the replica never synced"
            time.sleep(0.05)
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


def test_without_enough_replicas_a_publish_is_refused_with_a_typed_error(redis, keys) -> None:
    producer = Producer(redis, "sdot", keys, min_replicas=1, replica_timeout_ms=50)
    events = [incident(n) for n in range(3)]
    with pytest.raises(NotReplicatedError) as refused:
        producer.publish_many(events)
    assert refused.value.event_ids == [e.id for e in events]
    assert (refused.value.replicas, refused.value.required) == (0, 1)
    with pytest.raises(NotReplicatedError):
        producer.publish(incident(3))
    with pytest.raises(NotReplicatedError):
        producer.publish_raw(incident(4).model_dump_json().encode())
    # the primary did take them: a retry with the same ids is a duplicate ingest drops
    assert ids_in(redis, keys.ingest("sdot")) == [f"durable-{n}" for n in range(5)]


def test_with_a_spool_unreplicated_events_wait_there_for_replay(redis, keys, tmp_path) -> None:
    spool = Spool(tmp_path / "sdot.db")
    producer = Producer(redis, "sdot", keys, spool=spool, min_replicas=1, replica_timeout_ms=50)
    try:
        assert producer.publish_many([incident(0), incident(1)]) == ["durable-0", "durable-1"]
        assert producer.publish(incident(2)) == "durable-2"
        assert [entry.event_id for entry in spool.pending()] == [f"durable-{n}" for n in range(3)]
    finally:
        spool.close()


def _confirmed_by_replica(primary: LocalRedisServer) -> bool:
    client = primary.client(socket_timeout=2)
    try:
        client.set("durable-probe", 1)
        return int(client.wait(1, 200)) >= 1
    finally:
        client.delete("durable-probe")
        client.close()


def test_a_replicated_publish_is_on_the_replica_when_it_returns(primary_and_replica) -> None:
    primary, replica = primary_and_replica
    keys = Keys("durable")
    producer = Producer(primary.client(), "sdot", keys, min_replicas=1, replica_timeout_ms=5000)
    events = [incident(n) for n in range(50)]
    assert producer.publish_many(events) == [e.id for e in events]
    assert producer.publish(incident(50)) == "durable-50"
    # no waiting here: WAIT returned only after the replica confirmed every write
    assert ids_in(replica.client(), keys.ingest("sdot")) == [f"durable-{n}" for n in range(51)]


def test_cli_min_replicas_exits_3_when_not_acknowledged(
    redis_url, redis, keys, monkeypatch, capsys
) -> None:
    # `redis` (the real_redis fixture) deletes this test's keys afterwards.
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("CITYRELAY_MIN_REPLICAS", "1")  # read when the parser is built
    args = ["--prefix", keys.prefix, "--config", str(SEATTLE), "publish", "--dept", "sdot",
            "--type", "traffic.incident", "--lat", "47.6205", "--lon", "-122.3493",
            "--data", '{"kind": "closure", "severity": 4}', "--id", "cli-durable",
            "--replica-timeout-ms", "50"]  # fmt: skip
    assert main(args) == 3
    assert "not acknowledged: 1 event(s) reached 0 of the 1 replica(s)" in capsys.readouterr().err
    assert main([*args, "--min-replicas", "0"]) == 0  # the flag overrides the environment


def test_spool_replay_with_min_replicas_keeps_what_no_replica_holds(
    redis, keys, tmp_path, primary_and_replica
) -> None:
    spool = Spool(tmp_path / "sdot.db")
    stream = keys.ingest("sdot")
    try:
        for n in range(3):
            spool.append(stream, {"e": incident(n).model_dump_json()}, event_id=f"durable-{n}")
        with pytest.raises(SpoolReplayError, match="reached 0 of 1 replica"):
            spool.replay(redis, min_replicas=1, replica_timeout_ms=50)  # no replica here
        assert len(spool) == 3  # written to that Redis, but not confirmed: still spooled
        primary, replica = primary_and_replica
        assert spool.replay(primary.client(), min_replicas=1, replica_timeout_ms=5000) == 3
        assert len(spool) == 0
        assert ids_in(replica.client(), stream) == [f"durable-{n}" for n in range(3)]
    finally:
        spool.close()
