"""Process logs: one JSON object per line (or readable text), and interval summaries.

Every `cityrelay` process logs through the standard library's `logging`; `configure` installs
one handler on the root logger, so RQ's and redis-py's records come out in the same format.
A JSON line carries ``ts`` (UTC, ISO 8601, ms), ``level``, ``logger``, ``message``, ``role``
(the command: ingest, worker-emergency, scheduler, metrics...), ``pid`` and every structured
field passed with ``extra=``; a traceback comes as ``exc``.

The default format is JSON when stderr is not a terminal (systemd, Docker, a Procfile runner:
the places where a log shipper reads the lines) and text when a person watches a terminal;
``--log-format`` or ``CITYRELAY_LOG_FORMAT`` overrides it. The stdlib is enough: one small
formatter, no dependency.

Hot paths never log per event: `Summary` accumulates counts and emits one INFO line per
interval (per-batch lines only at DEBUG).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import IO, Any

FORMATS = ("json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
SUMMARY_INTERVAL_S = 10.0  # CITYRELAY_LOG_SUMMARY_S overrides it
_HANDLER_NAME = "cityrelay"
# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "role",
    "taskName",
}
_role = {"name": "cityrelay"}


def structured_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "role": getattr(record, "role", _role["name"]),
            "pid": record.process,
        }
        for name, value in structured_fields(record).items():
            line.setdefault(name, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``ts level role[pid] logger: message key=value ...`` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        fields = " ".join(f"{k}={v}" for k, v in structured_fields(record).items())
        role = getattr(record, "role", _role["name"])
        text = f"{ts} {record.levelname:7s} {role}[{record.process}] {record.name}: "
        text += record.getMessage() + (f" {fields}" if fields else "")
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _RoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "role"):
            record.role = _role["name"]
        return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def default_format(stream: IO[str] | None = None) -> str:
    """``CITYRELAY_LOG_FORMAT``, else text on a terminal and JSON anywhere else."""
    configured = os.environ.get("CITYRELAY_LOG_FORMAT", "").strip().lower()
    if configured in FORMATS:
        return configured
    stream = stream or sys.stderr
    return "text" if hasattr(stream, "isatty") and stream.isatty() else "json"


def default_level() -> str:
    configured = os.environ.get("CITYRELAY_LOG_LEVEL", "").strip().upper()
    return configured if configured in LEVELS else "INFO"


CHATTY_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3", "mail.log")


def configure(
    fmt: str | None = None,
    level: str | None = None,
    role: str = "cityrelay",
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Install (or replace) the cityrelay handler on the root logger; returns it."""
    fmt = fmt or default_format(stream)
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: choose one of {', '.join(FORMATS)}")
    set_role(role)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RoleFilter())
    root.addHandler(handler)
    root.setLevel((level or default_level()).upper())
    # Libraries that narrate every request at INFO (S3 credentials, HTTP pools) speak up only
    # with --log-level DEBUG.
    quiet = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)
    return handler


def set_role(role: str) -> None:
    """The process role every following record carries (e.g. ``worker-emergency``)."""
    _role["name"] = role


class Summary:
    """Counts accumulated between summary lines: `add` per batch (a DEBUG line), `tick` often;
    once `interval_s` passed, `tick` logs one INFO line with the totals and resets them."""

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        fields: Sequence[str] = (),
        skip: Sequence[str] = (),
    ):
        self.logger = logger
        self.message = message
        self.fields = tuple(fields)  # always in the line, 0 when nothing happened
        self.skip = frozenset(skip)  # labelled counts not to fold (``in`` repeats ``accepted``)
        if interval_s is None:
            interval_s = float(os.environ.get("CITYRELAY_LOG_SUMMARY_S", SUMMARY_INTERVAL_S))
        self.interval_s = interval_s
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.started = clock()
        self._lock = threading.Lock()  # `add` runs in the work loop, `tick` maybe in a timer

    def add(self, counts: Mapping[str, int], **context: Any) -> None:
        """Add a batch's counts; labelled ones (``jobs:high``) fold into their total (``jobs``)
        unless the batch counts that total itself (``delivered`` beside ``delivered:fire``):
        per-label figures belong to the metrics, not to log lines."""
        with self._lock:
            for name, value in counts.items():
                base, labelled, _ = name.partition(":")
                if value and not (labelled and (base in counts or base in self.skip)):
                    self.counts[base] += value
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("batch", extra={**dict(counts), **context})

    def due(self) -> bool:
        return self.clock() - self.started >= self.interval_s

    def tick(self, gauges: Callable[[], Mapping[str, Any]] | None = None) -> bool:
        """Log the summary if it is due (`gauges` is only called then); True if it logged."""
        if not self.due():
            return False
        self.flush(gauges)
        return True

    def flush(self, gauges: Callable[[], Mapping[str, Any]] | None = None) -> None:
        """Log the summary now (at the end of the process, say) and start a new interval."""
        with self._lock:
            now = self.clock()
            fields: dict[str, Any] = {"interval_s": round(now - self.started, 3)}
            fields.update(dict.fromkeys(self.fields, 0))
            fields.update(self.counts)
            self.counts.clear()
            self.started = now
        if gauges is not None:
            fields.update(gauges())
        self.logger.info(self.message, extra=fields)

    def every_interval(self) -> threading.Event:
        """Tick from a daemon thread (for loops that block for long, such as RQ's dequeue);
        set the returned event to stop it."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(max(self.interval_s, 0.05)):
                self.tick()

        threading.Thread(target=loop, name="log-summary", daemon=True).start()
        return stop


def job_counts(job: Any, ok: bool) -> Counter[str]:
    """What one finished RQ job adds to a worker's summary: ``jobs``, ``failed``, and the
    counters a route job returns (``delivered``, ``deliveries``...) or the outcomes an
    escalation check returns (``claimed``...)."""
    counts: Counter[str] = Counter(jobs=1, failed=0 if ok else 1)
    result = getattr(job, "_result", None) if ok else None
    if isinstance(result, Mapping):
        for name, value in result.items():
            if isinstance(value, bool):
                continue
            if isinstance(value, int):
                counts[str(name)] += value
            elif isinstance(value, str):
                counts[value] += 1
    return counts
