"""The `cityrelay` command as an operator uses it, against a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jobs.context import RouteContext
from tests.conftest import ROOT
from workers.cli import main
from workers.ingest import IngestWorker
from workers.worker import build_worker


def test_publish_route_and_read_an_inbox(cli, capsys, redis, keys, seattle, seattle_router):
    config, _ = seattle
    code = cli(
        "publish", "--dept", "sdot", "--type", "traffic.incident", "--lat", "47.6205",
        "--lon", "-122.3493", "--data", '{"kind": "closure", "severity": 4}', "--id", "cli-1",
    )  # fmt: skip
    assert code == 0 and capsys.readouterr().out.strip() == "cli-1"
    IngestWorker(redis, keys, config).step(None)
    context = RouteContext(config=config, router=seattle_router, keys=keys)
    build_worker(redis, keys, "routine", context, name=f"{keys.prefix}-w").work(burst=True)
    assert cli("inbox", "--dept", "spd-west") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"]["id"] for line in lines] == ["cli-1"]
    assert lines[0]["via"]["zones"] == ["precincts:W"]
    assert cli("inbox", "--dept", "spd-west") == 0  # acknowledged: nothing new
    assert capsys.readouterr().out == ""
    assert cli("status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["counters"]["delivered:spd-west"] == 1 and status["latency"]["high"]["count"] == 1
    assert cli("status") == 0
    assert "latency high" in capsys.readouterr().out


def test_publish_file_reports_counts_and_bad_lines(cli, capsys, tmp_path, redis, keys):
    events = tmp_path / "events.jsonl"
    good = {"type": "environment.air_quality", "data": {"sensor_id": "a", "pm25": 3.0, "aqi": 9}}
    events.write_text("\n".join([json.dumps(good)] * 3 + ["not json", "[1]", ""]) + "\n")
    assert cli("publish", "--dept", "environment", "--file", str(events)) == 1
    out = capsys.readouterr()
    assert json.loads(out.out.strip().splitlines()[-1]) == {"published": 3, "unreadable_lines": 2}
    assert "events.jsonl:4: skipped" in out.err
    assert redis.xlen(keys.ingest("environment")) == 3


def test_publish_refuses_bad_arguments_with_a_message(cli, capsys):
    assert cli("publish", "--dept", "sdot") == 2
    assert "give --type" in capsys.readouterr().err
    assert cli("publish", "--dept", "sdot", "--type", "traffic.incident", "--data", "{x") == 2
    assert "--data is not JSON" in capsys.readouterr().err
    assert cli("publish", "--dept", "sdot", "--type", "Bad", "--lat", "1", "--lon", "2") == 2
    assert "invalid event" in capsys.readouterr().err


def test_deadletters_lists_reasons(cli, capsys, redis, keys, seattle):
    config, _ = seattle
    redis.xadd(keys.ingest("parks"), {"e": b'{"type": "nope"}'})
    IngestWorker(redis, keys, config).step(None)
    assert cli("deadletters") == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["reason"] == "invalid_envelope" and record["dept"] == "parks"


def test_config_errors_are_shown_not_raised(capsys, tmp_path, monkeypatch):
    bad = tmp_path / "city.yaml"
    bad.write_text("city: X\nlayers: {}\ndepartments: []\n")
    assert main(["--config", str(bad), "ingest"]) == 2
    assert "city.yaml: departments" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage: cityrelay" in capsys.readouterr().out


def test_worker_without_config_says_what_to_do(monkeypatch, capsys):
    monkeypatch.delenv("CITYRELAY_CONFIG", raising=False)
    with pytest.raises(SystemExit, match="no city config"):
        main(["worker", "--role", "routine", "--burst"])


def test_demo_runs_end_to_end_on_the_embedded_stand_ins(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "AWS_ENDPOINT_URL")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "demo", "--seconds", "3", "--rate", "100"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "embedded Redis stand-in" in out and "moto's S3 server" in out
    for section in (
        "Per department",
        "Latency",
        "Dead letters by reason",
        "One delivery explained",
        "Deliveries per way in",
        "CSV drop (publish --csv, sdot)",
        "Webhook push:",
    ):
        assert section in out
    from workers.standins import mosquitto_binary

    assert ("MQTT sensors -> cityrelay mqtt-bridge" in out) == (mosquitto_binary() is not None)
    (http,) = [line for line in out.splitlines() if "HTTP gateway (POST /v1/events" in line]
    assert int(http.split(")")[1].split()[0]) > 0  # the transit AVL's positions were delivered
    assert "-> emergency-management" in out
    assert "read back from the Parquet lake" in out
    assert "WARNING" not in out


def test_rq_info_lists_our_queues_and_workers_from_the_start(redis, keys, seattle_router, seattle):
    from rq import Queue, Worker

    config, _ = seattle
    context = RouteContext(config=config, router=seattle_router, keys=keys)
    worker = build_worker(redis, keys, "emergency", context, name=f"{keys.prefix}-em")
    worker.register_birth()
    try:
        assert f"{keys.prefix}.emergency" in {q.name for q in Queue.all(connection=redis)}
        listening = Worker.all(queue=Queue(f"{keys.prefix}.emergency", connection=redis))
        assert [w.name for w in listening] == [f"{keys.prefix}-em"]
    finally:
        worker.register_death()


def test_metrics_expose_counters_queues_inboxes_and_latency(
    cli, capsys, redis, keys, seattle, seattle_router
):
    import urllib.request

    from prometheus_client import CollectorRegistry, start_http_server

    from queues.observe import CityCollector
    from workers.standins import free_port

    config, _ = seattle
    cli("publish", "--dept", "sdot", "--type", "traffic.incident", "--lat", "47.6205",
        "--lon", "-122.3493", "--data", '{"kind": "hazard", "severity": 1}')  # fmt: skip
    redis.xadd(keys.ingest("parks"), {"e": b"not json"})
    IngestWorker(redis, keys, config).step(None)
    context = RouteContext(config=config, router=seattle_router, keys=keys)
    build_worker(redis, keys, "routine", context, name=f"{keys.prefix}-w").work(burst=True)
    capsys.readouterr()
    assert cli("metrics", "--once") == 0
    text = capsys.readouterr().out
    assert 'cityrelay_deliveries_total{department="spd-west",priority="high"} 1.0' in text
    assert 'cityrelay_events_in_total{department="sdot",priority="high"} 1.0' in text
    assert 'cityrelay_dead_letters_total{reason="malformed_json"} 1.0' in text
    assert 'cityrelay_inbox_length{department="spd-west"} 1.0' in text
    assert 'cityrelay_queue_depth{queue="routine"} 0.0' in text
    assert 'cityrelay_delivery_latency_seconds_bucket{le="+Inf",priority="high"} 1.0' in text
    # and served over HTTP for Prometheus to scrape
    registry = CollectorRegistry()
    registry.register(CityCollector(redis, keys, config.department_ids))
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b"cityrelay_deliveries_total" in body
    finally:
        server.shutdown()
