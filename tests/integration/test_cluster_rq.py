"""RQ 3.0 on a real Redis Cluster for one slot group (queues/rq_cluster.py): with
``RQ_KEY_PREFIX={name}:rq`` every RQ key is in the group's slot, jobs on two queues are
enqueued, popped (a blocking pop over both queues too) and run by RQ's SimpleWorker, and their
results are kept. RQ reads the prefix at import, so the RQ side runs in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from workers.standin_cluster import LocalRedisCluster

CHILD = """
import json, sys
from rq import Queue, SimpleWorker
from rq.job import Job
from queues.connect import cluster_client_from_url

class Worker(SimpleWorker):
    def _set_connection(self, connection):  # RQ's socket-timeout tweak needs one pool
        return connection

url, name = sys.argv[1], sys.argv[2]
redis = cluster_client_from_url(url, socket_timeout=30, for_rq=True)
high, routine = Queue(name + ".high", connection=redis), Queue(name + ".routine", connection=redis)
jobs = [q.enqueue("builtins.len", [0] * i, job_id=f"{name}-{q.name[-4:]}-{i}", result_ttl=600)
        for q in (high, routine) for i in range(1, 6)]
popped = Queue.dequeue_any([high, routine], timeout=1, connection=redis)
first = popped[0].id if popped else None
popped[0].delete()
Worker([high, routine], connection=redis).work(burst=True)
results = {job.id: Job.fetch(job.id, connection=redis).latest_result() for job in jobs[1:]}
print(json.dumps({
    "first": first,
    "done": sorted(j for j, r in results.items() if r is not None and r.return_value is not None),
    "slots": sorted({redis.keyslot(k) for k in redis.scan_iter(match="*", count=1000,
                    target_nodes=redis.PRIMARIES)}),
}))
"""


def test_rq_runs_a_slot_groups_jobs_on_a_cluster(cluster: LocalRedisCluster) -> None:
    name = f"t{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "RQ_KEY_PREFIX": f"{{{name}}}:rq"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, cluster.url, name],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["first"] == f"{name}-high-1"  # the blocking pop took the first queue first
    expected = {f"{name}-{q}-{i}" for q in ("high", "tine") for i in range(1, 6)}
    assert set(report["done"]) == expected - {f"{name}-high-1"}
    assert len(report["slots"]) == 1  # every RQ key of the group in its slot
