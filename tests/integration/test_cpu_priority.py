"""The Procfile's processes as they start: routine ones yield the CPU (nice 10, SCHED_BATCH) on
every thread, emergency ones run at normal priority - never a negative nice, which would need
root (these tests run as root, where it would succeed and hide a deployment relying on it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_city
from workers.cpu import POLICY_ENV

NAMES = {os.SCHED_OTHER: "normal", os.SCHED_BATCH: "batch", os.SCHED_IDLE: "idle"}
PROCFILE = {  # as in the Procfile
    "ingest": ["ingest", "--lanes", "routine"],
    "ingest-emergency": ["ingest", "--lanes", "emergency"],
    "emergency": ["worker", "--role", "emergency"],
    "routine": ["worker", "--role", "routine"],
}


def threads(pid: int) -> set[tuple[str, int]]:
    """(policy, nice) of every thread of the process."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        tid = int(task.name)
        try:
            found.add((NAMES[os.sched_getscheduler(tid)], os.getpriority(os.PRIO_PROCESS, tid)))
        except (ProcessLookupError, KeyError):
            continue
    return found


def started(real_redis, keys, name: str) -> bool:  # type: ignore[no-untyped-def]
    """The process has done its set-up (so its priority is final): workers are registered in
    RQ, ingest consumers have read an entry of their lane (a dead letter, see below)."""
    if name in ("emergency", "routine"):
        return bool(real_redis.exists(f"rq:worker:{keys.prefix}-{name}"))
    lane = "emergency" if name == "ingest-emergency" else "routine"
    try:
        consumers = real_redis.xinfo_consumers(keys.ingest("ems", lane), "router")
    except Exception:  # noqa: BLE001 - the stream or group does not exist yet
        return False
    return bool(consumers)


def test_procfile_processes_yield_cpu_to_emergencies_without_privileges(
    tmp_path, redis_url, real_redis, keys
):
    if os.sched_getscheduler(0) != os.SCHED_OTHER or os.getpriority(os.PRIO_PROCESS, 0) != 0:
        pytest.skip("the test process itself does not run at normal priority")
    config = write_city(tmp_path)
    env = dict(os.environ, REDIS_URL=redis_url, PYTHONPATH=str(ROOT))
    env.pop(POLICY_ENV, None)
    base = [sys.executable, "-m", "workers.cli", "--prefix", keys.prefix, "--config", str(config)]
    for lane in ("routine", "emergency"):  # not JSON: each ingest reads it, dead-letters it
        real_redis.xadd(keys.ingest("ems", lane), {"e": b"not json"})
    processes = {}
    try:
        for name, args in PROCFILE.items():
            extra = ["--name", f"{keys.prefix}-{name}"] if args[0] == "worker" else []
            processes[name] = subprocess.Popen(base + args + extra, env=env, cwd=ROOT)
        deadline = time.monotonic() + 120
        while not all(started(real_redis, keys, name) for name in processes):
            waiting = [n for n in processes if not started(real_redis, keys, n)]
            assert time.monotonic() < deadline, f"did not start: {waiting}"
            assert all(p.poll() is None for p in processes.values())
            time.sleep(0.2)
        seen = {name: threads(p.pid) for name, p in processes.items()}
        assert seen["ingest"] == {("batch", 10)}
        assert seen["routine"] == {("batch", 10)}
        assert seen["ingest-emergency"] == {("normal", 0)}
        assert seen["emergency"] == {("normal", 0)}
    finally:
        for p in processes.values():
            p.terminate()
        for p in processes.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
