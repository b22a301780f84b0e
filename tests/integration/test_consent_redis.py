"""The consent registry and the PIA gate against a real Redis."""

from __future__ import annotations

import time

from city.privacy import consent_id
from city.sharing import Decision
from jobs.privacy_stage import PrivacyStage
from queues.consent import ConsentRegistry
from queues.pia import PiaStore
from tests.privacy_city import city, incident, keyring

TRANSIT = Decision(allow=True, reason="policy", purpose="trip-alerts")


def test_withdrawal_takes_effect_for_the_next_batch(redis, keys) -> None:
    stage = PrivacyStage.for_config(city(), keys, keyring=keyring())
    registry = ConsentRegistry(redis, keys)
    cid = consent_id(keyring().consent, "plate", "ABC123")  # type: ignore[arg-type]
    registry.set(cid, "trip-alerts", "given")

    def deliver(event_id: str) -> dict | None:
        event = incident(event_id)
        return stage.prepare(redis, [event]).view(event, "transit", TRANSIT)

    assert deliver("e-1") is not None
    registry.set(cid, "trip-alerts", "withdrawn")
    assert deliver("e-2") is None
    registry.set(cid, "trip-alerts", "given")
    assert deliver("e-3") is not None
    receipts = registry.history(cid)
    assert [r["event"]["type"] for r in receipts] == ["given", "withdrawn", "given"]
    assert len({r["consentReceiptID"] for r in receipts}) == 3


def test_batch_lookup_of_many_citizens(redis, keys) -> None:
    registry = ConsentRegistry(redis, keys)
    ring = keyring()
    cids = [consent_id(ring.consent, "plate", f"P{i}") for i in range(300)]  # type: ignore[arg-type]
    for cid in cids[::3]:
        registry.set(cid, "trip-alerts", "given")
    registry.set(cids[1], "research", "given")
    started = time.perf_counter()
    found = registry.lookup((c, p) for c in cids for p in ("trip-alerts", "events"))
    elapsed = time.perf_counter() - started
    assert sum(1 for c in cids if "trip-alerts" in found.get(c, {})) == 100
    assert cids[1] not in found  # only the purposes asked for are read
    assert registry.get(cids[1])["research"].state == "given"
    assert elapsed < 1.0


def test_pia_store_reloads_only_when_the_version_moves(redis, keys) -> None:
    store = PiaStore(redis, keys)
    assert store.load() == (0, {})
    first = store.load()
    assert store.load() is first  # same version: no reload
    stage = PrivacyStage.for_config(city(), keys, keyring=keyring())
    admitted, held = stage.admit(redis, [incident()])
    assert admitted == [] and held[0][1] == "pia-missing"
    assert redis.xlen(keys.quarantine) == 1 and redis.xlen(keys.alerts) == 1
