"""Redis ACL users derived from the city config, so isolation does not rest on our code.

Each department gets a user (``{p}.dept.{id}``) that may only XADD to its own ingest streams
and read/acknowledge its own inbox: a bug in a department client, or in cityrelay, cannot make
Redis hand one department another's inbox (NOPERM). Redis 7 selectors keep the two grants
apart, so the department cannot XADD into its inbox nor read its ingest stream.

Workers get one user per role with the key patterns that role touches and the command
categories RQ and our code use, never admin or dangerous commands (except the few RQ needs:
INFO for the server version, CLIENT SETNAME/INFO to register a worker).

Passwords are never stored in Redis in clear: the rules carry their SHA-256 (``#hex``).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from redis import Redis

from queues.keys import Keys

_CONNECTION = ["+ping", "+client|setname"]

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


def worker_key_patterns(keys: Keys) -> dict[str, list[str]]:
    """Key and channel patterns per worker role (RQ keys are ``rq:*``, channels ``rq:*``)."""
    p = keys.prefix
    rq = ["~rq:*", "&rq:*"]
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


def department_user(keys: Keys, dept: str) -> AclUser:
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
            "+time",
            *DEPT_INBOX_COMMANDS,
            f"~{inbox}",
            selector,
            acks,
            tracked,
            pressure,
        ],
    )


def worker_users(keys: Keys) -> list[AclUser]:
    return [
        AclUser(keys.acl_worker_user(role), ["resetkeys", "resetchannels", *WORKER_COMMANDS, *pats])
        for role, pats in worker_key_patterns(keys).items()
    ]


def derive_users(keys: Keys, departments: Iterable[str]) -> list[AclUser]:
    """Every ACL user the city needs: one per department, one per worker role."""
    return [*(department_user(keys, d) for d in departments), *worker_users(keys)]


def new_password() -> str:
    return secrets.token_urlsafe(24)


def apply(
    redis: Redis,
    keys: Keys,
    departments: Iterable[str],
    passwords: Mapping[str, str],
    prune: bool = False,
) -> tuple[dict[str, str], list[str]]:
    """Create or reset every derived user; returns (passwords incl. new ones, pruned users).

    Users missing from `passwords` get a fresh random password (returned, never stored in
    clear). With `prune`, this city's department users no longer in the config are deleted.
    """
    users = derive_users(keys, departments)
    out = dict(passwords)
    pipe = redis.pipeline(transaction=False)
    for user in users:
        password = out.setdefault(user.name, new_password())
        pipe.execute_command("ACL", "SETUSER", user.name, *user.setuser_args(password))
    pipe.execute()
    pruned: list[str] = []
    if prune:
        wanted = {u.name for u in users}
        prefix = keys.acl_dept_user("")
        for raw in redis.execute_command("ACL", "USERS"):
            name = raw.decode() if isinstance(raw, bytes) else raw
            if name.startswith(prefix) and name not in wanted:
                redis.execute_command("ACL", "DELUSER", name)
                pruned.append(name)
    return out, pruned
