"""Grants and the audit chain against a real Redis (Lua compare-and-append, versions)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from redis import Redis

from city.sharing import Authorizer, Grant, PolicySet, compile_subscription
from queues.audit import AuditLog
from queues.grants import GrantStore
from queues.keys import Keys

pytestmark = pytest.mark.integration

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def store() -> Iterator[GrantStore]:
    client = Redis.from_url(URL)
    keys = Keys(f"t{uuid.uuid4().hex[:10]}")
    yield GrantStore(client, keys)
    found = list(client.scan_iter(f"{keys.prefix}:*"))
    if found:
        client.delete(*found)
    client.close()


def test_expiry_and_revocation_take_effect_for_the_router(store: GrantStore) -> None:
    start = datetime.now(UTC).replace(microsecond=0)
    root = store.create(
        Grant(
            owner="transportation",
            grantee="police",
            grantor="transportation",
            types=("traffic.*",),
            purposes=("investigation",),
            fields=("plate",),
            valid_from=start,
            valid_until=start + timedelta(minutes=10),
            delegate_depth=1,
        )
    )
    child = store.create(
        Grant(
            owner="transportation",
            grantee="fire",
            grantor="police",
            parent=root.id,
            types=("traffic.incident",),
            purposes=("investigation",),
            fields=("plate",),
            valid_from=start,
            valid_until=start + timedelta(minutes=5),
        )
    )
    event = {"type": "traffic.incident", "department": "transportation", "data": {"plate": "P"}}
    fire = compile_subscription(
        type("D", (), {"id": "fire", "jurisdiction": []})(),
        {"id": "f", "types": ["traffic.*"], "scope": "citywide", "purpose": "investigation"},
    )
    grants = store.load()
    auth = Authorizer(PolicySet(), grants)
    now = time.time()
    assert auth.decide(event, fire, now).grant == child.id
    # Expiry: no job, the second it ends.
    end = (start + timedelta(minutes=5)).timestamp()
    assert auth.decide(event, fire, end - 1).allow and not auth.decide(event, fire, end).allow
    # The router's per-batch reload is one GET until something changes.
    assert store.load(grants) is grants
    store.revoke(root.id, by="transportation")
    reloaded = store.load(grants)
    assert reloaded is not grants
    assert not Authorizer(PolicySet(), reloaded).decide(event, fire, now).allow
    log = AuditLog(store.redis, store.keys)
    assert [r.kind for r in log.records()] == ["grant.create", "grant.delegate", "grant.revoke"]
    assert log.verify().ok


def test_two_writers_on_real_redis_keep_one_chain(store: GrantStore) -> None:
    a = AuditLog(store.redis, store.keys)
    b = AuditLog(Redis.from_url(URL), store.keys)
    for i in range(5):
        a.append("delivery", {"i": i}, "router-a")
        b.append("delivery", {"i": i}, "router-b")
    pipe = store.redis.pipeline()
    pipe.xadd(store.keys.inbox("police"), {"e": "1"})
    pending = a.queue(pipe, [("delivery", {"batch": "last"}, "router-a")])
    a.confirm(pending, pipe.execute()[-1])
    result = a.verify()
    assert result.ok and result.records == 11
    b.redis.close()
