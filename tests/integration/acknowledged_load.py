"""What the failover tests share: a producer that retries each batch until it is acknowledged
(``min_replicas=1``) and records what each acknowledged event must reach, the Procfile's
processes with a log each, and the readings of inboxes, dead letters and backlog that decide
"0 lost, 0 duplicated, 0 wrong" (tests/integration/test_sentinel_failover.py on Sentinel,
tests/integration/test_cluster_failover.py on Redis Cluster)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from city.events import Event
from city.routing import Router
from queues.connect import PRODUCER_SETTINGS, redis_from_url
from queues.keys import Keys
from queues.priority import BULK, EMERGENCY, HIGH, ROUTINE, make_queue
from queues.streams import LANES, NotReplicatedError, Producer
from tests.conftest import ROOT
from tests.integration.test_processes import WEST, Processes, random_event


def wait_until(check: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


# What a failover may answer an acknowledged publish, the command not run or not replicated:
# fewer replicas than asked, the primary gone (Sentinel: no primary found yet, or a demoted one
# still asked), the cluster not serving the slot yet. Anything else - a wrong-node error such as
# "WAIT cannot be used with replica instances", a script error - is a bug, not a refusal: the
# producer ends on it (`error`) instead of retrying it as if it were one.
FAILOVER_REFUSALS = frozenset(
    {
        "NotReplicatedError",
        "ConnectionError",
        "TimeoutError",
        "MasterNotFoundError",
        "ReadOnlyError",
        "ClusterDownError",
        "SlotNotCoveredError",
    }
)


@dataclass
class LoadProducer:
    """Publishes batches until stopped, retrying each batch (same event ids) until it is
    acknowledged; records what was acknowledged and what each event should reach."""

    url: str
    keys: Keys
    router: Router
    acknowledged: dict[str, set[str]] = field(default_factory=dict)
    invalid: set[str] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)  # FAILOVER_REFUSALS seen, by type name
    batches: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def expected(self, dept: str, event: Event) -> set[str]:
        return {d.dept for d in self.router.route(event.to_wire() | {"department": dept})}

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # re-raised by the test thread
            self.error = exc

    def _run(self) -> None:
        client = redis_from_url(self.url, **PRODUCER_SETTINGS)
        producers: dict[str, Producer] = {}
        rng = random.Random(8)
        n = 0
        while not self.stop.is_set():
            batch: dict[str, list[Event | dict]] = {}
            expected: dict[str, set[str]] = {}
            for _ in range(40):
                dept, event = random_event(rng, n)
                n += 1
                batch.setdefault(dept, []).append(event)
                expected[event.id] = self.expected(dept, event)
            bad_id = f"bad-{n}"
            batch.setdefault("sdot", []).append(
                {"id": bad_id, "type": "traffic.incident", "data": {}, "location": WEST}
            )
            for dept, events in batch.items():
                producer = producers.setdefault(
                    dept,
                    Producer(client, dept, self.keys, min_replicas=1, replica_timeout_ms=300),
                )
                while True:  # a producer's retry: the same events (same ids) until acknowledged
                    try:
                        producer.publish_many(events)
                        break
                    except (NotReplicatedError, RedisError) as exc:
                        if type(exc).__name__ not in FAILOVER_REFUSALS:
                            raise AssertionError(f"not a failover's refusal: {exc!r}") from exc
                        self.refused.append(type(exc).__name__)
                        time.sleep(0.1)
                for event in events:
                    if isinstance(event, Event):
                        self.acknowledged[event.id] = expected[event.id]
                    else:
                        self.invalid.add(str(event["id"]))
            self.batches += 1
            time.sleep(0.05)


class LoggedProcesses(Processes):
    """The real processes, each writing its output to a log file shown when the test fails."""

    def __init__(self, redis_url: str, prefix: str, config: Path, logs: Path):
        super().__init__(redis_url, prefix, config)
        self.env["PYTHONFAULTHANDLER"] = "1"
        self.hung: list[str] = []
        self.logs = logs

    def start(self, name: str, *args: str) -> None:
        with (self.logs / f"{name}.log").open("wb") as log:
            self.running[name] = subprocess.Popen(
                self.base + list(args), env=self.env, cwd=ROOT, stdout=log, stderr=log
            )

    def stop_all(self) -> None:
        """SIGTERM each (a warm shutdown); one still running 20 s later gets SIGABRT (its
        threads' stacks go to its log: PYTHONFAULTHANDLER) and is recorded in `hung`."""
        for process in self.running.values():
            process.terminate()
        for name, process in self.running.items():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.hung.append(name)
                process.send_signal(signal.SIGABRT)
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def errors(self) -> list[str]:
        """Every ERROR record and traceback in the logs: a process's child that died (such as a
        worker's RQ scheduler) leaves no other trace, its parent runs on."""
        return [
            line
            for path in sorted(self.logs.glob("*.log"))
            for line in path.read_text(errors="replace").splitlines()
            if '"level":"ERROR"' in line or line.startswith("Traceback")
        ]

    def output(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.logs.glob("*.log"))
        )


def inbox_contents(redis: Redis, keys: Keys, departments: list[str]) -> dict[str, list[str]]:
    received: dict[str, list[str]] = {}
    for dept in departments:
        for _, fields in redis.xrange(keys.inbox(dept)):
            received.setdefault(json.loads(fields[b"e"])["id"], []).append(dept)
    return received


def dead_letters(redis: Redis, keys: Keys) -> list[tuple[str, str]]:
    """(reason, event id) of every dead letter."""
    return [
        (fields[b"reason"].decode(), json.loads(fields[b"body"])["id"])
        for _, fields in redis.xrange(keys.deadletter)
    ]


def settled(redis: Redis, keys: Keys, departments: list[str]) -> bool:
    """No RQ job waiting and no ingest entry unread or read but unacknowledged."""
    if any(make_queue(redis, keys, q).count for q in (EMERGENCY, HIGH, ROUTINE, BULK)):
        return False
    for dept in departments:
        for lane in LANES:
            stream = keys.ingest(dept, lane)
            if not redis.exists(stream):
                continue
            (group,) = redis.xinfo_groups(stream)
            if group["pending"] or group["lag"]:  # read and unacknowledged, or not yet read
                return False
    return True


def diagnose(redis: Redis, keys: Keys, departments: list[str]) -> str:
    from rq.registry import StartedJobRegistry

    queues = {q: make_queue(redis, keys, q) for q in (EMERGENCY, HIGH, ROUTINE, BULK)}
    parts = [f"queued { {q: queue.count for q, queue in queues.items()} }"]
    parts.append(
        "started "
        + str({q: StartedJobRegistry(queue=queue).get_job_ids() for q, queue in queues.items()})
    )
    parts.append(
        "failed " + str({q: queue.failed_job_registry.get_job_ids() for q, queue in queues.items()})
    )
    parts.append(
        "scheduled "
        + str({q: queue.scheduled_job_registry.get_job_ids() for q, queue in queues.items()})
    )
    pending = {}
    for dept in departments:
        for lane in LANES:
            stream = keys.ingest(dept, lane)
            if redis.exists(stream):
                info = redis.xinfo_groups(stream)
                pending[stream] = [(g["pending"], g.get("lag")) for g in info]
    parts.append(f"ingest pending/lag { {k: v for k, v in pending.items() if v[0][0] or v[0][1]} }")
    return "; ".join(parts)


def load_through(
    load: LoadProducer, redis: Redis, departments: list[str], failover: Callable[[], None]
) -> None:
    """Once a probe event has gone through (every process is up), run `load` for 10 batches,
    call `failover` (a SIGKILL and what follows), run 10 more batches and stop; the producer's
    last batch must have been acknowledged."""
    dept, probe = random_event(random.Random(1), 2)
    load.acknowledged[probe.id] = load.expected(dept, probe)
    Producer(redis, dept, load.keys).publish(probe)
    wait_until(lambda: probe.id in inbox_contents(redis, load.keys, departments), "start", 90)
    thread = threading.Thread(target=load.run, name="load", daemon=True)
    thread.start()
    try:  # a producer ended by an error is reported as that error, not as a wait timed out
        wait_until(lambda: load.error or load.batches >= 10, "load before the failover")
        assert load.error is None, f"producer failed: {load.error!r}"
        failover()
        at_failover = load.batches
        wait_until(
            lambda: load.error or load.batches >= at_failover + 10, "load after the failover", 30
        )
    finally:
        load.stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive(), "the producer's last batch was never acknowledged"
    assert load.error is None, f"producer failed: {load.error!r}"


def wait_until_delivered(
    redis: Redis,
    departments: list[str],
    load: LoadProducer,
    processes: LoggedProcesses,
    timeout: float,
) -> None:
    """Every acknowledged event in (at least) its inboxes, every invalid one dead-lettered and
    nothing in flight; on timeout the error names what is missing, the backlog and the logs."""
    keys = load.keys

    def everything_arrived() -> bool:
        received = inbox_contents(redis, keys, departments)
        return (
            all(depts <= set(received.get(e, [])) for e, depts in load.acknowledged.items())
            and load.invalid <= {eid for _, eid in dead_letters(redis, keys)}
            and settled(redis, keys, departments)
        )

    try:
        wait_until(everything_arrived, "every acknowledged event handled", timeout)
    except AssertionError:
        received = inbox_contents(redis, keys, departments)
        missing = {
            eid: depts - set(received.get(eid, []))
            for eid, depts in load.acknowledged.items()
            if depts - set(received.get(eid, []))
        }
        not_dead = load.invalid - {eid for _, eid in dead_letters(redis, keys)}
        raise AssertionError(
            f"{len(missing)} acknowledged events missing, e.g. {list(missing.items())[:3]};"
            f" {len(not_dead)} invalid ones not dead-lettered;"
            f" {diagnose(redis, keys, departments)}\n{processes.output()}"
        ) from None


def assert_delivered_once_each(redis: Redis, departments: list[str], load: LoadProducer) -> None:
    """Each event in exactly the inboxes the router names, once each (0 duplicated, 0 wrong,
    counted per event id and inbox), and only the invalid input dead-lettered."""
    received = inbox_contents(redis, load.keys, departments)
    twice = {eid: d for eid, d in received.items() if len(d) != len(set(d))}
    wrong = {eid: d for eid, d in received.items() if set(d) != load.acknowledged.get(eid)}
    assert not twice and not wrong, (twice, wrong)
    dead = dead_letters(redis, load.keys)
    assert {reason for reason, _ in dead} == {"invalid_payload"}
    assert {eid for _, eid in dead} == load.invalid
