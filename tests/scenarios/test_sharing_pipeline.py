"""Sharing through the whole pipeline: the plate-number scenario and the audit of every decision."""

import time
from datetime import UTC, datetime, timedelta

import pytest

from city.events import Event, source_for
from city.sharing import Grant
from queues.audit import AuditLog
from queues.grants import GrantStore
from queues.inbox import Inbox
from queues.streams import Producer
from tests.pipeline_harness import Harness

WEST = {"lat": 47.6205, "lon": -122.3493}


@pytest.fixture
def harness(redis, keys, seattle, seattle_router):
    config, base = seattle
    return Harness(redis, keys, config, base, seattle_router)


def hit_and_run(n: int) -> Event:
    data = {"kind": "collision", "severity": 4, "plate": f"ABC{n:03d}", "road": "Mercer St"}
    return Event.new("traffic.incident", source_for("sdot"), data, location=WEST)


def views(redis, keys, dept):
    return [(m.via["purpose"], m.event) for m in Inbox(redis, dept, keys).history(100)]


def test_police_see_plates_only_for_investigation_and_only_while_the_grant_lasts(
    harness, redis, keys
):
    producer = Producer(redis, "sdot", keys)
    producer.publish(hit_and_run(1))  # before any grant
    harness.run()
    received = views(redis, keys, "spd-west")
    assert {purpose for purpose, _ in received} == {"public-safety", "investigation"}
    assert all("plate" not in event["data"] for _, event in received)

    now = datetime.now(UTC)
    grant = GrantStore(redis, keys).create(
        Grant(
            owner="sdot", grantee="spd-west", grantor="sdot", types=("traffic.incident",),
            purposes=("investigation",), fields=("plate", "kind", "severity", "road"),
            valid_from=now - timedelta(seconds=1), valid_until=now + timedelta(seconds=2),
            reason="case 2026-4411",
        )
    )  # fmt: skip
    producer.publish(hit_and_run(2))
    harness.run()
    latest = views(redis, keys, "spd-west")[-2:]
    by_purpose = dict(latest)
    assert by_purpose["investigation"]["data"]["plate"] == "ABC002"
    assert by_purpose["investigation"]["purpose"] == "investigation"
    assert "plate" not in by_purpose["public-safety"]["data"]  # other purposes never see it
    assert views(redis, keys, "sdot")[-1][1]["data"]["plate"] == "ABC002"  # its own data, whole

    grant_end = grant.valid_until.timestamp()
    time.sleep(max(0.0, grant_end - time.time()) + 0.05)  # expiry needs no job
    producer.publish(hit_and_run(3))
    harness.run()
    after = dict(views(redis, keys, "spd-west")[-2:])
    assert "plate" not in after["investigation"]["data"]


def test_every_decision_is_audited_and_the_chain_verifies(harness, redis, keys):
    Producer(redis, "transit", keys).publish(
        Event.new(
            "transit.vehicle_position",
            source_for("transit"),
            {"vehicle_id": "bus-7", "speed_kmh": 20.0},
            location=WEST,
        )
    )
    harness.run()
    log = AuditLog(redis, keys)
    assert log.verify().ok
    records = [r for r in log.records() if r.kind == "delivery"]
    rows = records[-1].body["rows"]
    by_dept = {row[1]: row for row in rows}
    assert by_dept["traffic-management"][3:6] == [1, "policy", "transit-positions"]
    assert by_dept["transit"][3:5] == [1, "own-data"]
    assert records[-1].body["policy_version"] == harness.context.router.policies.version


def test_mass_casualty_derives_dispatch_and_escort_routed_like_any_event(harness, redis, keys):
    mci = Event.new(
        "health.emergency",
        source_for("ems"),
        {"incident_number": "MCI-9", "kind": "mass_casualty", "patients": 12},
        location=WEST,
    )
    Producer(redis, "ems", keys).publish(mci)
    harness.run()  # routes the emergency; its rule emits two derived events into ingest
    harness.run()  # ...which are validated, routed and authorized on their own
    harness.run()  # a second pass finds nothing new: derived ids come from the dedupe key
    dispatch = [m.event for m in Inbox(redis, "transit", keys).history(10)]
    assert [e["type"] for e in dispatch] == ["transport.dispatch"]
    assert dispatch[0]["derivedfrom"] == mci.id and dispatch[0]["data"]["patients"] == 12
    escort = [m.event["type"] for m in Inbox(redis, "spd-west", keys).history(10)]
    assert escort == ["police.escort"]  # the precinct containing the incident
    assert Inbox(redis, "spd-east", keys).history(10) == []
    Producer(redis, "ems", keys).publish(mci)  # the same incident reported again
    harness.run()
    harness.run()
    assert len(Inbox(redis, "transit", keys).history(10)) == 1


def test_decisions_are_recorded_with_the_delivery_and_chained_later_if_need_be(
    harness, redis, keys
):
    log = AuditLog(redis, keys)
    redis.set(keys.audit_inbox + ":lock", "another-worker", px=60_000)  # someone else chains
    Producer(redis, "sdot", keys).publish(
        Event.new(
            "traffic.incident", source_for("sdot"), {"kind": "hazard", "severity": 1}, location=WEST
        )
    )
    harness.run()
    assert log.pending_inbox() == 1  # recorded atomically with the deliveries...
    assert not [r for r in log.records() if r.kind == "delivery"]  # ...not chained yet
    redis.delete(keys.audit_inbox + ":lock")  # the other chainer died; its lock expired
    assert log.drain_inbox() == 1
    assert log.pending_inbox() == 0 and log.verify().ok
    (record,) = [r for r in log.records() if r.kind == "delivery"]
    assert {row[1] for row in record.body["rows"]} >= {"spd-west", "sdot"}
