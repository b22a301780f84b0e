"""A burst worker's teardown leaves nothing running (its command channel: test_worker_stop.py)."""

from __future__ import annotations

import pytest
from rq.scheduler import RQScheduler

from queues.priority import ESCALATION, make_queue
from workers.worker import build_worker

pytestmark = pytest.mark.integration


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
