"""Emergency acknowledgement under the derived Redis ACLs: a department acknowledges through
its inbox with its own credentials, for itself only; the router tracks and the escalation
worker escalates with theirs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import NoPermissionError

from city.events import Event, source_for
from jobs.emergency import run_level
from queues import acl
from queues.acks import EmergencyStore, acknowledge
from queues.audit import AuditLog
from queues.inbox import Inbox
from queues.keys import Keys
from queues.streams import Producer
from tests.scenarios.emergency_city import Webhooks, city, harness

pytestmark = pytest.mark.integration
URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
DEPTS = ["fire", "ems", "police", "emergency-management", "parks"]


@pytest.fixture
def admin() -> Iterator[tuple[Redis, Keys]]:
    client = Redis.from_url(URL)
    keys = Keys(f"t{uuid.uuid4().hex[:10]}")
    yield client, keys
    names = [n.decode() for n in client.execute_command("ACL", "USERS")]
    ours = [n for n in names if n.startswith(f"{keys.prefix}.")]
    if ours:
        client.execute_command("ACL", "DELUSER", *ours)
    for pattern in (f"{keys.prefix}:*", f"rq:*{keys.prefix}*"):
        found = list(client.scan_iter(pattern))
        if found:
            client.delete(*found)
    client.close()


def test_departments_acknowledge_for_themselves_only(
    admin: tuple[Redis, Keys], tmp_path: Path
) -> None:
    client, keys = admin
    passwords, _ = acl.apply(client, keys, DEPTS, {})

    def login(user: str) -> Redis:
        return Redis.from_url(URL, username=user, password=passwords[user])

    hooks = Webhooks()
    try:
        config = city(hooks, tmp_path / "drop")
        # Routing with the router's credentials tracks the emergency.
        router = login(keys.acl_worker_user("router"))
        h = harness(client, keys, config)
        event = Event.new("health.emergency", source_for("ems"),
                          {"incident_number": "A-1", "kind": "trauma"},
                          location={"lat": 47.6205, "lon": -122.3493})  # fmt: skip
        Producer(client, "ems", keys).publish(event)
        h.ingest_all()
        h.redis = router
        h.work("emergency")
        assert set(EmergencyStore(client, keys).status(event.id).recipients) == {
            "fire", "ems", "emergency-management",
        }  # fmt: skip

        # fire reads and acks its inbox with its own credentials: recorded
        fire = login(keys.acl_dept_user("fire"))
        inbox = Inbox(fire, "fire", keys)
        messages = inbox.read()
        assert inbox.ack(messages) == 1
        by_id = Inbox(login(keys.acl_dept_user("ems")), "ems", keys)
        (ems_message,) = by_id.read()
        assert by_id.ack([ems_message.entry_id]) == 1  # by entry id: looked up, recorded
        # police cannot acknowledge for fire, nor read the tracking record
        police = login(keys.acl_dept_user("police"))
        with pytest.raises(NoPermissionError):
            police.set(keys.ack("fire", event.id), "0|forged")
        with pytest.raises(NoPermissionError):
            police.hgetall(keys.emergency(event.id))
        (result,) = acknowledge(police, keys, [event.id], "police", "police")
        assert result.outcome == "not_recipient"

        # the escalation worker's credentials run the checks and audit the acknowledgements
        escalation = login(keys.acl_worker_user("escalation"))
        for dept in ("fire", "ems", "emergency-management"):
            key = keys.emergency(event.id)
            client.hset(key, f"{dept}|deadline", 0)
        outcome = run_level(h.context, escalation, event.id,
                            ["fire", "ems", "emergency-management"], 1)  # fmt: skip
        assert outcome == {"fire": "acked", "ems": "acked", "emergency-management": "claimed"}
        status = EmergencyStore(client, keys).status(event.id)
        assert status.recipients["fire"].ack_by == "inbox:main"
        assert status.recipients["emergency-management"].level == 1
        acks = sorted(
            r.body["dept"] for r in AuditLog(client, keys).records() if r.kind == "emergency.ack"
        )
        assert acks == ["ems", "fire"]
    finally:
        hooks.close()
