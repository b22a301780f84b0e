"""Every Redis key cityrelay uses, in one place.

All keys share a prefix (default ``city``; ``CITYRELAY_PREFIX`` or the `Keys(prefix)` argument),
so several cities or test runs can share one Redis without touching each other's data, and a
Redis ACL can be written per department from these names alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_PREFIX = "city"
ROUTER_GROUP = "router"


def default_prefix() -> str:
    return os.environ.get("CITYRELAY_PREFIX", DEFAULT_PREFIX)


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

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

    @property
    def rq_prefix(self) -> str:
        """RQ queue names are ``{p}.{queue}`` so each city has its own queues in `rq info`."""
        return self.prefix

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
