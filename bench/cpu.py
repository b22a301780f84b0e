"""CPU time per process kind and Redis commands, sampled before and after a measured window.

Throughput on a shared machine swings with what else runs; the CPU time a process spends per
routed event does not (much). `CpuMeter.sample()` reads utime + stime of each pipeline process
(and its children) from /proc/<pid>/stat, the benchmark's own (the producer) from
getrusage, and Redis's from `INFO cpu` (used_cpu_user + used_cpu_sys, the server process as
getrusage sees it; the same as /proc/<redis pid>/stat when it is local) plus
`INFO commandstats`. `per_event(before, after, n)` turns two samples into microseconds and
commands per event.

Used by bench/pipeline.py; Linux only for the child processes (elsewhere they read as 0).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_s(pid: int) -> float:
    """utime + stime of `pid` and its live descendants (seconds); 0 when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    total = (int(fields[11]) + int(fields[12])) / TICKS  # fields 14, 15 of stat(5)
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children = task.read_text().split()
        except OSError:
            continue
        total += sum(proc_cpu_s(int(child)) for child in children)
    return total


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Sample:
    cpu_s: dict[str, float]  # per process kind
    commands: dict[str, int] = field(default_factory=dict)  # Redis calls per command
    redis_usec: dict[str, int] = field(default_factory=dict)  # Redis usec inside each command


class CpuMeter:
    """`kinds` maps a process kind to the pids of that kind; the producer is this process."""

    def __init__(self, redis: Any, kinds: dict[str, list[int]]):
        self.redis = redis
        self.kinds = kinds

    def sample(self) -> Sample:
        cpu = {kind: sum(proc_cpu_s(pid) for pid in pids) for kind, pids in self.kinds.items()}
        cpu["producer"] = self_cpu_s()
        info = self.redis.info("cpu")
        cpu["redis"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        stats = self.redis.info("commandstats")
        calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
        usec = {k.removeprefix("cmdstat_"): int(v["usec"]) for k, v in stats.items()}
        return Sample(cpu, calls, usec)


def per_event(before: Sample, after: Sample, events: int, top: int = 12) -> dict[str, Any]:
    """CPU us per event per process kind (and summed), Redis commands per event (top ones)."""
    n = max(events, 1)
    by_kind = {
        kind: round((after.cpu_s[kind] - before.cpu_s.get(kind, 0.0)) * 1e6 / n, 1)
        for kind in after.cpu_s
    }
    calls = {name: after.commands[name] - before.commands.get(name, 0) for name in after.commands}
    calls = {name: c for name, c in calls.items() if c > 0}
    usec = {name: after.redis_usec[name] - before.redis_usec.get(name, 0) for name in calls}
    ranked = sorted(calls, key=lambda name: -usec[name])[:top]
    return {
        "cpu_us_per_event": round(sum(by_kind.values()), 1),
        "cpu_us_per_event_by_process": by_kind,
        "redis_commands_per_event": round(sum(calls.values()) / n, 2),
        "redis_commands_by_name_per_event": {name: round(calls[name] / n, 3) for name in ranked},
        "redis_command_us_per_event": {name: round(usec[name] / n, 2) for name in ranked},
    }
