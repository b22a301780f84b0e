"""`cityrelay push`: webhook push delivery of the inboxes of departments with a ``delivery:``.

One process (a Procfile line) with one thread per push department. Each thread is an ordinary
reader of its department's inbox (the department's consumer group, consumer ``push``): it reads
a batch, POSTs it signed per Standard Webhooks (jobs/channels/signed.py: retries with backoff
behind the endpoint's circuit breaker), and XACKs it only after a 2xx. Until then it keeps
trying the same batch (same ``webhook-id``), waiting with backoff or for the breaker to let a
trial through, so delivery is at-least-once and nothing is skipped. A thread that waits on a
dead endpoint holds up nobody else: every department has its own thread and reads its own
inbox, and the breakers are per endpoint.

Why a process of its own rather than sends inside the route workers: the inbox is already the
durable queue a department reads, so pushing is reading it like any other consumer (nothing new
to keep consistent); a slow or dead endpoint ties up a pusher thread, never an RQ worker that
emergencies wait for; and a killed pusher loses nothing: its batch stays pending in the group
and is read again at start (its own pending entries) or taken over by another pusher
(XAUTOCLAIM after `claim_idle_ms`).

A 2xx is delivery, not acknowledgement: an emergency in the batch still escalates until the
department acknowledges it (`cityrelay ack`, the gateway's inbox ack), unless its delivery says
``ack_on_2xx: true``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from city.config import CityConfig
from city.connectors import WebhookDelivery
from jobs.channels.breaker import BREAKERS, BreakerRegistry
from jobs.channels.retry import backoff_delay
from jobs.channels.signed import SignedWebhook, load_secret
from queues.inbox import Inbox
from queues.keys import Keys
from queues.message import Message
from queues.metrics import PUSH_DELIVERED, PUSH_FAILED

log = logging.getLogger("cityrelay.push")

PUSH_CONSUMER = "push"
READ_BLOCK_MS = 1000
CLAIM_EVERY_S = 5.0


def webhook_id(dept: str, messages: Sequence[Message]) -> str:
    """The same for every send of the same batch (first and last entry, how many)."""
    key = f"{dept}|{messages[0].entry_id}|{messages[-1].entry_id}|{len(messages)}"
    return "msg_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def batch_body(dept: str, messages: Sequence[Message]) -> bytes:
    """The payload: Standard Webhooks' recommended ``type``/``timestamp``/``data`` envelope
    around the messages, each as the gateway's inbox page shows it."""
    body = {
        "type": "cityrelay.inbox.batch",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": {
            "department": dept,
            "messages": [
                {
                    "id": m.entry_id,
                    "event_id": m.event_id,
                    "event": m.event,
                    "via": m.via,
                    "ingested_ms": m.ingested_ms,
                }
                for m in messages
            ],
        },
    }
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class PushStats:
    delivered: int = 0
    batches: int = 0
    failed_sends: int = 0


class DepartmentPusher:
    """Pushes one department's inbox to its webhook (run in its own thread)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        dept: str,
        delivery: WebhookDelivery,
        sender: SignedWebhook,
        *,
        consumer: str = PUSH_CONSUMER,
        claim_idle_ms: int = 30_000,
    ):
        self.redis, self.keys, self.dept, self.delivery = redis, keys, dept, delivery
        self.sender = sender
        self.inbox = Inbox(redis, dept, keys, consumer=consumer)
        self.claim_idle_ms = claim_idle_ms
        self.stats = PushStats()
        self._next_claim = 0.0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.inbox.ensure_group()
                while not stop.is_set():  # own pending entries first (a restart), then new
                    pending = self.inbox.read(self.delivery.batch_max, pending=True)
                    if not pending:
                        break
                    self.deliver(pending, stop)
                while not stop.is_set():
                    self.deliver(self.next_batch(), stop)
            except RedisError as exc:
                log.warning("push %s: Redis error, retrying in 1 s: %s", self.dept, exc)
                stop.wait(1.0)

    def next_batch(self) -> list[Message]:
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + CLAIM_EVERY_S
            claimed = self.inbox.claim_idle(self.claim_idle_ms, self.delivery.batch_max)
            if claimed:
                return claimed
        return self.inbox.read(self.delivery.batch_max, block_ms=READ_BLOCK_MS)

    def deliver(self, messages: list[Message], stop: threading.Event) -> bool:
        """POST the batch until a 2xx (then XACK) or `stop` (then it stays pending)."""
        if not messages:
            return True
        msg_id = webhook_id(self.dept, messages)
        attempt = 0
        while not stop.is_set():
            result = self.sender.post_signed(msg_id, batch_body(self.dept, messages))
            if result.ok:
                self.inbox.ack(messages, emergencies=self.delivery.ack_on_2xx)
                self.stats.delivered += len(messages)
                self.stats.batches += 1
                self.redis.hincrby(self.keys.stats, f"{PUSH_DELIVERED}:{self.dept}", len(messages))
                return True
            self.stats.failed_sends += 1
            self.redis.hincrby(self.keys.stats, f"{PUSH_FAILED}:{self.dept}", 1)
            retry = self.delivery.retry
            delay = backoff_delay(attempt, retry.base_delay_s, retry.max_delay_s)
            if self.sender.breaker.state != "closed":  # wait for the trial the breaker allows
                delay = max(delay, min(self.delivery.breaker.reset_timeout_s, retry.max_delay_s))
            log.warning(
                "push %s: %d messages not delivered (%s); again in %.1f s",
                self.dept, len(messages), result.detail, delay,
            )  # fmt: skip
            attempt += 1
            stop.wait(delay)
        return False


def build_pushers(
    redis: Redis,
    keys: Keys,
    config: CityConfig,
    base_dir: Path | None,
    *,
    consumer: str = PUSH_CONSUMER,
    only: Sequence[str] | None = None,
    breakers: BreakerRegistry = BREAKERS,
) -> list[DepartmentPusher]:
    """One pusher per department with a ``delivery:`` (secrets read now: a missing one fails
    at start, naming the department)."""
    pushers = []
    for dept in config.departments:
        delivery = dept.delivery
        if delivery is None or (only and dept.id not in only):
            continue
        try:
            key = load_secret(delivery.secret_env, delivery.secret_file, base_dir)
        except ValueError as exc:
            raise SystemExit(f"push: department {dept.id}: {exc}") from None
        sender = SignedWebhook(
            delivery.webhook,
            key,
            headers=delivery.headers,
            timeout_s=delivery.timeout_s,
            retry=delivery.retry,
            breaker=delivery.breaker,
            breakers=breakers,
        )
        pushers.append(
            DepartmentPusher(
                redis,
                keys,
                dept.id,
                delivery,
                sender,
                consumer=consumer,
                claim_idle_ms=config.routing.claim_idle_ms,
            )  # fmt: skip
        )
    return pushers


def run_pushers(pushers: Sequence[DepartmentPusher], stop: threading.Event) -> dict[str, Any]:
    """Run every pusher in its own thread until `stop`; returns what each delivered."""
    threads = [
        threading.Thread(target=p.run, args=(stop,), name=f"push-{p.dept}", daemon=True)
        for p in pushers
    ]
    for thread in threads:
        thread.start()
    log.info("pushing %d department inbox(es): %s", len(pushers), [p.dept for p in pushers])
    while not stop.wait(30.0):
        log.info("push summary", extra={"delivered": {p.dept: p.stats.delivered for p in pushers}})
    for thread in threads:
        thread.join(timeout=15)
    return {p.dept: p.stats.delivered for p in pushers}
