"""Hostile input at the HTTP gateway, against one real `cityrelay gateway` process.

Generated (hypothesis) and hand-written cases: malformed JSON, random bytes, mutated events,
wrong content types and methods, huge and lying bodies, header injection and other broken HTTP
on raw sockets, forged departments, tokens replayed after revocation, slow clients. Each must
get a 4xx with a reason (problem+json), the process must stay up and answer others meanwhile,
and every event it accepted (202) must be in the ingest streams. The number of requests tried
is printed in the test summary (tests/conftest.py)."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis

from queues.cleanup import delete_city
from queues.keys import Keys
from queues.tokens import TokenStore
from tests.conftest import GATEWAY_HOSTILE, HOSTILE_TRIED, SEATTLE
from tests.gateway_support import GatewayProcess, incident

pytestmark = pytest.mark.integration

MAX_BODY = 256 * 1024
ACCEPTED: set[str] = set()


class Env:
    def __init__(self, gateway: GatewayProcess, redis: Redis, keys: Keys, token: str):
        self.gateway, self.redis, self.keys, self.token = gateway, redis, keys, token
        self.client = httpx.Client(base_url=gateway.url, timeout=10)

    def auth(self, **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **headers}


@pytest.fixture(scope="module")
def env(redis_url: str) -> Iterator[Env]:
    keys = Keys(f"t{uuid.uuid4().hex[:10]}")
    redis = Redis.from_url(redis_url)
    gateway = GatewayProcess(
        redis_url,
        keys.prefix,
        env={
            "CITYRELAY_GATEWAY_MAX_BODY_BYTES": str(MAX_BODY),
            "CITYRELAY_GATEWAY_BATCH_MAX_EVENTS": "50",
            "CITYRELAY_GATEWAY_BODY_TIMEOUT_S": "1",
            "CITYRELAY_GATEWAY_HEADER_TIMEOUT_S": "1",
            "CITYRELAY_GATEWAY_TOKEN_CACHE_S": "0.1",
        },
    ).start()
    token, _ = TokenStore(redis, keys).create("sdot")
    state = Env(gateway, redis, keys, token)
    try:
        yield state
        assert gateway.alive(), gateway.output()
        _nothing_accepted_is_lost(state)
    finally:
        state.client.close()
        gateway.stop()
        delete_city(redis, keys)
        redis.close()


def _nothing_accepted_is_lost(env: Env) -> None:
    stored = set()
    for lane in ("routine", "emergency"):
        for _, fields in env.redis.xrange(env.keys.ingest("sdot", lane)):
            stored.add(json.loads(fields[b"e"])["id"])
    assert stored >= ACCEPTED, f"accepted but not in Redis: {sorted(ACCEPTED - stored)[:5]}"


def tried(kind: str, n: int = 1) -> None:
    HOSTILE_TRIED["http"] += n
    GATEWAY_HOSTILE[kind] = GATEWAY_HOSTILE.get(kind, 0) + n


def check(reply: httpx.Response) -> None:
    """A refusal is a 4xx problem+json with a reason; an acceptance names what it took."""
    assert reply.status_code < 500, reply.text
    if reply.status_code == 202:
        ACCEPTED.update(reply.json()["accepted"])
        return
    assert 400 <= reply.status_code < 500, reply.text
    assert reply.headers["content-type"] == "application/problem+json", reply.text
    doc = reply.json()
    assert doc["status"] == reply.status_code and doc["reason"] and doc["detail"]


# --- generated --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
FIELDS = ["id", "source", "specversion", "type", "time", "data", "location", "priority",
          "department", "subject", "datacontenttype", "h3cell"]  # fmt: skip


@st.composite
def mutated_event(draw: st.DrawFn) -> dict:
    event = incident()
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(FIELDS))
        if draw(st.booleans()):
            event.pop(name, None)
        else:
            event[name] = draw(json_values)
    return event


CONTENT_TYPES = [
    "application/cloudevents+json", "application/cloudevents-batch+json", "application/json",
    "text/plain", "", "application/xml", "multipart/form-data; boundary=x",
    "application/cloudevents+json; charset=utf-8", "application/x-www-form-urlencoded",
    "x/\u00e9".encode().decode("latin-1"), "application/cloudevents+json;;;",
]  # fmt: skip
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated_event().map(lambda e: json.dumps(e).encode()),
    st.lists(mutated_event(), max_size=4).map(lambda es: json.dumps(es).encode()),
    st.text(max_size=200).map(str.encode),
)
ce_headers = st.dictionaries(
    st.sampled_from(
        [
            "ce-specversion",
            "ce-id",
            "ce-source",
            "ce-type",
            "ce-time",
            "ce-location",
            "ce-department",
            "ce-priority",
            "ce-x",
        ]
    ),  # fmt: skip
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    max_size=6,
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(content_type=st.sampled_from(CONTENT_TYPES), body=bodies, ce=ce_headers)
def test_generated_requests_get_an_answer_with_a_reason(env, content_type, body, ce):
    headers = env.auth(**ce)
    if content_type:
        headers["Content-Type"] = content_type
    try:
        reply = env.client.post("/v1/events", headers=headers, content=body)
    except (httpx.LocalProtocolError, UnicodeEncodeError):
        return  # the client refused to send it (not a valid header value)
    tried("generated")
    check(reply)


# --- hand-written ----------------------------------------------------------------------------


def test_malformed_json_and_wrong_content_types_and_methods(env):
    for body in [b"{", b"[", b"", b"nul", b"{'a': 1}", b"\xff\xfe", b'{"a":1}{"b":2}',
                 b"[" * 10_000, b'{"a":' * 5000, b"1e999999"]:  # fmt: skip
        for mode in ("application/cloudevents+json", "application/cloudevents-batch+json"):
            reply = env.client.post("/v1/events", headers=env.auth(**{"Content-Type": mode}),
                                    content=body)  # fmt: skip
            tried("malformed_json")
            check(reply)
            assert reply.status_code in (400, 422)
    for media in ["text/plain", "application/xml", "image/png", "application/json", ""]:
        reply = env.client.post("/v1/events", headers=env.auth(**{"Content-Type": media}),
                                content=json.dumps(incident()))  # fmt: skip
        tried("content_type")
        check(reply)
        assert reply.status_code == 415
    for method in ["GET", "PUT", "DELETE", "PATCH"]:
        reply = env.client.request(method, "/v1/events", headers=env.auth())
        tried("method")
        check(reply)
        assert reply.status_code == 405
    for method, path in [("POST", "/v1/locate"), ("DELETE", "/v1/inbox/sdot"), ("PUT", "/v1/cap")]:
        reply = env.client.request(method, path, headers=env.auth())
        tried("method")
        check(reply)
        assert reply.status_code == 405
    structured = env.auth(**{"Content-Type": "application/cloudevents-batch+json"})
    reply = env.client.post("/v1/events", headers=structured,
                            content=json.dumps([incident() for _ in range(51)]))  # fmt: skip
    tried("batch_too_large")
    check(reply)
    assert reply.status_code == 413


def test_huge_and_lying_bodies_are_refused_before_they_are_read(env):
    headers = env.auth(**{"Content-Type": "application/cloudevents+json"})
    sock = socket.create_connection(("127.0.0.1", env.gateway.port), timeout=5)
    sock.sendall(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents+json\r\n"
        + f"Authorization: Bearer {env.token}\r\nContent-Length: 10000000000\r\n\r\n".encode()
        + b"{"
    )
    answer = sock.recv(4096)
    sock.close()
    tried("huge_body")
    assert answer.startswith(b"HTTP/1.1 413"), answer

    def stream(total: int) -> Iterator[bytes]:
        sent = 0
        while sent < total:
            sent += 64 * 1024
            yield b" " * (64 * 1024)

    for total in (MAX_BODY + 1, 50 * 1024 * 1024):
        try:
            reply = env.client.post("/v1/events", headers=headers, content=stream(total))
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
            tried("huge_body")  # closed while still sending: refused before it was read
            continue
        tried("huge_body")
        check(reply)
        assert reply.status_code == 413
    reply = env.client.post("/v1/events", headers=headers, content=b"x" * (MAX_BODY + 1))
    tried("huge_body")
    check(reply)
    assert reply.status_code == 413
    cap = env.auth(**{"Content-Type": "application/cap+xml"})
    reply = env.client.post("/v1/cap", headers=cap, content=b"<" * (2 * 1024 * 1024))
    tried("huge_body")
    check(reply)
    assert reply.status_code == 413


RAW = [
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nce-type: a\r\nX-Injected: 1\r\n evil: 2\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nce-type: a\x00b\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nce-type: a\rb\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nabcde",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3"
    b"\r\n\r\n0\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"GET /v1/events\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 100_000 + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 20_000 + b"\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello
]  # fmt: skip


def _raw(port: int, data: bytes, timeout: float = 5) -> bytes:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(data)
        out = b""
        while not out.endswith(b"}") and len(out) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            out += chunk
        return out
    except ConnectionResetError:
        return out
    finally:
        sock.close()


def test_broken_http_and_header_injection_get_4xx_with_a_reason(env):
    for data in RAW:
        answer = _raw(env.gateway.port, data)
        tried("broken_http")
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:300]
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"application/problem+json" in head, answer[:300]
        assert json.loads(body)["reason"]


def test_forged_departments_are_403(env):
    config_depts = [d for d in _departments() if d != "sdot"]
    for dept in config_depts:
        for reply in (
            env.client.post("/v1/events", content=json.dumps(incident(department=dept)),
                            headers=env.auth(**{"Content-Type": "application/cloudevents+json"})),
            env.client.post("/v1/events", content=json.dumps({"kind": "collision", "severity": 1}),
                            headers=env.auth(**{"ce-specversion": "1.0", "ce-id": "f",
                                                "ce-source": f"/city/{dept}", "ce-type": "x.y",
                                                "ce-department": dept})),
            env.client.get(f"/v1/inbox/{dept}", headers=env.auth()),
            env.client.post(f"/v1/inbox/{dept}/ack", headers=env.auth(), json={"ids": ["1-0"]}),
            env.client.get(f"/v1/inbox/{dept}/stream", headers=env.auth()),
        ):  # fmt: skip
            tried("forged_department")
            check(reply)
            assert reply.status_code == 403 and reply.json()["reason"] == "forbidden"
    forged_source = env.client.post(
        "/v1/events", content=json.dumps(incident(source="/city/spd-west")),
        headers=env.auth(**{"Content-Type": "application/cloudevents+json"}),
    )  # fmt: skip
    tried("forged_department")
    assert forged_source.status_code == 422 and forged_source.json()["reason"] == "forged_source"


def _departments() -> list[str]:
    from city.config import load_city

    config, _ = load_city(SEATTLE)
    return config.department_ids


def test_tokens_replayed_after_revoke_are_401(env):
    store = TokenStore(env.redis, env.keys)
    issued = [store.create("sdot", name=f"replay{i}") for i in range(5)]
    structured = {"Content-Type": "application/cloudevents+json"}
    for token, _ in issued:
        auth = {"Authorization": f"Bearer {token}", **structured}
        ok = env.client.post("/v1/events", content=json.dumps(incident()), headers=auth)
        check(ok)
        assert ok.status_code == 202
    for _, record in issued:
        store.revoke(record.id)
    time.sleep(0.3)  # the gateway's token cache: 0.1 s here
    for token, _ in issued:
        auth = {"Authorization": f"Bearer {token}"}
        for reply in (
            env.client.post("/v1/events", content=json.dumps(incident()),
                            headers={**auth, **structured}),
            env.client.get("/v1/inbox/sdot", headers=auth),
            env.client.post("/v1/inbox/sdot/ack", headers=auth, json={"ids": []}),
            env.client.get("/v1/locate", params={"lat": 47.6, "lon": -122.3}, headers=auth),
            env.client.post("/v1/cap", headers={**auth, "Content-Type": "application/cap+xml"},
                            content=b"<alert/>"),
        ):  # fmt: skip
            tried("revoked_token")
            check(reply)
            assert reply.status_code == 401 and "revoked" in reply.json()["detail"]
    for junk in ["", "Bearer", "Bearer crt_short", "Token abc", "Bearer " + "x" * 5000,
                 f"Bearer {env.token}x", f"bearer  {env.token[:-1]}"]:  # fmt: skip
        reply = env.client.get("/v1/inbox/sdot", headers={"Authorization": junk})
        tried("bad_token")
        check(reply)
        assert reply.status_code == 401


def test_slow_clients_time_out_and_do_not_hold_up_the_others(env):
    port = env.gateway.port
    results: dict[str, bytes] = {}

    def trickle_body() -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents+json"
            + f"\r\nAuthorization: Bearer {env.token}\r\nContent-Length: 1000\r\n\r\n".encode()
        )
        try:
            for _ in range(30):
                sock.sendall(b" ")
                time.sleep(0.1)
        except OSError:
            pass
        results["body"] = sock.recv(4096)
        sock.close()

    def trickle_headers() -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            for byte in b"GET /healthz HTTP/1.1\r\nHost: xxxxxxxxxxxxxxxxxxxxxxxxx\r\n":
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass
        results["headers"] = sock.recv(4096)
        sock.close()

    def silent() -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        results["silent"] = sock.recv(4096)
        sock.close()

    threads = [threading.Thread(target=f) for f in (trickle_body, trickle_headers, silent)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    started = time.monotonic()
    urgent = json.dumps(incident(priority="emergency"))
    headers = env.auth(**{"Content-Type": "application/cloudevents+json"})
    reply = env.client.post("/v1/events", content=urgent, headers=headers)
    assert reply.status_code == 202 and time.monotonic() - started < 1.0
    ACCEPTED.update(reply.json()["accepted"])
    for t in threads:
        t.join(timeout=15)
    tried("slow_client", 3)
    for kind in ("body", "headers", "silent"):
        assert results[kind].startswith(b"HTTP/1.1 408"), (kind, results[kind][:200])
        assert b"request_timeout" in results[kind]
