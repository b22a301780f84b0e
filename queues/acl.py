"""Redis ACL users derived from the city config, so isolation does not rest on our code.

Each department gets a user (``{p}.dept.{id}``) that may only XADD to its own ingest streams
and read/acknowledge its own inbox: a bug in a department client, or in cityrelay, cannot make
Redis hand one department another's inbox (NOPERM). Redis 7 selectors keep the two grants
apart, so the department cannot XADD into its inbox nor read its ingest stream.

Workers get one user per role with the key patterns that role touches and the command
categories RQ and our code use, never admin or dangerous commands (except the few RQ needs:
INFO for the server version, CLIENT SETNAME/INFO to register a worker).

Passwords are never stored in Redis in clear: the rules carry their SHA-256 (``#hex``).

On Redis Cluster (a `Scope` with ``cluster=True``) RQ's keys and channels are
``{name}:rq:*`` (workers/runtime.py), every user may ask for the slot map (CLUSTER SLOTS /
SHARDS, COMMAND: what a cluster client sends before anything else), and a city of several slot
groups gets users per group (`city_scopes`): a group's workers and departments touch that
group's keys, plus what crosses groups (control data under the control group's prefix, the
other groups' outboxes for this group, which this group's relay pulls). A cluster does not
share ACL users between its nodes: `apply` sets them on every node.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from redis import Redis
from redis.cluster import RedisCluster

from city.config import CityConfig
from queues.cluster_status import nodes_of
from queues.keys import Keys
from queues.partition import group_keys

_CONNECTION = ["+ping", "+client|setname"]
# What a cluster client (redis-py's RedisCluster) sends before any command of ours: the slot
# map, and COMMAND (and COMMAND GETKEYS) to find the keys of each command it routes.
CLUSTER_CLIENT = ["+cluster|slots", "+cluster|shards", "+command"]

DEPT_INBOX_COMMANDS = [
    "+xreadgroup",
    "+xack",
    "+xpending",
    "+xclaim",
    "+xautoclaim",
    "+xlen",
    "+xinfo|stream",
    "+xinfo|groups",
    "+xgroup|create",
    "+xgroup|createconsumer",
    "+xrange",  # Inbox.ack by entry id looks the entry up (emergency acknowledgement)
]

WORKER_COMMANDS = [
    "-@all",
    "+@read",
    "+@write",
    "+@stream",
    "+@hash",
    "+@set",
    "+@sortedset",
    "+@list",
    "+@string",
    "+@keyspace",
    "+@transaction",
    "+@pubsub",
    "+@connection",
    "+@scripting",
    "+time",  # the delivery and escalation scripts read the Redis clock (in no category above)
    "-@dangerous",
    "-@admin",
    "-function",
    "-script|flush",
    "-script|kill",
    "+info",
    "+client|setname",
    "+client|info",
]


@dataclass(frozen=True)
class Scope:
    """Whose users to derive: the keys of one city on one Redis (or one URL shard), or of one
    slot group of a Redis Cluster, with what its processes touch beyond them."""

    keys: Keys
    cluster: bool = False  # RQ's keys ``{name}:rq:*``, the cluster client's commands
    shard: str = ""  # the slot group's shard name (the other groups' outboxes for it carry it)
    control: Keys | None = None  # control data's keys when another group holds them
    peers: tuple[Keys, ...] = ()  # the other slot groups: this group's relay pulls from them

    @property
    def rq_key_prefix(self) -> str:
        return self.keys.cluster_rq_key_prefix if self.cluster else "rq"


def _scope(scope: Scope | Keys) -> Scope:
    return scope if isinstance(scope, Scope) else Scope(scope)


def city_scopes(
    config: CityConfig, keys: Keys, cluster: bool = False
) -> list[tuple[Scope, list[str]]]:
    """Each scope of the city with the departments whose users it holds: one (`keys`, every
    department) unless the city is made of slot groups, then one per group with the
    departments at home there (so each department's user names its home group's keys)."""
    parts = config.partitions
    groups = group_keys(parts)
    if parts is None or not groups:
        return [(Scope(keys, cluster), config.department_ids)]
    control = groups[parts.control_shard]
    return [
        (
            Scope(
                group,
                cluster=True,
                shard=name,
                control=None if control == group else control,
                peers=tuple(k for n, k in groups.items() if n != name),
            ),
            parts.departments_on(name, config.department_ids),
        )
        for name, group in groups.items()
    ]


def _control_patterns(control: Keys) -> list[str]:
    """The router's control data under the control group's prefix: read grants, versions,
    PIAs and consent; write quarantine and privacy alerts (jobs/context.py `control_keys`)."""
    return [
        f"%R~{control.grants}",
        f"%R~{control.grants_version}",
        f"%R~{control.prefix}:juris:*",
        f"%R~{control.pia}",
        f"%R~{control.pia_version}",
        f"%R~{control.consent_index}",
        f"~{control.quarantine}",
        f"~{control.alerts}",
    ]


def _peer_patterns(peer: Keys, shard: str) -> list[str]:
    """The relay of group `shard` reads another group's outboxes for it, and acknowledges,
    dead-letters and counts there (queues/partition.py `Relay`, source side)."""
    return [
        f"~{peer.outbox(shard)}",
        f"~{peer.outbox(shard, 'emergency')}",
        f"~{peer.deadletter}",
        f"~{peer.stats}",
    ]


def worker_key_patterns(scope: Scope | Keys) -> dict[str, list[str]]:
    """Key and channel patterns per worker role (RQ keys and channels ``rq:*``; on a cluster
    ``{name}:rq:*``)."""
    scope = _scope(scope)
    keys = scope.keys
    p = keys.prefix
    rq = [f"~{scope.rq_key_prefix}:*", f"&{scope.rq_key_prefix}:*"]
    control = _control_patterns(scope.control) if scope.control is not None else []
    peers = [pat for peer in scope.peers for pat in _peer_patterns(peer, scope.shard)]
    return {
        "ingest": [
            f"~{p}:ingest:*",
            f"~{keys.backpressure}",  # the memory guard (queues/limits.py)
            f"~{keys.deadletter}",
            f"~{p}:seen:*",
            f"~{keys.stats}",
            f"~{p}:latency:*",
            *rq,
        ],
        "router": [
            f"~{p}:inbox:*",
            f"~{p}:hot:*",
            f"~{keys.deadletter}",
            f"~{p}:seen:*",
            f"~{keys.stats}",
            f"~{p}:latency:*",
            f"~{keys.audit}",
            f"~{keys.audit_head}",
            f"~{keys.audit_policy}",
            f"~{keys.audit_inbox}",
            f"~{keys.audit_inbox}:lock",
            f"%R~{keys.grants}",
            f"%R~{keys.grants_version}",
            # rule-derived events are appended to the issuing department's ingest stream inside
            # the delivery script, and Redis (7.0) requires read and write permission on every
            # key a script declares: a write-only pattern fails the whole delivery (NOPERM).
            f"~{p}:ingest:*",
            # partitioned city: deliveries for departments at home on another shard (keys a
            # script declares need read and write permission, so not %W)
            f"~{p}:outbox:*",
            # versioned jurisdictions (read) and the privacy stage
            f"%R~{p}:juris:*",
            f"%R~{keys.pia}",
            f"%R~{keys.pia_version}",
            f"%R~{keys.consent_index}",
            f"~{keys.quarantine}",
            f"~{keys.alerts}",
            f"~{p}:alarm:*",  # rate-limited alerts (inbox backlogs)
            f"~{p}:emergency:*",  # emergency tracking (jobs/emergency/)
            f"~{keys.emergencies}",
            *control,
            *rq,
        ],
        "archive": [
            f"~{p}:hot:*",
            f"~{keys.stats}",
            f"~{keys.audit}",
            f"~{p}:archive:*",
            f"~{p}:scheduler:*",
            *rq,
        ],
        # Escalation checks (jobs/emergency/): tracking, acks, inbox notices, audit.
        "escalation": [
            f"~{p}:inbox:*",
            f"~{p}:emergency:*",
            f"~{keys.emergencies}",
            f"~{p}:ack:*",  # read; declared as a key of the claim script, so RW
            f"~{keys.stats}",  # escalation, acknowledgement and notification counters
            f"~{keys.audit}",
            f"~{keys.audit_head}",
            *rq,
        ],
        # `cityrelay relay` (queues/partition.py): the outbox and its dead letters on the
        # source shard; inboxes, ingest streams and markers on the destination (declared keys
        # of the relay script: Redis requires read and write permission on those).
        "relay": [
            f"~{p}:outbox:*",
            f"~{keys.deadletter}",
            f"~{keys.stats}",
            f"~{p}:inbox:*",
            f"~{p}:ingest:*",
            f"~{p}:relayed:*",
            # emergencies for departments at home there are tracked on the destination
            f"~{p}:emergency:*",
            f"~{keys.emergencies}",
            *peers,
            *rq,
        ],
        # `cityrelay grant ...` run by a data steward: grants and the audit chain only.
        "steward": [
            f"~{keys.grants}",
            f"~{keys.grants_version}",
            f"~{keys.audit}",
            f"~{keys.audit_head}",
        ],
    }


@dataclass(frozen=True)
class AclUser:
    name: str
    rules: list[str]  # without the password

    def setuser_args(self, password: str) -> list[str]:
        """Arguments for ``ACL SETUSER``: starts from ``reset`` so the result is exactly this."""
        digest = hashlib.sha256(password.encode()).hexdigest()
        return ["reset", "on", f"#{digest}", *self.rules]

    def show(self, password: str | None = None) -> str:
        secret = f"#{hashlib.sha256(password.encode()).hexdigest()}" if password else "<password>"
        return " ".join(["user", self.name, "reset", "on", secret, *self.rules])


def department_user(scope: Scope | Keys, dept: str) -> AclUser:
    scope = _scope(scope)
    keys = scope.keys
    inbox = keys.inbox(dept)
    ingest = [keys.ingest(dept), keys.ingest(dept, "emergency")]
    selector = "(" + " ".join(["+xadd", *(f"~{k}" for k in ingest)]) + ")"
    # Emergency acknowledgement (queues/acks.py): its own ack keys only; whether it is a
    # recipient (HEXISTS/EXISTS reveal no event content).
    acks = f"(+set +get ~{keys.ack(dept, '*')})"
    tracked = f"(+hexists +exists ~{keys.emergency('*')})"
    # Producer backpressure (queues/limits.py): whether routine publishes are refused now.
    pressure = f"(+get ~{keys.backpressure})"
    return AclUser(
        keys.acl_dept_user(dept),
        [
            "resetkeys",
            "resetchannels",
            "-@all",
            *_CONNECTION,
            *(CLUSTER_CLIENT if scope.cluster else []),
            "+time",
            *DEPT_INBOX_COMMANDS,
            f"~{inbox}",
            selector,
            acks,
            tracked,
            pressure,
        ],
    )


def worker_users(scope: Scope | Keys) -> list[AclUser]:
    scope = _scope(scope)
    commands = [*WORKER_COMMANDS, *(CLUSTER_CLIENT if scope.cluster else [])]
    return [
        AclUser(scope.keys.acl_worker_user(role), ["resetkeys", "resetchannels", *commands, *pats])
        for role, pats in worker_key_patterns(scope).items()
    ]


def derive_users(scope: Scope | Keys, departments: Iterable[str]) -> list[AclUser]:
    """Every ACL user a scope needs: one per department, one per worker role."""
    return [*(department_user(scope, d) for d in departments), *worker_users(scope)]


def city_users(scopes: Sequence[tuple[Scope, Sequence[str]]]) -> list[AclUser]:
    """The users of every scope (`city_scopes`)."""
    return [user for scope, depts in scopes for user in derive_users(scope, depts)]


def new_password() -> str:
    return secrets.token_urlsafe(24)


_NODE_SETTINGS = ("username", "password", "socket_timeout", "socket_connect_timeout")


def nodes(redis: Redis) -> list[Redis]:
    """The clients to set users on: every node of a cluster (primaries and replicas: a cluster
    does not share ACL users, and a promoted replica must know them; redis-py's cluster client
    knows only the primaries), logged in as `redis` is; else `redis` itself."""
    if not isinstance(redis, RedisCluster):
        return [redis]
    seed = redis.get_redis_connection(redis.get_default_node())
    given = seed.connection_pool.connection_kwargs
    settings = {k: given[k] for k in _NODE_SETTINGS if k in given}
    found = []
    for node in nodes_of(redis.cluster_nodes()):
        host, _, port = node.address.rpartition(":")
        found.append(Redis(**{**settings, "host": host, "port": int(port)}))
    return found


def apply(
    redis: Redis,
    keys: Scope | Keys | Sequence[tuple[Scope, Sequence[str]]],
    departments: Iterable[str] = (),
    passwords: Mapping[str, str] | None = None,
    prune: bool = False,
) -> tuple[dict[str, str], list[str]]:
    """Create or reset every derived user; returns (passwords incl. new ones, pruned users).

    `keys` is one scope (with `departments`) or the scopes of a city (`city_scopes`). Users
    missing from `passwords` get a fresh random password (returned, never stored in clear).
    With `prune`, the scopes' department users no longer in the config are deleted. On a
    cluster every node gets the same users.
    """
    scopes = keys if isinstance(keys, Sequence) else [(_scope(keys), list(departments))]
    users = city_users(scopes)
    out = dict(passwords or {})
    for user in users:
        out.setdefault(user.name, new_password())
    wanted = {u.name for u in users}
    prefixes = tuple(scope.keys.acl_dept_user("") for scope, _ in scopes)
    pruned: set[str] = set()
    for node in nodes(redis):
        pipe = node.pipeline(transaction=False)
        for user in users:
            pipe.execute_command("ACL", "SETUSER", user.name, *user.setuser_args(out[user.name]))
        pipe.execute()
        if prune:
            for raw in node.execute_command("ACL", "USERS"):
                name = raw.decode() if isinstance(raw, bytes) else raw
                if name.startswith(prefixes) and name not in wanted:
                    node.execute_command("ACL", "DELUSER", name)
                    pruned.add(name)
        if node is not redis:
            node.close()
    return out, sorted(pruned)
