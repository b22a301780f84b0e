"""`cityrelay push` as a real process against a webhook receiver on loopback that checks every
signature with the `standardwebhooks` package: endpoint down then up (retries, then delivered
once and acknowledged), one department's open breaker does not delay another, a SIGKILLed
pusher loses nothing, and a 2xx acknowledges an emergency only with ``ack_on_2xx``."""

from __future__ import annotations

import time
from typing import Any

import pytest

from jobs.channels.signed import new_secret
from queues.snapshot import city_snapshot
from tests.connector_support import (
    CliProcess,
    WebhookReceiver,
    department,
    inbox_entry,
    wait_for,
    write_connector_city,
)
from tests.unit.test_observe import scrape, value
from workers.cli.status import report
from workers.standins import free_port

FAST = {
    "retry": {"max_attempts": 2, "base_delay_s": 0.05, "max_delay_s": 0.3},
    "breaker": {"failure_threshold": 2, "reset_timeout_s": 0.5},
}


@pytest.fixture
def secret():
    return new_secret()


@pytest.fixture
def receiver(secret):
    server = WebhookReceiver(secret)
    yield server
    server.close()


def _city(tmp_path, deliveries: dict[str, dict[str, Any]]):
    def edit(doc):
        for dept, delivery in deliveries.items():
            department(doc, dept)["delivery"] = {"secret_env": "PUSH_SECRET", **FAST, **delivery}
        doc["routing"]["claim_idle_ms"] = 500

    return write_connector_city(tmp_path, edit)


def _fill(redis, keys, dept: str, n: int, prefix: str, priority: str = "routine") -> list[str]:
    pipe = redis.pipeline()
    for i in range(n):
        pipe.xadd(keys.inbox(dept), inbox_entry(f"{prefix}-{i}", dept, priority))
    return [eid.decode() for eid in pipe.execute()]


def _pending(redis, keys, dept: str) -> int:
    try:
        return int(redis.xpending(keys.inbox(dept), dept)["pending"])
    except Exception:
        return 0


def _pusher_facing_a_down_endpoint(redis_url, redis, keys, tmp_path, receiver, secret, n,
                                   batch_max):  # fmt: skip
    """sdot's endpoint answering 503, `n` messages in its inbox, the pusher started."""
    config = _city(tmp_path, {"sdot": {"webhook": f"{receiver.url}/sdot", "batch_max": batch_max}})
    receiver.up["/sdot"] = False
    entries = _fill(redis, keys, "sdot", n, f"down{batch_max}")
    pusher = CliProcess(redis_url, keys.prefix, config, PUSH_SECRET=secret).start("push")
    return pusher, entries


@pytest.mark.integration
def test_endpoint_down_then_up_retries_then_delivers_each_once_and_acks(
    redis_url, redis, keys, tmp_path, receiver, secret
):
    pusher, entries = _pusher_facing_a_down_endpoint(
        redis_url, redis, keys, tmp_path, receiver, secret, 35, batch_max=10
    )
    try:
        wait_for(lambda: receiver.refused >= 3, 20, "the pusher to retry against a 503")
        assert receiver.messages("/sdot") == []
        assert _pending(redis, keys, "sdot") > 0  # read, not acknowledged
        receiver.up["/sdot"] = True
        wait_for(lambda: len(receiver.messages("/sdot")) >= 35, 20, "delivery once up")
        wait_for(lambda: _pending(redis, keys, "sdot") == 0, 10, "every batch acknowledged")
    finally:
        pusher.stop()
    got = [m["id"] for m in receiver.messages("/sdot")]
    assert sorted(got) == sorted(entries) and len(got) == len(set(got))  # each once
    assert receiver.bad_signatures == 0
    stats = {k.decode(): int(v) for k, v in redis.hgetall(keys.stats).items()}
    assert stats["push_delivered:sdot"] == 35 and stats["push_failed:sdot"] >= 3
    shown = report(city_snapshot(redis, keys, ["sdot"]))["push"]  # `cityrelay status --json`
    assert shown["delivered_by_dept"] == {"sdot": 35}
    assert shown["failed_sends_by_dept"] == {"sdot": stats["push_failed:sdot"]}
    samples = scrape(redis, keys, ["sdot"])  # the exporter, parsed as Prometheus parses it
    assert value(samples, "cityrelay_push_delivered_total", department="sdot") == 35
    failed = value(samples, "cityrelay_push_failed_sends_total", department="sdot")
    assert failed == stats["push_failed:sdot"]


@pytest.mark.integration
def test_open_breaker_of_one_department_does_not_delay_another(
    redis_url, redis, keys, tmp_path, receiver, secret
):
    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
    config = _city(
        tmp_path,
        {"sdot": {"webhook": dead}, "fire": {"webhook": f"{receiver.url}/fire"}},
    )
    _fill(redis, keys, "sdot", 20, "dead")
    pusher = CliProcess(redis_url, keys.prefix, config, PUSH_SECRET=secret).start("push")
    try:
        wait_for(
            lambda: int(redis.hget(keys.stats, "push_failed:sdot") or 0) >= 3,
            20,
            "the dead endpoint's breaker to open",
        )
        started = time.monotonic()
        fire = _fill(redis, keys, "fire", 25, "live")
        wait_for(lambda: len(receiver.messages("/fire")) >= 25, 10, "the other department")
        took = time.monotonic() - started
        assert sorted(m["id"] for m in receiver.messages("/fire")) == sorted(fire)
        assert took < 3.0, f"fire's deliveries took {took:.2f} s behind sdot's dead endpoint"
        assert _pending(redis, keys, "sdot") == 20  # still owed, never skipped
    finally:
        pusher.stop()


@pytest.mark.integration
def test_killed_pusher_loses_nothing(redis_url, redis, keys, tmp_path, receiver, secret):
    pusher, entries = _pusher_facing_a_down_endpoint(
        redis_url, redis, keys, tmp_path, receiver, secret, 120, batch_max=50
    )
    try:
        wait_for(lambda: receiver.refused >= 1, 20, "a batch in flight")
        pusher.kill()  # SIGKILL with a batch read but not delivered
        receiver.up["/sdot"] = True
        pusher.start("push")
        wait_for(lambda: len({m["id"] for m in receiver.messages("/sdot")}) >= 120, 30, "all")
        wait_for(lambda: _pending(redis, keys, "sdot") == 0, 10, "all acknowledged")
    finally:
        pusher.stop()
    assert {m["id"] for m in receiver.messages("/sdot")} == set(entries)


@pytest.mark.integration
def test_a_2xx_acknowledges_an_emergency_only_with_ack_on_2xx(
    redis_url, redis, keys, tmp_path, receiver, secret
):
    config = _city(
        tmp_path,
        {
            "fire": {"webhook": f"{receiver.url}/fire"},
            "ems": {"webhook": f"{receiver.url}/ems", "ack_on_2xx": True},
        },
    )
    for dept in ("fire", "ems"):
        redis.hset(keys.emergency(f"mci-{dept}-0"), f"{dept}|delivered", 1)
        _fill(redis, keys, dept, 1, f"mci-{dept}", priority="emergency")
    pusher = CliProcess(redis_url, keys.prefix, config, PUSH_SECRET=secret).start("push")
    try:
        wait_for(
            lambda: receiver.messages("/fire") and receiver.messages("/ems"), 20, "both pushed"
        )
        wait_for(lambda: redis.exists(keys.ack("ems", "mci-ems-0")) == 1, 10, "ems's ack")
        wait_for(lambda: _pending(redis, keys, "fire") == 0, 10, "fire's XACK")
    finally:
        pusher.stop()
    assert redis.exists(keys.ack("fire", "mci-fire-0")) == 0  # delivered, still escalating
