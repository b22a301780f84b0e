"""Per-hop timestamps of emergencies, for the latency benchmark (`bench/emergency.py`).

Off unless ``CITYRELAY_TRACE=1`` is in the environment of the ingest and worker processes; then
every emergency leaves two entries in ``{p}:trace`` (a stream nobody else reads), written in
round trips the path makes anyway (none is added):

- ``hop=enq`` from ingest, in the transaction that enqueues the job: ``ing`` (the ingest entry
  id, i.e. the producer's XADD time), ``read`` (the XREADGROUP that returned the entry came
  back), ``sent`` (validated and deduplicated, the enqueue transaction is sent); the trace
  entry's own id is the Redis time the transaction ran (the job is in its queue from then);
- ``hop=route`` from the route job, in the pipeline after delivery: ``popped`` (the worker's
  blocking pop and the job fetch returned; workers/worker.py), ``run`` (our job function
  starts, after RQ's bookkeeping), ``ds`` (the delivery script is sent), ``de`` (Redis TIME at
  the script's end: the last inbox XADD), ``back`` (its reply is back).

Times are milliseconds since the epoch with microseconds (``time.time()``; Redis and the
processes share the host's clock). `hops` turns the pairs into per-hop durations.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from redis.client import Pipeline

from queues.keys import Keys

ENV = "CITYRELAY_TRACE"
STAMP = "t"  # the item field (next to "e" and "ing") that carries ingest's stamps
TRACE_MAXLEN = 100_000


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


def now_ms() -> float:
    return round(time.time() * 1000, 3)


def trace_key(keys: Keys) -> str:
    return f"{keys.prefix}:trace"


def record(pipe: Pipeline, keys: Keys, hop: str, ing: str, stamps: Mapping[str, float]) -> None:
    """Queue one trace entry on a pipeline the caller sends anyway."""
    fields: dict[str, Any] = {"hop": hop, "ing": ing, **{k: repr(v) for k, v in stamps.items()}}
    pipe.xadd(trace_key(keys), fields, maxlen=TRACE_MAXLEN, approximate=True)


# The hops, in path order: (name, from stamp, to stamp). "xadd" is the ingest entry id's time,
# "enq" the enqueue transaction's Redis time; the rest are the stamps above.
HOPS = (
    ("ingest_wake", "xadd", "read"),  # the blocked XREADGROUP returns the entry
    ("ingest_work", "read", "sent"),  # decode + validate + dedupe round trip
    ("enqueue", "sent", "enq"),  # the enqueue transaction reaches Redis
    ("worker_wake", "enq", "popped"),  # the worker's blocking pop returns, job fetched
    ("rq_prepare", "popped", "run"),  # RQ's bookkeeping before the job function
    ("route", "run", "ds"),  # state read, routing, views
    ("deliver", "ds", "de"),  # the delivery script reaches Redis and runs
    ("total", "xadd", "de"),
)


def stream_ms(entry_id: bytes | str) -> float:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return float(text.split("-", 1)[0])


def joined(entries: Iterable[tuple[bytes, Mapping[bytes, bytes]]]) -> dict[str, dict[str, float]]:
    """ing -> every stamp of that emergency, from the trace stream's entries."""
    found: dict[str, dict[str, float]] = {}
    for entry_id, fields in entries:
        values = {k.decode(): v.decode() for k, v in fields.items()}
        ing = values.pop("ing")
        hop = values.pop("hop")
        stamps = found.setdefault(ing, {"xadd": stream_ms(ing)})
        stamps.update((k, float(v)) for k, v in values.items())
        if hop == "enq":
            stamps["enq"] = stream_ms(entry_id)
    return found


def hops(stamps: Mapping[str, float]) -> dict[str, float]:
    """Per-hop durations (ms) of one emergency; hops with a missing stamp are left out."""
    return {
        name: round(stamps[end] - stamps[start], 3)
        for name, start, end in HOPS
        if start in stamps and end in stamps
    }
