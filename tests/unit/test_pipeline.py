"""The pipeline end to end on fakeredis: producer -> ingest -> RQ -> route -> inboxes."""

import json

import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from city.events import Event, source_for
from queues.inbox import Inbox
from queues.priority import make_queue
from queues.streams import Producer
from tests.pipeline_harness import Harness

WEST = {"lat": 47.6205, "lon": -122.3493}  # Seattle Center: West precinct, council district 7


@pytest.fixture
def harness(redis, keys, seattle, seattle_router):
    config, base = seattle
    return Harness(redis, keys, config, base, seattle_router)


def incident(**attrs):
    attrs.setdefault("location", WEST)
    return Event.new(
        "traffic.incident", source_for("sdot"), {"kind": "collision", "severity": 3}, **attrs
    )


def test_event_reaches_exactly_the_routed_departments(harness, seattle_router, keys, redis):
    event = incident()
    Producer(redis, "sdot", keys).publish(event)
    harness.run()
    expected = {d.dept for d in seattle_router.route(event.to_wire())}
    assert "spd-west" in expected and "spd-east" not in expected
    delivered = harness.deliveries()
    assert set(delivered) == expected
    assert all(ids == [event.id] for ids in delivered.values())
    message = Inbox(redis, "spd-west", keys).read()[0]
    assert message.event["department"] == "sdot" and message.via["zones"] == ["precincts:W"]
    assert message.ingested_ms > 0


def test_malformed_event_is_dead_lettered_with_reason_and_original(harness, keys, redis):
    producer = Producer(redis, "sdot", keys)
    producer.publish_raw(b'{"type": "traffic.incident"')
    producer.publish({"type": "traffic.incident", "data": {"kind": "collision"}, "location": WEST})
    counters = harness.run()
    assert counters["dead_lettered"] == 2
    letters = harness.deadletters()
    assert [d["reason"] for d in letters] == ["malformed_json", "invalid_payload"]
    assert letters[0]["body"] == '{"type": "traffic.incident"'
    assert "severity" in letters[1]["message"] and letters[1]["dept"] == "sdot"
    assert harness.deliveries() == {}
    # Nothing is left pending: refused entries are acknowledged once dead-lettered.
    assert redis.xpending(keys.ingest("sdot"), "router")["pending"] == 0


def test_same_event_id_published_twice_is_delivered_once(harness, keys, redis):
    event = incident()
    producer = Producer(redis, "sdot", keys)
    producer.publish(event)
    harness.run()
    producer.publish(event)  # a producer retry after a timeout
    producer.publish_many([event, event])
    counters = harness.run()
    assert counters["duplicates"] == 3
    assert all(ids == [event.id] for ids in harness.deliveries().values())


def test_consumer_killed_between_read_and_ack_still_delivers_exactly_once(
    harness, keys, redis, seattle
):
    from workers.ingest import IngestWorker

    config, _ = seattle
    events = [incident() for _ in range(5)]
    Producer(redis, "sdot", keys).publish_many(events)
    # Consumer A reads the entries and dies before it enqueues or acknowledges anything.
    doomed = IngestWorker(redis, keys, config, consumer="ingest-doomed")
    assert len(doomed.streams.read("ingest-doomed", 100, None)) == 5
    assert harness.ingest_all() == {}  # nothing new for the live consumer...
    survivor = IngestWorker(
        redis,
        keys,
        config.model_copy(
            update={"routing": config.routing.model_copy(update={"claim_idle_ms": 100})}
        ),
        consumer="ingest-b",
    )
    import time

    time.sleep(0.15)
    counters = survivor.recover()  # ...until the dead consumer's entries are reclaimed
    assert counters["reclaimed"] == 5
    harness.work("routine")
    assert all(sorted(ids) == sorted(e.id for e in events) for ids in harness.deliveries().values())


def test_consumer_killed_after_dedupe_but_before_enqueue_loses_nothing(harness, keys, redis):
    event = incident()
    Producer(redis, "sdot", keys).publish(event)
    entries = harness.ingest.streams.read("ingest-a", 10, None)
    harness.ingest._dedupe([(entries[0], {"id": event.id})])  # marker set, then "crash"
    counters = harness.ingest.process(entries)  # the redelivered entry is not a duplicate
    assert counters["accepted"] == 1 and counters["duplicates"] == 0
    harness.work("routine")
    assert harness.inbox_ids("spd-west") == [event.id]


def test_route_job_run_twice_delivers_once(harness, keys, redis):
    from jobs.route import deliver_items

    event = incident()
    Producer(redis, "sdot", keys).publish(event)
    harness.ingest_all()
    job = make_queue(redis, keys, "high").jobs[0]
    items = job.args[0]
    first = deliver_items(harness.context, redis, items)
    second = deliver_items(harness.context, redis, items)
    assert first["delivered"] == 1 and second == {"duplicates": 1}
    assert harness.inbox_ids("spd-west") == [event.id]


def test_entry_that_keeps_failing_is_dead_lettered_as_poison(harness, keys, redis, seattle):
    from workers.ingest import IngestWorker

    config, _ = seattle
    routing = config.routing.model_copy(update={"claim_idle_ms": 100, "max_deliveries": 2})
    worker = IngestWorker(redis, keys, config.model_copy(update={"routing": routing}), consumer="x")
    Producer(redis, "sdot", keys).publish(incident())
    import time

    worker.streams.read("crashing-1", 10, None)  # delivery 1, then a crash
    time.sleep(0.12)
    worker.streams.reclaim("crashing-2", 100, 99)  # delivery 2, then a crash
    time.sleep(0.12)
    counters = worker.recover()
    assert counters["dead_lettered"] == 1
    assert harness.deadletters()[0]["reason"] == "poison"


def test_emergency_is_read_and_queued_ahead_of_a_routine_backlog(harness, keys, redis):
    producer = Producer(redis, "sdot", keys)
    producer.publish_many(incident() for _ in range(1000))
    emergency = Event.new(
        "health.emergency",
        source_for("ems"),
        {"incident_number": "E-1", "kind": "cardiac"},
        location=WEST,
    )
    Producer(redis, "ems", keys).publish(emergency)
    harness.ingest.read_count = 100
    first = harness.ingest.step(None)  # the emergency lane is read first, despite arriving last
    assert first["jobs:emergency"] == 1
    harness.work("emergency")
    assert harness.inbox_ids("emergency-management") == [emergency.id]
    assert len(harness.inbox_ids("spd-west")) == 0  # the routine backlog has not run yet
    harness.ingest_all()
    harness.work("routine")
    assert len(harness.inbox_ids("spd-west")) == 1000


def test_events_are_batched_into_few_jobs(harness, keys, redis):
    Producer(redis, "sdot", keys).publish_many(incident() for _ in range(1200))
    counters = harness.ingest_all()
    assert counters["accepted"] == 1200
    assert counters["jobs:high"] <= 4  # micro-batches of up to 500, not one job per event


def test_unroutable_event_is_dead_lettered_without_sinking_its_batch(
    harness, keys, redis, monkeypatch
):
    from jobs.route import deliver_items

    good = incident().to_wire() | {"department": "sdot", "priority": "high"}
    bad = dict(good, id="bad", location={"type": "Point", "coordinates": [-122.3, 47.6]})
    from city.geo import Jurisdictions

    def geos_failure(self, geometry, at=None):
        raise RuntimeError("GEOS TopologyException")

    monkeypatch.setattr(Jurisdictions, "intersecting", geos_failure)
    items = [{"e": good, "ing": "1-0"}, {"e": bad, "ing": "2-0"}]
    counters = deliver_items(harness.context, redis, items)
    assert counters["delivered"] == 1 and counters["dead_lettered"] == 1
    letter = harness.deadletters()[0]
    assert letter["reason"] == "unroutable" and "TopologyException" in letter["message"]
    assert json.loads(letter["body"])["id"] == "bad"
    assert harness.inbox_ids("spd-west") == [good["id"]]


def test_stats_count_events_in_and_delivered(harness, keys, redis):
    from queues.metrics import read_stats

    Producer(redis, "sdot", keys).publish_many(incident() for _ in range(3))
    harness.run()
    stats = read_stats(redis, keys)
    assert stats["in:sdot"] == 3 and stats["delivered:spd-west"] == 3 and stats["delivered"] == 3
    assert (
        json.loads(redis.xrange(keys.hot("traffic.incident"))[0][1][b"e"])["type"]
        == "traffic.incident"
    )


def test_a_trickle_is_gathered_into_one_micro_batch(harness, keys, redis):
    import threading
    import time

    producer = Producer(redis, "sdot", keys)

    def trickle():
        for _ in range(10):
            producer.publish(incident())
            time.sleep(0.002)

    # The batch closes when the 11th event arrives, however slowly a loaded machine runs the
    # trickle (with a 200 ms window, a writer thread kept off the CPU split it in two).
    harness.ingest.routing = harness.ingest.routing.model_copy(
        update={"batch_max_ms": 10_000, "batch_max_events": 11}
    )
    writer = threading.Thread(target=trickle)
    producer.publish(incident())
    writer.start()
    counters = harness.ingest.gather(None)
    writer.join()
    assert counters["accepted"] == 11 and counters["jobs:high"] == 1


def test_a_queued_route_job_is_read_by_a_stock_rq_reader(harness, keys, redis):
    """Ingest stores its jobs' data at a cheaper zlib level than RQ's; any RQ reader (`rq
    info`, a plain `Job.fetch` with RQ's JSONSerializer) still reads the events as published."""
    events = [incident() for _ in range(3)]
    Producer(redis, "sdot", keys).publish_many(events)
    assert harness.ingest_all()["jobs:high"] == 1
    (job_id,) = make_queue(redis, keys, "high").job_ids
    job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
    # zlib's header names the level class: 0x01 the fastest (RQ's default 6 writes 0x9c).
    assert redis.hget(job.key, "data")[:2] == b"\x78\x01"
    items = job.args[0]
    assert sorted(item["e"]["id"] for item in items) == sorted(e.id for e in events)
    assert job.func_name == "jobs.route.route_batch"
