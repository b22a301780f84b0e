"""Signed CAP alerts through the real ingest decode path (fakeredis, the Seattle city): the
signature result reaches the inboxes on every event; with `cap.require_signature` only validly
signed alerts are delivered and the rest are dead-lettered with the reason; a department cannot
vouch for a signature by writing the attribute into a JSON event."""

from __future__ import annotations

from pathlib import Path

import pytest

from city.cap import CapConfig, events_from_cap
from queues.inbox import Inbox
from queues.streams import Producer
from tests.cap_signing import Signer, make_signer, tamper
from tests.pipeline_harness import Harness
from tests.scenarios.emergency_city import cap_alert

OEM = "emergency-management"
DATA = Path(__file__).parents[1] / "data" / "cap"
SHARED = Path(__file__).parents[3] / "shared" / "data" / "cap"
SAMPLES = SHARED if SHARED.is_dir() else DATA


@pytest.fixture(scope="module")
def signer() -> Signer:
    return make_signer("Seattle OEM alerting")


@pytest.fixture
def pipeline(redis, keys, seattle, seattle_router, tmp_path, signer):  # type: ignore[no-untyped-def]
    """A Harness for the Seattle city trusting `signer`, with or without require_signature."""

    def build(require: bool) -> Harness:
        config, base = seattle
        cert = signer.write_cert(tmp_path / "oem.pem")
        cap = CapConfig(trusted_certificates=[str(cert)], require_signature=require)
        return Harness(redis, keys, config.model_copy(update={"cap": cap}), base, seattle_router)

    return build


def inbox_events(harness: Harness, dept: str) -> list[dict]:  # type: ignore[type-arg]
    return [m.event for m in Inbox(harness.redis, dept, harness.keys).history(1000)]


def test_the_signature_result_reaches_the_inbox(pipeline, redis, keys, signer) -> None:
    harness = pipeline(require=False)
    producer = Producer(redis, OEM, keys)
    producer.publish_cap(signer.sign(cap_alert("signed-1")))
    producer.publish_cap(tamper(signer.sign(cap_alert("signed-2")), "headline", "All clear"))
    producer.publish_cap(cap_alert("plain-1"))
    producer.publish_cap((SAMPLES / "ipaws-5e6dd9de023f1930ef6548d9.xml").read_bytes())
    counters = harness.run()
    assert counters["accepted"] == 4 and counters["dead_lettered"] == 0
    by_subject = {e["subject"]: e for e in inbox_events(harness, OEM)}  # cap.* citywide
    assert by_subject["signed-1"]["signature"] == "valid"
    assert by_subject["signed-2"]["signature"] == "invalid"
    assert by_subject["plain-1"]["signature"] == "absent"
    assert by_subject["AS-NV-58d33e3a-1f9a-4909-9d59-34e90b33b3e8"]["signature"] == "unverified"
    assert {e["subject"]: e["signature"] for e in inbox_events(harness, "fire")} == {
        "signed-1": "valid",
        "signed-2": "invalid",
        "plain-1": "absent",
    }


def test_require_signature_delivers_only_valid_ones_and_dead_letters_the_rest(
    pipeline, redis, keys, signer
) -> None:
    harness = pipeline(require=True)
    producer = Producer(redis, OEM, keys)
    stranger = make_signer("Not Seattle")
    producer.publish_cap(signer.sign(cap_alert("good")))
    producer.publish_cap(tamper(signer.sign(cap_alert("tampered")), "severity", "Minor"))
    producer.publish_cap(stranger.sign(cap_alert("stranger")))
    samples = sorted(SAMPLES.glob("*.xml"))
    for path in samples:
        producer.publish_cap(path.read_bytes())
    # a CAP event as JSON carries no signature ingest could check
    (as_json,) = events_from_cap(signer.sign(cap_alert("as-json")), department=OEM)
    producer.publish(as_json)

    counters = harness.run()
    assert counters["accepted"] == 1
    assert counters["dead_lettered"] == 3 + len(samples)
    assert [e["subject"] for e in inbox_events(harness, "fire")] == ["good"]
    assert inbox_events(harness, "fire")[0]["signature"] == "valid"
    letters = [(d["reason"], d["message"]) for d in harness.deadletters()]
    reasons = [reason for reason, _ in letters]
    assert reasons.count("signature_invalid") == 1
    assert reasons.count("signature_unverified") == 3  # stranger, IPAWS, the JSON event
    assert reasons.count("signature_absent") == len(samples) - 1
    messages = "\n".join(message for _, message in letters)
    assert "cap signature invalid: digest mismatch" in messages
    assert "cap signature unverified: certificate not trusted (CN=Not Seattle)" in messages
    assert "cap signature unverified: certificate not trusted (CN=IPAWSOPEN_200302," in messages
    assert "cap signature absent: the alert is not signed" in messages
    assert "cap signature unverified: a CAP event published as JSON" in messages


def test_a_json_event_cannot_claim_a_signature(pipeline, redis, keys, signer) -> None:
    harness = pipeline(require=False)
    (event,) = events_from_cap(cap_alert("claims-valid"), department=OEM)
    event.signature = "valid"  # type: ignore[attr-defined]  # an extension attribute
    assert event.to_wire()["signature"] == "valid"
    Producer(redis, OEM, keys).publish(event)
    assert harness.run()["accepted"] == 1
    (delivered,) = inbox_events(harness, "fire")
    assert delivered["subject"] == "claims-valid" and "signature" not in delivered
