"""Which departments one gateway process serves where, in a partitioned city.

A gateway runs among one slot group's (or URL shard's) processes, under that group's prefix.
For a city of slot groups it publishes every department's events under the department's home
group's prefix, on the same cluster client (`home_writers`), so its home's ingest reads them.
What it cannot do there is refused with 421 (Misdirected Request) naming the home, never
written where nobody reads: publishing for a department at home on another URL shard (another
Redis), and the inbox endpoints (page, ack, stream) of a department at home elsewhere, whose
inbox this process's keys do not name (use the gateway of that group or shard).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from city.config import CityConfig
from queues.keys import Keys
from queues.partition import local_shard
from workers.gateway.problem import Problem

MISDIRECTED = 421


@dataclass(frozen=True)
class Homes:
    keys: Keys  # this process's
    # Departments whose events go under other keys than `keys` (their slot group's).
    publish_keys: Mapping[str, Keys] = field(default_factory=dict)
    remote: Mapping[str, str] = field(default_factory=dict)  # department -> its home, described

    @classmethod
    def for_city(cls, config: CityConfig, keys: Keys) -> Homes:
        parts = config.partitions
        local = local_shard(config, prefix=keys.prefix)  # refuses a process that does not say
        if parts is None or local is None:
            return cls(keys)
        remote: dict[str, str] = {}
        publish: dict[str, Keys] = {}
        for dept in config.department_ids:
            home = parts.home(dept)
            prefix = parts.shards[home].prefix
            if prefix is not None:  # a slot group of this cluster: reachable under its prefix
                publish[dept] = Keys(prefix)
            if home != local:
                remote[dept] = f"slot group {home!r} ({prefix})" if prefix else f"shard {home!r}"
        return cls(keys, publish, remote)

    def publishing(self, dept: str) -> Keys:
        """The keys `dept`'s events are written under; 421 if this gateway cannot reach them."""
        found = self.publish_keys.get(dept)
        if found is not None:
            return found
        if dept in self.remote:
            raise self._misdirected(dept, "publishes")
        return self.keys

    def inbox(self, dept: str) -> None:
        """421 unless `dept`'s inbox is under this process's keys."""
        if dept in self.remote:
            raise self._misdirected(dept, "reads its inbox")

    def _misdirected(self, dept: str, what: str) -> Problem:
        home = self.remote[dept]
        return Problem(
            MISDIRECTED,
            "misdirected",
            f"department {dept!r} is at home on {home}: it {what} through that one's gateway",
            home=home,
        )
