"""Structured logs: JSON lines that parse and carry their fields, the CLI options, and the
interval summaries the ingest and worker processes write instead of per-event lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from city.events import Event, source_for
from queues.streams import Producer
from tests.pipeline_harness import Harness
from workers import logs
from workers.cli import main
from workers.ingest import IngestWorker

WEST = {"lat": 47.6205, "lon": -122.3493}


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Logs configured into a buffer; the root logger restored afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    buffer = io.StringIO()
    yield buffer
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logs.set_role("cityrelay")


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_json_line_carries_the_standard_and_the_structured_fields(stream) -> None:  # type: ignore[no-untyped-def]
    logs.configure("json", "INFO", role="ingest", stream=stream)
    log = logging.getLogger("cityrelay.test")
    log.info("batch %s", "done", extra={"events": 3, "dept": "sdot"})
    log.debug("not shown at INFO")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed", extra={"retry_in_s": 0.5})
    first, second = lines(stream)
    assert first["message"] == "batch done" and first["level"] == "INFO"
    assert first["logger"] == "cityrelay.test" and first["role"] == "ingest"
    assert isinstance(first["pid"], int) and first["ts"].endswith("+00:00")
    assert (first["events"], first["dept"]) == (3, "sdot")
    assert second["level"] == "ERROR" and second["retry_in_s"] == 0.5
    assert "ValueError: boom" in second["exc"]


def test_text_format_and_configuring_twice_keeps_one_handler(stream) -> None:  # type: ignore[no-untyped-def]
    logs.configure("json", "INFO", stream=io.StringIO())
    logs.configure("text", "DEBUG", role="metrics", stream=stream)
    logging.getLogger("cityrelay.x").debug("hello", extra={"port": 9108})
    (line,) = stream.getvalue().splitlines()
    assert "DEBUG" in line and "metrics[" in line and line.endswith("hello port=9108")
    named = [h for h in logging.getLogger().handlers if h.get_name() == "cityrelay"]
    assert len(named) == 1


def test_default_format_follows_the_environment_then_the_terminal(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("CITYRELAY_LOG_FORMAT", raising=False)
    assert logs.default_format(Tty()) == "text"
    assert logs.default_format(io.StringIO()) == "json"
    monkeypatch.setenv("CITYRELAY_LOG_FORMAT", "json")
    assert logs.default_format(Tty()) == "json"


def test_cli_options_and_environment_configure_the_logs(stream, monkeypatch, capsys, redis) -> None:  # type: ignore[no-untyped-def]
    from workers.runtime import Runtime

    monkeypatch.setattr(Runtime, "redis", lambda self, **kw: redis)
    with pytest.raises(SystemExit):
        main(["--log-format", "xml", "deadletters"])
    assert "invalid choice: 'xml'" in capsys.readouterr().err
    assert main(["--log-format", "json", "--log-level", "debug", "deadletters"]) == 0
    assert logging.getLogger().level == logging.DEBUG
    logging.getLogger("cityrelay.y").debug("x", extra={"n": 1})
    (line,) = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert (line["role"], line["n"]) == ("deadletters", 1)
    # the environment, when no option is given
    monkeypatch.setenv("CITYRELAY_LOG_FORMAT", "text")
    monkeypatch.setenv("CITYRELAY_LOG_LEVEL", "warning")
    assert main(["deadletters"]) == 0
    assert logging.getLogger().level == logging.WARNING
    logging.getLogger("cityrelay.y").warning("careful")
    assert capsys.readouterr().err.rstrip().endswith("cityrelay.y: careful")


def test_summary_logs_once_per_interval_with_totals(stream) -> None:  # type: ignore[no-untyped-def]
    logs.configure("json", "INFO", stream=stream)
    now = [0.0]
    summary = logs.Summary(logging.getLogger("cityrelay.s"), "s", 10.0, clock=lambda: now[0])
    for _ in range(100):  # a hundred batches in the interval: no line per batch at INFO
        summary.add({"accepted": 5, "jobs:high": 1, "dead_lettered": 0, "delivered": 2,
                     "delivered:fire": 2, "delivered:ems": 1})  # fmt: skip
        now[0] += 0.05
        assert not summary.tick()
    now[0] = 10.0
    assert summary.tick(lambda: {"lag": 7})
    (line,) = lines(stream)
    assert (line["accepted"], line["jobs"], line["lag"], line["interval_s"]) == (500, 100, 7, 10.0)
    assert line["delivered"] == 200  # the batch's own total, not its per-department labels
    assert "dead_lettered" not in line and "jobs:high" not in line


def test_batches_are_logged_only_at_debug(stream) -> None:  # type: ignore[no-untyped-def]
    logs.configure("json", "DEBUG", stream=stream)
    summary = logs.Summary(logging.getLogger("cityrelay.s"), "s", 10.0, clock=lambda: 0.0)
    summary.add({"accepted": 2}, step="batch")
    (line,) = lines(stream)
    assert (line["level"], line["message"], line["accepted"], line["step"]) == (
        "DEBUG",
        "batch",
        2,
        "batch",
    )


@pytest.fixture
def harness(redis, keys, seattle, seattle_router):  # type: ignore[no-untyped-def]
    config, base = seattle
    return Harness(redis, keys, config, base, seattle_router)


def incident() -> Event:
    return Event.new("traffic.incident", source_for("sdot"), {"kind": "collision", "severity": 3},
                     location=WEST)  # fmt: skip


def test_ingest_loop_writes_summaries_and_retried_errors(  # type: ignore[no-untyped-def]
    stream, redis, keys, seattle, monkeypatch
) -> None:
    config, _ = seattle
    logs.configure("json", "INFO", role="ingest", stream=stream)
    monkeypatch.setenv("CITYRELAY_LOG_SUMMARY_S", "0")
    Producer(redis, "sdot", keys).publish_many(incident() for _ in range(3))
    worker = IngestWorker(redis, keys, config, consumer="ingest-log")
    real_gather, calls = worker.gather, {"n": 0}

    def gather(block_ms: int | None = None) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RedisConnectionError("Connection refused")
        return real_gather(block_ms)

    monkeypatch.setattr(worker, "gather", gather)
    monkeypatch.setattr("workers.ingest.time.sleep", lambda s: None)
    worker.run(lambda: calls["n"] >= 3, idle_block_ms=1)
    everything = lines(stream)
    assert all(r["role"] == "ingest" for r in everything)
    # fakeredis has no INFO: the memory guard says once that it stands down.
    assert [r["logger"] for r in everything if r["logger"] != "cityrelay.ingest"] == [
        "cityrelay.limits"
    ]
    records = [r for r in everything if r["logger"] == "cityrelay.ingest"]
    assert records[0]["message"] == "ingest started" and records[0]["consumer"] == "ingest-log"
    summaries = [r for r in records if r["message"] == "ingest summary"]
    assert sum(r.get("accepted", 0) for r in summaries) == 3
    assert sum(r.get("batches", 0) for r in summaries) == 1
    assert not any("in" in r for r in summaries)  # the per-department count is the metrics' job
    # every interval's line carries the backlog; the last one (at exit) may not reach Redis
    assert summaries[:-1] and all("lag" in r and "pending" in r for r in summaries[:-1])
    (retry,) = [r for r in records if r["level"] == "WARNING"]
    assert retry["error"] == "ConnectionError: Connection refused"
    assert retry["retry_in_s"] == 0.1 and retry["consumer"] == "ingest-log"


def test_worker_summary_counts_jobs_and_deliveries(
    stream, harness, redis, keys, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    logs.configure("json", "INFO", role="worker-routine", stream=stream)
    monkeypatch.setenv("CITYRELAY_LOG_SUMMARY_S", "0")
    Producer(redis, "sdot", keys).publish_many(incident() for _ in range(2))
    harness.ingest_all()
    harness.work("routine")
    (line,) = [r for r in lines(stream) if r["message"] == "worker summary"]
    assert line["logger"] == "cityrelay.worker.routine" and line["role"] == "worker-routine"
    assert (line["jobs"], line["failed"], line["delivered"]) == (1, 0, 2)
