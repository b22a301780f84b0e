"""The HTTP gateway as a real process (uvicorn on a free port) on the real Redis: CloudEvents in
all three modes (made by the official SDK, and by curl), partial batches, idempotency, tokens,
backpressure, CAP, inboxes (page, ack, SSE) and locate."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from cloudevents.core.bindings import http as ce_binding
from cloudevents.core.v1.event import CloudEvent as CoreEvent
from cloudevents.v1.conversion import to_binary, to_structured
from cloudevents.v1.http import CloudEvent

from queues.acks import track
from queues.metrics import read_stats
from queues.tokens import TokenStore
from tests.conftest import ROOT
from tests.gateway_support import WEST, GatewayProcess, curl_binary_incident, incident

pytestmark = pytest.mark.integration

CAP_DIR = ROOT / "tests" / "data" / "cap"


@pytest.fixture
def gateway(redis_url, keys, redis) -> Iterator[GatewayProcess]:  # type: ignore[no-untyped-def]
    process = GatewayProcess(
        redis_url, keys.prefix, env={"CITYRELAY_GATEWAY_TOKEN_CACHE_S": "0.2"}
    ).start()
    yield process
    assert process.alive(), process.output()
    assert process.stop() in (0, -15), process.output()  # uvicorn re-raises SIGTERM


@pytest.fixture
def tokens(redis, keys) -> TokenStore:  # type: ignore[no-untyped-def]
    return TokenStore(redis, keys)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ingest_ids(redis, keys, dept: str = "sdot") -> list[str]:  # type: ignore[no-untyped-def]
    ids = []
    for lane in ("routine", "emergency"):
        for _, fields in redis.xrange(keys.ingest(dept, lane)):
            ids.append(json.loads(fields[b"e"])["id"])
    return ids


def test_sdk_structured_and_binary_requests_are_accepted(gateway, tokens, redis, keys):
    token, _ = tokens.create("sdot")
    event = CloudEvent(
        {"type": "traffic.incident", "source": "/city/sdot", "department": "sdot",
         "location": json.dumps(WEST)},
        {"kind": "collision", "severity": 3},
    )  # fmt: skip
    sent = []
    with httpx.Client(base_url=gateway.url, headers=bearer(token)) as client:
        for convert in (to_structured, to_binary):
            headers, body = convert(event)
            reply = client.post("/v1/events", headers=headers, content=body)
            assert reply.status_code == 202, reply.text
            assert reply.json()["accepted"] == [event["id"]]
            sent.append(event["id"])
        # the new core API percent-encodes header values (spaces and quotes of the location)
        core = CoreEvent(
            {"id": uuid.uuid4().hex, "type": "traffic.incident", "source": "/city/sdot",
             "specversion": "1.0", "location": json.dumps(WEST),
             "datacontenttype": "application/json"},
            {"kind": "collision", "severity": 1},
        )  # fmt: skip
        for message in (ce_binding.to_binary_event(core), ce_binding.to_structured_event(core)):
            reply = client.post("/v1/events", headers=message.headers, content=message.body)
            assert reply.status_code == 202, reply.text
            assert reply.json()["accepted"] == [core.get_id()]
            sent.append(core.get_id())
    assert ingest_ids(redis, keys) == sent
    stored = json.loads(redis.xrange(keys.ingest("sdot"))[0][1][b"e"])
    assert stored["location"] == WEST and stored["department"] == "sdot"


def test_curl_binary_mode(gateway, tokens, redis, keys):
    token, _ = tokens.create("sdot")
    event_id = uuid.uuid4().hex
    body, status = curl_binary_incident(gateway.url, token, event_id)
    assert status == "202", body
    assert json.loads(body)["accepted"] == [event_id]
    assert ingest_ids(redis, keys) == [event_id]


def test_partial_batch_accepts_the_good_lists_and_dead_letters_the_bad(
    gateway, tokens, redis, keys
):
    token, _ = tokens.create("sdot")
    good = [incident(), incident(priority="emergency")]
    bad = [
        incident(type="traffic.unheard_of"),
        incident(data={"kind": "collision", "severity": "very"}),
        incident(source="/city/spd-west"),
        {"id": "x", "type": "traffic.incident"},
        "not an event",
    ]
    batch = [good[0], *bad[:3], good[1], *bad[3:]]
    reply = httpx.post(
        gateway.url + "/v1/events",
        headers={**bearer(token), "Content-Type": "application/cloudevents-batch+json"},
        content=json.dumps(batch),
    )
    assert reply.status_code == 202, reply.text
    doc = reply.json()
    assert doc["accepted"] == [good[0]["id"], good[1]["id"]]
    reasons = [(r["index"], r["reason"]) for r in doc["refused"]]
    assert reasons == [(1, "unknown_type"), (2, "invalid_payload"), (3, "forged_source"),
                       (5, "invalid_envelope"), (6, "invalid_envelope")]  # fmt: skip
    dead = [{k.decode(): v for k, v in f.items()} for _, f in redis.xrange(keys.deadletter)]
    assert [d["reason"].decode() for d in dead] == [r for _, r in reasons]
    assert {d["stage"] for d in dead} == {b"gateway"}
    assert json.loads(dead[0]["body"])["type"] == "traffic.unheard_of"
    assert sorted(ingest_ids(redis, keys)) == sorted(e["id"] for e in good)
    assert redis.xlen(keys.ingest("sdot", "emergency")) == 1
    # every event refused: 422, each listed, dead-lettered too
    reply = httpx.post(
        gateway.url + "/v1/events",
        headers={**bearer(token), "Content-Type": "application/cloudevents+json"},
        content=json.dumps(bad[0]),
    )
    assert reply.status_code == 422
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["reason"] == "unknown_type"
    assert redis.xlen(keys.deadletter) == len(bad) + 1
    # an emergency takes the event loop's own path: the same refusal and dead letter
    urgent_bad = incident(priority="emergency", data={"kind": "collision"})
    reply = httpx.post(
        gateway.url + "/v1/events",
        headers={**bearer(token), "Content-Type": "application/cloudevents+json"},
        content=json.dumps(urgent_bad),
    )
    assert reply.status_code == 422 and reply.json()["reason"] == "invalid_payload"
    last = redis.xrevrange(keys.deadletter, count=1)[0][1]
    assert (
        last[b"reason"] == b"invalid_payload"
        and json.loads(last[b"body"])["id"] == urgent_bad["id"]
    )
    assert read_stats(redis, keys)["deadletter:invalid_payload"] == 2


def test_retries_get_the_same_answer_and_publish_once_with_an_idempotency_key(
    gateway, tokens, redis, keys
):
    token, _ = tokens.create("sdot")
    events = [incident(), incident(type="traffic.nope")]
    headers = {**bearer(token), "Content-Type": "application/cloudevents-batch+json",
               "Idempotency-Key": "retry-" + uuid.uuid4().hex}  # fmt: skip
    with httpx.Client(base_url=gateway.url) as client:
        first = client.post("/v1/events", headers=headers, content=json.dumps(events))
        second = client.post("/v1/events", headers=headers, content=json.dumps(events))
        assert first.status_code == second.status_code == 202
        assert first.json() == second.json()
        assert second.headers["idempotency-replayed"] == "true"
        assert redis.xlen(keys.ingest("sdot")) == 1 and redis.xlen(keys.deadletter) == 1
        other = client.post("/v1/events", headers=headers, content=json.dumps([incident()]))
        assert other.status_code == 422 and other.json()["reason"] == "idempotency_key_reused"
        # without a key, the same event ids give the same answer (ingest drops the copy)
        plain = {**bearer(token), "Content-Type": "application/cloudevents+json"}
        one = incident()
        answers = [client.post("/v1/events", headers=plain, content=json.dumps(one)).json()
                   for _ in range(2)]  # fmt: skip
        assert answers[0] == answers[1] == {"mode": "structured", "accepted": [one["id"]],
                                            "refused": []}  # fmt: skip
    assert redis.ttl(keys.idempotency("sdot", "x")) == -2  # keys are per key hash
    stored = list(redis.scan_iter(f"{keys.prefix}:idem:sdot:*"))
    assert len(stored) == 1 and 0 < redis.ttl(stored[0]) <= 24 * 3600


def test_tokens_name_the_department_and_revocation_holds(gateway, tokens, redis, keys, cli, capsys):
    assert cli("token", "create", "--dept", "sdot", "--name", "tms", "--expires", "1d") == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    other, _ = tokens.create("spd-west")
    expired, record = tokens.create("sdot", expires=time.time() + 0.5)
    url = gateway.url + "/v1/events"
    structured = {"Content-Type": "application/cloudevents+json"}
    with httpx.Client() as client:

        def post(headers: dict[str, str], event: dict) -> httpx.Response:
            return client.post(url, headers={**structured, **headers}, content=json.dumps(event))

        assert post(bearer(token), incident()).status_code == 202
        forged = post(bearer(token), incident(department="spd-west"))
        assert forged.status_code == 403 and forged.json()["reason"] == "forbidden"
        assert post(bearer(other), incident()).status_code == 422  # source /city/sdot: forged
        assert post({}, incident()).status_code == 401
        assert post(bearer("crt_" + "A" * 43), incident()).status_code == 401
        assert post({"Authorization": "Basic c2RvdDpzZG90"}, incident()).status_code == 401
        inbox = client.get(gateway.url + "/v1/inbox/spd-west", headers=bearer(token))
        assert inbox.status_code == 403
        stranger, _ = tokens.create("no-such-dept")  # the store cannot know the city
        assert post(bearer(stranger), incident()).status_code == 403
        assert not redis.exists(keys.ingest("no-such-dept"))
        time.sleep(0.6)
        gone = post(bearer(expired), incident())
        assert gone.status_code == 401 and "expired" in gone.json()["detail"]
        assert capsys.readouterr() is not None
        assert cli("token", "list", "--json") == 0
        listed = json.loads(capsys.readouterr().out)
        tms = next(t for t in listed if t["name"] == "tms")
        assert tms["state"] == "active" and token not in json.dumps(listed)
        assert cli("token", "revoke", tms["id"]) == 0
        deadline = time.monotonic() + 5
        while post(bearer(token), incident()).status_code != 401:  # token cache: 0.2 s here
            assert time.monotonic() < deadline, "revoked token still accepted"
            time.sleep(0.05)
        assert post(bearer(token), incident()).json()["detail"].endswith("is revoked")
    stored = redis.hgetall(keys.tokens)
    assert token not in json.dumps({k.decode(): v.decode() for k, v in stored.items()})
    _wait_for_counter(redis, keys, "gateway_refused:unauthorized", 5)
    assert read_stats(redis, keys)["gateway_refused:forbidden"] == 3
    assert token not in gateway.output()


def _wait_for_counter(redis, keys, name: str, at_least: int) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 10
    while read_stats(redis, keys).get(name, 0) < at_least:
        assert time.monotonic() < deadline, read_stats(redis, keys)
        time.sleep(0.1)


def test_backpressure_is_429_with_retry_after_and_emergencies_still_pass(
    gateway, tokens, redis, keys
):
    token, _ = tokens.create("sdot")
    redis.set(keys.backpressure, json.dumps({"used_mb": 900, "high_mb": 800}), ex=30)
    time.sleep(0.6)  # the producers' gauge reads the flag at most every 0.5 s
    headers = {**bearer(token), "Content-Type": "application/cloudevents-batch+json"}
    routine, urgent = incident(), incident(priority="emergency")
    reply = httpx.post(gateway.url + "/v1/events", headers=headers,
                       content=json.dumps([routine, urgent]))  # fmt: skip
    assert reply.status_code == 429 and int(reply.headers["retry-after"]) >= 1
    doc = reply.json()
    assert doc["reason"] == "backpressure"
    assert doc["accepted"] == [urgent["id"]] and doc["retry"] == [routine["id"]]
    alone = httpx.post(gateway.url + "/v1/events", headers=headers, content=json.dumps([urgent]))
    assert alone.status_code == 202
    redis.delete(keys.backpressure)
    time.sleep(0.6)
    again = httpx.post(gateway.url + "/v1/events", headers=headers, content=json.dumps([routine]))
    assert again.status_code == 202
    assert redis.xlen(keys.ingest("sdot")) == 1


def test_min_replicas_without_replicas_is_503_not_acknowledged(redis_url, keys, redis, tokens):
    gateway = GatewayProcess(
        redis_url, keys.prefix, env={"CITYRELAY_GATEWAY_REPLICA_TIMEOUT_MS": "50"}
    ).start()
    try:
        if int(redis.info("replication").get("connected_slaves", 0)) > 0:
            pytest.skip("this Redis has replicas")
        token, _ = tokens.create("sdot")
        reply = httpx.post(
            gateway.url + "/v1/events?min_replicas=1",
            headers={**bearer(token), "Content-Type": "application/cloudevents+json"},
            content=json.dumps(incident()),
        )
        assert reply.status_code == 503 and reply.json()["reason"] == "not_replicated"
        assert reply.headers["retry-after"] == "1"
        bad = httpx.post(gateway.url + "/v1/events?min_replicas=x", headers=bearer(token))
        assert bad.status_code == 400
    finally:
        assert gateway.stop() in (0, -15)


def test_cap_documents_take_the_raw_path(gateway, tokens, redis, keys):
    token, _ = tokens.create("emergency-management")
    xml = (CAP_DIR / "nws-5c2cf27b1f56885d61654dc47fa411d5.xml").read_bytes()
    headers = {**bearer(token), "Content-Type": "application/cap+xml"}
    reply = httpx.post(gateway.url + "/v1/cap", headers=headers, content=xml)
    assert reply.status_code == 202, reply.text
    ids = reply.json()["accepted"]
    assert ids and reply.json()["entry"]
    entries = redis.xrange(keys.ingest("emergency-management")) + redis.xrange(
        keys.ingest("emergency-management", "emergency")
    )
    assert [f[b"cap"] for _, f in entries] == [xml]
    broken = httpx.post(gateway.url + "/v1/cap", headers=headers, content=b"<alert>")
    assert broken.status_code == 422 and broken.json()["reason"]
    assert redis.xlen(keys.deadletter) == 1
    wrong = httpx.post(gateway.url + "/v1/cap", headers=bearer(token), content=xml)
    assert wrong.status_code == 415


def _deliver(redis, keys, dept: str, n: int, priority: str = "routine") -> list[str]:  # type: ignore[no-untyped-def]
    """Inbox entries as the delivery script writes them (e, via, ing, pri)."""
    event_ids = []
    for _ in range(n):
        event = incident(priority=priority, department="sdot")
        redis.xadd(
            keys.inbox(dept),
            {
                "e": json.dumps(event),
                "via": json.dumps({"subscriptions": ["s"], "purpose": "public-safety"}),
                "ing": "1-0",
                "pri": priority,
            },
        )
        event_ids.append(event["id"])
    return event_ids


def test_inbox_page_and_ack_with_emergency_acknowledgement(gateway, tokens, redis, keys):
    token, record = tokens.create("spd-west", name="cad")
    sent = _deliver(redis, keys, "spd-west", 3)
    urgent = _deliver(redis, keys, "spd-west", 1, "emergency")[0]
    pipe = redis.pipeline()
    track(pipe, keys, urgent, "{}", "default", "1-0", 1, {"spd-west": 2**40})
    pipe.execute()
    with httpx.Client(base_url=gateway.url, headers=bearer(token)) as client:
        page = client.get("/v1/inbox/spd-west", params={"count": 2}).json()["messages"]
        assert [m["event_id"] for m in page] == sent[:2]
        assert page[0]["via"]["purpose"] == "public-safety"
        again = client.get("/v1/inbox/spd-west", params={"count": 10}).json()["messages"]
        assert [m["event_id"] for m in again] == sent + [urgent]  # pending first, then new
        ack = client.post("/v1/inbox/spd-west/ack", json={"ids": [m["id"] for m in again]})
        assert ack.status_code == 200
        assert ack.json() == {"acked": 4, "emergencies": [
            {"event_id": urgent, "outcome": "acked", "at_ms": ack.json()["emergencies"][0]["at_ms"]}
        ]}  # fmt: skip
        assert redis.get(keys.ack("spd-west", urgent)).decode().endswith(f"|gateway:{record.name}")
        assert client.get("/v1/inbox/spd-west").json()["messages"] == []
        waited = time.monotonic()
        assert client.get("/v1/inbox/spd-west", params={"wait_ms": 300}).json()["messages"] == []
        assert time.monotonic() - waited >= 0.25
        # a long poll longer than one blocking read (5 s) ends with what arrives meanwhile
        later = threading.Timer(6.0, _deliver, (redis, keys, "spd-west", 1))
        later.start()
        waited = time.monotonic()
        polled = client.get("/v1/inbox/spd-west", params={"wait_ms": 20000}, timeout=30)
        assert polled.status_code == 200 and len(polled.json()["messages"]) == 1
        assert 5.5 < time.monotonic() - waited < 15
        client.post("/v1/inbox/spd-west/ack", json={"ids": [polled.json()["messages"][0]["id"]]})
        by_event = client.post("/v1/inbox/spd-west/ack", json={"event_ids": [urgent]}).json()
        assert by_event["emergencies"][0]["outcome"] == "already"
        assert client.post("/v1/inbox/spd-west/ack", json={"ids": ["nope"]}).status_code == 400
        assert client.post("/v1/inbox/spd-west/ack", content=b"{").status_code == 400
        assert client.get("/v1/inbox/nobody").status_code == 403


def _read_sse(client: httpx.Client, url: str, n: int, headers: dict[str, str]) -> list[dict]:
    events: list[dict] = []
    with client.stream("GET", url, headers=headers, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        current: dict = {}
        for line in response.iter_lines():
            if line.startswith("id: "):
                current["id"] = line[4:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif line == "" and "data" in current:
                events.append(current)
                current = {}
                if len(events) == n:
                    break
    return events


def test_sse_stream_resumes_and_repeats_only_what_was_not_acknowledged(
    gateway, tokens, redis, keys
):
    token, _ = tokens.create("spd-west")
    sent = _deliver(redis, keys, "spd-west", 4)
    url = "/v1/inbox/spd-west/stream"
    with httpx.Client(base_url=gateway.url, headers=bearer(token)) as client:
        first = _read_sse(client, url, 2, {})
        assert [e["data"]["event_id"] for e in first] == sent[:2]
        # resume after the last one seen: nothing lost (3 and 4), nothing seen repeated
        resumed = _read_sse(client, url, 2, {"Last-Event-ID": first[-1]["id"]})
        assert [e["data"]["event_id"] for e in resumed] == sent[2:]
        client.post("/v1/inbox/spd-west/ack", json={"ids": [first[0]["id"], resumed[0]["id"]]})
        # a fresh connection repeats exactly the two never acknowledged, then streams new ones
        later = _deliver(redis, keys, "spd-west", 1)
        fresh = _read_sse(client, url, 3, {})
        assert [e["data"]["event_id"] for e in fresh] == [sent[1], sent[3], later[0]]
        assert client.get(url, headers={"Last-Event-ID": "junk"}).status_code == 400


def test_locate_answers_like_the_cli(gateway, tokens, cli, capsys):
    token, _ = tokens.create("sdot")
    reply = httpx.get(gateway.url + "/v1/locate", params={"lat": WEST["lat"], "lon": WEST["lon"],
                      "at": "2026-12-01T00:00:00Z"}, headers=bearer(token), timeout=60)  # fmt: skip
    assert reply.status_code == 200
    capsys.readouterr()
    assert cli("locate", "--lat", str(WEST["lat"]), "--lon", str(WEST["lon"]),
               "--at", "2026-12-01T00:00:00Z") == 0  # fmt: skip
    assert reply.json() == json.loads(capsys.readouterr().out)
    bad = httpx.get(gateway.url + "/v1/locate", params={"lat": "nan", "lon": 1},
                    headers=bearer(token))  # fmt: skip
    assert bad.status_code == 400


def test_health_readiness_openapi_and_status(gateway, tokens, redis, keys, cli, capsys):
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway.url + "/readyz").json()
    assert ready["status"] == "ready" and ready["prefix"] == keys.prefix
    spec = httpx.get(gateway.url + "/openapi.json").json()
    assert spec["openapi"].startswith("3.") and "/v1/events" in spec["paths"]
    token, _ = tokens.create("sdot")
    structured = {**bearer(token), "Content-Type": "application/cloudevents+json"}
    httpx.post(gateway.url + "/v1/events", headers=structured, content=json.dumps(incident()))
    httpx.post(gateway.url + "/v1/events", headers=bearer(token), content=b"x")
    _wait_for_counter(redis, keys, "gateway_in:sdot", 1)
    _wait_for_counter(redis, keys, "gateway_refused:unsupported_media_type", 1)
    capsys.readouterr()
    assert cli("status") == 0
    assert "gateway: in 1 (sdot=1); refused unsupported_media_type=1" in capsys.readouterr().out


def test_redis_unreachable_is_503_and_the_process_stays_up(keys):
    from tests.gateway_support import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    gateway = GatewayProcess(dead, keys.prefix).start()
    try:
        ready = httpx.get(gateway.url + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["reason"] == "not_ready"
        reply = httpx.post(
            gateway.url + "/v1/events",
            headers={**bearer("crt_" + "A" * 43), "Content-Type": "application/cloudevents+json"},
            content=json.dumps(incident()),
            timeout=30,
        )
        assert reply.status_code == 503 and reply.json()["reason"] == "redis_unavailable"
        assert reply.headers["retry-after"] == "1"
        assert httpx.get(gateway.url + "/healthz").status_code == 200
        assert gateway.alive()
    finally:
        gateway.stop()
