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
runs the same `run_chaos` on a smaller scale. bench/cluster.py runs it without kills, in a
closed loop for throughput and on a city split into slot groups of a Redis Cluster (processes
per group, each event on its producer's home group, each inbox read at its department's).
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
from bench.slot_groups import Layout  # noqa: E402
from city.config import load_city  # noqa: E402
from city.events import Event, source_for  # noqa: E402
from city.routing import Router  # noqa: E402
from queues.cleanup import delete_city  # noqa: E402
from queues.keys import Keys  # noqa: E402
from queues.metrics import handled, read_stats  # noqa: E402
from queues.priority import BULK, EMERGENCY, HIGH, ROUTINE, make_queue  # noqa: E402
from queues.relay import outbox_backlog  # noqa: E402
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
    group: str = ""  # the slot group of `stream` (its producer's home)


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
    router: Router, keys: Keys, departments: list[str], seed: int, layout: Layout | None = None
) -> tuple[list[Template], list[Template]]:
    """(routine templates, emergency templates) with their expected recipients; each published
    on its producer's ingest stream under `keys`, or under its home group's (`layout`)."""
    rng = random.Random(seed)
    layout = layout or Layout.single(keys)
    index = {dept: i for i, dept in enumerate(departments)}

    def make(dept: str, etype: str, data: dict[str, Any], lane: str) -> Template:
        where = {"lat": rng.uniform(*BBOX[:2]), "lon": rng.uniform(*BBOX[2:])}
        event = Event.new(etype, source_for(dept), data, location=where, department=dept)
        wire = event.to_wire()
        wire["id"] = ID_MARK
        expected = frozenset(index[d.dept] for d in router.route(wire))
        stream = layout.keys_of(dept).ingest(dept, lane)
        return Template(stream, json.dumps(wire), expected, layout.home(dept))

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
    full: bool = False  # also the escalation worker, the cron scheduler and the relay
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
        if slot in ("scheduler", "relay"):
            return base + [slot]
        role = slot.split("-")[0]
        return base + ["worker", "--role", role, "--name", name]

    def slots(self) -> list[str]:
        return (
            ["ingest-routine", "ingest-emergency"]
            + [f"emergency-{i}" for i in range(self.emergency_workers)]
            + [f"routine-{i}" for i in range(self.routine_workers)]
            + (["escalation-0", "scheduler", "relay"] if self.full else [])
        )

    def start(self, slot: str) -> None:
        # PYTHONFAULTHANDLER: a process that ignores SIGTERM prints its threads on SIGABRT.
        env = dict(os.environ, REDIS_URL=self.redis_url, PYTHONPATH=str(ROOT))
        env["PYTHONFAULTHANDLER"] = "1"
        env.pop("RQ_KEY_PREFIX", None)  # the command sets its group's itself (a cluster URL)
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


def config_file(
    claim_idle_ms: int | None, events: int, partitions: dict[str, Any] | None = None
) -> Path:
    doc = yaml.safe_load(CONFIG.read_text())
    if partitions is not None:
        doc["partitions"] = partitions
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
WARM_UP_EVENTS = 2
MAX_BACKLOG = 20_000  # closed loop: inputs published and not yet handled, at most


def warm_up(
    redis: Redis,
    keys: Keys,
    routine: Template,
    emergency: Template,
    run_id: str,
    layout: Layout | None = None,
) -> None:
    """One routine and one emergency event through the pipeline: every process is up."""
    for i, template in enumerate((routine, emergency)):
        body = template.body.replace(ID_MARK, f"{WARM_UP}{run_id}-{i}")
        redis.xadd(template.stream, {EVENT_FIELD: body.encode()})
    deadline = time.monotonic() + 120
    while handled_in(redis, layout or Layout.single(keys)) < 2:
        if time.monotonic() > deadline:
            raise RuntimeError("the pipeline processes did not come up in 120 s")
        time.sleep(0.1)


# -- checking -------------------------------------------------------------------------------
def handled_in(redis: Redis, layout: Layout) -> int:
    """Events handled (queues.metrics.handled) over every slot group."""
    return sum(handled(read_stats(redis, keys)) for keys in layout.groups.values())


def groups_quiet(redis: Redis, layout: Layout, departments: list[str], inputs: int) -> bool:
    """`quiet` for a city in several slot groups: every group's ingest streams read and
    acknowledged, every input handled (over the groups) and every outbox relayed. The bench's
    RQ key prefix is one group's (RQ reads it at import), so RQ's queues of the others cannot
    be checked, and the counters stand in for them: sound without kills (a job killed after
    its delivery, before its counters, is what they miss), which is how bench/cluster.py
    runs it."""
    if handled_in(redis, layout) < inputs:
        return False
    for name, keys in layout.groups.items():
        if not ingest_quiet(redis, keys, departments):
            return False
        for dest in layout.groups:
            if dest != name and outbox_backlog(redis, keys, dest) != {"length": 0, "pending": 0}:
                return False
    return True


def ingest_quiet(redis: Redis, keys: Keys, departments: list[str]) -> bool:
    """Every entry of these departments' ingest streams under `keys` read and acknowledged."""
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
    return True


def quiet(redis: Redis, keys: Keys, departments: list[str]) -> bool:
    """Nothing in flight: every ingest entry read and acknowledged, no route job queued,
    popped, running or waiting for a retry. (The counters alone cannot tell: a job killed
    after its delivery but before its counters is counted as a duplicate when it runs again.)"""
    if not ingest_quiet(redis, keys, departments):
        return False
    for name in ROUTE_QUEUES:
        queue = make_queue(redis, keys, name)
        if queue.count or queue.started_job_registry.count or queue.scheduled_job_registry.count:
            return False
        if redis.llen(queue.intermediate_queue_key):
            return False
    return True


def inbox_counts(
    redis: Redis,
    keys: Keys,
    departments: list[str],
    run_id: str,
    events: int,
    layout: Layout | None = None,
) -> tuple[list[bytearray], list[int], int]:
    """Per department, how often each event index arrived at its inbox (under `keys`, or its
    home group's in `layout`; saturating at 255); plus the emergency latencies (ingest XADD ->
    inbox XADD, ms) and entries not from this run."""
    layout = layout or Layout.single(keys)
    counts = [bytearray(events) for _ in departments]
    emergency_ms: list[int] = []
    strangers = 0
    mark = f"{run_id}-"
    for i, dept in enumerate(departments):
        start = "-"
        while True:
            batch = redis.xrange(layout.keys_of(dept).inbox(dept), min=start, count=10_000)
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


def misplaced(redis: Redis, layout: Layout, departments: list[str]) -> int:
    """Inbox entries of a department under a slot group that is not its home (nobody reads
    them there): wrong recipients."""
    return sum(
        redis.xlen(keys.inbox(dept))
        for name, keys in layout.groups.items()
        for dept in departments
        if layout.home(dept) != name
    )


def last_delivery_ms(redis: Redis, layout: Layout, departments: list[str]) -> int:
    """The Redis time (ms) of the newest entry of any inbox: the end of an end-to-end run."""
    newest = [redis.xrevrange(layout.keys_of(d).inbox(d), count=1) for d in departments]
    return max((int(top[0][0].split(b"-")[0]) for top in newest if top), default=0)


def cross_group_share(
    expected_of: list[frozenset[int]], origin: list[str], homes: list[str], counts: list[bytearray]
) -> tuple[float, int]:
    """(share, number) of the deliveries that arrived whose inbox is in another slot group than
    the ingest stream the event came in on (`origin`): those went through an outbox and the
    relay. `homes`: each department index's group."""
    crossing = total = 0
    for i, expected in enumerate(expected_of):
        for d in expected:
            if counts[d][i]:
                total += 1
                crossing += homes[d] != origin[i]
    return (round(crossing / total, 3) if total else 0.0), crossing


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
    rate: float | None = 2500,
    routine_workers: int = 2,
    emergency_workers: int = 2,
    claim_idle_ms: int | None = None,
    drain_timeout_s: float = 300,
    seed: int = 8,
    progress: Callable[[str], None] | None = None,
    prefix: str | None = None,
    partitions: dict[str, Any] | None = None,
    seconds: float | None = None,
    emergency_every: int | None = EMERGENCY_EVERY,
) -> dict[str, Any]:
    """`prefix`: the run's key prefix (default a fresh one; a hash tag ``{name}`` on a cluster,
    where this process must have ``RQ_KEY_PREFIX={name}:rq`` before rq is imported).
    `partitions`: a ``partitions:`` section of slot groups (bench/slot_groups.py) instead:
    each group runs its own processes (the relay, escalation worker and scheduler too), each
    event is published on its producer's home group and each inbox read at its department's.
    `rate` None: closed loop, as fast as the pipeline absorbs (backlog bounded), for `seconds`
    or `events`, whichever ends first. `emergency_every` None: routine events only."""
    say = progress or (lambda message: None)
    run_id = uuid.uuid4().hex[:8]
    prefix = prefix or f"chaos{run_id}"
    keys = Keys(prefix)
    redis = bench_client(redis_url)
    config = config_file(claim_idle_ms, events, partitions)
    city, base = load_city(config)
    layout = Layout.of(city.partitions) if city.partitions else Layout.single(keys)
    router = Router.from_config(city, base)
    departments = city.department_ids
    homes = [layout.home(d) for d in departments]
    routine, emergency = build_templates(router, keys, departments, seed, layout)
    pipelines = [
        Pipeline(redis_url, k.prefix, config, emergency_workers, routine_workers, full=bool(g))
        for g, k in layout.groups.items()
    ]
    rng = random.Random(seed)
    kinds = Counter[str]()
    expected_of: list[frozenset[int]] = []
    origin: list[str] = []
    retries: list[tuple[str, bytes]] = []
    kill_log: list[dict[str, Any]] = []
    try:
        for pipeline in pipelines:
            pipeline.start_all()
        warm_up(redis, keys, routine[0], emergency[0], run_id, layout)
        closed = rate is None
        duration = seconds if closed and seconds else events / (rate or 1)
        kill_at = sorted(rng.uniform(0.03, 0.95) * duration for _ in range(kills))
        chunk = 250 if rate is None else max(1, int(rate / 100))  # 100 pipelined chunks a second
        published = 0  # XADDs, retries and invalid inputs included
        n = 0
        say(
            f"publishing {events} events at {rate or 'closed loop'}/s with {kills} kills over "
            f"{duration:.0f} s in {len(pipelines)} slot group(s)"
        )
        secs, micros = redis.time()
        first_ms = secs * 1000 + micros // 1000  # Redis time just before the first XADD
        t0 = time.monotonic()
        while n < events:
            elapsed = time.monotonic() - t0
            if kill_at and elapsed >= kill_at[0]:
                kill_at.pop(0)
                pipeline = rng.choice(pipelines)
                slot = rng.choice(pipeline.slots())
                pipeline.kill_and_restart(slot)
                where = f"{pipeline.prefix}/{slot}" if len(pipelines) > 1 else slot
                kill_log.append({"at_s": round(elapsed, 1), "process": where, "after_event": n})
                say(f"{elapsed:6.1f}s killed and restarted {where} ({n} published)")
            if closed:
                if elapsed >= duration:
                    break
                if published - handled_in(redis, layout) > MAX_BACKLOG:
                    time.sleep(0.002)
                    continue
            elif n >= elapsed * (rate or 1):
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
                    stream = layout.keys_of("sdot").ingest("sdot")
                    body = invalid_body(n, event_id)
                    expected_of.append(frozenset())
                    origin.append(layout.home("sdot"))
                    kinds["invalid"] += 1
                else:
                    urgent = emergency_every is not None and n % emergency_every == 0
                    pool = emergency if urgent else routine
                    template = pool[rng.randrange(len(pool))]
                    stream, expected = template.stream, template.expected
                    body = template.body.replace(ID_MARK, event_id).encode()
                    expected_of.append(expected)
                    origin.append(template.group)
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
        events = n  # a closed loop ends on time
        publish_s = time.monotonic() - t0
        say(f"published {published} inputs in {publish_s:.1f} s; draining")
        t_drain = time.monotonic()

        def settled() -> bool:
            if len(pipelines) == 1:
                return quiet(redis, keys, departments)
            return groups_quiet(redis, layout, departments, published + WARM_UP_EVENTS)

        while not settled():
            if time.monotonic() - t_drain > drain_timeout_s:
                say(f"not quiet after {drain_timeout_s} s")
                break
            time.sleep(0.2)
        drain_s = time.monotonic() - t_drain
        by_group = {g: read_stats(redis, k) for g, k in layout.groups.items()}
        stats: Counter[str] = Counter()
        for figures in by_group.values():
            stats.update(figures)
        say(f"drained in {drain_s:.1f} s; comparing the inboxes")
        counts, emergency_ms, strangers = inbox_counts(
            redis, keys, departments, run_id, events, layout
        )
        lost, duplicated, wrong, deliveries = compare(expected_of, counts)
        foreign = misplaced(redis, layout, departments)
        share, crossing = cross_group_share(expected_of, origin, homes, counts)
        end_ms = last_delivery_ms(redis, layout, departments)
        dead = [e for k in layout.groups.values() for e in redis.xrange(k.deadletter)]
        reasons = Counter(fields[b"reason"].decode() for _, fields in dead)
        # RQ's keys of the group this process's RQ_KEY_PREFIX names (the first, or the only).
        own = next(iter(layout.groups.values()))
        queues = [make_queue(redis, own, q) for q in ROUTE_QUEUES]
        failed_jobs = sum(FailedJobRegistry(queue=queue).count for queue in queues)
        started_jobs = sum(StartedJobRegistry(queue=queue).count for queue in queues)
        result = {
            "events": events,
            "kills": len(kill_log),
            "lost": lost,
            "duplicated": duplicated,
            "wrong": wrong + foreign,
            "misplaced": foreign,
            "dead_lettered": len(dead),
            "invalid_published": kinds["invalid"],
            "dead_letter_reasons": dict(reasons),
            "routine": kinds["routine"],
            "emergencies": kinds["emergency"],
            "producer_retries": kinds["retried"],
            "inputs_published": published,
            "expected_deliveries": sum(len(e) for e in expected_of),
            "deliveries": deliveries,
            "slot_groups": len(layout.groups),
            "cross_group_deliveries": crossing,
            "cross_slot_share": share,
            "relayed": sum(v for k, v in stats.items() if k.startswith("relayed:")),
            "events_per_s": round((events - kinds["invalid"]) / ((end_ms - first_ms) / 1000), 1),
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
        result["leftover_process_groups"] = sum(p.stop() for p in pipelines)
        result["ignored_sigterm"] = [s for p in pipelines for s in p.ignored_sigterm]
        return result
    finally:
        for pipeline in pipelines:
            pipeline.stop()
        for group_keys in layout.groups.values():
            delete_city(redis, group_keys)
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
