"""With the derived ACLs applied to a real Redis, isolation holds even if our code is wrong.

Creates its own users (names carry this run's unique prefix) and deletes them afterwards;
the default user is never touched.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from redis import Redis
from redis.exceptions import NoPermissionError

from queues import acl
from queues.inbox import Deliverer, EventDelivery, Output
from queues.keys import Keys
from workers import cli

pytestmark = pytest.mark.integration

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
DEPTS = ["police", "fire"]


@pytest.fixture
def admin() -> Iterator[tuple[Redis, Keys]]:
    client = Redis.from_url(URL)
    try:
        client.ping()
    except Exception as exc:  # pragma: no cover - environment problem, reported
        pytest.fail(f"integration tests need Redis at {URL}: {exc}", pytrace=False)
    keys = Keys(f"t{uuid.uuid4().hex[:10]}")
    yield client, keys
    names = [n.decode() for n in client.execute_command("ACL", "USERS")]
    ours = [n for n in names if n.startswith(f"{keys.prefix}.")]
    if ours:
        client.execute_command("ACL", "DELUSER", *ours)
    found = list(client.scan_iter(f"{keys.prefix}:*"))
    if found:
        client.delete(*found)
    client.close()


def login(keys: Keys, passwords: dict[str, str], user: str) -> Redis:
    return Redis.from_url(URL, username=user, password=passwords[user])


def test_department_cannot_read_another_departments_inbox(admin: tuple[Redis, Keys]) -> None:
    client, keys = admin
    passwords, _ = acl.apply(client, keys, DEPTS, {})
    for dept in DEPTS:
        client.xgroup_create(keys.inbox(dept), dept, id="0", mkstream=True)
        client.xadd(keys.inbox(dept), {"event": f"for {dept}"})
    police = login(keys, passwords, keys.acl_dept_user("police"))

    # Its own: publish to its ingest streams, read and ack its inbox.
    police.xadd(keys.ingest("police"), {"event": "x"})
    police.xadd(keys.ingest("police", "emergency"), {"event": "x"})
    [(_, entries)] = police.xreadgroup("police", "c1", {keys.inbox("police"): ">"})
    assert police.xack(keys.inbox("police"), "police", entries[0][0]) == 1

    # Another's: Redis itself refuses.
    with pytest.raises(NoPermissionError):
        police.xreadgroup("fire", "c1", {keys.inbox("fire"): ">"})
    with pytest.raises(NoPermissionError):
        police.xadd(keys.ingest("fire"), {"event": "forged"})
    with pytest.raises(NoPermissionError):
        police.xack(keys.inbox("fire"), "fire", "0-1")
    # Nor may it forge deliveries into its own inbox, read raw ingest, or touch anything else.
    with pytest.raises(NoPermissionError):
        police.xadd(keys.inbox("police"), {"event": "self-delivered"})
    with pytest.raises(NoPermissionError):
        police.xrange(keys.ingest("police"))
    with pytest.raises(NoPermissionError):
        police.get(keys.grants_version)
    with pytest.raises(NoPermissionError):
        police.keys("*")
    police.close()


def test_worker_roles_get_what_they_need_and_no_more(admin: tuple[Redis, Keys]) -> None:
    client, keys = admin
    passwords, _ = acl.apply(client, keys, DEPTS, {})
    router = login(keys, passwords, keys.acl_worker_user("router"))
    router.xadd(keys.inbox("fire"), {"event": "delivered"})
    assert router.hgetall(keys.grants) == {}
    router.info("server")  # RQ reads the server version
    router.client_setname("router-1")  # and names its connection
    with pytest.raises(NoPermissionError):
        router.hset(keys.grants, "g-1", "{}")  # grants are read-only for routers
    # Rules emit derived events on a department's behalf, appended to its ingest stream by
    # the delivery script itself (a key a script declares needs read and write permission).
    delivery = EventDelivery(keys.seen("fire", "e-1"))
    delivery.outputs.append(Output(keys.inbox("fire"), [("e", "{}")]))
    delivery.outputs.append(Output(keys.ingest("police"), [("e", "{}")]))
    assert Deliverer(router, 60, stats_key=keys.stats).deliver([delivery]).flags == [True]
    assert client.xlen(keys.ingest("police")) == 1
    with pytest.raises(NoPermissionError):
        router.flushdb()
    with pytest.raises(NoPermissionError):
        router.execute_command("ACL", "LIST")
    ingest = login(keys, passwords, keys.acl_worker_user("ingest"))
    ingest.xadd(keys.deadletter, {"reason": "x"})
    with pytest.raises(NoPermissionError):
        ingest.xadd(keys.inbox("fire"), {"event": "x"})
    router.close()
    ingest.close()


def test_acl_apply_cli_writes_secrets_and_prunes(
    admin: tuple[Redis, Keys], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client, keys = admin
    city = {
        "city": "t",
        "layers": {"l": {"path": "l.geojson"}},
        "departments": [{"id": d, "name": d} for d in DEPTS],
    }
    config = tmp_path / "city.yaml"
    config.write_text(yaml.safe_dump(city))
    secrets = tmp_path / "secrets.json"
    argv = ["--redis-url", URL, "--prefix", keys.prefix, "--config", str(config)]
    assert cli.main([*argv, "acl", "apply", "--secrets", str(secrets)]) == 0
    assert "new passwords written" in capsys.readouterr().out
    assert secrets.stat().st_mode & 0o077 == 0
    written = json.loads(secrets.read_text())
    assert set(written) == {u.name for u in acl.derive_users(keys, DEPTS)}
    # Re-applying keeps the passwords; a department gone from the config is pruned.
    city["departments"] = [{"id": "police", "name": "police"}]
    config.write_text(yaml.safe_dump(city))
    assert cli.main([*argv, "acl", "apply", "--secrets", str(secrets), "--prune"]) == 0
    out = capsys.readouterr().out
    assert "pruned 1" in out and "new passwords" not in out
    names = {n.decode() for n in client.execute_command("ACL", "USERS")}
    assert keys.acl_dept_user("fire") not in names
    police = login(keys, written, keys.acl_dept_user("police"))
    police.xadd(keys.ingest("police"), {"event": "x"})
    police.close()
    assert cli.main([*argv, "audit", "verify"]) == 0
    assert "2 records" in capsys.readouterr().out
