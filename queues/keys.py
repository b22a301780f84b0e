"""Every Redis key cityrelay uses, in one place.

All keys share a prefix (default ``city``; ``CITYRELAY_PREFIX`` or the `Keys(prefix)` argument),
so several cities or test runs can share one Redis without touching each other's data, and a
Redis ACL can be written per department from these names alone.

On Redis Cluster the prefix may be a hash tag, ``{city-north}``: every key below then hashes to
one slot, so the delivery script, the ingest MULTI and every other multi-key call of that key
set stays legal (a cluster refuses a call whose keys are in two slots with CROSSSLOT). Such a
key set is a *slot group*. RQ names (queues, job ids) use `name`, the prefix without braces,
because RQ allows no braces in job ids; the processes of a slot group also set
``RQ_KEY_PREFIX={city-north}:rq`` so RQ's own keys land in the same slot.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

DEFAULT_PREFIX = "city"
ROUTER_GROUP = "router"
RELAY_GROUP = "relay"  # consumer group of the relays on every outbox stream
PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$|^\{[A-Za-z0-9_-]{1,64}\}$")


def default_prefix() -> str:
    return os.environ.get("CITYRELAY_PREFIX", DEFAULT_PREFIX)


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        # The prefix also names RQ queues and job ids (without the braces of a hash tag),
        # which allow only these characters.
        if not PREFIX_PATTERN.match(self.prefix):
            raise ValueError(
                f"key prefix {self.prefix!r}: use 1-64 letters, digits, '_' or '-', "
                "optionally in braces (a Redis Cluster hash tag: {name})"
            )

    @classmethod
    def from_env(cls) -> Keys:
        return cls(default_prefix())

    # Ingest: one stream per department and lane; only that department may write to it.
    def ingest(self, dept: str, lane: str = "routine") -> str:
        """``{p}:ingest:{dept}`` for routine traffic, ``{p}:ingest:{dept}:emergency`` for urgent."""
        base = f"{self.prefix}:ingest:{dept}"
        return base if lane == "routine" else f"{base}:{lane}"

    @property
    def deadletter(self) -> str:
        """Entries that could not be accepted, with the reason and the original fields."""
        return f"{self.prefix}:deadletter"

    def seen(self, dept: str, event_id: str) -> str:
        """Dedupe marker for one event: the ingest entry that claimed it, then ``delivered``."""
        return f"{self.prefix}:seen:{dept}:{event_id}"

    def csv_published(self, dept: str, event_id: str) -> str:
        """A CSV row published (`cityrelay publish --csv`): a re-run skips it (queues/csvdrop)."""
        return f"{self.prefix}:csv:{dept}:{event_id}"

    def inbox(self, dept: str) -> str:
        """A department's delivery stream."""
        return f"{self.prefix}:inbox:{dept}"

    def hot(self, event_type: str) -> str:
        """The hot tier: recent events of one type, kept for replay until archived."""
        return f"{self.prefix}:hot:{event_type}"

    @property
    def hot_types(self) -> str:
        """Set of event types that have a hot-tier stream (so the archive can find them)."""
        return f"{self.prefix}:hot:types"

    @property
    def stats(self) -> str:
        """Hash of counters: ``in:{dept}``, ``delivered:{dept}``, ``deadletter:{reason}``..."""
        return f"{self.prefix}:stats"

    def latency(self, priority: str) -> str:
        """Hash histogram of ingest-to-inbox latency for one priority (bucket -> count)."""
        return f"{self.prefix}:latency:{priority}"

    @staticmethod
    def replay_marker(stream: str, event_id: str) -> str:
        """Set (with a TTL) when a spooled event is replayed into `stream`, so a replay repeated
        after a crash adds it only once. Under the stream's own name: inside the producing
        department's ACL key pattern (``~{p}:ingest:{dept}*``)."""
        return f"{stream}:replayed:{event_id}"

    @property
    def name(self) -> str:
        """The prefix without the braces of a hash tag: for RQ queue names and job ids."""
        return self.prefix.strip("{}")

    @property
    def slot_group(self) -> bool:
        """True when the prefix is a hash tag: all of these keys live in one cluster slot."""
        return self.prefix.startswith("{")

    @property
    def cluster_rq_key_prefix(self) -> str:
        """RQ's key prefix (``RQ_KEY_PREFIX``) on Redis Cluster: ``{name}:rq``, so RQ's keys
        hash to this prefix's slot (workers/runtime.py sets it; queues/acl.py grants it)."""
        return f"{{{self.name}}}:rq"

    @property
    def rq_prefix(self) -> str:
        """RQ queue names are ``{p}.{queue}`` so each city has its own queues in `rq info`."""
        return self.name

    # Sharing: grants, audit chain, ACL users (queues/grants.py, queues/audit.py, queues/acl.py).
    @property
    def grants(self) -> str:
        """Hash grant id -> grant JSON (revoked and expired grants stay, for `grant list`)."""
        return f"{self.prefix}:grants"

    @property
    def grants_version(self) -> str:
        """Counter bumped on every grant change; routers reload grants only when it moves."""
        return f"{self.prefix}:grants:version"

    @property
    def audit(self) -> str:
        """The hash-chained audit stream (one JSON record per entry, field ``rec``)."""
        return f"{self.prefix}:audit"

    @property
    def audit_inbox(self) -> str:
        """Delivery decisions written atomically with the deliveries, waiting to be chained."""
        return f"{self.prefix}:audit:in"

    @property
    def audit_head(self) -> str:
        """``seq:sha256`` of the last audit record: anchors the chain's end."""
        return f"{self.prefix}:audit:head"

    @property
    def audit_policy(self) -> str:
        """Version of the sharing policies last written to the audit chain."""
        return f"{self.prefix}:audit:policy"

    def acl_dept_user(self, dept: str) -> str:
        """Redis ACL user a department's producer and inbox clients authenticate as."""
        return f"{self.prefix}.dept.{dept}"

    def acl_worker_user(self, role: str) -> str:
        """Redis ACL user for a worker role (``ingest``, ``router``, ``admin``)."""
        return f"{self.prefix}.worker.{role}"

    # Jurisdiction layer versions (redistricting): see queues/jurisdictions.py.
    @property
    def juris_generation(self) -> str:
        """Counter bumped by every publish: one GET per batch tells a worker to reload."""
        return f"{self.prefix}:juris:gen"

    @property
    def juris_layers(self) -> str:
        """Set of layers that have published versions."""
        return f"{self.prefix}:juris:layers"

    def juris_seq(self, layer: str) -> str:
        """Last version number given out for a layer."""
        return f"{self.prefix}:juris:seq:{layer}"

    def juris_meta(self, layer: str) -> str:
        """Hash: version number -> JSON metadata (effective_from, checksum, note, ...)."""
        return f"{self.prefix}:juris:meta:{layer}"

    def juris_data_prefix(self, layer: str) -> str:
        return f"{self.prefix}:juris:data:{layer}:"

    def juris_data(self, layer: str, version: int) -> str:
        """The version's GeoJSON, zlib-compressed."""
        return f"{self.juris_data_prefix(layer)}{version}"

    # Privacy: consent registry, PIA store, quarantine, alerts (queues/consent.py, queues/pia.py).
    def consent(self, subject: str) -> str:
        """Hash purpose -> consent record JSON of one citizen (by consent pseudonym)."""
        return f"{self.prefix}:consent:{subject}"

    @property
    def consent_index(self) -> str:
        """Hash ``{subject}/{purpose}`` -> record JSON: a batch's lookups in one HMGET."""
        return f"{self.prefix}:consent:index"

    @property
    def consent_log(self) -> str:
        """Stream of every consent change with its receipt (proof for the citizen)."""
        return f"{self.prefix}:consent:log"

    @property
    def pia(self) -> str:
        """Hash ``dept/type`` -> privacy impact assessment JSON."""
        return f"{self.prefix}:pia"

    @property
    def pia_version(self) -> str:
        """Counter bumped on every PIA change; routers reload PIAs only when it moves."""
        return f"{self.prefix}:pia:version"

    @property
    def quarantine(self) -> str:
        """Events held back by the PIA gate, with the reason (never routed)."""
        return f"{self.prefix}:quarantine"

    @property
    def alerts(self) -> str:
        """Operational alerts for people (PIA gate hits, ...): field ``kind`` + details."""
        return f"{self.prefix}:alerts"

    # Limits (queues/limits.py): producer backpressure and rate-limited alarms.
    @property
    def backpressure(self) -> str:
        """Set while Redis memory is above the high watermark (JSON: used, limit, since); it
        expires by itself when no ingest process refreshes it."""
        return f"{self.prefix}:backpressure"

    def alarm(self, name: str) -> str:
        """Marker that an alarm was raised recently (rate limit: one alert per period)."""
        return f"{self.prefix}:alarm:{name}"

    # Archive (hot tier -> S3).
    def archive_lock(self, event_type: str, window_start_ms: int) -> str:
        """Lock held while one archive window of one type is written, so double runs never race."""
        return f"{self.prefix}:archive:lock:{event_type}:{window_start_ms}"

    def archive_done(self, event_type: str, window_start_ms: int) -> str:
        """Marker that a window's objects are verified in S3 (JSON: keys, rows, id range)."""
        return f"{self.prefix}:archive:done:{event_type}:{window_start_ms}"

    @property
    def disposition_lock(self) -> str:
        """Lock held by the disposition job, so the hash-chained log has one writer."""
        return f"{self.prefix}:archive:disposition:lock"

    @property
    def scheduler_lease(self) -> str:
        """Lease of the one running cron scheduler (a second one waits as a standby)."""
        return f"{self.prefix}:scheduler:lease"

    # Emergency acknowledgement and escalation (queues/acks.py, jobs/emergency/).
    def emergency(self, event_id: str) -> str:
        """Hash tracking one emergency: the event, and per recipient delivered / deadline /
        acknowledged / escalation levels (fields ``{dept}|{what}``)."""
        return f"{self.prefix}:emergency:{event_id}"

    @property
    def emergencies(self) -> str:
        """Sorted set of tracked emergency ids, scored by delivery time (ms)."""
        return f"{self.prefix}:emergencies"

    def ack(self, dept: str, event_id: str) -> str:
        """A department's acknowledgement of one emergency (``{ms}|{by}``, set once). Under
        the department's own prefix, so its ACL lets it acknowledge only for itself."""
        return f"{self.prefix}:ack:{dept}:{event_id}"

    # Partitions (queues/partition.py): deliveries to departments at home on another shard.
    def outbox(self, shard: str, lane: str = "routine") -> str:
        """Stream on the routing shard of entries bound for `shard` (field ``to``: the key
        there), written by the delivery script; the relay (group ``relay``) moves them.
        Emergencies have their own lane (``...:emergency``), which the relay reads first."""
        base = f"{self.prefix}:outbox:{shard}"
        return base if lane == "routine" else f"{base}:{lane}"

    def relayed(self, source: str, entry_id: str, lane: str = "routine") -> str:
        """On the destination shard: set in the relay script with the entry's XADD, so an
        outbox entry redelivered after a relay crash is written only once."""
        base = f"{self.prefix}:relayed:{source}"
        return f"{base}:{entry_id}" if lane == "routine" else f"{base}:{lane}:{entry_id}"

    # The HTTP gateway (queues/tokens.py, workers/gateway/).
    @property
    def tokens(self) -> str:
        """Hash sha256(token) -> token record JSON (department, name, expiry, revoked): the
        tokens themselves are never stored."""
        return f"{self.prefix}:tokens"

    def idempotency(self, dept: str, digest: str) -> str:
        """The stored answer to a gateway request sent with an ``Idempotency-Key`` (by the
        key's sha256), per department, with an expiry."""
        return f"{self.prefix}:idem:{dept}:{digest}"
