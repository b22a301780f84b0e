"""Chaos on real Redis: SIGKILL the pipeline's processes under load; nothing lost, nothing twice.

Starts the Procfile's processes (ingest per lane, emergency worker(s), routine workers), publishes
events at a steady rate - routine types of several departments, some emergencies, some producer
retries (the same event id published twice: delivered once) and a known number of invalid
inputs - while a driver SIGKILLs a random ingest or worker process `--kills` times, spread over
the run, and restarts it at once (under a new name, as a supervisor would). Then it waits until
the pipeline is quiet and compares every inbox with the recipients computed in-process by the
same config's Router: `lost`, `duplicated` (per event id and inbox) and `wrong` must be 0, and
the dead letters exactly the invalid inputs.

    python bench/chaos.py [--events 1000000] [--kills 20] [--rate 2500] [--routine-workers 2]

Prints progress lines, then one JSON object as the last line. tests/integration/test_chaos.py
runs the same `run_chaos` on a smaller scale.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from redis import Redis  # noqa: E402
from rq.registry import FailedJobRegistry, StartedJobRegistry  # noqa: E402

from bench.pipeline import _exit_on_sigterm, bench_client  # noqa: E402
from city.config import load_city  # noqa: E402
from city.events import Event, source_for  # noqa: E402
from city.routing import Router  # noqa: E402
from queues.cleanup import delete_city  # noqa: E402
from queues.keys import Keys  # noqa: E402
from queues.metrics import handled, read_stats  # noqa: E402
from queues.priority import BULK, EMERGENCY, HIGH, ROUTINE, make_queue  # noqa: E402
from queues.streams import EVENT_FIELD  # noqa: E402

CONFIG = ROOT / "examples" / "seattle" / "city.yaml"
BBOX = (47.52, 47.72, -122.41, -122.27)  # lat min/max, lon min/max inside Seattle
ROUTE_QUEUES = (EMERGENCY, HIGH, ROUTINE, BULK)
ID_MARK = "@ID@"
TEMPLATES = 4000  # distinct event bodies (type, place, payload); ids are unique per event
EMERGENCY_EVERY = 100  # one event in 100 is an emergency
RETRY_EVERY = 97  # one in 97 is published a second time (a producer retry)
INVALID_EVERY = 1009  # one in 1009 is an invalid input


# -- the workload ---------------------------------------------------------------------------
@dataclass
class Template:
    stream: str
    body: str  # JSON with ID_MARK in place of the event id
    expected: frozenset[int]  # department indexes that must receive it


def _routine(rng: random.Random, n: int) -> tuple[str, str, dict[str, Any]]:
    kind = n % 6
    if kind == 0:
        return "transit", "transit.vehicle_position", {
            "vehicle_id": f"bus-{n % 900}", "route": str(n % 120), "speed_kmh": 31.5,
            "heading": 90.0,
        }  # fmt: skip
    if kind == 1:
        return "sdot", "traffic.incident", {"kind": "collision", "severity": 1 + n % 3}
    if kind == 2:
        return "environment", "environment.air_quality", {
            "sensor_id": f"aq-{n % 300}", "pm25": 12.0, "aqi": 51,
        }  # fmt: skip
    if kind == 3:
        return "spu-water", "utility.meter_alarm", {
            "meter_id": f"w{n}", "utility": "water", "alarm": "leak",
        }  # fmt: skip
    if kind == 4:
        return "gas-utility", "utility.meter_alarm", {
            "meter_id": f"m{n}", "utility": "gas", "alarm": "leak",
        }  # fmt: skip
    return "fire", "safety.dispatch", {"incident_number": f"F{n}", "nature": "aid response"}


def build_templates(
    router: Router, keys: Keys, departments: list[str], seed: int
) -> tuple[list[Template], list[Template]]:
    """(routine templates, emergency templates) with their expected recipients."""
    rng = random.Random(seed)
    index = {dept: i for i, dept in enumerate(departments)}

    def make(dept: str, etype: str, data: dict[str, Any], lane: str) -> Template:
        where = {"lat": rng.uniform(*BBOX[:2]), "lon": rng.uniform(*BBOX[2:])}
        event = Event.new(etype, source_for(dept), data, location=where, department=dept)
        wire = event.to_wire()
        wire["id"] = ID_MARK
        expected = frozenset(index[d.dept] for d in router.route(wire))
        return Template(keys.ingest(dept, lane), json.dumps(wire), expected)

    routine = [make(*_routine(rng, n), "routine") for n in range(TEMPLATES)]
    emergency = [
        make(
            "ems",
            "health.emergency",
            {"incident_number": f"E-{n}", "kind": "cardiac"},
            "emergency",
        )
        for n in range(TEMPLATES // 10)
    ]
    return routine, emergency


def invalid_body(n: int, event_id: str) -> bytes:
    """Inputs the ingest must dead-letter: a schema violation or bytes that are not JSON."""
    if n % 2:
        return b"\xff not json " + event_id.encode()
    wire = {"id": event_id, "type": "traffic.incident", "data": {}, "department": "sdot"}
    return json.dumps(wire).encode()


# -- the processes --------------------------------------------------------------------------
ROLES = ("ingest-routine", "ingest-emergency", "emergency", "routine")
STOP_GRACE_S = 20  # SIGTERM -> exit (a warm shutdown takes a second or two)
STRAGGLER_S = 10  # a killed worker's scheduler child stops within a second or two


@dataclass
class Pipeline:
    """The Procfile's processes; each in its own process group so that whatever a killed
    process leaves behind (RQ's scheduler child) can be found and cleaned up."""

    redis_url: str
    prefix: str
    config: Path
    emergency_workers: int
    routine_workers: int
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    groups: list[int] = field(default_factory=list)
    restarts: Counter[str] = field(default_factory=Counter)
    ignored_sigterm: list[str] = field(default_factory=list)  # slots stop() had to abort

    def command(self, slot: str) -> list[str]:
        base = [sys.executable, "-m", "workers.cli", "--prefix", self.prefix]
        base += ["--config", str(self.config)]
        name = f"{self.prefix}-{slot}-{self.restarts[slot]}"
        if slot == "ingest-routine":
            return base + ["ingest", "--lanes", "routine"]
        if slot == "ingest-emergency":
            return base + ["ingest", "--lanes", "emergency"]
        role = slot.split("-")[0]
        return base + ["worker", "--role", role, "--name", name]

    def slots(self) -> list[str]:
        return (
            ["ingest-routine", "ingest-emergency"]
            + [f"emergency-{i}" for i in range(self.emergency_workers)]
            + [f"routine-{i}" for i in range(self.routine_workers)]
        )

    def start(self, slot: str) -> None:
        # PYTHONFAULTHANDLER: a process that ignores SIGTERM prints its threads on SIGABRT.
        env = dict(os.environ, REDIS_URL=self.redis_url, PYTHONPATH=str(ROOT))
        env["PYTHONFAULTHANDLER"] = "1"
        process = subprocess.Popen(self.command(slot), env=env, cwd=ROOT, start_new_session=True)
        self.running[slot] = process
        self.groups.append(process.pid)

    def start_all(self) -> None:
        for slot in self.slots():
            self.start(slot)

    def kill_and_restart(self, slot: str) -> None:
        process = self.running.pop(slot)
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.restarts[slot] += 1
        self.start(slot)

    def stop(self) -> int:
        """SIGTERM (warm shutdown) for the running ones; one still running `STOP_GRACE_S` later
        is recorded in `ignored_sigterm`, aborted (SIGABRT: its stacks on stderr) and reaped.
        Then wait until every group is empty (orphans of killed processes stop by themselves),
        up to `STRAGGLER_S`; returns how many groups still had a process then (all killed)."""
        for process in self.running.values():
            process.terminate()
        for slot, process in self.running.items():
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.ignored_sigterm.append(slot)
                process.send_signal(signal.SIGABRT)
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        deadline = time.monotonic() + STRAGGLER_S
        while any(_group_alive(g) for g in self.groups) and time.monotonic() < deadline:
            time.sleep(0.1)
        orphans = 0
        for group in self.groups:
            try:
                os.killpg(group, signal.SIGKILL)
                orphans += 1
            except ProcessLookupError:
                pass
        self.running, self.groups = {}, []
        return orphans


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def config_file(claim_idle_ms: int | None, events: int) -> Path:
    doc = yaml.safe_load(CONFIG.read_text())
    for layer in doc["layers"].values():
        layer["path"] = str((CONFIG.parent / layer["path"]).resolve())
    if claim_idle_ms is not None:
        doc["routing"]["claim_idle_ms"] = claim_idle_ms
    # Nobody reads the inboxes during the run: bound them above what the run can deliver to
    # one department, or the inbox bound (limits.inbox_max_len) would trim the oldest entries.
    doc.setdefault("limits", {})["inbox_max_len"] = max(1000, 2 * events)
    path = Path(tempfile.mkstemp(suffix=".yaml", prefix="chaos-city-")[1])
    path.write_text(yaml.safe_dump(doc))
    return path


WARM_UP = "warm-up-"


def warm_up(redis: Redis, keys: Keys, routine: Template, emergency: Template, run_id: str) -> None:
    """One routine and one emergency event through the pipeline: every process is up."""
    for i, template in enumerate((routine, emergency)):
        body = template.body.replace(ID_MARK, f"{WARM_UP}{run_id}-{i}")
        redis.xadd(template.stream, {EVENT_FIELD: body.encode()})
    deadline = time.monotonic() + 120
    while handled(read_stats(redis, keys)) < 2:
        if time.monotonic() > deadline:
            raise RuntimeError("the pipeline processes did not come up in 120 s")
        time.sleep(0.1)


# -- checking -------------------------------------------------------------------------------
def quiet(redis: Redis, keys: Keys, departments: list[str]) -> bool:
    """Nothing in flight: every ingest entry read and acknowledged, no route job queued,
    popped, running or waiting for a retry. (The counters alone cannot tell: a job killed
    after its delivery but before its counters is counted as a duplicate when it runs again.)"""
    for dept in departments:
        for lane in ("routine", "emergency"):
            stream = keys.ingest(dept, lane)
            if not redis.exists(stream):
                continue
            groups = redis.xinfo_groups(stream)
            if not groups:
                return False
            for group in groups:
                if group["pending"]:
                    return False
                lag = group.get("lag")
                if lag is None:
                    top = redis.xrevrange(stream, count=1)
                    lag = bool(top) and top[0][0] != group["last-delivered-id"]
                if lag:
                    return False
    for name in ROUTE_QUEUES:
        queue = make_queue(redis, keys, name)
        if queue.count or queue.started_job_registry.count or queue.scheduled_job_registry.count:
            return False
        if redis.llen(queue.intermediate_queue_key):
            return False
    return True


def inbox_counts(
    redis: Redis, keys: Keys, departments: list[str], run_id: str, events: int
) -> tuple[list[bytearray], list[int], int]:
    """Per department, how often each event index arrived (saturating at 255); plus the
    emergency latencies (ingest XADD -> inbox XADD, ms) and entries not from this run."""
    counts = [bytearray(events) for _ in departments]
    emergency_ms: list[int] = []
    strangers = 0
    mark = f"{run_id}-"
    for i, dept in enumerate(departments):
        start = "-"
        while True:
            batch = redis.xrange(keys.inbox(dept), min=start, count=10_000)
            if not batch:
                break
            for entry_id, fields in batch:
                event_id = json.loads(fields[b"e"])["id"]
                if event_id.startswith(WARM_UP):
                    continue
                if not event_id.startswith(mark):
                    strangers += 1
                    continue
                n = int(event_id[len(mark) :])
                if counts[i][n] < 255:
                    counts[i][n] += 1
                if fields.get(b"pri") == b"emergency" and b"ing" in fields:
                    delivered = int(entry_id.split(b"-")[0])
                    emergency_ms.append(delivered - int(fields[b"ing"].split(b"-")[0]))
            start = "(" + batch[-1][0].decode()
    return counts, emergency_ms, strangers


def compare(
    expected_of: list[frozenset[int]], counts: list[bytearray]
) -> tuple[int, int, int, int]:
    """(lost, duplicated, wrong, deliveries): expected (event, inbox) pairs that never arrived,
    extra copies, arrivals at an inbox that should not have it, expected pairs that arrived."""
    lost = duplicated = wrong = deliveries = 0
    for i, expected in enumerate(expected_of):
        for d, column in enumerate(counts):
            got = column[i]
            if d in expected:
                lost += got == 0
                duplicated += max(0, got - 1)
                deliveries += min(got, 1)
            elif got:
                wrong += 1
    return lost, duplicated, wrong, deliveries


def pct(values: list[int], q: float) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the run --------------------------------------------------------------------------------
def run_chaos(
    redis_url: str,
    events: int = 1_000_000,
    kills: int = 20,
    rate: float = 2500,
    routine_workers: int = 2,
    emergency_workers: int = 2,
    claim_idle_ms: int | None = None,
    drain_timeout_s: float = 300,
    seed: int = 8,
    progress: Callable[[str], None] | None = None,
    prefix: str | None = None,
) -> dict[str, Any]:
    """`prefix`: the run's key prefix (default a fresh one; a hash tag ``{name}`` on a cluster,
    where this process must have ``RQ_KEY_PREFIX={name}:rq`` before rq is imported)."""
    say = progress or (lambda message: None)
    run_id = uuid.uuid4().hex[:8]
    prefix = prefix or f"chaos{run_id}"
    keys = Keys(prefix)
    redis = bench_client(redis_url)
    config = config_file(claim_idle_ms, events)
    city, base = load_city(config)
    router = Router.from_config(city, base)
    departments = city.department_ids
    routine, emergency = build_templates(router, keys, departments, seed)
    pipeline = Pipeline(redis_url, prefix, config, emergency_workers, routine_workers)
    rng = random.Random(seed)
    kinds = Counter[str]()
    expected_of: list[frozenset[int]] = []
    retries: list[tuple[str, bytes]] = []
    kill_log: list[dict[str, Any]] = []
    try:
        pipeline.start_all()
        warm_up(redis, keys, routine[0], emergency[0], run_id)
        seconds = events / rate
        kill_at = sorted(rng.uniform(0.03, 0.95) * seconds for _ in range(kills))
        chunk = max(1, int(rate / 100))  # 100 pipelined chunks a second
        published = 0  # XADDs, retries and invalid inputs included
        n = 0
        say(f"publishing {events} events at {rate}/s with {kills} kills over {seconds:.0f} s")
        t0 = time.monotonic()
        while n < events:
            elapsed = time.monotonic() - t0
            if kill_at and elapsed >= kill_at[0]:
                kill_at.pop(0)
                slot = rng.choice(pipeline.slots())
                pipeline.kill_and_restart(slot)
                kill_log.append({"at_s": round(elapsed, 1), "process": slot, "after_event": n})
                say(f"{elapsed:6.1f}s killed and restarted {slot} ({n} published)")
            if n >= elapsed * rate:
                time.sleep(0.002)
                continue
            pipe = redis.pipeline(transaction=False)
            for stream, body in retries:  # the retries of the previous chunk
                pipe.xadd(stream, {EVENT_FIELD: body})
            published += len(retries)
            retries = []
            for _ in range(min(chunk, events - n)):
                event_id = f"{run_id}-{n}"
                if n % INVALID_EVERY == INVALID_EVERY - 1:
                    stream = keys.ingest("sdot")
                    body = invalid_body(n, event_id)
                    expected_of.append(frozenset())
                    kinds["invalid"] += 1
                else:
                    pool = emergency if n % EMERGENCY_EVERY == 0 else routine
                    template = pool[rng.randrange(len(pool))]
                    stream, expected = template.stream, template.expected
                    body = template.body.replace(ID_MARK, event_id).encode()
                    expected_of.append(expected)
                    kinds["emergency" if pool is emergency else "routine"] += 1
                    if n % RETRY_EVERY == RETRY_EVERY - 1:
                        retries.append((stream, body))
                        kinds["retried"] += 1
                pipe.xadd(stream, {EVENT_FIELD: body})
                n += 1
                published += 1
            pipe.execute()
        if retries:
            pipe = redis.pipeline(transaction=False)
            for stream, body in retries:
                pipe.xadd(stream, {EVENT_FIELD: body})
            pipe.execute()
            published += len(retries)
        publish_s = time.monotonic() - t0
        say(f"published {published} inputs in {publish_s:.1f} s; draining")
        t_drain = time.monotonic()
        while not quiet(redis, keys, departments):
            if time.monotonic() - t_drain > drain_timeout_s:
                say(f"not quiet after {drain_timeout_s} s: {read_stats(redis, keys)}")
                break
            time.sleep(0.2)
        drain_s = time.monotonic() - t_drain
        stats = read_stats(redis, keys)
        say(f"drained in {drain_s:.1f} s; comparing the inboxes")
        counts, emergency_ms, strangers = inbox_counts(redis, keys, departments, run_id, events)
        lost, duplicated, wrong, deliveries = compare(expected_of, counts)
        dead = redis.xrange(keys.deadletter)
        reasons = Counter(fields[b"reason"].decode() for _, fields in dead)
        failed_jobs = sum(
            FailedJobRegistry(queue=make_queue(redis, keys, q)).count for q in ROUTE_QUEUES
        )
        started_jobs = sum(
            StartedJobRegistry(queue=make_queue(redis, keys, q)).count for q in ROUTE_QUEUES
        )
        result = {
            "events": events,
            "kills": len(kill_log),
            "lost": lost,
            "duplicated": duplicated,
            "wrong": wrong,
            "dead_lettered": len(dead),
            "invalid_published": kinds["invalid"],
            "dead_letter_reasons": dict(reasons),
            "routine": kinds["routine"],
            "emergencies": kinds["emergency"],
            "producer_retries": kinds["retried"],
            "inputs_published": published,
            "expected_deliveries": sum(len(e) for e in expected_of),
            "deliveries": deliveries,
            "ingest_duplicates": stats.get("ingest_duplicates", 0),
            "route_duplicates": stats.get("duplicates", 0),
            "handled": handled(stats),
            "inbox_trimmed": sum(v for k, v in stats.items() if k.startswith("inbox_trimmed:")),
            "failed_jobs": failed_jobs,
            "started_jobs_left": started_jobs,
            "foreign_inbox_entries": strangers,
            "rate": rate,
            "achieved_rate": round(events / publish_s, 1),
            "publish_seconds": round(publish_s, 1),
            "drain_seconds": round(drain_s, 1),
            "seconds": round(publish_s + drain_s, 1),
            "emergency_p50_ms": pct(emergency_ms, 0.5),
            "emergency_p99_ms": pct(emergency_ms, 0.99),
            "emergency_max_ms": max(emergency_ms) if emergency_ms else None,
            "killed": dict(Counter(k["process"].rsplit("-", 1)[0] for k in kill_log)),
            "kill_log": kill_log,
            "routine_workers": routine_workers,
            "emergency_workers": emergency_workers,
            "claim_idle_ms": city.routing.claim_idle_ms,
        }
        # Process groups with a process left after the stop (e.g. the RQ scheduler child of
        # a killed worker), and processes that did not stop on SIGTERM: none.
        result["leftover_process_groups"] = pipeline.stop()
        result["ignored_sigterm"] = pipeline.ignored_sigterm
        return result
    finally:
        pipeline.stop()
        delete_city(redis, keys)
        config.unlink()


def main() -> None:
    _exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2500, help="events published per second")
    parser.add_argument("--routine-workers", type=int, default=2)
    parser.add_argument("--emergency-workers", type=int, default=2)
    parser.add_argument(
        "--claim-idle-ms", type=int, help="ingest reclaim delay (default: the city's setting)"
    )
    parser.add_argument("--drain-timeout", type=float, default=300)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    result = run_chaos(
        redis_url,
        events=args.events,
        kills=args.kills,
        rate=args.rate,
        routine_workers=args.routine_workers,
        emergency_workers=args.emergency_workers,
        claim_idle_ms=args.claim_idle_ms,
        drain_timeout_s=args.drain_timeout,
        seed=args.seed,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    result["load_average"] = os.getloadavg()[0]
    result["redis"] = redis_url
    print(json.dumps(result))


if __name__ == "__main__":
    main()
