"""Where an emergency's latency goes, for `bench/emergency.py`: the per-hop breakdown (from the
trace stream, queues/trace.py), each process's CPU run-queue wait (/proc/<pid>/task/*/schedstat),
and Redis's own view (SLOWLOG; LATENCY on a server the bench started itself).

On a Redis shared with others the bench only reads: SLOWLOG at the server's own threshold, never
CONFIG SET. On its own server it logs every command over 1 ms and turns the latency monitor on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from redis import Redis

from queues.trace import HOPS, hops, joined


def pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


# --- per hop ---------------------------------------------------------------------------------


def hop_breakdown(
    entries: Sequence[tuple[bytes, Mapping[bytes, bytes]]], skip: set[str], slowest: int = 8
) -> dict[str, Any]:
    """p50/p99/max of every hop over the traced emergencies, and the hops of the slowest ones."""
    per_event = {ing: hops(stamps) for ing, stamps in joined(entries).items() if ing not in skip}
    complete = {ing: h for ing, h in per_event.items() if len(h) == len(HOPS)}
    table: dict[str, dict[str, float | None]] = {}
    for name, _, _ in HOPS:
        values = [h[name] for h in complete.values()]
        table[name] = {"p50": pct(values, 0.5), "p99": pct(values, 0.99), "max": pct(values, 1.0)}
    worst = sorted(complete.values(), key=lambda h: h["total"], reverse=True)[:slowest]
    return {"traced": len(complete), "hops_ms": table, "slowest_ms": worst}


# --- CPU run-queue waits ---------------------------------------------------------------------


def schedstat(pid: int) -> tuple[int, int, int]:
    """(ns on CPU, ns waiting on a run queue, timeslices) summed over the process's threads."""
    cpu = wait = slices = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            a, b, c = (int(v) for v in (task / "schedstat").read_text().split())
        except (OSError, ValueError):
            continue
        cpu, wait, slices = cpu + a, wait + b, slices + c
    return cpu, wait, slices


def scheduling(pid: int) -> dict[str, Any]:
    """Policy and niceness, as the process set them itself."""
    names = {os.SCHED_OTHER: "other", os.SCHED_BATCH: "batch", os.SCHED_IDLE: "idle"}
    try:
        policy = names.get(os.sched_getscheduler(pid), str(os.sched_getscheduler(pid)))
        return {"policy": policy, "nice": os.getpriority(os.PRIO_PROCESS, pid)}
    except OSError:
        return {}


class RunQueueWaits:
    """Run-queue wait per process between `start` and `stop`: how long a process that was
    ready to run waited for a CPU (per second of wall time, and per timeslice)."""

    def __init__(self, pids: Mapping[str, int]):
        self.pids = dict(pids)
        self.before: dict[str, tuple[int, int, int]] = {}
        self.started = 0.0

    def start(self) -> None:
        self.started = time.monotonic()
        self.before = {name: schedstat(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, dict[str, Any]]:
        wall = time.monotonic() - self.started
        result = {}
        for name, pid in self.pids.items():
            try:
                cpu, wait, slices = (
                    a - b for a, b in zip(schedstat(pid), self.before[name], strict=True)
                )
            except (OSError, KeyError):
                continue
            result[name] = {
                "cpu_ms_per_s": round(cpu / 1e6 / wall, 1),
                "runq_wait_ms_per_s": round(wait / 1e6 / wall, 1),
                "runq_wait_per_slice_ms": round(wait / 1e6 / slices, 3) if slices else None,
                **scheduling(pid),
            }
        return result


# --- Redis's view ----------------------------------------------------------------------------


class RedisWatch:
    """SLOWLOG entries (and, on an own server, LATENCY events) during the measured window."""

    OWN_SLOWLOG_US = 1000

    def __init__(self, redis: Redis, own: bool, prefix: str):
        self.redis = redis
        self.own = own
        self.prefix = prefix.encode()
        self.since = 0.0

    def start(self) -> None:
        if self.own:
            self.redis.config_set("slowlog-log-slower-than", self.OWN_SLOWLOG_US)
            self.redis.config_set("slowlog-max-len", 10_000)
            self.redis.config_set("latency-monitor-threshold", 1)
            self.redis.slowlog_reset()
            self.redis.execute_command("LATENCY", "RESET")
        self.since = time.time()

    def stop(self) -> dict[str, Any]:
        threshold = int(self.redis.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"])
        by_command: dict[str, dict[str, Any]] = {}
        for entry in self.redis.slowlog_get(10_000 if self.own else 128):
            if entry["start_time"] < int(self.since):
                continue
            command = entry["command"].split(b" ", 1)
            ours = any(self.prefix in part for part in entry["command"].split(b" ")[1:])
            name = f"{command[0].decode().upper()}{'' if ours else ' (others)'}"
            slot = by_command.setdefault(name, {"count": 0, "max_ms": 0.0, "total_ms": 0.0})
            slot["count"] += 1
            slot["max_ms"] = max(slot["max_ms"], round(entry["duration"] / 1000, 2))
            slot["total_ms"] = round(slot["total_ms"] + entry["duration"] / 1000, 2)
        result: dict[str, Any] = {"slowlog_threshold_ms": threshold / 1000, "slowlog": by_command}
        if self.own:
            latest = self.redis.execute_command("LATENCY", "LATEST")
            result["latency_latest"] = {
                (row[0].decode() if isinstance(row[0], bytes) else row[0]): {
                    "max_ms": int(row[3]),
                    "latest_ms": int(row[2]),
                }
                for row in latest
            }
        return result
