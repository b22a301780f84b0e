"""End to end through real processes: events POSTed to `cityrelay gateway` are validated and
routed by real `cityrelay ingest` and `cityrelay worker` processes into the recipients'
inboxes, and read back (and acknowledged) through GET /v1/inbox."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from cloudevents.v1.conversion import to_binary, to_structured
from cloudevents.v1.http import CloudEvent

from queues.tokens import TokenStore
from tests.conftest import SEATTLE
from tests.gateway_support import GatewayProcess
from tests.integration.test_processes import Processes

pytestmark = pytest.mark.integration

WEST = {"lat": 47.6205, "lon": -122.3493}


def test_gateway_events_reach_the_recipients_inboxes(redis_url, redis, keys, seattle_router):
    tokens = TokenStore(redis, keys)
    sdot, _ = tokens.create("sdot")
    processes = Processes(redis_url, keys.prefix, SEATTLE)
    gateway = GatewayProcess(redis_url, keys.prefix).start()
    try:
        processes.start("ingest", "ingest")
        processes.start("emergency", "worker", "--role", "emergency", "--name", f"{keys.prefix}-em")
        processes.start("routine", "worker", "--role", "routine", "--name", f"{keys.prefix}-rt")
        events = [
            CloudEvent(
                {
                    "type": "traffic.incident",
                    "source": "/city/sdot",
                    "department": "sdot",
                    "location": json.dumps(WEST),
                    **({"priority": "emergency"} if n == 2 else {}),
                },
                {"kind": "collision", "severity": 3},
            )  # fmt: skip
            for n in range(3)
        ]
        batch = [
            {"id": uuid.uuid4().hex, "source": "/city/sdot", "specversion": "1.0",
             "type": "traffic.incident", "time": datetime.now(UTC).isoformat(),
             "data": {"kind": "hazard", "severity": 1}, "location": WEST}
            for _ in range(5)
        ]  # fmt: skip
        with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {sdot}"}) as c:
            for n, event in enumerate(events):
                headers, body = (to_binary if n % 2 else to_structured)(event)
                assert c.post("/v1/events", headers=headers, content=body).status_code == 202
            as_batch = {"Content-Type": "application/cloudevents-batch+json"}
            reply = c.post("/v1/events", content=json.dumps(batch), headers=as_batch)
            assert reply.status_code == 202
            # a retry of the whole batch: ingest drops the copies, each is delivered once
            c.post("/v1/events", content=json.dumps(batch), headers=as_batch)
        sent = {e["id"] for e in events} | {e["id"] for e in batch}
        wire = {**batch[0], "department": "sdot"}
        recipients = sorted({d.dept for d in seattle_router.route(wire)})
        assert recipients, "the test point must have recipients"
        for dept in recipients:
            token, _ = tokens.create(dept)
            got: dict[str, dict] = {}
            deadline = time.monotonic() + 60
            with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {token}"},
                              timeout=10) as c:  # fmt: skip
                while set(got) != sent:
                    assert time.monotonic() < deadline, f"{dept} got {len(got)} of {len(sent)}"
                    page = c.get(f"/v1/inbox/{dept}", params={"wait_ms": 1000}).json()["messages"]
                    for m in page:
                        assert m["event_id"] not in got, "delivered twice"
                        got[m["event_id"]] = m
                    if page:
                        ack = c.post(f"/v1/inbox/{dept}/ack", json={"ids": [m["id"] for m in page]})
                        assert ack.json()["acked"] == len(page)
                assert all(m["via"] for m in got.values())
                assert {m["event"]["department"] for m in got.values()} == {"sdot"}
                assert c.get(f"/v1/inbox/{dept}", params={"wait_ms": 300}).json()["messages"] == []
    finally:
        processes.stop_all()
        gateway.stop()
    assert redis.xlen(keys.deadletter) == 0
