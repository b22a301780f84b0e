"""A worker's teardown (SIGTERM, the end of a burst) never waits on its command channel."""

from __future__ import annotations

import threading
import time

import pytest
from rq.scheduler import RQScheduler

from queues.priority import ESCALATION, make_queue
from workers.worker import build_worker

pytestmark = pytest.mark.integration


def test_teardown_is_prompt_when_the_command_thread_reads_the_unsubscribe_reply_first(
    redis, keys, monkeypatch
):
    """The order a loaded machine produces by chance, made certain: the command thread reads
    the UNSUBSCRIBE reply before the main thread goes on. RQ 3 then stopped the thread with a
    join while it waited a minute in get_message for a subscription that never comes."""
    worker = build_worker(redis, keys, "escalation", name=f"{keys.prefix}-esc")
    sent = threading.Event()
    original = type(worker).subscribe

    def subscribe(self) -> None:  # type: ignore[no-untyped-def]
        original(self)
        send = self.pubsub.unsubscribe

        def unsubscribe(*args):  # type: ignore[no-untyped-def]
            reply = send(*args)
            deadline = time.monotonic() + 5
            while self.pubsub.subscribed and time.monotonic() < deadline:
                time.sleep(0.01)  # the thread has the reply: the main thread lost the race
            sent.set()
            return reply

        self.pubsub.unsubscribe = unsubscribe

    monkeypatch.setattr(type(worker), "subscribe", subscribe)
    started = time.monotonic()
    worker.work(burst=True, logging_level="ERROR")
    assert sent.is_set() and not worker.pubsub.subscribed
    assert time.monotonic() - started < 5, "teardown waited for the command thread"
    assert worker.pubsub_thread is not None and not worker.pubsub_thread.is_alive()


def test_a_burst_worker_with_the_scheduler_never_forks_a_scheduler_process(redis, keys):
    """Burst mode enqueues the due scheduled jobs once. RQ's maintenance, when a job outlasted
    the maintenance interval, forked a scheduler child (and the teardown SIGTERMed it, perhaps
    before its handlers were in place: its lock then held for a minute)."""
    queue = make_queue(redis, keys, ESCALATION)
    for _ in range(2):
        queue.enqueue("time.sleep", 0.3, result_ttl=0)
    worker = build_worker(redis, keys, "escalation", name=f"{keys.prefix}-esc")
    worker.maintenance_interval = 0  # every job outlasts it
    forked: list[int] = []
    start = RQScheduler.start

    def record(self):  # type: ignore[no-untyped-def]
        forked.append(1)
        return start(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RQScheduler, "start", record)
        assert worker.work(burst=True, with_scheduler=True, logging_level="ERROR")
    assert forked == [] and queue.count == 0
    assert not redis.exists(RQScheduler.get_locking_key(queue.name))
