"""Raw CAP through the pipeline (fakeredis): a bridge publishes XML, ingest turns it into events
with deterministic ids, the route job delivers them; a re-sent alert is delivered once; the
lane is chosen without schema validation; refused entries keep (a bounded copy of) their bytes;
one entry that breaks validation unexpectedly never takes its batch down with it."""

from __future__ import annotations

import json
from pathlib import Path

import fakeredis
import pytest

from city.cap import events_from_cap
from city.catalog import EventCatalog
from city.events import Event, source_for
from queues.ingest_decode import CAP_FIELD, MAX_DEAD_LETTER_BODY
from queues.spool import Spool
from queues.streams import EVENT_FIELD, Producer
from tests.pipeline_harness import Harness
from tests.scenarios.emergency_city import SEATTLE_POLYGON, cap_alert

OEM = "emergency-management"


def bilingual_alert(identifier: str, status: str = "Actual") -> bytes:
    """An Extreme/Immediate/Observed earthquake alert in English and Spanish: two info blocks,
    two emergency events from one stream entry."""
    info = """<info><language>{lang}</language><category>Geo</category><event>{event}</event>
<urgency>Immediate</urgency><severity>Extreme</severity><certainty>Observed</certainty>
<headline>{headline}</headline><area><areaDesc>Seattle</areaDesc>
<polygon>{polygon}</polygon></area></info>"""
    english = info.format(
        lang="en-US", event="Earthquake", headline="M6.8 earthquake", polygon=SEATTLE_POLYGON
    )
    spanish = info.format(
        lang="es-US", event="Terremoto", headline="Terremoto M6.8", polygon=SEATTLE_POLYGON
    )
    infos = english + spanish
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>{identifier}</identifier>
<sender>oem@seattle.example</sender><sent>2026-11-25T06:00:00-08:00</sent>
<status>{status}</status><msgType>Alert</msgType><scope>Public</scope>{infos}</alert>""".encode()


@pytest.fixture
def harness(redis, keys, seattle, seattle_router):
    config, base = seattle
    return Harness(redis, keys, config, base, seattle_router)


def test_raw_alert_is_delivered_as_its_events_and_a_resend_is_deduplicated(harness, redis, keys):
    xml = bilingual_alert("raw-1")
    expected = [e.id for e in events_from_cap(xml, department=OEM)]
    producer = Producer(redis, OEM, keys)
    producer.publish_cap(xml)
    assert redis.xlen(keys.ingest(OEM, "emergency")) == 1  # two emergency infos: that lane
    counters = harness.run()
    assert counters["accepted"] == 2 and counters["dead_lettered"] == 0
    # both events of the one entry reach the emergency queue (one job, never two with one id)
    assert counters["jobs:emergency"] == 1
    for dept in ("fire", OEM):
        assert sorted(harness.inbox_ids(dept)) == sorted(expected)
    fire_events = [m.event for m in harness_inbox(harness, "fire")]
    assert {e["data"]["language"] for e in fire_events} == {"en-US", "es-US"}
    assert all(e["priority"] == "emergency" and e["department"] == OEM for e in fire_events)

    producer.publish_cap(xml)  # the bridge polls the feed again
    Producer(redis, OEM, keys).publish_many(events_from_cap(xml, department=OEM))  # and --cap
    again = harness.run()
    assert again["duplicates"] == 4 and again["accepted"] == 0
    assert sorted(harness.inbox_ids("fire")) == sorted(expected)
    assert redis.xpending(keys.ingest(OEM, "emergency"), "router")["pending"] == 0


def harness_inbox(harness: Harness, dept: str) -> list:  # type: ignore[type-arg]
    from queues.inbox import Inbox

    return Inbox(harness.redis, dept, harness.keys).history(100)


def test_events_of_one_entry_are_never_split_across_jobs_with_one_id(
    redis, keys, seattle, seattle_router
):
    config, base = seattle
    tiny = config.model_copy(
        update={"routing": config.routing.model_copy(update={"batch_max_events": 1})}
    )
    harness = Harness(redis, keys, tiny, base, seattle_router)
    xml = bilingual_alert("raw-2").replace(b"<severity>Extreme", b"<severity>Moderate")
    Producer(redis, OEM, keys).publish_cap(xml)
    counters = harness.run()
    assert counters["accepted"] == 2 and counters["jobs:high"] == 1
    assert len(harness.inbox_ids(OEM)) == 2


@pytest.mark.parametrize(
    ("xml", "lane"),
    [
        (bilingual_alert("l-1"), "emergency"),
        (bilingual_alert("l-2", status="Test"), "routine"),  # a Test alert never pages anyone
        (cap_alert("l-3", severity="Minor"), "routine"),
        (b"<not-cap/>", "routine"),  # garbage is dead-lettered from the routine lane
        (b"\xff\xfe not even XML", "routine"),
        # an Extreme alert the schema will refuse still travels first; ingest refuses it there
        (bilingual_alert("l-4").replace(b"<sent>", b"<sent>garbage"), "emergency"),
    ],
)
def test_lane_comes_from_a_parse_without_schema_validation(redis, keys, xml, lane):
    Producer(redis, OEM, keys).publish_cap(xml)
    assert redis.xlen(keys.ingest(OEM, lane)) == 1


def test_an_explicit_lane_is_used_and_an_unknown_one_refused(redis, keys):
    producer = Producer(redis, OEM, keys)
    producer.publish_cap(bilingual_alert("x"), lane="routine")
    assert redis.xlen(keys.ingest(OEM, "routine")) == 1
    with pytest.raises(ValueError, match="unknown lane"):
        producer.publish_cap(b"<alert/>", lane="urgent")


def test_spooled_while_redis_is_down_and_replayed_as_raw_cap(tmp_path: Path, keys):
    from queues.connect import PRODUCER_SETTINGS, redis_from_url
    from workers.standins import free_port

    down = redis_from_url(f"redis://127.0.0.1:{free_port()}/0", **PRODUCER_SETTINGS)
    spool = Spool(tmp_path / "oem.db")
    xml = bilingual_alert("spooled")
    assert Producer(down, OEM, keys, spool=spool).publish_cap(xml).startswith("spool:")
    up = fakeredis.FakeRedis()
    assert spool.replay(up) == 1
    ((_, fields),) = up.xrange(keys.ingest(OEM, "emergency"))
    assert fields == {CAP_FIELD: xml}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({EVENT_FIELD: b"{}", CAP_FIELD: b"<alert/>"}, "malformed_entry"),  # which one?
        ({b"x": b"1"}, "malformed_entry"),
        ({CAP_FIELD: b"<alert/>"}, "invalid_cap"),
    ],
)
def test_entries_with_both_fields_or_neither_are_refused(harness, redis, keys, fields, reason):
    redis.xadd(keys.ingest("sdot"), fields)
    assert harness.ingest_all()["dead_lettered"] == 1
    (letter,) = harness.deadletters()
    assert letter["reason"] == reason and letter["message"]


def test_a_huge_refused_body_is_kept_cut_and_the_message_says_so(harness, redis, keys):
    body = json.dumps({"type": "traffic.incident", "data": {"d": "x" * 3_000_000}}).encode()
    redis.xadd(keys.ingest("sdot"), {EVENT_FIELD: body})
    harness.ingest_all()
    ((_, fields),) = redis.xrange(keys.deadletter)
    assert fields[b"reason"] == b"too_large"
    assert fields[b"body"] == body[:MAX_DEAD_LETTER_BODY]
    message = fields[b"message"].decode()
    assert message.startswith(f"[body truncated to the first {MAX_DEAD_LETTER_BODY} of {len(body)}")
    assert "limit" in message  # the reason's own explanation follows


def test_an_entry_that_breaks_validation_unexpectedly_does_not_sink_its_batch(
    harness, redis, keys, monkeypatch
):
    good = Event.new("traffic.incident", source_for("sdot"), {"kind": "collision", "severity": 2},
                     location={"lat": 47.6205, "lon": -122.3493})  # fmt: skip
    accept = EventCatalog.accept

    def flaky(self, raw, department):  # type: ignore[no-untyped-def]
        if b"boom" in raw:
            raise RecursionError("maximum recursion depth exceeded")
        return accept(self, raw, department)

    monkeypatch.setattr(EventCatalog, "accept", flaky)
    producer = Producer(redis, "sdot", keys)
    producer.publish_raw(b'{"boom": 1}')
    producer.publish(good)
    counters = harness.ingest_all()
    assert counters["accepted"] == 1 and counters["dead_lettered"] == 1
    (letter,) = harness.deadletters()
    assert letter["reason"] == "decode_failed" and "RecursionError" in letter["message"]
    assert redis.xpending(keys.ingest("sdot"), "router")["pending"] == 0


@pytest.mark.parametrize("time", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"])
def test_an_event_time_outside_the_utc_range_is_refused_not_a_crash(harness, redis, keys, time):
    event = {"id": "t1", "type": "traffic.incident", "time": time,
             "data": {"kind": "collision", "severity": 2}}  # fmt: skip
    Producer(redis, "sdot", keys).publish(event)
    assert harness.ingest_all()["dead_lettered"] == 1
    (letter,) = harness.deadletters()
    assert letter["reason"] == "invalid_envelope" and "representable" in letter["message"]


def test_entries_with_one_id_on_both_lanes_become_two_jobs_not_one(harness, redis, keys):
    """Stream ids are per stream: a department's two lanes can hold the same id. A CAP alert on
    the emergency lane may carry only high-priority infos, which share the high queue with the
    routine lane's events; their jobs must not get the same id (RQ would keep one)."""
    moderate = bilingual_alert("lane-a").replace(b"<severity>Extreme", b"<severity>Moderate")
    redis.xadd(keys.ingest(OEM, "emergency"), {CAP_FIELD: moderate}, id="5-0")
    assert harness.ingest_all()["jobs:high"] == 1
    other = bilingual_alert("lane-b").replace(b"<severity>Extreme", b"<severity>Moderate")
    redis.xadd(keys.ingest(OEM, "routine"), {CAP_FIELD: other}, id="5-0")
    assert harness.ingest_all()["jobs:high"] == 1
    harness.work("routine")
    assert len(harness.inbox_ids(OEM)) == 4
