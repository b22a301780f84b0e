"""The pipeline in-process on a real Redis Cluster, one slot group (prefix ``{name}``, RQ keys
under ``RQ_KEY_PREFIX={name}:rq``): the same Seattle events, with producer retries, through
the producer, ingest (dedupe, enqueue + ack in one MULTI), RQ workers and the delivery script,
reach the same inboxes as on a single Redis: 0 lost, 0 duplicated, 0 wrong, counted per event
id and inbox. RQ reads its key prefix at import, so the run is a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter

from workers.standin_cluster import LocalRedisCluster

CHILD = """
import json, sys
import fakeredis
from city.config import load_city
from city.routing import Router
from queues.connect import cluster_client_from_url
from queues.keys import Keys
from queues.streams import Producer
from tests.conftest import SEATTLE
from tests.pipeline_harness import Harness
from tests.unit.test_pipeline import incident

url, name = sys.argv[1], sys.argv[2]
config, base = load_city(SEATTLE)
router = Router.from_config(config, base)
places = [(47.6205, -122.3493), (47.6062, -122.3321), (47.6685, -122.3823), (47.5480, -122.3165)]
events = [incident(location={"lat": lat, "lon": lon}) for lat, lon in places for _ in range(10)]

def run(redis, keys):
    harness = Harness(redis, keys, config, base, router)
    producer = Producer(redis, "sdot", keys)
    producer.publish_many(events)
    producer.publish_many(events[::4])  # producer retries: dropped at ingest
    harness.run()
    return {dept: harness.inbox_ids(dept) for dept in config.department_ids}

single = run(fakeredis.FakeRedis(), Keys("single"))
client = cluster_client_from_url(url, for_rq=True, socket_timeout=30)
clustered = run(client, Keys("{" + name + "}"))
print(json.dumps({"single": single, "cluster": clustered, "sent": [e.id for e in events]}))
"""


def test_one_slot_group_on_a_cluster_delivers_as_a_single_redis(
    cluster: LocalRedisCluster,
) -> None:
    name = f"t{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "RQ_KEY_PREFIX": f"{{{name}}}:rq"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, cluster.url, name],
        env=env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    report = json.loads(out.stdout.strip().splitlines()[-1])
    expected = {(d, e) for d, ids in report["single"].items() for e in ids}
    got = Counter((d, e) for d, ids in report["cluster"].items() for e in ids)
    assert len(expected) >= len(report["sent"])  # every event reached someone
    lost = expected - set(got)
    duplicated = {pair for pair, n in got.items() if n > 1}
    wrong = set(got) - expected
    assert (len(lost), len(duplicated), len(wrong)) == (0, 0, 0)
