"""The relay process: `cityrelay relay --to B` moves this shard's outbox for B into B.

One loop: every claim_idle_ms / 2 it claims the entries of relays that died mid-batch, then
reads a batch (blocking up to `idle_block_ms`), writes it into B and acknowledges it here (see
queues/partition.py for why a crash at any point loses nothing and repeats nothing). Either
Redis going away pauses the loop, which reconnects with backoff; SIGTERM stops it between two
batches.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from city.config import CityConfig
from city.escalation import severity_of
from jobs.emergency import EscalationPlan, schedule
from queues.acks import track
from queues.keys import Keys
from queues.priority import ESCALATION, make_queue
from queues.relay import Entry, Relay

log = logging.getLogger("cityrelay.relay")


@dataclass
class EmergencyHandover:
    """Emergencies relayed into an inbox on the destination shard are tracked there.

    The routing shard tracks (deadlines, escalation checks) only the recipients at home on it;
    a recipient at home here acknowledges here (`Inbox.ack`), so its deadline, escalation
    checks and acknowledgement must live here too. Runs as the relay's `on_written` hook:
    after the batch is in this shard and before the outbox acknowledges it, so a crash in
    between repeats it; a recipient already tracked for the event is left as it is (its
    deadline does not move). Severity, and so the deadline, come from the recipient's view.
    """

    dest: Redis
    keys: Keys
    plan: EscalationPlan

    @classmethod
    def for_city(
        cls, config: CityConfig, base_dir: Path | None, keys: Keys, dest: Redis
    ) -> EmergencyHandover:
        return cls(dest, keys, EscalationPlan.from_config(config, base_dir))

    def __call__(self, entries: Sequence[Entry]) -> None:
        inbox = self.keys.inbox("")
        found: dict[str, tuple[dict[str, Any], str, list[str]]] = {}
        for _, _, fields in entries:
            to = fields.get(b"to", b"").decode()
            # Derived events go to ingest streams: they are tracked where they are routed.
            if fields.get(b"pri") != b"emergency" or not to.startswith(inbox):
                continue
            event = json.loads(fields[b"e"])
            ing = fields.get(b"ing", b"").decode()
            found.setdefault(str(event["id"]), (event, ing, []))[2].append(to[len(inbox) :])
        if not found:
            return
        check = self.dest.pipeline(transaction=False)
        clustered = isinstance(self.dest, RedisCluster)
        if not clustered:  # a cluster pipeline refuses TIME (it names no key): asked alone
            check.time()
        pairs = [(event_id, dept) for event_id, (_, _, depts) in found.items() for dept in depts]
        for event_id, dept in pairs:
            check.hexists(self.keys.emergency(event_id), f"{dept}|delivered")
        tracked = check.execute()
        secs, micros = self.dest.time() if clustered else tracked.pop(0)
        now_ms = int(secs) * 1000 + int(micros) // 1000
        todo = {pair for pair, done in zip(pairs, tracked, strict=True) if not done}
        pipe = self.dest.pipeline(transaction=False)
        queue = make_queue(self.dest, self.keys, ESCALATION)
        for event_id, (event, ing, depts) in found.items():
            new = [dept for dept in depts if (event_id, dept) in todo]
            if not new:
                continue
            severity = severity_of(event)
            deadlines = {
                dept: now_ms + int(self.plan.escalation(dept).deadline_s(severity) * 1000)
                for dept in new
            }
            body = json.dumps(event, separators=(",", ":"))
            track(pipe, self.keys, event_id, body, severity, ing, now_ms, deadlines)
            groups: dict[int, list[str]] = {}
            for dept, deadline in deadlines.items():
                if self.plan.escalation(dept).max_level >= 1:
                    groups.setdefault(deadline, []).append(dept)
            for deadline, group in groups.items():
                schedule(queue, self.keys, event_id, group, 1, deadline, pipeline=pipe)
        pipe.execute()


def run_relay(
    relay: Relay,
    should_stop: Callable[[], bool] | threading.Event,
    idle_block_ms: int = 1000,
    totals: Counter[str] | None = None,
) -> Counter[str]:
    """Relay until `should_stop`; returns the counters (relayed, redelivered, dead_lettered)."""
    stop = should_stop.is_set if isinstance(should_stop, threading.Event) else should_stop
    totals = Counter() if totals is None else totals
    recover_every = max(relay.claim_idle_ms / 2000, 0.5)
    next_recover = 0.0
    backoff = 0.1
    ready = False
    while not stop():
        try:
            if not ready:
                relay.ensure_group()
                ready = True
            if time.monotonic() >= next_recover:
                totals.update(relay.relay(relay.reclaim()))
                next_recover = time.monotonic() + recover_every
            started = time.monotonic()
            step = relay.step(idle_block_ms)
            totals.update(step)
            if not step and time.monotonic() - started < idle_block_ms / 2000:
                time.sleep(idle_block_ms / 1000)  # a stand-in that does not block: do not spin
            backoff = 0.1
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("redis unavailable (%s); retrying in %.1fs", exc, backoff)
            relay.retry_own()
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
        except ResponseError as exc:
            # The destination refusing writes (OOM, a missing ACL) or the outbox group gone
            # (the key was deleted): the entries stay in the outbox; retry, recreating the group.
            log.error("relay to %s refused (%s); retrying in %.1fs", relay.dest_shard, exc, backoff)
            ready = ready and "NOGROUP" not in str(exc)
            relay.retry_own()
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
    return totals
