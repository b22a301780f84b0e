"""`partitions:` shards as slot groups of one Redis Cluster (``prefix:``), on one fakeredis:
the config, which group a process serves, a delivery crossing groups through the outbox and
the relay (named under the destination's prefix), control data under the control group's
prefix, and the per-group figures of `cityrelay status`."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import yaml

from city.config import CityConfig, ConfigError, parse_city
from city.events import Event, source_for
from city.routing import Router
from jobs.context import RouteContext
from queues.cluster_status import group_figures, nodes_of, render_cluster
from queues.inbox import Inbox
from queues.keys import Keys
from queues.partition import SHARD_ENV, PartitionError, home_departments, local_shard
from queues.relay import Relay
from queues.streams import Producer
from tests.conftest import SEATTLE, write_city
from tests.pipeline_harness import Harness
from workers.relay import EmergencyHandover

A, B = Keys("{sea-a}"), Keys("{sea-b}")
GROUPS = {
    "default": "a",
    "shards": {
        "a": {"prefix": A.prefix},
        "b": {"prefix": B.prefix, "departments": ["spd-west", "emergency-management"]},
    },
}
WEST = {"lat": 47.6205, "lon": -122.3493}  # Seattle Center: the West precinct (on b)


def grouped(partitions: Any = GROUPS) -> CityConfig:
    doc = yaml.safe_load(SEATTLE.read_text())
    doc["partitions"] = partitions
    return parse_city(doc, SEATTLE)


def test_shards_may_be_slot_groups_each_with_its_hash_tag_prefix():
    parts = grouped().partitions
    assert parts is not None and parts.slot_groups
    assert parts.home("spd-west") == "b" and parts.home("sdot") == "a"
    config = grouped()
    assert home_departments(config, {}, B.prefix) == ["spd-west", "emergency-management"]
    assert "sdot" in home_departments(config, {}, A.prefix)


@pytest.mark.parametrize(
    ("shards", "expected"),
    [
        (
            {"a": {"prefix": "{x}"}, "b": {"url": "redis://b:6379/0"}},
            "partitions.shards.b: shards are all slot groups (`prefix:`) of one cluster, or all",
        ),
        ({"a": {"prefix": "sea-a"}}, "partitions.shards.a: prefix 'sea-a': a hash tag"),
        (
            {"a": {"prefix": "{x}"}, "b": {"prefix": "{x}"}},
            "partitions.shards.b: prefix '{x}' is shard 'a''s",
        ),
        (
            {"a": {"prefix": "{x}", "url": "redis://a"}},
            "partitions.shards.a: give exactly one of `url:`, `url_env:` or `prefix:`",
        ),
    ],
)
def test_slot_group_config_errors_name_the_shard_and_the_problem(shards, expected):
    with pytest.raises(ConfigError) as caught:
        grouped({"default": "a", "shards": shards})
    assert expected in str(caught.value)


def test_a_process_serves_the_slot_group_its_prefix_names():
    config = grouped()
    assert local_shard(config, {}, B.prefix) == "b"
    assert local_shard(config, {SHARD_ENV: "b"}, B.prefix) == "b"  # agreeing: fine
    with pytest.raises(PartitionError, match="is shard 'b'"):
        local_shard(config, {SHARD_ENV: "a"}, B.prefix)
    with pytest.raises(PartitionError, match=r"no slot group of the city.*\{sea-a\} \(a\)"):
        local_shard(config, {}, "{seattle}")
    router = Router.from_config(config, SEATTLE.parent)
    with pytest.raises(PartitionError, match="slot group"):
        RouteContext(config=config, router=router, keys=A, shard="b")


@pytest.fixture
def groups() -> tuple[CityConfig, fakeredis.FakeRedis, Harness, Harness]:
    """Both groups on one server, as on one cluster: the same ingest and RQ worker code."""
    config = grouped()
    router = Router.from_config(config, SEATTLE.parent)
    redis = fakeredis.FakeRedis()
    return config, redis, *(Harness(redis, k, config, SEATTLE.parent, router) for k in (A, B))


def pull_relay(config: CityConfig, redis: Any, source: str, dest: str) -> Relay:
    """As `cityrelay relay` builds it in the destination group (with the emergency handover)."""
    there = B if dest == "b" else A
    handover = EmergencyHandover.for_city(config, SEATTLE.parent, there, redis)
    made = Relay.for_city(
        config, A if source == "a" else B, redis, redis, source, dest, on_written=handover
    )
    made.ensure_group()
    return made


def incident() -> Event:
    data = {"kind": "collision", "severity": 3}
    return Event.new("traffic.incident", source_for("sdot"), data, location=WEST)


def ids(redis: Any, keys: Keys, dept: str) -> list[str]:
    return [m.event_id for m in Inbox(redis, dept, keys).history(1000)]


def test_a_delivery_to_another_group_crosses_through_the_outbox_once(groups, seattle_router):
    config, redis, a, b = groups
    event = incident()
    expected = {d.dept for d in seattle_router.route(event.to_wire() | {"department": "sdot"})}
    assert {"spd-west", "traffic-management"} <= expected
    Producer(redis, "sdot", A).publish(event)
    a.run()
    assert ids(redis, A, "traffic-management") == [event.id]
    outbox = redis.xrange(A.outbox("b"))
    assert [f[b"to"].decode() for _, f in outbox] == [B.inbox("spd-west")]  # b's own key
    figures = group_figures(redis, config, A, config.department_ids)
    assert figures["a"]["outboxes"] == {"b": {"length": 1, "pending": 0}}
    assert figures["b"]["outboxes"] == {"a": {"length": 0, "pending": 0}}

    relay = pull_relay(config, redis, "a", "b")
    assert relay.step(None) == {"relayed": 1}
    assert ids(redis, B, "spd-west") == [event.id]
    assert redis.exists(B.relayed("a", outbox[0][0].decode()))  # the marker in b's slot
    # The same event again (a producer retry) and the relay again: nothing twice.
    Producer(redis, "sdot", A).publish(event)
    a.run()
    assert relay.step(None) == {}
    assert ids(redis, B, "spd-west") == [event.id]
    for dept in expected - {"spd-west"}:
        assert ids(redis, A, dept) == [event.id]
    assert not redis.keys(f"{B.prefix}:inbox:traffic-management")  # nothing misplaced
    assert group_figures(redis, config, A, config.department_ids)["a"]["outboxes"]["b"] == {
        "length": 0,
        "pending": 0,
    }


def test_an_emergency_relayed_into_a_group_is_tracked_and_escalated_there(groups):
    """OEM (group b) gets an emergency routed in group a: its deadline and escalation check
    are under b's prefix, on b's escalation queue, where its acknowledgement is recorded."""
    from jobs.emergency import run_level
    from queues.priority import ESCALATION, make_queue

    config, redis, a, b = groups
    mci = Event.new(
        "health.emergency",
        source_for("ems"),
        {"incident_number": "MCI-5", "kind": "mass_casualty", "patients": 4},
        location=WEST,
    )
    Producer(redis, "ems", A).publish(mci)
    a.run()
    assert redis.hexists(A.emergency(mci.id), "fire|delivered")
    assert not redis.hexists(A.emergency(mci.id), "emergency-management|delivered")
    pull_relay(config, redis, "a", "b").step(None)
    assert ids(redis, B, "emergency-management") == [mci.id]
    assert redis.hget(B.emergency(mci.id), "emergency-management|deadline") is not None
    scheduled = make_queue(redis, B, ESCALATION).scheduled_job_registry.get_job_ids()
    assert len(scheduled) == 1
    inbox = Inbox(redis, "emergency-management", B)
    inbox.ack(inbox.read())
    redis.hset(B.emergency(mci.id), "emergency-management|deadline", 1)  # due now
    outcome = run_level(b.context, redis, mci.id, ["emergency-management"], 1)
    assert outcome == {"emergency-management": "acked"}


def test_a_relay_is_given_the_source_groups_keys_or_refuses():
    config, redis = grouped(), fakeredis.FakeRedis()
    with pytest.raises(PartitionError, match="not those of slot group 'a'"):
        Relay.for_city(config, B, redis, redis, "a", "b")


def test_control_data_is_read_under_the_control_groups_prefix(groups):
    config, redis, a, b = groups
    redis.set(A.grants_version, 7)
    redis.set(B.grants_version, 99)  # never read: b is no control group
    assert b.context.control_keys == A
    _, version, _ = b.context.state(b.context.control_redis(redis))
    assert version == 7


def test_relay_routes_print_each_groups_prefix(tmp_path: Path, capsys):
    from workers import cli

    path = write_city(tmp_path, partitions=GROUPS)
    assert cli.main(["--config", str(path), "relay", "--routes"]) == 0
    routes = json.loads(capsys.readouterr().out)
    assert routes["shards"]["b"] == {
        "prefix": B.prefix,
        "departments": ["spd-west", "emergency-management"],
    }


def test_status_shows_each_groups_ingest_lag_and_the_node_serving_it():
    config, redis = grouped(), fakeredis.FakeRedis()
    Producer(redis, "spd-west", B).publish_many([incident(), incident()])
    reply = {  # redis-py's parsed CLUSTER NODES of a 2+1 cluster
        "127.0.0.1:7000": {
            "node_id": "n1", "flags": "myself,master", "master_id": "-",
            "slots": [["0", "8191"]], "connected": True,
        },
        "127.0.0.1:7001": {
            "node_id": "n2", "flags": "master", "master_id": "-",
            "slots": [["8192", "16383"]], "connected": True,
        },
        "127.0.0.1:7002": {
            "node_id": "n3", "flags": "slave,fail", "master_id": "n2", "slots": [],
            "connected": False,
        },
    }  # fmt: skip
    nodes = nodes_of(reply)
    assert [(n.address, n.role, n.primary, n.slot_count, n.failing) for n in nodes] == [
        ("127.0.0.1:7000", "primary", None, 8192, False),
        ("127.0.0.1:7001", "primary", None, 8192, False),
        ("127.0.0.1:7002", "replica", "127.0.0.1:7001", 0, True),
    ]
    figures = group_figures(redis, config, A, config.department_ids, nodes)
    # Producers have written; no ingest has created its group yet: nothing counted as lag.
    assert figures["b"]["ingest"] == {"lag": 0, "pending": 0}
    redis.xgroup_create(B.ingest("spd-west"), "router", id="0")
    figures = group_figures(redis, config, A, config.department_ids, nodes)
    assert figures["b"]["ingest"] == {"lag": 2, "pending": 0}
    assert figures["a"]["ingest"] == {"lag": 0, "pending": 0}
    assert figures["b"]["departments"] == ["spd-west", "emergency-management"]
    for group in figures.values():
        wanted = "127.0.0.1:7000" if group["slot"] <= 8191 else "127.0.0.1:7001"
        assert group["primary"] == wanted
    lines = render_cluster(
        {
            "nodes": [
                {"address": n.address, "role": n.role, "primary": n.primary,
                 "slots": n.slots, "slot_count": n.slot_count, "failing": n.failing}
                for n in nodes
            ],
            "groups": figures,
        }
    )  # fmt: skip
    assert any(line.startswith("127.0.0.1:7002") and "FAILING" in line for line in lines)
    assert any(line.startswith("b ") and " 2 " in line and "->a 0/0" in line for line in lines)


def test_a_slot_groups_relay_runs_in_its_destination_group(tmp_path: Path, capsys):
    from workers import cli

    path = write_city(tmp_path, partitions=GROUPS)
    base = ["--config", str(path)]
    assert cli.main(["--prefix", B.prefix, *base, "relay", "--to", "a"]) == 2
    assert "runs in its destination group" in capsys.readouterr().err
    assert cli.main(["--prefix", "{seattle}", *base, "relay"]) == 2
    assert "no slot group of the city" in capsys.readouterr().err


def test_the_relay_of_a_city_with_one_slot_group_says_so_and_idles_until_sigterm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One Procfile for every city: with no other group to relay from, `cityrelay relay` must
    not exit (a Procfile runner would stop the whole city with it) nor wait in silence."""
    from workers import cli

    path = write_city(tmp_path, partitions={"default": "a", "shards": {"a": {"prefix": "{solo}"}}})
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing to connect to
    originals = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    received: list[int] = []

    def ours(signum: int, frame: object) -> None:  # until the relay installs its own
        received.append(signum)

    signal.signal(signal.SIGTERM, ours)
    returned, sent = threading.Event(), []

    def terminate_once_listening() -> None:
        while signal.getsignal(signal.SIGTERM) is ours and not returned.wait(0.01):
            pass
        if not returned.is_set():
            time.sleep(0.3)  # long enough for a relay that would exit by itself to do so
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGTERM)

    terminator = threading.Thread(target=terminate_once_listening)
    terminator.start()
    try:
        assert cli.main(["--prefix", "{solo}", "--config", str(path), "relay"]) == 0
        ended = time.monotonic()
    finally:
        returned.set()
        terminator.join()
        for signum, handler in originals.items():
            signal.signal(signum, handler)
    assert sent and ended >= sent[0] and not received  # it ran until SIGTERM, which it handled
    assert "relay: no other shard than a; nothing to relay" in capsys.readouterr().err
