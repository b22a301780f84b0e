"""The derived Redis ACL users on a real 3+3 Redis Cluster, for a city of two slot groups:
`cityrelay acl apply` (run once, with the default user) sets every group's users on every
node; then each group's Procfile processes (ingest, the three worker roles, the cron scheduler,
the relay) run as subprocesses logged in as their role's user of their group, departments
publish and read their inboxes as their own users, and the Seattle load with emergencies
crossing between the groups arrives: 0 lost, 0 duplicated, 0 wrong per event id and inbox, no
job failed, no process refused (NOPERM). Redis itself still keeps each user to its group."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO
from urllib.parse import quote

import pytest
from redis.cluster import RedisCluster
from redis.exceptions import NoPermissionError

from city.events import Event, source_for
from queues.connect import cluster_client_from_url
from queues.inbox import Inbox
from queues.keys import Keys
from queues.metrics import read_stats
from queues.streams import Producer
from tests.conftest import ROOT
from tests.integration.test_cluster_processes import (
    lost_duplicated_wrong,
    publish_steady_load,
    start_procfile,
)
from tests.integration.test_cluster_slot_groups import B_DEPARTMENTS, _settled, two_group_city
from tests.integration.test_processes import WEST, Processes, _wire
from workers.standin_cluster import LocalRedisCluster

# Which worker user each Procfile process logs in as (docs/sharing.md "Isolation in Redis").
ROLE_USER = {
    "ingest": "ingest",
    "emergency": "router",
    "routine": "router",
    "escalation": "escalation",
    "scheduler": "archive",
    "relay": "relay",
}


def login_url(url: str, user: str, password: str) -> str:
    """The cluster URL with a user's credentials (user names carry the braces of the tag)."""
    return url.replace("redis+cluster://", f"redis+cluster://{quote(user, safe='')}:{password}@")


class RoleProcesses(Processes):
    """One group's processes, each logged in as its role's user; output kept per process."""

    def __init__(self, url_of: Callable[[str], str], prefix: str, config: Path, logs: Path):
        super().__init__(url_of("ingest"), prefix, config)
        self.url_of, self.logs = url_of, logs
        self.outputs: dict[str, IO[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        env = dict(self.env, REDIS_URL=self.url_of(ROLE_USER[name]))
        out = self.outputs[name] = (self.logs / f"{name}.log").open("wb")
        self.running[name] = subprocess.Popen(
            self.base + list(args), env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )

    def output(self) -> dict[str, str]:
        for out in self.outputs.values():
            out.close()
        return {n: (self.logs / f"{n}.log").read_text() for n in self.outputs}


def _failed_jobs(redis: RedisCluster, keys: Keys) -> int:
    """Jobs in the group's RQ failed registries (``{name}:rq:failed:<queue>``)."""
    found = redis.scan_iter(match=f"{keys.cluster_rq_key_prefix}:failed:*")
    return sum(int(redis.zcard(key)) for key in found)


@pytest.mark.integration
def test_slot_group_processes_run_under_their_acl_users_on_every_node(
    cluster: LocalRedisCluster, seattle_router, tmp_path
) -> None:
    name, path, config, parts, groups = two_group_city(tmp_path)
    admin = cluster_client_from_url(cluster.url, socket_timeout=10)

    # One run (the default user, any group's prefix) sets both groups' users on all 6 nodes.
    secrets = tmp_path / "secrets.json"
    operator = Processes(cluster.url, groups["a"].prefix, path)
    applied = subprocess.run(
        [*operator.base, "acl", "apply", "--secrets", str(secrets)],
        env=operator.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stderr
    passwords: dict[str, str] = json.loads(secrets.read_text())
    for port in cluster.ports:
        node = cluster.node(port)
        names = {n.decode() for n in node.execute_command("ACL", "USERS")}
        for keys in groups.values():
            assert {keys.acl_worker_user(role) for role in ROLE_USER.values()} <= names, port
        # Each department's user is its home group's only.
        assert groups["b"].acl_dept_user("fire") in names
        assert groups["a"].acl_dept_user("fire") not in names
        assert groups["a"].acl_dept_user("sdot") in names
        node.close()

    def url_of(keys: Keys) -> Callable[[str], str]:
        def url(role: str) -> str:
            user = keys.acl_worker_user(role)
            return login_url(cluster.url, user, passwords[user])

        return url

    clients: dict[str, RedisCluster] = {}

    def dept_client(dept: str) -> RedisCluster:
        if dept not in clients:
            user = groups[parts.home(dept)].acl_dept_user(dept)
            url = login_url(cluster.url, user, passwords[user])
            clients[dept] = cluster_client_from_url(url, socket_timeout=10)
        return clients[dept]

    # Redis keeps each user to its own group's keys, on the cluster as on one Redis.
    fire = dept_client("fire")
    with pytest.raises(NoPermissionError):
        fire.xadd(groups["a"].ingest("fire"), {"e": "{}"})  # not its home group's stream
    with pytest.raises(NoPermissionError):
        fire.xrange(groups["a"].inbox("police"))
    router_a = cluster_client_from_url(url_of(groups["a"])("router"), socket_timeout=10)
    with pytest.raises(NoPermissionError):
        router_a.xadd(groups["b"].inbox("fire"), {"e": "{}"})  # b's inboxes: only b's relay
    with pytest.raises(NoPermissionError):
        router_a.lpush(f"{groups['b'].cluster_rq_key_prefix}:queue:x", "job")  # b's RQ keys
    router_a.close()

    logs = tmp_path / "logs"
    processes: dict[str, RoleProcesses] = {}
    for group, keys in groups.items():
        (logs / group).mkdir(parents=True)
        processes[group] = RoleProcesses(url_of(keys), keys.prefix, path, logs / group)
    try:
        for group, procs in processes.items():
            start_procfile(procs, f"{name}-{group}")
        expected, published = publish_steady_load(
            admin, seattle_router, lambda dept: groups[parts.home(dept)], client_of=dept_client
        )
        mcis = [
            Event.new(
                "health.emergency",
                source_for("ems"),
                {"incident_number": f"MCI-{i}", "kind": "mass_casualty", "patients": 4},
                location=WEST,
            )
            for i in range(3)
        ]
        for mci in mcis:
            wire = _wire(mci, "ems")
            expected[mci.id] = {d.dept for d in seattle_router.route(wire)}
            for derived in seattle_router.rules.derive(wire).events:  # issued by b, routed in b
                expected[derived["id"]] = {d.dept for d in seattle_router.route(derived)}
                published += 1
        Producer(dept_client("ems"), "ems", groups["a"]).publish_many(mcis)  # type: ignore[arg-type]
        published += len(mcis)
        deadline = time.monotonic() + 120
        while not _settled(admin, groups, published) and time.monotonic() < deadline:
            time.sleep(0.2)  # polling for the end of the run
        stats = {g: read_stats(admin, keys) for g, keys in groups.items()}  # type: ignore[arg-type]
        assert _settled(admin, groups, published), stats
        crashed = {
            f"{g}/{n}": p.returncode
            for g, procs in processes.items()
            for n, p in procs.running.items()
            if p.poll() is not None
        }
        assert not crashed, f"exited early: {crashed}"
    finally:
        for procs in processes.values():
            procs.stop_all()
    outputs = {f"{g}/{n}": text for g, p in processes.items() for n, text in p.output().items()}
    refused = {n: text for n, text in outputs.items() if "NOPERM" in text or "NoPermission" in text}
    assert not refused, refused

    assert stats["a"].get("relayed:relay:b", 0) > 0, stats["a"]
    assert stats["b"].get("relayed:relay:a", 0) > 0, stats["b"]
    # Every department reads its inbox, at its home group, as its own user.
    got: Counter[tuple[str, str]] = Counter()
    for dept in config.department_ids:
        inbox = Inbox(dept_client(dept), dept, groups[parts.home(dept)])  # type: ignore[arg-type]
        while messages := inbox.read(count=500):
            got.update((m.event["id"], dept) for m in messages)
            inbox.ack(messages, emergencies=False)
    lost, duplicated, wrong = lost_duplicated_wrong(got, expected)
    assert (len(lost), len(duplicated), len(wrong)) == (0, 0, 0), (lost, duplicated, wrong)
    assert sum(1 for _, dept in got if dept in B_DEPARTMENTS) > 0
    for keys in groups.values():
        assert not admin.xrange(keys.deadletter)
        assert _failed_jobs(admin, keys) == 0
    # The emergencies relayed into b are tracked in b (the relay user schedules in b's RQ).
    for mci in mcis:
        assert admin.hexists(groups["b"].emergency(mci.id), "fire|deadline")
    for client in clients.values():
        client.close()
