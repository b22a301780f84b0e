"""Department inboxes: atomic, idempotent delivery on the router side; read/ack on the department side.

Delivery runs one Lua script per routed batch. For each event it checks the event's dedupe
marker and, unless the event was already delivered, appends every recipient's view to its inbox,
appends the event to the hot tier and marks it ``delivered`` - all atomically. A route job that
crashes and runs again, or runs twice, therefore delivers each event to each department exactly
once. The script returns the Redis time so latency is measured on one clock.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError

from queues.keys import Keys

# KEYS: the seen marker of each event, then every output stream.
# ARGV: ttl, n_events, then per event: n_outputs, then per output: key index, n_pairs, pairs...
DELIVER_LUA = """
local ttl = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local a = 3
local flags = {}
for i = 1, n do
  local seen = KEYS[i]
  local m = tonumber(ARGV[a]); a = a + 1
  local fresh = redis.call('GET', seen) ~= 'delivered'
  for _ = 1, m do
    local key = KEYS[tonumber(ARGV[a])]
    local pairs_n = tonumber(ARGV[a + 1])
    a = a + 2
    if fresh then
      local args = {key, '*'}
      for p = 0, pairs_n * 2 - 1 do args[#args + 1] = ARGV[a + p] end
      redis.call('XADD', unpack(args))
    end
    a = a + pairs_n * 2
  end
  if fresh then
    redis.call('SET', seen, 'delivered', 'EX', ttl)
    flags[i] = 1
  else
    flags[i] = 0
  end
end
local t = redis.call('TIME')
return {flags, t[1], t[2]}
"""


@dataclass
class Output:
    """One stream append: the key and its field/value pairs."""

    key: str
    fields: list[tuple[str, str | bytes]]


@dataclass
class EventDelivery:
    """Everything one event produces: its dedupe marker and its stream appends."""

    seen_key: str
    outputs: list[Output] = field(default_factory=list)


class Deliverer:
    """Runs the delivery script for a batch (one round trip)."""

    def __init__(self, redis: Redis, dedupe_ttl_s: int):
        self.redis = redis
        self.ttl = dedupe_ttl_s
        self._script = redis.register_script(DELIVER_LUA)

    def deliver(self, batch: Sequence[EventDelivery]) -> tuple[list[bool], float]:
        """Returns (delivered now? per event, Redis time in seconds at delivery)."""
        keys: list[str] = [d.seen_key for d in batch]
        key_index: dict[str, int] = {}
        args: list[Any] = [self.ttl, len(batch)]
        for delivery in batch:
            args.append(len(delivery.outputs))
            for out in delivery.outputs:
                index = key_index.get(out.key)
                if index is None:
                    keys.append(out.key)
                    index = key_index[out.key] = len(keys)
                args.append(index)
                args.append(len(out.fields))
                for name, value in out.fields:
                    args.append(name)
                    args.append(value)
        flags, secs, micros = self._script(keys=keys, args=args)
        return [bool(f) for f in flags], int(secs) + int(micros) / 1e6


@dataclass(frozen=True)
class Message:
    """One delivered event as a department sees it."""

    entry_id: str
    event: dict[str, Any]
    via: dict[str, Any]
    ingested_ms: int

    @property
    def event_id(self) -> str:
        return str(self.event.get("id"))


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

    def ack(self, messages: Sequence[Message | str]) -> int:
        ids = [m.entry_id if isinstance(m, Message) else m for m in messages]
        if not ids:
            return 0
        count = int(self.redis.xack(self.stream, self.group, *ids))
        # Emergency acknowledgement hook (queues/acks.py): acking an emergency message records
        # the department's acknowledgement, which stops its escalation.
        from queues.acks import record_inbox_acks

        record_inbox_acks(
            self.redis, self.keys, self.dept, self.stream, messages, f"inbox:{self.consumer}"
        )
        return count

    def history(self, count: int = 100) -> list[Message]:
        """The most recent messages, newest last, regardless of acknowledgement."""
        items = self.redis.xrevrange(self.stream, count=count)
        return [parse_message(eid, fields) for eid, fields in reversed(items)]

    def backlog(self) -> dict[str, int]:
        """Length and messages delivered but not acknowledged."""
        self.ensure_group()
        info = self.redis.xpending(self.stream, self.group)
        return {"length": int(self.redis.xlen(self.stream)), "pending": int(info["pending"])}


def parse_message(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Message:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return Message(
        entry_id=eid,
        event=json.loads(fields[b"e"]),
        via=json.loads(fields.get(b"via", b"{}")),
        ingested_ms=int(fields.get(b"ing", b"0").split(b"-", 1)[0]),
    )
