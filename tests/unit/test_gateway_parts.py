"""The gateway's parts without a server: the token store (fakeredis), the CloudEvents binding,
refusal bodies, settings, expiry parsing and the idempotency store (fakeredis asyncio)."""

from __future__ import annotations

import asyncio
import json
import time

import fakeredis
import orjson
import pytest

from queues.keys import Keys
from queues.tokens import TokenError, TokenRecord, TokenStore, hash_token, looks_like_token
from workers.cli.gateway import parse_expiry
from workers.gateway import cloudevents
from workers.gateway.idempotency import IdempotencyStore, Stored
from workers.gateway.problem import Problem
from workers.gateway.settings import GatewaySettings

KEYS = Keys("unitgw")
EVENT = {"id": "e1", "source": "/city/sdot", "specversion": "1.0", "type": "traffic.incident",
         "time": "2026-12-07T00:00:00Z", "data": {"kind": "collision", "severity": 1}}  # fmt: skip


def test_tokens_are_stored_only_as_hashes_and_revoked_by_id(redis):
    store = TokenStore(redis, KEYS)
    token, record = store.create("sdot", "tms", expires=time.time() + 60)
    assert looks_like_token(token) and record.dept == "sdot" and record.state() == "active"
    raw = redis.hgetall(KEYS.tokens)
    assert list(raw) == [hash_token(token).encode()]
    assert token.encode() not in b"".join(raw.values())
    assert store.record_for(token) == record
    assert store.record_for("crt_" + "x" * 43) is None and store.record_for("nope") is None
    other, _ = store.create("spd-west")
    assert [r.dept for r in store.list()] == ["sdot", "spd-west"]
    assert [r.dept for r in store.list("sdot")] == ["sdot"]
    revoked = store.revoke(record.id[:8])
    assert revoked.state() == "revoked" and store.record_for(token).state() == "revoked"
    assert store.revoke(record.id).revoked == revoked.revoked  # revoking twice keeps the time
    with pytest.raises(TokenError, match="at least 6"):
        store.revoke("abc")
    with pytest.raises(TokenError, match="no token"):
        store.revoke("ffffffffffff")
    with pytest.raises(TokenError, match="department"):
        store.create("bad dept")
    with pytest.raises(TokenError, match="past"):
        store.create("sdot", expires=time.time() - 1)
    assert store.record_for(other) is not None


def test_token_record_states_and_json():
    record = TokenRecord("abc123def456", "sdot", "", 1.0, expires=10.0)
    assert record.state(now=5.0) == "active" and record.state(now=10.0) == "expired"
    assert TokenRecord.from_json(record.to_json()) == record


def test_expiry_durations_and_times():
    assert parse_expiry("30d", now=0.0) == 30 * 86400
    assert parse_expiry("12h", now=100.0) == 100 + 12 * 3600
    assert parse_expiry("2026-12-07T00:00:00Z") == 1796601600.0
    assert parse_expiry(None) is None
    for bad in ("soon", "2026-12-07T00:00:00", "10y"):
        with pytest.raises(ValueError):
            parse_expiry(bad)


def test_structured_batch_and_binary_modes():
    mode, [one] = cloudevents.parse(
        {"content-type": "application/cloudevents+json; charset=utf-8"}, orjson.dumps(EVENT), 10
    )
    assert mode == "structured" and one.doc == EVENT and one.json == orjson.dumps(EVENT)
    with_string = {**EVENT, "location": '{"lat": 47.6, "lon": -122.3}'}
    mode, items = cloudevents.parse(
        {"content-type": cloudevents.BATCH},
        orjson.dumps([with_string, 3, {**EVENT, "location": "x"}]),
        10,
    )
    assert mode == "batch" and items[0].doc["location"] == {"lat": 47.6, "lon": -122.3}
    assert items[0].json is None  # changed: dumped again for accept
    assert (
        items[1].error.reason == "invalid_envelope" and items[2].error.reason == "invalid_envelope"
    )
    encoded = "%7B%22lat%22:%2047.6,%20%22lon%22:%20-122.3%7D"  # percent-encoded, as the SDK does
    headers = {"ce-specversion": "1.0", "ce-id": "b1", "ce-source": "/city/sdot",
               "ce-type": "traffic.incident", "ce-location": encoded,
               "content-type": "application/json"}  # fmt: skip
    mode, [binary] = cloudevents.parse(headers, b'{"kind": "hazard", "severity": 1}', 10)
    assert mode == "binary" and binary.doc["location"] == {"lat": 47.6, "lon": -122.3}
    assert binary.doc["data"] == {"kind": "hazard", "severity": 1} and binary.json is None
    _, [broken] = cloudevents.parse(headers, b"{", 10)
    assert broken.error.reason == "malformed_json" and b'"id":"b1"' in broken.raw


@pytest.mark.parametrize(
    ("headers", "body", "status", "reason"),
    [
        ({"content-type": "text/plain"}, b"{}", 415, "unsupported_media_type"),
        ({}, b"{}", 415, "unsupported_media_type"),
        ({"content-type": cloudevents.STRUCTURED}, b"[1]", 400, "malformed_json"),
        ({"content-type": cloudevents.STRUCTURED}, b"{", 400, "malformed_json"),
        ({"content-type": cloudevents.BATCH}, b"{}", 400, "malformed_json"),
        ({"content-type": cloudevents.BATCH}, b"[1, 2, 3]", 413, "batch_too_large"),
        (
            {"ce-specversion": "1.0", "content-type": "image/png"},
            b"x",
            415,
            "unsupported_media_type",
        ),
    ],
)
def test_requests_that_are_not_cloudevents(headers, body, status, reason):
    with pytest.raises(Problem) as refused:
        cloudevents.parse(headers, body, 2)
    assert (refused.value.status, refused.value.reason) == (status, reason)
    doc = json.loads(refused.value.response().body)
    assert doc["type"] == f"urn:cityrelay:problem:{reason}" and doc["status"] == status


def test_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("CITYRELAY_GATEWAY_BATCH_MAX_EVENTS", "7")
    monkeypatch.setenv("CITYRELAY_GATEWAY_BODY_TIMEOUT_S", "2.5")
    settings = GatewaySettings.from_env(max_body_bytes=99, token_cache_s=None)
    assert (settings.batch_max_events, settings.body_timeout_s, settings.max_body_bytes) == (
        7,
        2.5,
        99,
    )
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert GatewaySettings.from_env() == settings


def test_idempotency_claims_replays_and_refuses_reuse():
    async def scenario() -> None:
        store = IdempotencyStore(fakeredis.FakeAsyncRedis(), KEYS, ttl_s=60)
        key = store.key("sdot", "k1")
        assert await store.claim(key, "fp") is None
        with pytest.raises(Problem) as busy:
            await store.claim(key, "fp")
        assert busy.value.status == 409
        await store.finish(key, "fp", Stored(202, b'{"accepted":["a"]}', "application/json"))
        assert await store.claim(key, "fp") == Stored(
            202, b'{"accepted":["a"]}', "application/json"
        )
        with pytest.raises(Problem) as reused:
            await store.claim(key, "other")
        assert reused.value.status == 422
        retry = store.key("sdot", "k2")
        await store.claim(retry, "fp")
        await store.finish(retry, "fp", Stored(429, b"{}", "application/problem+json"))
        assert await store.claim(retry, "fp") is None  # a 429 is not kept: handled anew
        with pytest.raises(Problem):
            store.key("sdot", "x" * 300)

    asyncio.run(scenario())
