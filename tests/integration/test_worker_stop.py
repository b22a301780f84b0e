"""A worker stops when asked, whatever its command channel was doing.

RQ 3's teardown sent UNSUBSCRIBE on the worker's command channel and then stopped the thread
that listens on it. On a loaded machine that thread could read the UNSUBSCRIBE reply first,
find nothing subscribed, and wait 60 s for a subscription that never comes, while the teardown
waited for it (redis-py 8.2's stop() joins without a timeout): the worker ignored SIGTERM for a
minute (tests/integration/test_sentinel_failover.py and test_chaos.py saw it). The test below
builds that interleaving on purpose instead of waiting for a loaded machine to produce it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from workers.worker import build_worker

pytestmark = pytest.mark.integration
# Ours returns within a second (the thread looks for a stop every 0.2 s); RQ's: 60 s.
PROMPTLY_S = 10.0


def _wait_for(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.01)


def test_teardown_returns_when_the_command_thread_already_saw_its_unsubscribe(redis, keys):
    worker = build_worker(redis, keys, "routine", name=f"{keys.prefix}-w")
    channel = worker.pubsub_channel_name
    worker.subscribe()
    _wait_for(lambda: redis.pubsub_numsub(channel)[0][1] == 1, "subscribed on the server")
    assert worker.pubsub is not None
    # The race RQ's teardown loses under load: the listening thread reads the UNSUBSCRIBE
    # reply (and loops) before it is told to stop.
    worker.pubsub.unsubscribe()
    _wait_for(lambda: not worker.pubsub.subscribed, "the thread read the unsubscribe reply")

    teardown = threading.Thread(target=worker.unsubscribe, daemon=True)
    started = time.monotonic()
    teardown.start()
    teardown.join(PROMPTLY_S)
    assert not teardown.is_alive(), "the worker's teardown waited for its command thread"
    assert time.monotonic() - started < PROMPTLY_S
    assert worker.pubsub.connection is None  # closed: nothing left subscribed on the server
