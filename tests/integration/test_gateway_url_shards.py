"""`cityrelay gateway` of one URL shard of a partitioned city, on the real Redis: a request (by
curl) for a department at home on another shard (another Redis) is refused with 421 naming
that shard, before anything is written, instead of landing in a stream no ingest reads; its
own shard's departments publish as before; the other shard's department's inbox, likewise
421."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime

import httpx
import pytest

from queues.tokens import TokenStore
from tests.conftest import write_city
from tests.gateway_support import GatewayProcess

pytestmark = pytest.mark.integration


def _curl(
    url: str, token: str, dept: str, event_id: str, ce_type: str, data: str
) -> tuple[str, dict[str, object]]:
    out = subprocess.run(
        ["curl", "-sS", "-X", "POST", f"{url}/v1/events",
         "-H", f"Authorization: Bearer {token}",
         "-H", "Content-Type: application/json",
         "-H", "ce-specversion: 1.0", "-H", f"ce-id: {event_id}",
         "-H", f"ce-source: /city/{dept}", "-H", f"ce-type: {ce_type}",
         "-H", f"ce-time: {datetime.now(UTC).isoformat()}",
         "-H", 'ce-location: {"lat": 47.6205, "lon": -122.3493}',
         "-d", data, "-w", "\n%{http_code}"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    body, status = out.stdout.rsplit("\n", 1)
    return status, json.loads(body)


def test_a_department_at_home_on_another_shard_is_refused_with_its_home(
    redis_url, redis, keys, tmp_path
) -> None:
    partitions = {
        "default": "a",
        "shards": {
            "a": {"url": redis_url},
            "b": {"url": "redis://127.0.0.1:1/0", "departments": ["sdot"]},  # never reached
        },
    }
    path = write_city(tmp_path, partitions=partitions)
    tokens = TokenStore(redis, keys)
    sdot, _ = tokens.create("sdot")
    fire, _ = tokens.create("fire")
    gateway = GatewayProcess(redis_url, keys.prefix, path, env={"CITYRELAY_SHARD": "a"}).start()
    try:
        incident = '{"kind": "collision", "severity": 2}'
        status, body = _curl(gateway.url, sdot, "sdot", "e-sdot", "traffic.incident", incident)
        assert status == "421", body
        assert body["reason"] == "misdirected" and body["home"] == "b"
        assert "shard 'b'" in str(body["detail"])
        dispatch = '{"incident_number": "F-1", "nature": "aid response"}'
        status, body = _curl(gateway.url, fire, "fire", "e-fire", "safety.dispatch", dispatch)
        assert status == "202", body
        inbox = httpx.get(
            gateway.url + "/v1/inbox/sdot", headers={"Authorization": f"Bearer {sdot}"}
        )
        assert inbox.status_code == 421, inbox.text
        assert inbox.json()["home"] == "b"
    finally:
        assert gateway.alive(), gateway.output()
        gateway.stop()
    assert not redis.exists(keys.ingest("sdot"), keys.deadletter)
    assert [json.loads(f[b"e"])["id"] for _, f in redis.xrange(keys.ingest("fire"))] == ["e-fire"]
