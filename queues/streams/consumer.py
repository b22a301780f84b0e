"""The consumer-group side of the ingest streams: the router reads every department's streams
through one group (emergency streams first), reclaims what a dead consumer left pending, trims
what every group acknowledged, and acknowledges entries only after the next hop (RQ enqueue or
the dead-letter stream) has accepted them, in the same transaction.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ResponseError

from queues.keys import ROUTER_GROUP, Keys
from queues.streams.entries import LANES, Entry, _is_emergency


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class IngestStreams:
    """The router's view of every department's ingest streams (one consumer group)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        departments: Sequence[str],
        lanes: Sequence[str] = LANES,
        group: str = ROUTER_GROUP,
    ):
        self.redis = redis
        self.keys = keys
        self.group = group
        self.lanes = tuple(lane for lane in LANES if lane in lanes)
        if not self.lanes:
            raise ValueError(f"no known lane in {lanes!r}; lanes are {', '.join(LANES)}")
        self._dept_of: dict[str, str] = {}
        for lane in self.lanes:  # emergency streams first: read and handled first
            for dept in departments:
                self._dept_of[keys.ingest(dept, lane)] = dept
        self.streams = list(self._dept_of)

    def ensure_groups(self) -> None:
        """Create the consumer group on every stream (from the start, so nothing is missed)."""
        pipe = self.redis.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xgroup_create(stream, self.group, id="0", mkstream=True)
        for result in pipe.execute(raise_on_error=False):
            if isinstance(result, ResponseError) and "BUSYGROUP" not in str(result):
                raise result

    def read(self, consumer: str, count: int, block_ms: int | None) -> list[Entry]:
        """New entries for this consumer, emergency streams first."""
        reply = self.redis.xreadgroup(
            self.group, consumer, dict.fromkeys(self.streams, ">"), count=count, block=block_ms
        )
        return self._entries(reply)

    def _entries(self, reply: Any) -> list[Entry]:
        entries: list[Entry] = []
        for stream, items in reply or []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            dept = self._dept_of[name]
            for entry_id, fields in items:
                eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                entries.append(Entry(name, dept, eid, fields or {}))
        entries.sort(key=lambda e: 0 if e.stream.endswith(":emergency") else 1)
        return entries

    def reclaim(
        self,
        consumer: str,
        min_idle_ms: int,
        max_deliveries: int,
        count: int = 500,
        emergency_idle_ms: int | None = None,
    ) -> tuple[list[Entry], list[tuple[Entry, int]]]:
        """Take over entries another consumer read but never acknowledged (it died): idle for
        `min_idle_ms`, or `emergency_idle_ms` on the emergency streams.

        Returns (entries to process again, entries delivered too often with their delivery
        count). The second kind must be dead-lettered: an entry that crashes every consumer
        must not circulate forever.
        """
        claimed: list[Entry] = []
        poison: list[tuple[Entry, int]] = []
        # One round trip for every stream's pending entries: this runs inside the ingest loop
        # every second or two, and a stream at a time (27 departments: 27 round trips) held
        # up the next read by tens of milliseconds on a busy host - an emergency's, too.
        pipe = self.redis.pipeline(transaction=False)
        idles = []
        for stream in self.streams:
            idle = min_idle_ms
            if emergency_idle_ms is not None and _is_emergency(stream):
                idle = emergency_idle_ms
            idles.append(idle)
            pipe.xpending_range(stream, self.group, min="-", max="+", count=count, idle=idle)
        for stream, idle, pending in zip(self.streams, idles, pipe.execute(), strict=True):
            if not pending:
                continue
            retry_ids = [p["message_id"] for p in pending if p["times_delivered"] < max_deliveries]
            poison_counts = {
                _text(p["message_id"]): p["times_delivered"]
                for p in pending
                if p["times_delivered"] >= max_deliveries
            }
            ids = retry_ids + list(poison_counts)
            reply = self.redis.xclaim(stream, self.group, consumer, idle, ids)
            for entry in self._entries([(stream, [item for item in reply if item and item[0]])]):
                if entry.id in poison_counts:
                    poison.append((entry, poison_counts[entry.id]))
                else:
                    claimed.append(entry)
        return claimed, poison

    def trim_acknowledged(self) -> int:
        """Delete the entries every consumer group has read and acknowledged; returns how many.

        Without this an ingest stream would keep every event ever published. Each stream is
        cut below its oldest pending entry, or just after the last entry delivered to a group
        when none is pending, whichever is lowest over all groups, so an entry that some group
        has not read or not acknowledged yet is never removed. Two round trips for all streams.
        """
        pipe = self.redis.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xinfo_groups(stream)
        replies = pipe.execute(raise_on_error=False)
        floors: dict[str, list[tuple[int, int] | None]] = {}
        for stream, groups in zip(self.streams, replies, strict=True):
            if isinstance(groups, Exception) or not groups:
                continue  # no stream or no group yet: nothing to trim safely
            for group in groups:
                if int(group["pending"]):
                    floors.setdefault(stream, []).append(None)
                    pipe.xpending(stream, _text(group["name"]))
                else:
                    last = _stream_id(group["last-delivered-id"])
                    floors.setdefault(stream, []).append((last[0], last[1] + 1))
        oldest_pending = iter(pipe.execute())
        for stream, candidates in floors.items():
            resolved = [
                c if c is not None else _stream_id(next(oldest_pending)["min"]) for c in candidates
            ]
            floor = min(resolved)
            if floor > (0, 1):
                pipe.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=False)
        return sum(int(n) for n in pipe.execute())

    def ack(self, pipe: Pipeline, entries: Iterable[Entry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.id)
        for stream, ids in by_stream.items():
            pipe.xack(stream, self.group, *ids)


def _stream_id(value: Any) -> tuple[int, int]:
    millis, _, seq = _text(value).partition("-")
    return int(millis), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
