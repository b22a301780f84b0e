"""The relay's Redis side: outbox entries of one shard (or slot group) written into another.

`Relay` moves the outboxes for B to B: it reads them through the consumer group ``relay``
(emergencies first), writes a batch into B with one Lua call (each entry's XADD together with
its marker ``{p}:relayed:{A}:[emergency:]{entry id}``, skipped when the marker exists), then
XACKs and deletes the batch on A in one MULTI. A relay killed after B's write and before A's
XACK leaves the entries pending; they are read again (by it after a restart, or claimed by
another relay after ``routing.claim_idle_ms``) and the markers absorb them: nothing lost,
nothing twice.

The outboxes and their destinations are named by queues/partition.py (`Placement`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError

from city.config import CityConfig
from queues.keys import RELAY_GROUP, Keys
from queues.partition import TO, PartitionError, group_keys
from queues.streams import LANES, consumer_name, dead_letter

# KEYS: per entry, the destination stream then its marker. ARGV: marker ttl, then per entry:
# maxlen ('' for none: the seam for per-inbox length caps), number of field/value items, items.
# Returns the number of entries written now (the others were written before: redelivery).
RELAY_LUA = """
local a, written = 2, 0
for k = 1, #KEYS, 2 do
  local maxlen, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  if redis.call('EXISTS', KEYS[k + 1]) == 0 then
    local args = {'XADD', KEYS[k]}
    if maxlen ~= '' then
      args[#args + 1] = 'MAXLEN'; args[#args + 1] = '~'; args[#args + 1] = maxlen
    end
    args[#args + 1] = '*'
    for i = a, a + n - 1 do args[#args + 1] = ARGV[i] end
    local id = redis.call(unpack(args))
    redis.call('SET', KEYS[k + 1], id, 'EX', ARGV[1])
    written = written + 1
  end
  a = a + n
end
return written
"""

# (outbox stream, entry id, fields)
Entry = tuple[str, str, dict[bytes, bytes]]
OUTBOX_LANES = ("emergency", "routine")  # read in this order: emergencies never wait behind


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class Relay:
    """Moves the outboxes ``{p}:outbox:{dest_shard}[:emergency]`` on `source` into `dest`.

    Each read takes the emergency lane first, so an emergency waits behind at most one batch
    of a routine backlog. `allowed` are the destination keys the relay may write (the inboxes
    and ingest streams of the departments at home on the destination shard); an entry naming
    any other key is dead-lettered on the source shard (reason ``relay_bad_destination``),
    never dropped. `maxlen` caps a destination stream's length (``XADD MAXLEN ~``) by key.
    """

    source: Redis
    dest: Redis
    keys: Keys
    source_shard: str
    dest_shard: str
    allowed: frozenset[str]
    batch: int = 500
    marker_ttl_s: int = 600
    claim_idle_ms: int = 30_000
    consumer: str = field(default_factory=consumer_name)
    maxlen: Mapping[str, int] = field(default_factory=dict)
    # Called with the batch's entries once they are in the destination and before they are
    # acknowledged here (so again after a crash): emergency tracking there (workers/relay.py).
    on_written: Callable[[Sequence[Entry]], None] | None = None
    # The destination's keys when its prefix differs (a slot group of the same cluster: the
    # markers must share the destination keys' slot); default `keys`.
    dest_keys: Keys | None = None

    def __post_init__(self) -> None:
        self.there = self.dest_keys or self.keys
        self.lanes = {self.keys.outbox(self.dest_shard, lane): lane for lane in OUTBOX_LANES}
        self.outbox = self.keys.outbox(self.dest_shard)  # the routine lane, for messages
        self._script = self.dest.register_script(RELAY_LUA)
        self._own_pending = True  # read our own unacknowledged entries first (after a restart)

    @classmethod
    def for_city(
        cls,
        config: CityConfig,
        keys: Keys,
        source: Redis,
        dest: Redis,
        source_shard: str,
        dest_shard: str,
        **options: Any,
    ) -> Relay:
        parts = config.partitions
        if parts is None:
            raise PartitionError("the city has no partitions: section; there is nothing to relay")
        for name in (source_shard, dest_shard):
            if name not in parts.shards:
                raise PartitionError(f"no shard named {name!r} ({', '.join(parts.shards)})")
        if source_shard == dest_shard:
            raise PartitionError("a relay moves entries between two different shards")
        groups = group_keys(parts)
        if groups:  # slot groups: the outbox under the source's prefix, `to` under the dest's
            if keys != groups[source_shard]:
                raise PartitionError(
                    f"keys {keys.prefix!r} are not those of slot group {source_shard!r} "
                    f"({groups[source_shard].prefix})"
                )
            options.setdefault("dest_keys", groups[dest_shard])
        there: Keys = options.get("dest_keys") or keys
        allowed = {
            key
            for dept in parts.departments_on(dest_shard, config.department_ids)
            for key in (there.inbox(dept), *(there.ingest(dept, lane) for lane in LANES))
        }
        # The destination inboxes keep their bounds (limits.inbox_max_len) when fed by a relay.
        options.setdefault(
            "maxlen",
            {
                there.inbox(dept): config.inbox_max_len(dept)
                for dept in parts.departments_on(dest_shard, config.department_ids)
            },
        )
        options.setdefault("batch", parts.relay_batch)
        options.setdefault("marker_ttl_s", parts.relay_marker_ttl_s)
        options.setdefault("claim_idle_ms", config.routing.claim_idle_ms)
        return cls(source, dest, keys, source_shard, dest_shard, frozenset(allowed), **options)

    def ensure_group(self) -> None:
        for outbox in self.lanes:
            try:
                self.source.xgroup_create(outbox, RELAY_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read(self, block_ms: int | None = None) -> list[Entry]:
        """This consumer's own pending entries first (after a restart), then new ones; in each,
        the emergency lane first."""
        if self._own_pending:
            entries = self._read("0", None)
            if entries:
                return entries
            self._own_pending = False
        return self._read(">", block_ms)

    def retry_own(self) -> None:
        """After a failed batch: read this consumer's pending entries again first, at once,
        instead of waiting `claim_idle_ms` for them to be claimed."""
        self._own_pending = True

    def _read(self, start: str, block_ms: int | None) -> list[Entry]:
        reply = self.source.xreadgroup(
            RELAY_GROUP,
            self.consumer,
            dict.fromkeys(self.lanes, start),
            count=self.batch,
            block=block_ms,
        )
        # An entry deleted while pending reads as None: it is acknowledged, there is nothing
        # to move (only XDEL after XACK deletes outbox entries, so this is an operator's DEL).
        entries = [
            (_text(stream), _text(eid), fields or {})
            for stream, items in reply or []
            for eid, fields in items
        ]
        order = list(self.lanes)
        return sorted(entries, key=lambda entry: order.index(entry[0]))  # stable: emergency 1st

    def reclaim(self) -> list[Entry]:
        """Entries a dead relay read and never acknowledged (idle > claim_idle_ms)."""
        found: list[Entry] = []
        for outbox in self.lanes:
            reply = self.source.xautoclaim(
                outbox, RELAY_GROUP, self.consumer, self.claim_idle_ms, "0-0", count=self.batch
            )
            found.extend((outbox, _text(eid), fields) for eid, fields in reply[1] if fields)
        return found

    def relay(self, entries: Sequence[Entry]) -> Counter[str]:
        """Write `entries` into the destination (one call), then ack and delete them at the
        source (one MULTI). Returns counters: relayed, redelivered, dead_lettered."""
        counters: Counter[str] = Counter()
        if not entries:
            return counters
        keys: list[str] = []
        args: list[Any] = [self.marker_ttl_s]
        bad: list[tuple[str, str, str, dict[bytes, bytes]]] = []
        good: list[Entry] = []
        for outbox, entry_id, fields in entries:
            if not fields:
                continue  # deleted while pending (see `_read`): acknowledged below
            to = _text(fields.get(TO.encode(), b""))
            if to not in self.allowed:
                bad.append((outbox, entry_id, to, fields))
                continue
            good.append((outbox, entry_id, fields))
            keys.append(to)
            keys.append(self.there.relayed(self.source_shard, entry_id, self.lanes[outbox]))
            items = [v for name, value in fields.items() if name != b"to" for v in (name, value)]
            cap = self.maxlen.get(to)
            args.extend(["" if cap is None else cap, len(items), *items])
        if keys:
            written = int(self._script(keys=keys, args=args))
            counters.update(relayed=written, redelivered=len(keys) // 2 - written)
            if self.on_written is not None:
                self.on_written(good)
        pipe = self.source.pipeline(transaction=True)
        for outbox, entry_id, to, fields in bad:
            dead_letter(
                pipe,
                self.keys,
                reason="relay_bad_destination",
                message=f"outbox {outbox}: {to!r} is no inbox or ingest stream on shard "
                f"{self.dest_shard!r}",
                stage="relay",
                dept="",
                stream=outbox,
                entry_id=entry_id,
                body=_text(fields.get(b"e", b"")),
            )
            counters["dead_lettered"] += 1
        for outbox in self.lanes:
            ids = [entry_id for stream, entry_id, _ in entries if stream == outbox]
            if ids:
                pipe.xack(outbox, RELAY_GROUP, *ids)
                pipe.xdel(outbox, *ids)
        for name, value in counters.items():
            if value:
                pipe.hincrby(self.keys.stats, f"{name}:relay:{self.dest_shard}", value)
        pipe.execute()
        return +counters  # without the zero counts

    def step(self, block_ms: int | None = None) -> Counter[str]:
        return self.relay(self.read(block_ms))

    def backlog(self) -> dict[str, int]:
        """Outbox length and entries read but not yet acknowledged (both lanes)."""
        self.ensure_group()
        return outbox_backlog(self.source, self.keys, self.dest_shard)


def outbox_backlog(redis: Redis, keys: Keys, dest_shard: str) -> dict[str, int]:
    """``length`` of the outboxes for `dest_shard` under `keys` and entries a relay read and has
    not acknowledged (``pending``), both lanes; 0 for an outbox no delivery or relay made yet."""
    pipe = redis.pipeline(transaction=False)
    for lane in OUTBOX_LANES:
        pipe.xlen(keys.outbox(dest_shard, lane))
        pipe.xpending(keys.outbox(dest_shard, lane), RELAY_GROUP)
    replies = pipe.execute(raise_on_error=False)
    for reply in replies:  # NOGROUP / no such key: nothing there yet; anything else is an error
        if isinstance(reply, Exception) and not _nothing_there_yet(reply):
            raise reply
    return {
        "length": sum(int(n) for n in replies[0::2] if not isinstance(n, Exception)),
        "pending": sum(int(p["pending"]) for p in replies[1::2] if not isinstance(p, Exception)),
    }


def _nothing_there_yet(error: Exception) -> bool:
    """XPENDING's refusal for an outbox no relay has read yet (no stream, or no group)."""
    text = str(error)
    return text.startswith("NOGROUP") or "no such key" in text.lower()
