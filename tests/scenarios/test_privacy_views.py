"""A city story: one traffic-camera event with a plate number.

The camera department's event reaches the police (investigation) with the plate, transport
(operations) with a keyed pseudonym instead, and the public only as an open-data aggregate.
Before its PIA is approved, nothing of the integration reaches any inbox.

The batch is routed the way the route job does it (policy decision -> privacy stage -> one
pipelined write of the inboxes and the hot tier), so the test shows what each department
would read from its inbox stream.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest

from city.privacy import opendata
from city.privacy.pia import Pia, approve, submit
from city.sharing import Authorizer, PolicySet, compile_subscriptions
from jobs.privacy_stage import PrivacyStage
from queues.keys import Keys
from queues.pia import PiaStore
from tests.privacy_city import city, incident, keyring

FIELDS = {
    "plate": "direct",
    "description": "sensitive",
    "road": "quasi",
    "kind": "public",
    "severity": "public",
    "lanes_blocked": "public",
}


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


@pytest.fixture
def keys() -> Keys:
    return Keys("tscen")


@pytest.fixture
def town():
    config = city()
    return (
        config,
        Authorizer(PolicySet.from_config(config.sharing)),
        compile_subscriptions(config.departments),
    )


def route(redis, keys: Keys, town, events: list[dict]) -> list[list]:
    """One batch as the route job runs it; returns the audit rows."""
    config, auth, subs = town
    stage = PrivacyStage.for_config(config, keys, keyring=keyring())
    pipe = redis.pipeline(transaction=False)
    admitted, _ = stage.admit(redis, events, pipe)
    prepared = stage.prepare(redis, admitted)
    now = time.time()
    rows = []
    for event in admitted:
        for sub in subs.for_type(event["type"]):
            decision = auth.decide(event, sub, now)
            body, note = (None, None)
            if decision.allow:
                body, note = prepared.view_note(event, sub.dept, decision)
                if body is not None:
                    pipe.xadd(keys.inbox(sub.dept), {"e": json.dumps(body)})
            rows.append(
                decision.audit_row(event["id"], sub.dept, sub.id) + (note.audit() if note else [])
            )
        pipe.xadd(keys.hot(event["type"]), {"e": json.dumps(event)})
    pipe.execute()
    return rows


def inbox(redis, keys: Keys, dept: str) -> list[dict]:
    return [json.loads(f[b"e"]) for _, f in redis.xrange(keys.inbox(dept))]


def approve_cameras(redis, keys: Keys, town) -> None:
    stage = PrivacyStage.for_config(town[0], keys, keyring=keyring())
    pia = submit(
        None,
        Pia(
            department="cameras",
            type="traffic.incident",
            description="incident cameras with number-plate recognition",
            purposes=["investigation", "operations"],
            fields=FIELDS,
            recipients=["police", "transport", "transit", "parks"],
            lawful_basis="public_task",
            risks=["plates identify vehicle owners"],
            mitigations=["pseudonyms outside investigations"],
        ),
    )
    review = datetime.now(UTC) + timedelta(days=180)
    PiaStore(redis, keys).put(
        approve(pia, "dpo", review, stage.fingerprint("traffic.incident"), [])
    )


def test_unapproved_integration_is_quarantined_and_reaches_no_inbox(redis, keys, town) -> None:
    route(redis, keys, town, [incident("cam-1")])
    for dept in ("police", "transport", "transit", "parks"):
        assert inbox(redis, keys, dept) == []
    assert redis.xlen(keys.hot("traffic.incident")) == 0
    ((_, held),) = redis.xrange(keys.quarantine)
    assert held[b"reason"] == b"pia-missing" and json.loads(held[b"e"])["id"] == "cam-1"
    assert redis.xlen(keys.alerts) == 1


def test_each_recipient_receives_exactly_its_allowed_view(redis, keys, town) -> None:
    approve_cameras(redis, keys, town)
    rows = route(redis, keys, town, [incident("cam-1", plate="KXT 4410")])

    (police,) = inbox(redis, keys, "police")
    assert police["data"] == {
        "kind": "collision",
        "severity": 3,
        "road": "Aurora Ave N",
        "description": "driver injured",
        "plate": "KXT 4410",
    }
    assert police["purpose"] == "investigation" and police["location"]["lat"] == 47.6205

    (transport,) = inbox(redis, keys, "transport")
    assert set(transport["data"]) == {"kind", "severity", "road", "plate"}
    assert transport["data"]["plate"] != "KXT 4410" and len(transport["data"]["plate"]) == 32
    assert transport["pseudokey"].startswith("transport/2026-11/")
    assert transport["time"] == "2026-11-25T10:00:00Z" and "h3cell" in transport
    assert "KXT" not in json.dumps(transport)

    # Consent-based services: transit withholds, parks strips (no consent given).
    assert inbox(redis, keys, "transit") == []
    (parks,) = inbox(redis, keys, "parks")
    assert set(parks["data"]) == {"kind", "severity"} and "location" not in parks

    # The audit rows say which transform, key and consent decision shaped each delivery.
    by_dept = {row[1]: row for row in rows}
    assert by_dept["transport"][8:11] == [transport["privacy"], "public_task", "n/a"]
    assert by_dept["transport"][12] == [transport["pseudokey"]]
    assert by_dept["transit"][10:12] == ["absent", "withhold"]

    # The same vehicle later that month, spelt differently: the same pseudonym (joinable).
    route(redis, keys, town, [incident("cam-2", plate="kxt-4410", time="2026-11-28T08:00:00Z")])
    assert inbox(redis, keys, "transport")[1]["data"]["plate"] == transport["data"]["plate"]
    # Next month: a new key, a new pseudonym.
    route(redis, keys, town, [incident("cam-3", plate="KXT 4410", time="2026-12-01T09:00:00Z")])
    assert inbox(redis, keys, "transport")[2]["data"]["plate"] != transport["data"]["plate"]


def test_the_public_gets_only_an_aggregate(redis, keys, town) -> None:
    approve_cameras(redis, keys, town)
    events = [
        incident(f"cam-{i}", plate=f"PL{i:03d}", time=f"2026-11-25T10:{i:02d}:00Z")
        for i in range(12)
    ]
    route(redis, keys, town, events)
    hot = [json.loads(f[b"e"]) for _, f in redis.xrange(keys.hot("traffic.incident"))]
    release = opendata.aggregate(hot, k=10)
    assert release["rows"] == [
        {
            "cell": release["rows"][0]["cell"],
            "resolution": 9,
            "bucket": "2026-11-25T10:00:00Z",
            "count": 12,
        }
    ]
    assert "PL0" not in json.dumps(release)
    # Too few events for k: nothing is published at all.
    assert opendata.aggregate(hot[:5], k=10)["rows"] == []
