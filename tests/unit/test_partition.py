"""Partitions: two Redis instances (two fakeredis servers), outboxes and the relay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fakeredis
import pytest
import yaml
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from city.config import CityConfig, ConfigError, parse_city
from city.events import Event, source_for
from city.routing import Router
from jobs.context import RouteContext
from jobs.route import deliver_items
from queues.inbox import Inbox
from queues.keys import Keys
from queues.partition import SHARD_ENV, PartitionError, Placement, home_departments
from queues.priority import make_queue
from queues.relay import Relay, outbox_backlog
from queues.streams import Producer
from tests.conftest import SEATTLE
from tests.pipeline_harness import Harness
from workers.ingest import IngestWorker
from workers.relay import EmergencyHandover

WEST = {"lat": 47.6205, "lon": -122.3493}  # Seattle Center: West precinct
# Shard b holds the West precinct and the Office of Emergency Management; the rest is on a.
PARTITIONS = {
    "default": "a",
    "shards": {
        "a": {"url_env": "SHARD_A_URL"},
        "b": {
            "url": "redis://b.invalid:6379/0",
            "departments": ["spd-west", "emergency-management"],
        },
    },
}


def city_doc(partitions: Any = PARTITIONS) -> dict[str, Any]:
    doc = yaml.safe_load(SEATTLE.read_text())
    if partitions is not None:
        doc["partitions"] = partitions
    return doc


def partitioned(partitions: Any = PARTITIONS) -> CityConfig:
    return parse_city(city_doc(partitions), SEATTLE)


def problems(partitions: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        partitioned(partitions)
    return str(caught.value)


# -- config ------------------------------------------------------------------------------------
def test_homes_follow_the_shard_lists_and_everyone_else_lives_on_the_default():
    parts = partitioned().partitions
    assert parts is not None
    assert parts.home("spd-west") == "b" and parts.home("emergency-management") == "b"
    assert parts.home("sdot") == "a" and parts.home("ems") == "a"
    assert parts.control_shard == "a"
    config = partitioned()
    on_b = parts.departments_on("b", config.department_ids)
    assert sorted(on_b) == ["emergency-management", "spd-west"]
    assert len(parts.departments_on("a", config.department_ids)) == len(config.departments) - 2


def test_a_city_without_partitions_is_unchanged(keys):
    config = parse_city(city_doc(None), SEATTLE)
    assert config.partitions is None
    assert home_departments(config, {}) == config.department_ids
    placement = Placement.for_city(config, keys, {})
    out = placement.output("spd-west", keys.inbox("spd-west"), [("e", "{}")])
    assert out.key == keys.inbox("spd-west") and out.fields == [("e", "{}")]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"default": "c"}, "partitions.default: no shard named 'c' in shards:"),
        ({"control": "z"}, "partitions.control: no shard named 'z' in shards:"),
        (
            {"shards": {"a": {"url": "redis://x", "url_env": "X"}}},
            "partitions.shards.a: give exactly one of `url:`, `url_env:` or `prefix:`",
        ),
        (
            {"shards": {"a": {}}},
            "partitions.shards.a: give exactly one of `url:`, `url_env:` or `prefix:`",
        ),
        (
            {"shards": {"a": {"url": "redis://x", "departments": ["nobody"]}}},
            "partitions.shards.a.departments[0]: no department 'nobody'",
        ),
        (
            {
                "shards": {
                    "a": {"url": "redis://x", "departments": ["sdot"]},
                    "b": {"url": "redis://y", "departments": ["sdot"]},
                }
            },
            "partitions.shards.b.departments[0]: 'sdot' is already at home on 'a'",
        ),
        ({"shards": {"A!": {"url": "redis://x"}}, "default": "A!"}, "partitions.shards.A!: shard"),
        ({"shards": {}}, "partitions.shards: Dictionary should have at least 1 item"),
        ({"relay_batch": 0}, "partitions.relay_batch:"),
        ({"shards": {"a": {"url_env": "not a name"}}}, "partitions.shards.a.url_env:"),
    ],
)
def test_config_errors_name_the_place_and_the_problem(change, expected):
    assert expected in problems({**PARTITIONS, **change})


def test_a_process_of_a_partitioned_city_must_be_told_its_shard(keys):
    config = partitioned()
    with pytest.raises(PartitionError, match=SHARD_ENV):
        home_departments(config, {})
    with pytest.raises(PartitionError, match="no such shard"):
        home_departments(config, {SHARD_ENV: "q"})
    assert sorted(home_departments(config, {SHARD_ENV: "b"})) == [
        "emergency-management",
        "spd-west",
    ]


# -- two shards ----------------------------------------------------------------------------------
class Shard:
    """One shard: its Redis and the same ingest + RQ worker code the processes run."""

    def __init__(
        self,
        name: str,
        redis: Redis,
        control: Redis,
        keys: Keys,
        config: CityConfig,
        router: Router,
    ):
        self.name = name
        self.redis = redis
        self.harness = Harness(redis, keys, config, SEATTLE.parent, router)
        self.harness.context = RouteContext(
            config=config, router=router, keys=keys, shard=name, control=control
        )
        self.harness.ingest = IngestWorker(redis, keys, config, consumer=f"ingest-{name}")

    def inbox(self, dept: str, keys: Keys) -> list[dict[str, Any]]:
        return [m.event for m in Inbox(self.redis, dept, keys).history(1000)]


@pytest.fixture
def city(keys, monkeypatch, seattle_router):
    config = partitioned()
    router = Router.from_config(config, SEATTLE.parent)
    ra = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    rb = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    monkeypatch.setenv(SHARD_ENV, "a")
    a = Shard("a", ra, ra, keys, config, router)
    monkeypatch.setenv(SHARD_ENV, "b")
    b = Shard("b", rb, ra, keys, config, router)
    monkeypatch.delenv(SHARD_ENV)
    return config, a, b


def relay(config: CityConfig, keys: Keys, source: Shard, dest: Shard, **options: Any) -> Relay:
    """The relay as `cityrelay relay` builds it (with the emergency handover)."""
    options.setdefault(
        "on_written", EmergencyHandover.for_city(config, SEATTLE.parent, keys, dest.redis)
    )
    made = Relay.for_city(config, keys, source.redis, dest.redis, source.name, dest.name, **options)
    made.ensure_group()
    return made


def kill_before_ack(patch: pytest.MonkeyPatch, source: Redis) -> None:
    """The source shard's MULTI (XACK + XDEL) never runs: the relay process died before it."""
    real = source.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real(*args, **kwargs)

        def die(*_: Any, **__: Any) -> None:
            raise RedisConnectionError("killed before XACK")

        pipe.execute = die  # type: ignore[method-assign]
        return pipe

    patch.setattr(source, "pipeline", pipeline)


def drain(made: Relay) -> dict[str, int]:
    total: dict[str, int] = {}
    while step := made.step(None):
        for name, value in step.items():
            total[name] = total.get(name, 0) + value
    return total


def incident() -> Event:
    return Event.new(
        "traffic.incident", source_for("sdot"), {"kind": "collision", "severity": 3}, location=WEST
    )


def test_each_shards_ingest_reads_only_the_streams_of_its_own_departments(city, keys):
    _, a, b = city
    streams_b = {
        s.decode() if isinstance(s, bytes) else s for s in b.harness.ingest.streams.streams
    }
    assert keys.ingest("spd-west") in streams_b and keys.ingest("sdot") not in streams_b
    streams_a = {
        s.decode() if isinstance(s, bytes) else s for s in a.harness.ingest.streams.streams
    }
    assert keys.ingest("sdot") in streams_a and keys.ingest("spd-west") not in streams_a


def test_an_event_reaches_inboxes_on_both_shards_exactly_once(city, keys, seattle_router):
    config, a, b = city
    event = incident()
    Producer(a.redis, "sdot", keys).publish(event)
    a.harness.run()
    expected = {d.dept for d in seattle_router.route(event.to_wire())}
    assert "spd-west" in expected and "traffic-management" in expected
    # Local recipients are delivered on a; spd-west's view waits in a's outbox for b.
    assert [e["id"] for e in a.inbox("traffic-management", keys)] == [event.id]
    assert a.inbox("spd-west", keys) == [] and b.inbox("spd-west", keys) == []
    outbox = a.redis.xrange(keys.outbox("b"))
    assert [f[b"to"].decode() for _, f in outbox] == [keys.inbox("spd-west")]
    forward = relay(config, keys, a, b)
    assert drain(forward) == {"relayed": 1}
    assert [e["id"] for e in b.inbox("spd-west", keys)] == [event.id]
    # Run everything again, relay again: nothing is delivered twice.
    Producer(a.redis, "sdot", keys).publish(event)
    a.harness.run()
    assert drain(forward) == {}
    assert [e["id"] for e in b.inbox("spd-west", keys)] == [event.id]
    for dept in expected - {"spd-west"}:
        assert [e["id"] for e in a.inbox(dept, keys)] == [event.id]
    assert a.redis.xlen(keys.outbox("b")) == 0  # acknowledged entries are deleted
    assert forward.backlog() == {"length": 0, "pending": 0}


def test_relayed_entries_are_what_a_local_delivery_writes(city, keys, seattle, seattle_router):
    """Same view, same `via`, same ingest id and priority as in an unpartitioned city."""
    config, a, b = city
    event = incident()
    Producer(a.redis, "sdot", keys).publish(event)
    a.harness.ingest_all()
    items = make_queue(a.redis, keys, "high").jobs[0].args[0]
    deliver_items(a.harness.context, a.redis, items)
    drain(relay(config, keys, a, b))
    single = fakeredis.FakeRedis()
    plain, _ = seattle
    deliver_items(RouteContext(config=plain, router=seattle_router, keys=keys), single, items)
    ((_, relayed),) = b.redis.xrange(keys.inbox("spd-west"))
    ((_, local),) = single.xrange(keys.inbox("spd-west"))
    assert relayed == local
    assert list(relayed) == [b"e", b"via", b"ing", b"pri"]


def test_relay_killed_between_write_and_ack_delivers_nothing_twice(city, keys, monkeypatch):
    config, a, b = city
    events = [incident() for _ in range(7)]
    Producer(a.redis, "sdot", keys).publish_many(events)
    a.harness.run()
    doomed = relay(config, keys, a, b, consumer="relay-1", batch=4)

    with monkeypatch.context() as patch:
        kill_before_ack(patch, a.redis)
        with pytest.raises(RedisConnectionError):
            doomed.step(None)  # four entries written into b, not acknowledged on a
    assert len(b.inbox("spd-west", keys)) == 4
    # The same consumer restarted reads its own pending batch first: absorbed by the markers.
    restarted = relay(config, keys, a, b, consumer="relay-1", batch=4)
    assert restarted.step(None) == {"redelivered": 4}
    assert drain(restarted) == {"relayed": 3}
    assert sorted(e["id"] for e in b.inbox("spd-west", keys)) == sorted(e.id for e in events)
    assert drain(restarted) == {}


def test_a_dead_relays_batch_is_claimed_by_another_relay(city, keys, monkeypatch):
    config, a, b = city
    events = [incident() for _ in range(3)]
    Producer(a.redis, "sdot", keys).publish_many(events)
    a.harness.run()
    doomed = relay(config, keys, a, b, consumer="relay-dead")
    assert len(doomed.read(None)) == 3  # read, then the process died before writing anything
    other = relay(config, keys, a, b, consumer="relay-2", claim_idle_ms=0)
    assert other.step(None) == {}  # nothing new for it...
    assert other.relay(other.reclaim()) == {"relayed": 3}  # ...until it claims the dead batch
    assert sorted(e["id"] for e in b.inbox("spd-west", keys)) == sorted(e.id for e in events)
    assert other.backlog() == {"length": 0, "pending": 0}


def test_an_entry_for_a_key_not_on_the_destination_is_dead_lettered(city, keys):
    config, a, b = city
    a.redis.xadd(keys.outbox("b"), {"to": keys.inbox("sdot"), "e": "{}"})  # sdot lives on a
    a.redis.xadd(keys.outbox("b"), {"e": "{}"})  # no destination at all
    forward = relay(config, keys, a, b)
    assert forward.step(None) == {"dead_lettered": 2}
    letters = a.redis.xrange(keys.deadletter)
    assert [f[b"reason"] for _, f in letters] == [b"relay_bad_destination"] * 2
    assert b.redis.xlen(keys.inbox("sdot")) == 0
    assert forward.backlog() == {"length": 0, "pending": 0}


def test_relay_applies_a_length_cap_per_destination_key(city, keys):
    config, a, b = city
    for n in range(300):
        a.redis.xadd(keys.outbox("b"), {"to": keys.inbox("spd-west"), "e": f'{{"n":{n}}}'})
    forward = relay(config, keys, a, b, maxlen={keys.inbox("spd-west"): 100})
    assert drain(forward) == {"relayed": 300}
    assert 100 <= b.redis.xlen(keys.inbox("spd-west")) < 300


def test_derived_events_and_replies_cross_shards_both_ways(city, keys):
    """ems (on a) reports a mass casualty; OEM (on b) issues dispatch and escort requests; the
    dispatch goes to transit (on a), the escort to the West precinct (on b)."""
    config, a, b = city
    mci = Event.new(
        "health.emergency",
        source_for("ems"),
        {"incident_number": "MCI-9", "kind": "mass_casualty", "patients": 12},
        location=WEST,
    )
    forward, back = relay(config, keys, a, b), relay(config, keys, b, a)
    for _ in range(2):  # everything twice: nothing is delivered twice
        Producer(a.redis, "ems", keys).publish(mci)
        for _ in range(2):
            a.harness.run()
            drain(forward)
            b.harness.run()  # the derived events are ingested and routed on OEM's shard
            drain(back)
        assert [e["id"] for e in b.inbox("emergency-management", keys)] == [mci.id]
        assert [e["type"] for e in a.inbox("transit", keys)] == ["transport.dispatch"]
        assert [e["type"] for e in b.inbox("spd-west", keys)] == ["police.escort"]
        assert b.redis.xlen(keys.ingest("emergency-management", "emergency")) == 2
        assert a.redis.xlen(keys.ingest("emergency-management", "emergency")) == 0


def test_a_worker_on_another_shard_reads_grants_from_the_control_shard(city, keys):
    config, a, b = city
    a.redis.set(keys.grants_version, 7)
    b.redis.set(keys.grants_version, 99)  # stale data on b is never read
    _, version, _ = b.harness.context.state(b.harness.context.control_redis(b.redis))
    assert version == 7
    assert a.harness.context.control_redis(a.redis) is a.redis


def test_relay_refuses_what_makes_no_sense(keys):
    config = partitioned()
    r = fakeredis.FakeRedis()
    with pytest.raises(PartitionError, match="different shards"):
        Relay.for_city(config, keys, r, r, "a", "a")
    with pytest.raises(PartitionError, match="no shard named"):
        Relay.for_city(config, keys, r, r, "a", "zz")
    with pytest.raises(PartitionError, match="no partitions"):
        Relay.for_city(parse_city(city_doc(None), SEATTLE), keys, r, r, "a", "b")


def test_shard_urls_come_from_the_config_or_the_environment():
    from queues.partition import shard_url

    parts = partitioned().partitions
    assert parts is not None
    assert shard_url(parts, "b") == "redis://b.invalid:6379/0"
    assert shard_url(parts, "a", {"SHARD_A_URL": "redis://a:1/2"}) == "redis://a:1/2"
    with pytest.raises(PartitionError, match="SHARD_A_URL"):
        shard_url(parts, "a", {})


def test_config_file_round_trip(tmp_path: Path):
    """The section as an operator writes it, through load_city (layers resolve beside it)."""
    from city.config import load_city

    doc = city_doc()
    for layer in doc["layers"].values():
        layer["path"] = str(SEATTLE.parent / layer["path"])
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(doc))
    config, _ = load_city(path)
    assert config.partitions is not None and config.partitions.home("spd-west") == "b"


def test_cli_prints_each_departments_home_shard(tmp_path: Path, capsys):
    import json

    from workers import cli

    doc = city_doc()
    for layer in doc["layers"].values():
        layer["path"] = str(SEATTLE.parent / layer["path"])
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert cli.main(["--config", str(path), "relay", "--routes"]) == 0
    routes = json.loads(capsys.readouterr().out)
    assert routes["default"] == "a" and routes["control"] == "a"
    assert routes["shards"]["b"] == {
        "redis": "redis://b.invalid:6379/0",
        "departments": ["spd-west", "emergency-management"],
    }
    assert routes["shards"]["a"]["redis"] == "$SHARD_A_URL"
    assert "sdot" in routes["shards"]["a"]["departments"]
    assert cli.main(["--config", str(SEATTLE), "relay", "--routes"]) == 2  # not partitioned
    assert "nothing to relay" in capsys.readouterr().err


def test_the_relay_loop_waits_out_a_refusing_destination_and_a_deleted_outbox(city, keys):
    """B out of memory (a script error), then the outbox key deleted under the relay (its
    group gone): the loop keeps the entries and carries on; nothing lost, nothing twice."""
    from redis.exceptions import ResponseError

    from workers.relay import run_relay

    config, a, b = city
    forward = relay(config, keys, a, b, claim_idle_ms=0)
    a.redis.xadd(keys.outbox("b"), {"to": keys.inbox("spd-west"), "e": '{"n":1}'})
    script = forward._script
    refusals = {"left": 2}

    def refusing(**kwargs: Any) -> Any:
        if refusals["left"]:
            refusals["left"] -= 1
            raise ResponseError("OOM command not allowed when used memory > 'maxmemory'.")
        return script(**kwargs)

    forward._script = refusing  # type: ignore[method-assign]
    calls = {"n": 0, "deleted": 0}

    def done() -> bool:
        calls["n"] += 1
        if b.redis.xlen(keys.inbox("spd-west")) == 1 and not calls["deleted"]:
            calls["deleted"] = 1
            a.redis.delete(keys.outbox("b"))  # the group goes with the key
            a.redis.xadd(keys.outbox("b"), {"to": keys.inbox("spd-west"), "e": '{"n":2}'})
        return b.redis.xlen(keys.inbox("spd-west")) == 2 or calls["n"] > 40

    totals = run_relay(forward, done, idle_block_ms=1)
    assert refusals["left"] == 0 and totals == {"relayed": 2}
    assert [e["n"] for e in b.inbox("spd-west", keys)] == [1, 2]


def test_an_entry_deleted_while_pending_is_acknowledged(city, keys):
    config, a, b = city
    entry = a.redis.xadd(keys.outbox("b"), {"to": keys.inbox("spd-west"), "e": "{}"})
    doomed = relay(config, keys, a, b, consumer="relay-1")
    assert len(doomed.read(None)) == 1
    a.redis.xdel(keys.outbox("b"), entry)  # an operator's hand
    restarted = relay(config, keys, a, b, consumer="relay-1")
    assert restarted.step(None) == {}
    assert restarted.backlog() == {"length": 0, "pending": 0}


def test_cli_says_which_shard_setting_is_missing(tmp_path: Path, capsys, monkeypatch):
    from workers import cli

    monkeypatch.delenv(SHARD_ENV, raising=False)
    doc = city_doc()
    for layer in doc["layers"].values():
        layer["path"] = str(SEATTLE.parent / layer["path"])
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert cli.main(["--config", str(path), "relay", "--to", "b"]) == 2
    assert f"set {SHARD_ENV}" in capsys.readouterr().err
    # Every process of a partitioned city: ingest and workers say the same, in one line.
    assert cli.main(["--config", str(path), "ingest"]) == 2
    assert f"config error:\npartitions: <top>: the city is partitioned: set {SHARD_ENV}" in (
        capsys.readouterr().err
    )


def test_an_emergency_for_another_shard_overtakes_a_routine_backlog(city, keys):
    config, a, b = city
    for _ in range(120):
        Producer(a.redis, "sdot", keys).publish(incident())
    a.harness.run()
    mci = Event.new(
        "health.emergency",
        source_for("ems"),
        {"incident_number": "MCI-1", "kind": "mass_casualty", "patients": 3},
        location=WEST,
    )
    Producer(a.redis, "ems", keys).publish(mci)
    a.harness.run()
    lane = [f for _, f in a.redis.xrange(keys.outbox("b", "emergency"))]
    # The emergency itself for OEM, and the two requests OEM's rule issues (ingest on b).
    assert sorted(f[b"to"].decode() for f in lane) == sorted(
        [keys.inbox("emergency-management")]
        + [keys.ingest("emergency-management", "emergency")] * 2
    )
    forward = relay(config, keys, a, b, batch=50)
    first = forward.read(None)
    assert [s for s, _, _ in first[:3]] == [keys.outbox("b", "emergency")] * 3
    assert len(first) == 53  # and one batch of the 120 routine entries behind them
    assert forward.relay(first) == {"relayed": 53}
    assert [e["id"] for e in b.inbox("emergency-management", keys)] == [mci.id]
    assert drain(forward) == {"relayed": 70}
    assert forward.backlog() == {"length": 0, "pending": 0}


def test_an_emergency_is_tracked_and_acknowledged_on_the_recipients_own_shard(
    city, keys, monkeypatch
):
    """OEM (on b) gets an emergency routed on a: its deadline and escalation checks live on b,
    where its acknowledgement is recorded; a's tracking covers a's recipients only."""
    from queues.priority import ESCALATION

    config, a, b = city
    mci = Event.new(
        "health.emergency",
        source_for("ems"),
        {"incident_number": "MCI-5", "kind": "mass_casualty", "patients": 4},
        location=WEST,
    )
    Producer(a.redis, "ems", keys).publish(mci)
    a.harness.run()
    tracking = keys.emergency(mci.id)
    assert a.redis.hexists(tracking, "fire|delivered")
    assert not a.redis.hexists(tracking, "emergency-management|delivered")
    # A relay killed after writing into b and tracking there, before acknowledging on a...
    doomed = relay(config, keys, a, b, consumer="relay-1")
    with monkeypatch.context() as patch:
        kill_before_ack(patch, a.redis)
        with pytest.raises(RedisConnectionError):
            doomed.step(None)
    deadline = b.redis.hget(tracking, "emergency-management|deadline")
    assert deadline is not None
    # ...and restarted: the redelivery neither writes twice nor moves the deadline.
    assert relay(config, keys, a, b, consumer="relay-1").step(None) == {"redelivered": 3}
    assert b.redis.hget(tracking, "emergency-management|deadline") == deadline
    assert [e["id"] for e in b.inbox("emergency-management", keys)] == [mci.id]
    scheduled = make_queue(b.redis, keys, ESCALATION).scheduled_job_registry.get_job_ids()
    assert len(scheduled) == 1
    on_a = make_queue(a.redis, keys, ESCALATION)
    assert all(
        "emergency-management" not in on_a.fetch_job(job_id).args[1]
        for job_id in on_a.scheduled_job_registry.get_job_ids()
    )
    inbox = Inbox(b.redis, "emergency-management", keys)
    inbox.ack(inbox.read())
    assert b.redis.get(keys.ack("emergency-management", mci.id)) is not None
    # The escalation check on b (as b's escalation worker runs it when due) sees the ack.
    from jobs.emergency import run_level

    b.redis.hset(tracking, "emergency-management|deadline", 1)  # due now
    outcome = run_level(b.harness.context, b.redis, mci.id, ["emergency-management"], 1)
    assert outcome == {"emergency-management": "acked"}  # no reminder, no escalation


def test_a_slot_group_destination_is_named_under_its_own_prefix():
    # Shards as slot groups of one cluster: each has its own hash-tagged prefix.
    on_a, on_b = Keys("{c-a}"), Keys("{c-b}")
    placement = Placement(on_a, partitioned().partitions, "a", shard_keys={"b": on_b})
    out = placement.output("spd-west", on_a.inbox("spd-west"), [("e", "{}")], "emergency")
    assert out.key == on_a.outbox("b", "emergency")
    assert out.fields == [("to", on_b.inbox("spd-west")), ("e", "{}")]


# The thread's exception is the one injected below; pytest would report it as unhandled.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_relay_thread_dead_of_an_error_stops_the_command_with_exit_1(
    tmp_path: Path, capsys, monkeypatch
):
    """A relay loop rides out connection losses and refusals; anything else ends its thread.
    The command must not go on looking alive with one destination unserved."""
    from workers import cli
    from workers.cli import relay as relay_cli

    calls: list[str] = []

    def run_relay(made: Relay, stop: Any, block_ms: int) -> None:
        calls.append(made.dest_shard)
        raise RuntimeError("a bug in the loop")

    monkeypatch.setattr(relay_cli, "run_relay", run_relay)
    monkeypatch.setenv(SHARD_ENV, "b")
    doc = city_doc()
    for layer in doc["layers"].values():
        layer["path"] = str(SEATTLE.parent / layer["path"])
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("SHARD_A_URL", "redis://a.invalid:6379/0")  # never connected to
    assert (
        cli.main(["--redis-url", "redis://b.invalid:6379/0", "--config", str(path), "relay"]) == 1
    )
    assert calls == ["a"]
    assert "a relay thread stopped on an error" in capsys.readouterr().err


def test_outbox_backlog_counts_what_waits_and_reports_an_outbox_it_cannot_read() -> None:
    """`cityrelay status` and the relay's backlog: 0 for an outbox nothing wrote yet, the entries
    waiting otherwise, and an error (not 0) for an outbox key it cannot read."""
    redis = fakeredis.FakeRedis()
    keys = Keys("backlog")
    assert outbox_backlog(redis, keys, "b") == {"length": 0, "pending": 0}
    redis.xadd(keys.outbox("b", "routine"), {"e": "{}"})
    redis.xadd(keys.outbox("b", "emergency"), {"e": "{}"})
    assert outbox_backlog(redis, keys, "b") == {"length": 2, "pending": 0}
    redis.delete(keys.outbox("b", "routine"))
    redis.set(keys.outbox("b", "routine"), "not a stream")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        outbox_backlog(redis, keys, "b")
