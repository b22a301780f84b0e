"""Bigger route jobs while the route workers are behind: ingest keeps gathering.

RQ's bookkeeping costs a route worker about 2 ms of CPU per job whatever its size (some 50
Redis commands: pop, execution registry, heartbeat, success, cleanup), and a job's fixed costs
(the grants and jurisdiction versions in force, the audit chaining, the outcomes shared by its
events) are paid per job too: 120-event jobs cost ~40% more CPU per event than 500-event ones
(`bench/profile_batch.py --worker --batch 120` vs `--batch 500`). Ingest splits each read by
priority queue, so at 7,500 events/s a 20 ms micro-batch made jobs of about 120 events.

When every queue a micro-batch feeds already has jobs waiting at its priority or above (the
routine workers drain ``high``, then ``routine``, then ``bulk``), no worker is free to take a job
now: the batch's events would wait behind those jobs anyway. Ingest then keeps gathering, in
steps of `batch_max_ms`, until one of its queue batches is full (`batch_max_events`), the
workers catch up (no job waiting ahead of one of its queues), or `batch_max_wait_ms` passed since
the batch opened. Held entries stay pending in the ingest stream (unacknowledged), so a crash
loses nothing; the hold is at most half of `claim_idle_ms`, so no other consumer takes them
over meanwhile. An ingest that serves the emergency lane never holds a
batch past `batch_max_ms`: it would sleep while an emergency arrived.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from redis import Redis
from rq import Queue

from city.catalog import InvalidEvent
from queues.priority import ROLES
from queues.streams import Entry

# The queues ahead of (or equal to) each routine queue, in the order routine workers drain them.
ROUTINE_ORDER = ROLES["routine"]
AHEAD: dict[str, tuple[str, ...]] = {
    name: ROUTINE_ORDER[: i + 1] for i, name in enumerate(ROUTINE_ORDER)
}


class WorkersBehind:
    """Asks Redis whether the route workers are behind for a set of queues (one round trip)."""

    def __init__(self, redis: Redis, queues: Mapping[str, Queue]):
        self.redis = redis
        self.keys = {name: queues[name].key for name in ROUTINE_ORDER}

    def waiting(self) -> dict[str, int]:
        """Jobs waiting (not yet taken by a worker) in each routine queue."""
        pipe = self.redis.pipeline(transaction=False)
        for key in self.keys.values():
            pipe.llen(key)
        return dict(zip(self.keys, map(int, pipe.execute()), strict=True))

    def behind_for(self, targets: Iterable[str]) -> bool:
        """True when every queue in `targets` has a job waiting at its priority or above, so a
        job enqueued now on any of them would not start at once. False for no targets."""
        wanted = set(targets)
        if not wanted or not wanted <= self.keys.keys():
            return False
        waiting = self.waiting()
        return all(any(waiting[ahead] for ahead in AHEAD[name]) for name in wanted)


# Each entry read with its wire events, or the reason it is refused.
Decoded = list[tuple[Entry, list[dict[str, Any]] | InvalidEvent]]


class BatchHolder:
    """Keeps a micro-batch gathering while the workers are behind (see the module doc)."""

    def __init__(self, behind: WorkersBehind, limit: int, step_ms: int, wait_ms: int):
        self.behind = behind
        self.limit = limit  # events per queue batch (`batch_max_events`)
        self.step_s = step_ms / 1000
        self.wait_s = wait_ms / 1000

    def hold(
        self,
        read: Callable[[int], list[Entry]],
        decode: Callable[[list[Entry]], Decoded],
        queue_of: Callable[[dict[str, Any]], str],
        entries: list[Entry],
        decoded: Decoded,
        opened: float,
    ) -> None:
        """Extend `entries` and `decoded` in place. `read(count)` reads what waits without
        blocking; `queue_of` names the queue a wire event goes to; `opened` is the monotonic
        time the batch's first entry was read."""
        sizes: Counter[str] = Counter()
        for _, wires in decoded:
            if not isinstance(wires, InvalidEvent):
                sizes.update(queue_of(wire) for wire in wires)
        until = opened + self.wait_s
        while sizes and max(sizes.values()) < self.limit:
            left = until - time.monotonic()
            if left <= 0 or not self.behind.behind_for(sizes):
                return
            time.sleep(min(self.step_s, left))
            more = read(self.limit - max(sizes.values()))
            if not more:
                continue
            fresh = decode(more)
            entries.extend(more)
            decoded.extend(fresh)
            for _, wires in fresh:
                if not isinstance(wires, InvalidEvent):
                    sizes.update(queue_of(wire) for wire in wires)
