"""The route job's privacy stage: PIA gate, quarantine, consent per batch, views."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from city.privacy import consent_id
from city.privacy.consent import receipt
from city.privacy.pia import Pia, approve, submit
from city.sharing import Authorizer, Decision, PolicySet, compile_subscriptions
from jobs.privacy_stage import PrivacyStage, subscribers_of
from queues.consent import ConsentRegistry
from queues.keys import Keys
from queues.pia import PiaStore
from tests.privacy_city import PRIVACY, city, incident, keyring, write_keys

FIELDS = {
    "plate": "direct",
    "description": "sensitive",
    "road": "quasi",
    "kind": "public",
    "severity": "public",
    "lanes_blocked": "public",
}


@pytest.fixture
def keys() -> Keys:
    return Keys("tpriv")


@pytest.fixture
def stage(keys: Keys) -> PrivacyStage:
    return PrivacyStage.for_config(city(), keys, keyring=keyring())


def approve_camera_pia(redis, stage: PrivacyStage, keys: Keys, days: int = 90) -> Pia:
    pia = submit(
        None,
        Pia(
            department="cameras",
            type="traffic.incident",
            description="camera incidents",
            purposes=["investigation"],
            fields=FIELDS,
            recipients=["police", "transport", "transit", "parks"],
            lawful_basis="public_task",
        ),
    )
    now = datetime.now(UTC)
    ok = approve(pia, "dpo", now + timedelta(days=days), stage.fingerprint("traffic.incident"), [])
    PiaStore(redis, keys).put(ok)
    return ok


def test_without_a_privacy_section_everything_passes_unchanged(keys: Keys) -> None:
    plain = PrivacyStage.for_config(city(privacy=None), keys)
    assert not plain.enabled
    assert PrivacyStage.for_config(city(privacy=None), keys) is not plain  # another config
    admitted, held = plain.admit(None, [incident()])  # type: ignore[arg-type]
    assert admitted == [incident()] and held == []
    prepared = plain.prepare(None, [incident()])  # type: ignore[arg-type]
    decision = Decision(allow=True, reason="policy", purpose="operations")
    assert prepared.view(incident(), "transport", decision) == {
        **incident(),
        "purpose": "operations",
    }
    assert prepared.last.transform == "none"


def test_for_config_is_cached_and_loads_keys_from_the_config(tmp_path, keys: Keys) -> None:
    config = city()
    write_keys(tmp_path / "keys.json")
    stage = PrivacyStage.for_config(config, keys, base_dir=tmp_path)
    assert PrivacyStage.for_config(config, keys) is stage
    for _ in range(20):  # many config versions: the cache stays small
        PrivacyStage.for_config(city(), keys, keyring=keyring())
    assert len(PrivacyStage._cache) <= 16
    assert stage.policy is not None and stage.policy.keys.consent == keyring().consent


def test_an_integration_without_approved_pia_is_quarantined_with_an_alert(
    redis, stage: PrivacyStage, keys: Keys
) -> None:
    events = [incident("e-1"), incident("e-2")]
    admitted, held = stage.admit(redis, events)
    assert admitted == [] and [h[1] for h in held] == ["pia-missing", "pia-missing"]
    entries = redis.xrange(keys.quarantine)
    assert [json.loads(f[b"e"])["id"] for _, f in entries] == ["e-1", "e-2"]
    assert entries[0][1][b"reason"] == b"pia-missing"
    alerts = redis.xrange(keys.alerts)
    assert len(alerts) == 1 and alerts[0][1][b"integration"] == b"cameras/traffic.incident"
    assert alerts[0][1][b"events"] == b"2"
    assert redis.hget(keys.stats, "quarantined") == b"2"


def test_an_approved_pia_admits_and_changes_reset_it(redis, stage: PrivacyStage, keys) -> None:
    pia = approve_camera_pia(redis, stage, keys)
    admitted, held = stage.admit(redis, [incident()])
    assert len(admitted) == 1 and held == []
    # A field the PIA never assessed is quarantined, through the caller's pipeline.
    pipe = redis.pipeline(transaction=False)
    admitted, held = stage.admit(redis, [incident(speed=80)], pipe)
    assert admitted == [] and held[0][1] == "pia-unlisted-fields" and "speed" in held[0][2]
    assert redis.xlen(keys.quarantine) == 0
    pipe.execute()
    assert redis.xlen(keys.quarantine) == 1
    # Resubmission: a draft again; the store's version moves, so the router sees it at once.
    PiaStore(redis, keys).put(submit(pia, pia))
    assert stage.admit(redis, [incident()])[1][0][1] == "pia-submitted"
    # An expired review date stops the flow too.
    approve_camera_pia(redis, stage, keys)
    later = time.time() + 91 * 86400
    assert stage.admit(redis, [incident()], now=later)[1][0][1] == "pia-expired"
    # The integration changes (its recipients are not the ones the PIA was approved for).
    changed = PrivacyStage(stage.config, keys, {}, keyring())
    held = changed.admit(redis, [incident()])[1]
    assert held[0][1] == "pia-draft" and "changed since" in held[0][2]


def test_exempt_types_and_undeclared_types(redis, keys: Keys) -> None:
    raw = {**PRIVACY, "pia": {"exempt_types": ["traffic.*"]}}
    stage = PrivacyStage.for_config(city(raw), keys, keyring=keyring())
    assert stage.admit(redis, [incident()]) == ([incident()], [])
    assert stage.admit(redis, []) == ([], [])
    meter = {**incident(dept="utilities"), "type": "utility.meter_alarm", "data": {}}
    assert stage.admit(redis, [meter])[1][0][1] == "pia-missing"


def decide_all(event: dict, now: float) -> list[tuple[str, Decision]]:
    config = city()
    auth = Authorizer(PolicySet.from_config(config.sharing))
    subs = compile_subscriptions(config.departments)
    return [(s.dept, auth.decide(event, s, now)) for s in subs.for_type(event["type"])]


def test_consent_withdrawal_applies_to_the_very_next_event(redis, stage, keys) -> None:
    ring = keyring()
    cid = consent_id(ring.consent, "plate", "abc 123")  # type: ignore[arg-type]
    registry = ConsentRegistry(redis, keys)
    first = incident("e-1")

    def transit_view(event: dict) -> tuple[dict | None, str]:
        prepared = stage.prepare(redis, [event])
        decision = dict(decide_all(event, time.time()))["transit"]
        body = prepared.view(event, "transit", decision)
        return body, prepared.last.consent

    assert transit_view(first) == (None, "absent")
    record = registry.set(cid, "trip-alerts", "given")
    body, state = transit_view(first)
    assert state == "given" and body is not None and body["data"]["plate"] != "ABC123"
    assert body["pseudokey"].startswith("alerts/2026-11/")
    registry.set(cid, "trip-alerts", "withdrawn")
    assert transit_view(incident("e-2")) == (None, "withdrawn")
    # Expiry needs no job either.
    registry.set(cid, "trip-alerts", "given", days=1, now=time.time() - 2 * 86400)
    assert transit_view(incident("e-3")) == (None, "expired")
    # An event without the subject field cannot be matched to a consent.
    assert transit_view(incident("e-4", plate=None)) == (None, "no-subject")
    assert record.receipt.startswith("cr-")


def test_one_round_trip_for_a_batch_of_consent_lookups(redis, stage, keys) -> None:
    calls = []
    original = redis.execute_command

    def counting(*args, **kw):
        calls.append((args[0], len(args) - 2))
        return original(*args, **kw)

    redis.execute_command = counting
    events = [incident(f"e-{i}", plate=f"P{i % 7}") for i in range(50)]
    prepared = stage.prepare(redis, events)
    # One HMGET: 7 citizens x the consent-based purposes of this type's subscribers.
    assert stage.consent_purposes("traffic.incident") == ("events", "trip-alerts")
    assert calls == [("HMGET", 14)]
    assert len(prepared.subjects) == 50
    calls.clear()
    other = {**incident(), "type": "environment.air_quality", "data": {"pm25": 1.0}}
    stage.prepare(redis, [other])
    assert calls == []


def test_consent_registry_and_receipts(redis, keys) -> None:
    registry = ConsentRegistry(redis, keys)
    config = PRIVACY["controller"]
    from city.privacy import ControllerConfig

    controller = ControllerConfig(**config)

    def make(record):
        return receipt(record, controller, "trip alerts", ["plate"], False)

    given = registry.set("c1", "trip-alerts", "given", days=30, now=1_000.0, receipt=make)
    withdrawn = registry.set("c1", "trip-alerts", "withdrawn", now=2_000.0, receipt=make)
    assert withdrawn.given_at == 1_000.0 and withdrawn.withdrawn_at == 2_000.0
    assert registry.get("c1")["trip-alerts"].state == "withdrawn"
    history = registry.history("c1")
    assert [h["event"]["type"] for h in history] == ["given", "withdrawn"]
    first = history[0]
    assert first["consentReceiptID"] == given.receipt and first["piiPrincipalId"] == "c1"
    assert first["piiControllers"][0]["piiController"] == "City of Testville"
    assert first["services"][0]["purposes"][0]["purpose"] == "trip-alerts"
    assert history[1]["services"][0]["purposes"][0]["termination"] == "withdrawn"
    assert registry.lookup([]) == {}
    assert registry.history("nobody") == []


def test_subscribers_of_lists_recipients_per_declared_type() -> None:
    subs = subscribers_of(city())
    assert subs["traffic.incident"]["police"] == {"investigation"}
    assert subs["utility.meter_alarm"] == {"water": {"operations"}}
    assert subscribers_of(city(privacy=None)) == {}


def test_keys_added_to_the_file_take_effect_without_a_restart(tmp_path, redis, keys) -> None:
    import os

    from city.privacy import KeyRing
    from city.sharing import Decision

    ring = keyring(periods=("2026-11",))
    path = write_keys(tmp_path / "keys.json", ring)
    stage = PrivacyStage.for_config(city(), keys, base_dir=tmp_path)
    decision = Decision(allow=True, reason="policy", purpose="operations")
    december = incident(time="2026-12-02T00:00:00Z")
    now = time.time()
    body = stage.prepare(redis, [december], now).view(december, "transport", decision)
    assert body is not None and "plate" not in body["data"]  # no December key: fail closed
    write_keys(path, keyring(periods=("2026-11", "2026-12")))
    os.utime(path, (now + 5, now + 5))
    assert not stage.refresh_keys(now + 1)  # checked at most every 30 s
    body = stage.prepare(redis, [december], now + 60).view(december, "transport", decision)
    assert body is not None and len(body["data"]["plate"]) == 32
    assert not stage.refresh_keys(now + 120)  # unchanged file: no reload
    path.unlink()
    assert not stage.refresh_keys(now + 200)  # a vanished file keeps the keys in memory
    assert isinstance(stage.policy.keys, KeyRing)  # type: ignore[union-attr]
    plain = PrivacyStage.for_config(city(), keys, keyring=keyring())
    assert not plain.refresh_keys(now)
