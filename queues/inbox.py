"""Department inboxes: atomic, idempotent delivery (router side); read and ack (department side).

Delivery runs one Lua script per routed batch. For each event it checks the event's dedupe
marker and, unless the event was already delivered, appends every recipient's view to its inbox,
appends the event to the hot tier and marks it ``delivered`` - all atomically. A route job that
crashes and runs again, or runs twice, therefore delivers each event to each department exactly
once. The script returns the Redis time so latency is measured on one clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis import Redis
from redis.exceptions import ResponseError

from queues.acks import record_inbox_acks
from queues.keys import Keys
from queues.message import Message, parse_message

# KEYS: the seen marker of each event, then every output stream.
# ARGV: ttl, audit inbox key index (0: none), audit body head, audit body tail, the bounded
# streams as JSON [[key index, max length, alarm length], ...], the stats hash key index (0: none),
# the batch as JSON, one entry per event (in the order of the seen markers):
# [[[key index, [ARGV index of field, of value, ...]], ...], ARGV index of the audit rows
# fragment (0: none), [ARGV index of a stats field, ...]], then the texts those indexes name.
# Each distinct text travels once per chunk: recipients with the same entitlement share a view,
# deliveries share their explanation (`via`) and field names, so a chunk of the benchmark's mix
# carries 55% of the bytes it would spelled out, and cjson decodes small integers instead of
# escaped event JSON (measured: Redis CPU per event -7..-21%, the client +3..5 us for
# redis-py's encoding of the extra arguments; Redis's single thread is the ceiling, workers
# scale out). Concatenating
# the texts into one argument cut the client's cost but string.sub in the script cost more.
# The audit rows of the events delivered now (not the duplicates) become one audit inbox entry.
# A bounded stream (an inbox) longer than its maximum loses its oldest entries (XTRIM ~, whole
# radix-tree nodes, so O(1) amortised); the ones at or above their alarm length are reported.
# The counters of the events delivered now are added in the same step, so a job that dies after
# delivering and runs again neither loses nor doubles them.
DELIVER_LUA = """
local ttl = tonumber(ARGV[1])
local audit_key = tonumber(ARGV[2])
local stats_key = tonumber(ARGV[6])
local flags = {}
local rows = {}
local tally = {}
for i, spec in ipairs(cjson.decode(ARGV[7])) do
  local seen = KEYS[i]
  if redis.call('GET', seen) ~= 'delivered' then
    for _, out in ipairs(spec[1]) do
      local items = {}
      for j, at in ipairs(out[2]) do items[j] = ARGV[at] end
      redis.call('XADD', KEYS[out[1]], '*', unpack(items))
    end
    if spec[2] > 0 then rows[#rows + 1] = ARGV[spec[2]] end
    for _, at in ipairs(spec[3]) do
      local name = ARGV[at]
      tally[name] = (tally[name] or 0) + 1
    end
    redis.call('SET', seen, 'delivered', 'EX', ttl)
    flags[i] = 1
  else
    flags[i] = 0
  end
end
if stats_key > 0 then
  for name, n in pairs(tally) do redis.call('HINCRBY', KEYS[stats_key], name, n) end
end
if audit_key > 0 and #rows > 0 then
  local body = ARGV[3] .. table.concat(rows, ',') .. ARGV[4]
  redis.call('XADD', KEYS[audit_key], '*', 'kind', 'delivery', 'body', body)
end
local backlog = {}
for _, bound in ipairs(cjson.decode(ARGV[5])) do
  local key = KEYS[bound[1]]
  local length = redis.call('XLEN', key)
  local trimmed = 0
  if length > bound[2] then
    trimmed = redis.call('XTRIM', key, 'MAXLEN', '~', bound[2])
    length = length - trimmed
  end
  if length >= bound[3] or trimmed > 0 then
    backlog[#backlog + 1] = {bound[1], length, trimmed}
  end
end
local t = redis.call('TIME')
return {flags, t[1], t[2], backlog}
"""


CHUNK = 50  # events per delivery script (see Deliverer.deliver)


@dataclass
class Output:
    """One stream append: the key and its field/value pairs.

    `items` is the same appended as a flat list of text (field, value, field, value, ...),
    for callers that build it that way anyway (the route job's hot path); then `fields` may
    be left empty.
    """

    key: str
    fields: list[tuple[str, str | bytes]]
    items: list[str] | None = None

    @classmethod
    def flat(cls, key: str, items: list[str]) -> Output:
        return cls(key, [], items)


@dataclass
class EventDelivery:
    """Everything one event produces: its dedupe marker and its stream appends."""

    seen_key: str
    outputs: list[Output] = field(default_factory=list)
    audit_rows: str = ""  # JSON rows (without the brackets) recorded if delivered now
    counts: Sequence[str] = ()  # stats fields +1 if delivered now
    tally: Sequence[str] = ()  # the route job's counters +1 if delivered now
    received: Sequence[str] = ()  # tracked for emergency acknowledgement


@dataclass(frozen=True)
class AuditFrame:
    """Where delivery audit rows go and the JSON body around them (see `Deliverer.deliver`)."""

    key: str
    head: str
    tail: str


@dataclass(frozen=True)
class StreamBound:
    """A stream kept to `max_len` entries, reported from `alarm_len` on (see `limits`)."""

    max_len: int
    alarm_len: int


@dataclass(frozen=True)
class Backlog:
    """A bounded stream at or above its alarm length after a delivery, or just trimmed."""

    key: str
    length: int
    trimmed: int
    bound: StreamBound


@dataclass
class DeliveryOutcome:
    flags: list[bool]  # delivered now (False: delivered before, a duplicate)
    now: float  # Redis time in seconds at delivery
    backlogs: list[Backlog] = field(default_factory=list)


class Deliverer:
    """Runs the delivery script for a batch (one round trip per `CHUNK` events).

    `bounds` maps stream keys (the department inboxes) to their `StreamBound`; streams not in
    it grow until their owner trims them (hot tier: the archive; audit: never). `stats_key`
    is the counters hash each event's `counts` go to when it is delivered.
    """

    def __init__(
        self,
        redis: Redis,
        dedupe_ttl_s: int,
        bounds: dict[str, StreamBound] | None = None,
        stats_key: str | None = None,
    ):
        self.redis = redis
        self.ttl = dedupe_ttl_s
        self.bounds = bounds or {}
        self.stats_key = stats_key
        self._script = redis.register_script(DELIVER_LUA)

    def deliver(
        self, batch: Sequence[EventDelivery], audit: AuditFrame | None = None
    ) -> DeliveryOutcome:
        """Deliver every event not delivered before, atomically per chunk.

        With `audit`, the audit rows of the events delivered now are written to the audit
        inbox in the same script as the deliveries (see queues/audit.py).

        Large batches run as several scripts of at most `CHUNK` events, each its own round
        trip: a script blocks Redis while it runs, and an emergency must not wait behind a
        routine batch for more than a millisecond or two.
        """
        outcome = DeliveryOutcome([], 0.0)
        for start in range(0, len(batch), CHUNK):
            self._deliver(batch[start : start + CHUNK], audit, outcome)
        return outcome

    def _deliver(
        self, batch: Sequence[EventDelivery], audit: AuditFrame | None, outcome: DeliveryOutcome
    ) -> None:
        keys: list[str] = [d.seen_key for d in batch]
        key_index: dict[str, int] = {}
        if audit is not None:
            keys.append(audit.key)
            args: list[Any] = [self.ttl, len(keys), audit.head, audit.tail, "", 0, ""]
        else:
            args = [self.ttl, 0, "", "", "", 0, ""]
        if self.stats_key is not None:
            keys.append(self.stats_key)
            args[5] = len(keys)
        at: dict[str | bytes, int] = {}  # text -> its ARGV index (each text travels once)

        def ref(text: str | bytes) -> int:
            found = at.get(text)
            if found is None:
                args.append(text.encode() if isinstance(text, str) else text)
                found = at[text] = len(args)
            return found

        known = at.get  # a hit (the usual case) costs no Python call; indexes are never 0
        specs = []
        for delivery in batch:
            outputs = []
            for out in delivery.outputs:
                index = key_index.get(out.key)
                if index is None:
                    keys.append(out.key)
                    index = key_index[out.key] = len(keys)
                items = out.items
                if items is None:
                    refs = [known(text) or ref(text) for pair in out.fields for text in pair]
                else:
                    refs = [known(text) or ref(text) for text in items]
                outputs.append((index, refs))
            rows = ref(delivery.audit_rows) if delivery.audit_rows else 0
            specs.append((outputs, rows, [known(name) or ref(name) for name in delivery.counts]))
        args[6] = orjson.dumps(specs)
        bounded = [
            (index, bound.max_len, bound.alarm_len)
            for key, index in key_index.items()
            if (bound := self.bounds.get(key)) is not None
        ]
        args[4] = orjson.dumps(bounded) if bounded else b"[]"
        flags, secs, micros, backlog = self._script(keys=keys, args=args)
        outcome.flags.extend(bool(f) for f in flags)
        outcome.now = int(secs) + int(micros) / 1e6
        for index, length, trimmed in backlog:
            key = keys[int(index) - 1]
            outcome.backlogs.append(Backlog(key, int(length), int(trimmed), self.bounds[key]))


class Inbox:
    """A department's delivery stream, read through a consumer group named after the department.

    Read with `read()`, process, then `ack()`. Unacknowledged messages stay pending and are read
    again with `read(pending=True)` after a crash.
    """

    def __init__(self, redis: Redis, dept: str, keys: Keys | None = None, consumer: str = "main"):
        self.redis = redis
        self.dept = dept
        self.keys = keys or Keys.from_env()
        self.stream = self.keys.inbox(dept)
        self.group = dept
        self.consumer = consumer
        self._group_ready = False

    def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def read(
        self, count: int = 100, block_ms: int | None = None, pending: bool = False
    ) -> list[Message]:
        """New messages (or, with `pending=True`, this consumer's unacknowledged ones)."""
        self.ensure_group()
        reply = self.redis.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: "0" if pending else ">"},
            count=count,
            block=block_ms,
        )
        return [
            parse_message(eid, fields)
            for _, items in reply or []
            for eid, fields in items
            if fields
        ]

    def ack(self, messages: Sequence[Message | str], emergencies: bool = True) -> int:
        """XACK the messages. With `emergencies` (the default) an acknowledged emergency counts
        as the department's acknowledgement; a pusher whose 2xx only means "delivered" passes
        ``emergencies=False``."""
        ids = [m.entry_id if isinstance(m, Message) else m for m in messages]
        if not ids:
            return 0
        count = int(self.redis.xack(self.stream, self.group, *ids))
        # Emergency acknowledgement hook (queues/acks.py): acking an emergency message records
        # the department's acknowledgement, which stops its escalation.
        if emergencies:
            record_inbox_acks(
                self.redis, self.keys, self.dept, self.stream, messages, f"inbox:{self.consumer}"
            )
        return count

    def claim_idle(self, min_idle_ms: int, count: int = 100) -> list[Message]:
        """Take over messages another consumer of the group left pending for `min_idle_ms`
        (a reader that died mid-batch): XAUTOCLAIM to this consumer. Entries trimmed from the
        inbox meanwhile leave the pending list (Redis drops them) and are not returned."""
        self.ensure_group()
        reply = self.redis.xautoclaim(
            self.stream, self.group, self.consumer, min_idle_ms, "0-0", count=count
        )
        return [parse_message(eid, fields) for eid, fields in reply[1] if fields]

    def history(self, count: int = 100) -> list[Message]:
        """The most recent messages, newest last, regardless of acknowledgement."""
        items = self.redis.xrevrange(self.stream, count=count)
        return [parse_message(eid, fields) for eid, fields in reversed(items)]

    def backlog(self) -> dict[str, int]:
        """Length and messages delivered but not acknowledged."""
        self.ensure_group()
        info = self.redis.xpending(self.stream, self.group)
        return {"length": int(self.redis.xlen(self.stream)), "pending": int(info["pending"])}
