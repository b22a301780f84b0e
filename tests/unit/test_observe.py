"""The exporter and `cityrelay status` after real batches on fakeredis: what an operator's
Prometheus scrapes (parsed as Prometheus parses it) and what `status --json` prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from city.events import Event, source_for
from queues.acks import acknowledge
from queues.inbox import Inbox
from queues.metrics import handled, read_stats
from queues.observe import CityCollector
from queues.snapshot import city_snapshot
from queues.streams import Producer
from tests.pipeline_harness import Harness
from tests.unit.test_emergency import overdue, setup
from workers.cli.status import render, report
from workers.ingest import IngestWorker
from workers.worker import build_worker

WEST = {"lat": 47.6205, "lon": -122.3493}  # Seattle Center: West precinct


@pytest.fixture
def harness(redis, keys, seattle, seattle_router):  # type: ignore[no-untyped-def]
    config, base = seattle
    return Harness(redis, keys, config, base, seattle_router)


def incident(**attrs: Any) -> Event:
    attrs.setdefault("location", WEST)
    return Event.new(
        "traffic.incident", source_for("sdot"), {"kind": "collision", "severity": 3}, **attrs
    )


def scrape(redis: Any, keys: Any, departments: list[str]) -> dict[str, dict[tuple, float]]:
    """{metric sample name: {sorted label items: value}}, parsed like Prometheus does."""
    registry = CollectorRegistry()
    registry.register(CityCollector(redis, keys, departments))
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def value(samples: dict[str, dict[tuple, float]], name: str, **labels: str) -> float | None:
    return samples.get(name, {}).get(tuple(sorted(labels.items())))


def test_events_in_and_out_per_department_and_priority(harness, keys, redis, seattle) -> None:  # type: ignore[no-untyped-def]
    config, _ = seattle
    producer = Producer(redis, "sdot", keys)
    producer.publish_many([incident() for _ in range(3)] + [incident(priority="bulk")])
    producer.publish_raw(b'{"type": "traffic.incident"')
    harness.run()
    got = scrape(redis, keys, config.department_ids)
    assert value(got, "cityrelay_events_in_total", department="sdot", priority="high") == 3
    assert value(got, "cityrelay_events_in_total", department="sdot", priority="bulk") == 1
    assert value(got, "cityrelay_deliveries_total", department="spd-west", priority="high") == 3
    assert value(got, "cityrelay_deliveries_total", department="spd-west", priority="bulk") == 1
    assert value(got, "cityrelay_dead_letters_total", reason="malformed_json") == 1
    assert value(got, "cityrelay_redis_up") == 1
    assert value(got, "cityrelay_inbox_length", department="spd-west") == 4
    assert value(got, "cityrelay_queue_depth", queue="routine") == 0
    assert value(got, "cityrelay_hot_tier_entries", type="traffic.incident") == 4
    assert value(got, "cityrelay_delivery_latency_seconds_count", priority="high") == 3
    assert value(got, "cityrelay_delivery_latency_seconds_count", priority="bulk") == 1
    assert value(got, "cityrelay_delivery_latency_seconds_sum", priority="high") is not None
    # the old per-department counters keep their meaning: the split adds up to them
    stats = read_stats(redis, keys)
    in_split = got["cityrelay_events_in_total"]
    assert sum(in_split.values()) == stats["in:sdot"] == 4
    out = got["cityrelay_deliveries_total"]
    assert sum(v for k, v in out.items() if ("department", "fire") in k) == stats["delivered:fire"]
    assert handled(stats) == 5  # 4 delivered + 1 dead letter: nothing counted twice


def test_counts_from_before_the_priority_split_show_as_unknown(redis, keys) -> None:  # type: ignore[no-untyped-def]
    redis.hset(keys.stats, mapping={"in:sdot": 10, "in_pri:sdot:high": 4, "delivered:fire": 2})
    got = scrape(redis, keys, ["sdot", "fire"])
    assert value(got, "cityrelay_events_in_total", department="sdot", priority="high") == 4
    assert value(got, "cityrelay_events_in_total", department="sdot", priority="unknown") == 6
    assert value(got, "cityrelay_deliveries_total", department="fire", priority="unknown") == 2


def test_inbox_backlog_pending_and_unread(harness, keys, redis, seattle) -> None:  # type: ignore[no-untyped-def]
    config, _ = seattle
    Producer(redis, "sdot", keys).publish_many(incident() for _ in range(5))
    harness.run()
    inbox = Inbox(redis, "spd-west", keys)
    read = inbox.read(count=3)  # read three, acknowledge one
    inbox.ack(read[:1])
    got = scrape(redis, keys, config.department_ids)
    assert value(got, "cityrelay_inbox_length", department="spd-west") == 5
    assert value(got, "cityrelay_inbox_pending", department="spd-west") == 2
    assert value(got, "cityrelay_inbox_lag", department="spd-west") == 2
    # a department that never read has no group yet: no lag sample, and no error
    assert value(got, "cityrelay_inbox_lag", department="fire") is None
    assert value(got, "cityrelay_inbox_pending", department="fire") == 0


def test_workers_alive_per_role_and_ingest_consumers(harness, keys, redis, seattle) -> None:  # type: ignore[no-untyped-def]
    config, _ = seattle
    worker = build_worker(redis, keys, "emergency", harness.context, name=f"{keys.prefix}-e1")
    worker.register_birth()
    Producer(redis, "sdot", keys).publish_many(incident() for _ in range(4))
    doomed = IngestWorker(redis, keys, config, consumer="ingest-doomed")
    assert len(doomed.streams.read("ingest-doomed", 100, None)) == 4  # read, never acknowledged
    got = scrape(redis, keys, config.department_ids)
    assert value(got, "cityrelay_workers", role="emergency", state="idle") == 1
    assert value(got, "cityrelay_workers", role="routine", state="idle") == 0
    assert value(got, "cityrelay_ingest_consumer_pending", consumer="ingest-doomed") == 4
    assert value(got, "cityrelay_ingest_lag", department="sdot", lane="routine") == 0
    Producer(redis, "sdot", keys).publish(incident())  # waiting, unread
    got = scrape(redis, keys, config.department_ids)
    assert value(got, "cityrelay_ingest_lag", department="sdot", lane="routine") == 1
    idle = value(got, "cityrelay_ingest_consumer_idle_seconds", consumer="ingest-doomed")
    assert idle is not None and idle >= 0
    # a worker killed with SIGKILL stays in RQ's registry set; its key expires with the TTL
    redis.delete(worker.key)
    got = scrape(redis, keys, config.department_ids)
    assert value(got, "cityrelay_workers", role="emergency", state="idle") == 0


def test_escalations_acknowledgements_and_notifications(redis, keys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    h, event_id = setup(redis, keys, tmp_path)  # delivered to fire and ems, both unacknowledged
    departments = ["fire", "ems", "parks"]
    got = scrape(redis, keys, departments)
    assert value(got, "cityrelay_emergencies_tracked_total") == 1
    assert value(got, "cityrelay_events_in_total", department="ems", priority="emergency") == 1
    assert value(got, "cityrelay_deliveries_total", department="fire", priority="emergency") == 1
    assert value(got, "cityrelay_emergency_recipients", department="fire", state="waiting") == 1
    acknowledge(redis, keys, [event_id], "ems", "cli:ann")
    overdue(redis, keys, event_id, "fire")
    from jobs.emergency import run_level

    assert run_level(h.context, redis, event_id, ["fire"], 1) == {"fire": "claimed"}
    got = scrape(redis, keys, departments)
    assert value(got, "cityrelay_escalations_total", level="1") == 1
    assert value(got, "cityrelay_fallback_notifications_total", channel="file", result="ok") == 1
    assert value(got, "cityrelay_emergency_recipients", department="fire", state="overdue") == 1
    # ems acknowledged through its own key: counted although no check has seen it yet
    assert value(got, "cityrelay_emergency_recipients", department="ems", state="acknowledged") == 1
    # fire acknowledges late; the level-2 check sees it first and records it
    acknowledge(redis, keys, [event_id], "fire", "cli:bob")
    overdue(redis, keys, event_id, "fire", level=2)
    assert run_level(h.context, redis, event_id, ["fire"], 2) == {"fire": "acked"}
    got = scrape(redis, keys, departments)
    assert value(got, "cityrelay_acknowledgements_seen_total", level="2") == 1
    assert value(got, "cityrelay_escalations_total", level="2") is None
    assert (
        value(got, "cityrelay_emergency_recipients", department="fire", state="acknowledged") == 1
    )


def test_status_json_keeps_its_keys_and_adds_the_rest(harness, keys, redis, seattle) -> None:  # type: ignore[no-untyped-def]
    config, _ = seattle
    Producer(redis, "sdot", keys).publish_many([incident(), incident(priority="emergency")])
    Producer(redis, "parks", keys).publish_raw(b"{")
    harness.run()
    data = json.loads(json.dumps(report(city_snapshot(redis, keys, config.department_ids))))
    # the first version's keys, unchanged
    assert data["counters"]["delivered:spd-west"] == 2 and data["deadletters"] == 1
    assert data["queues"]["routine"] == 0 and data["latency"]["high"]["count"] == 1
    # added
    assert data["priorities"]["emergency"]["in"] == 1 and data["priorities"]["high"]["in"] == 1
    assert data["priorities"]["emergency"]["p99_ms_le"] is not None
    west = data["departments"]["spd-west"]
    assert west["delivered_by_priority"] == {"emergency": 1, "high": 1}
    assert west["inbox"] == {"length": 2, "pending": 0, "lag": None, "trimmed": 0}
    assert data["departments"]["sdot"]["in_by_priority"] == {"emergency": 1, "high": 1}
    assert data["deadletters_by_reason"] == {"malformed_json": 1}
    assert data["emergencies"]["tracked"] == 1
    assert sum(data["emergencies"]["recipients"]["waiting"].values()) >= 1
    assert [c["name"] for c in data["ingest_consumers"]] == ["ingest-a"]
    assert data["hot_tier"]["events"] == 2 and set(data["workers"]) >= {"emergency", "routine"}
    text = render(data)
    assert "latency emergency" in text and "malformed_json=1" in text
    assert any(line.startswith("spd-west") and line.split()[2] == "2" for line in text.splitlines())


def test_status_command_without_a_config_names_the_departments_it_counted(  # type: ignore[no-untyped-def]
    harness, keys, redis, monkeypatch, capsys
) -> None:
    from workers.cli import main
    from workers.runtime import Runtime

    Producer(redis, "sdot", keys).publish(incident())
    harness.run()
    monkeypatch.setattr(Runtime, "redis", lambda self, **kw: redis)
    monkeypatch.delenv("CITYRELAY_CONFIG", raising=False)
    assert main(["--prefix", keys.prefix, "status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["departments"]["sdot"]["in"] == 1
    assert data["departments"]["spd-west"]["inbox"]["length"] == 1
    assert main(["--prefix", keys.prefix, "status"]) == 0
    out = capsys.readouterr().out
    assert "latency high" in out and "workers alive:" in out


def test_a_scrape_while_redis_is_down_answers_and_says_so(keys, caplog) -> None:  # type: ignore[no-untyped-def]
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # nothing listens on port 1 (no retries: the exporter's own client may retry, then fails)
    down = Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    with caplog.at_level("WARNING", logger="cityrelay.metrics"):
        got = scrape(down, keys, ["sdot"])
    assert got == {"cityrelay_redis_up": {(): 0.0}}
    (record,) = caplog.records
    assert record.error.startswith("ConnectionError") and record.prefix == keys.prefix


def test_any_ack_value_counts_and_a_scrape_costs_three_round_trips(  # type: ignore[no-untyped-def]
    redis, keys, tmp_path: Path, monkeypatch
) -> None:
    from redis.client import Pipeline

    h, event_id = setup(redis, keys, tmp_path)
    redis.set(keys.ack("fire", event_id), "seen")  # a department client's own format
    trips = {"n": 0}
    real_execute, real_command = Pipeline.execute, type(redis).execute_command

    def execute(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        trips["n"] += 1
        return real_execute(self, *args, **kwargs)

    def command(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        trips["n"] += 1
        return real_command(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "execute", execute)
    monkeypatch.setattr(type(redis), "execute_command", command)
    snap = city_snapshot(redis, keys, ["fire", "ems", "parks"])
    assert snap.acks.acknowledged == {"fire": 1} and snap.acks.waiting == {"ems": 1}
    assert trips["n"] == 3  # stats, queues, streams, groups; then workers, hot tier, records; acks
    trips["n"] = 0
    city_snapshot(redis, keys, [f"d{i}" for i in range(60)] + ["fire", "ems"])
    assert trips["n"] == 3  # the same for sixty departments more
