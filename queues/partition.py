"""Partitions: department streams on several Redis instances, joined by outboxes and relays.

A partitioned city (``partitions:`` in the city config) gives each department a home shard. An
event is routed on its producer's home shard (the routing shard). A delivery to a department at
home there is an ordinary inbox append; a delivery (or a derived event) bound for a department
at home on shard B is appended, inside the same atomic delivery script, to the outbox stream
``{p}:outbox:{B}`` (``{p}:outbox:{B}:emergency`` for emergencies) on the routing shard, with
the destination key in field ``to`` and the inbox entry's own fields after it (a transactional
outbox: no second Redis takes part in the delivery, so none can lose half of it).

`queues/relay.py` `Relay` moves the outboxes for B to B, losing and doubling nothing.

On Redis Cluster a shard may instead be a *slot group* (``prefix: "{seattle-a}"`` in the shard's
config): all its keys under that hash tag, so each of its multi-key calls stays in one slot, and
every shard on the one cluster the processes' ``REDIS_URL`` names. A process serves the group
its key prefix names (`local_shard`); the outbox on A is ``{a}:outbox:b`` naming the key under
B's prefix (``{b}:inbox:ems``), and the relay writes it with its marker in B's slot. The relay
of a slot-group city runs among B's processes and pulls from every other group (`cityrelay
relay`), because what it schedules on B (escalation checks) goes into B's RQ keys, and RQ has
one key prefix per process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from redis import Redis

from city.config import CityConfig, ConfigError, PartitionsConfig
from queues.inbox import Output
from queues.keys import Keys, default_prefix

SHARD_ENV = "CITYRELAY_SHARD"
TO = "to"  # outbox field naming the destination key on the destination shard


class PartitionError(ConfigError):
    """A process of a partitioned city does not know (or misnames) the shard it serves, or a
    relay is asked for something the `partitions:` section does not allow. A config error, so
    the CLI reports it in one line (exit 2)."""

    def __init__(self, message: str):
        super().__init__("partitions", [("", message)])
        self.message = message


def local_shard(
    config: CityConfig, environ: Mapping[str, str] | None = None, prefix: str | None = None
) -> str | None:
    """The shard this process serves; None for an unpartitioned city. For URL shards it is
    ``CITYRELAY_SHARD``; for slot groups the group whose ``prefix:`` is the process's key
    prefix (`prefix`, default ``CITYRELAY_PREFIX``), which ``CITYRELAY_SHARD``, when set, must
    name too.

    A partitioned city refuses to guess: a worker that took itself for the wrong shard would
    append deliveries to inboxes nobody reads."""
    return shard_of(config.partitions, environ, prefix)


def shard_of(
    parts: PartitionsConfig | None,
    environ: Mapping[str, str] | None = None,
    prefix: str | None = None,
) -> str | None:
    """`local_shard` from the ``partitions:`` section alone (the archive job reads no more of
    the city config than its schedule and this)."""
    if parts is None:
        return None
    name = (environ if environ is not None else os.environ).get(SHARD_ENV, "")
    if parts.slot_groups:
        return _group_of(parts, default_prefix() if prefix is None else prefix, name)
    if not name:
        raise PartitionError(
            f"the city is partitioned: set {SHARD_ENV} to the shard this process serves "
            f"(one of {', '.join(parts.shards)})"
        )
    if name not in parts.shards:
        raise PartitionError(f"{SHARD_ENV}={name!r}: no such shard ({', '.join(parts.shards)})")
    return name


def _group_of(parts: PartitionsConfig, prefix: str, named: str) -> str:
    groups = {spec.prefix: name for name, spec in parts.shards.items()}
    found = groups.get(prefix)
    if found is None:
        listed = ", ".join(f"{p} ({n})" for p, n in groups.items())
        raise PartitionError(
            f"prefix {prefix!r} is no slot group of the city: set CITYRELAY_PREFIX to the "
            f"group this process serves (one of {listed})"
        )
    if named and named != found:
        raise PartitionError(f"{SHARD_ENV}={named!r} but prefix {prefix!r} is shard {found!r}")
    return found


def group_keys(parts: PartitionsConfig | None) -> dict[str, Keys]:
    """Each slot group's keys, by shard name; empty for URL shards (one prefix for all)."""
    if parts is None or not parts.slot_groups:
        return {}
    return {name: Keys(str(spec.prefix)) for name, spec in parts.shards.items()}


def shard_url(parts: PartitionsConfig, shard: str, environ: Mapping[str, str] | None = None) -> str:
    """A shard's Redis URL: its ``url:``, or the environment variable its ``url_env:`` names."""
    spec = parts.shards[shard]
    if spec.prefix is not None:
        raise PartitionError(f"shard {shard!r} is a slot group ({spec.prefix}): it has no URL")
    if spec.url is not None:
        return spec.url
    env = environ if environ is not None else os.environ
    value = env.get(spec.url_env or "", "")
    if not value:
        raise PartitionError(f"shard {shard!r}: environment variable {spec.url_env} is not set")
    return value


def home_departments(
    config: CityConfig, environ: Mapping[str, str] | None = None, prefix: str | None = None
) -> list[str]:
    """The departments whose ingest streams this process reads: all of them in an
    unpartitioned city, those at home on `local_shard` in a partitioned one."""
    shard = local_shard(config, environ, prefix)
    if shard is None or config.partitions is None:
        return config.department_ids
    return config.partitions.departments_on(shard, config.department_ids)


def home_writers(
    config: CityConfig,
    keys: Keys,
    redis: Redis,
    connect: Callable[[str], Redis],
    environ: Mapping[str, str] | None = None,
) -> dict[str, tuple[Redis, Keys]]:
    """Per department, the Redis and keys a producer process of the city (the MQTT bridge)
    writes its events under, so that its home's ingest reads them: `redis` and `keys` in an
    unpartitioned city; for slot groups the same cluster client under the home group's prefix;
    for URL shards the home shard's Redis (`connect(url)`, one client per shard, `redis` for
    this process's own). Raises `PartitionError` as `local_shard` does for a process that does
    not say which shard it serves (its dead letters and counters go there)."""
    parts = config.partitions
    ids = config.department_ids
    local = local_shard(config, environ, keys.prefix)
    if parts is None or local is None:
        return {dept: (redis, keys) for dept in ids}
    groups = group_keys(parts)
    if groups:
        return {dept: (redis, groups[parts.home(dept)]) for dept in ids}
    clients: dict[str, Redis] = {local: redis}
    for shard in {parts.home(dept) for dept in ids} - {local}:
        clients[shard] = connect(shard_url(parts, shard, environ))
    return {dept: (clients[parts.home(dept)], keys) for dept in ids}


@dataclass(frozen=True)
class Placement:
    """Where the routing shard writes an output bound for a department: the department's key
    when it is at home here (or the city is not partitioned), else the outbox of its shard."""

    keys: Keys
    partitions: PartitionsConfig | None = None
    local: str | None = None
    # A shard's keys when they differ from `keys`: the slot groups of one Redis Cluster each
    # have their own hash-tagged prefix, so `to` must name the key under the destination's.
    shard_keys: Mapping[str, Keys] = field(default_factory=dict)
    _homes: dict[str, str] = field(init=False, default_factory=dict)  # listed departments

    def __post_init__(self) -> None:
        if self.partitions is not None:
            for name, shard in self.partitions.shards.items():
                self._homes.update(dict.fromkeys(shard.departments, name))

    @classmethod
    def for_city(
        cls, config: CityConfig, keys: Keys, environ: Mapping[str, str] | None = None
    ) -> Placement:
        parts = config.partitions
        local = local_shard(config, environ, keys.prefix)
        return cls(keys, parts, local, shard_keys=group_keys(parts))

    def remote_home(self, dept: str) -> str | None:
        """The department's shard when that is not this one."""
        if self.partitions is None:
            return None
        home = self._homes.get(dept, self.partitions.default)  # one dict lookup per delivery
        return None if home == self.local else home

    def output(
        self, dept: str, key: str, fields: list[tuple[str, str | bytes]], lane: str = "routine"
    ) -> Output:
        """`key` is the department's own key (inbox, ingest stream) on its home shard; `lane`
        is ``emergency`` for emergencies (their own outbox, relayed first)."""
        home = self.remote_home(dept)
        if home is None:
            return Output(key, fields)
        there = self.shard_keys.get(home)
        if there is not None:  # the same key under the destination group's prefix
            key = there.prefix + key[len(self.keys.prefix) :]
        return Output(self.keys.outbox(home, lane), [(TO, key), *fields])
