"""The relay process: `cityrelay relay --to B` moves this shard's outbox for B into B.

One loop: every claim_idle_ms / 2 it claims the entries of relays that died mid-batch, then
reads a batch (blocking up to `idle_block_ms`), writes it into B and acknowledges it here (see
queues/partition.py for why a crash at any point loses nothing and repeats nothing). Either
Redis going away pauses the loop, which reconnects with backoff; SIGTERM stops it between two
batches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from queues.partition import Relay

log = logging.getLogger("cityrelay.relay")


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
