"""Under which keys one gateway process serves each department, in a partitioned city.

A gateway runs among one slot group's (or URL shard's) processes, under that group's prefix.
For a city of slot groups it serves every department under the department's home group's
prefix, on the same cluster clients: its events go to the home group's ingest streams (the
ones that group's ingest reads), its inbox is read and acknowledged there. A department at
home on another URL shard (another Redis, which this process holds no client for) is refused
with 421 (Misdirected Request) naming its shard, before anything is written, never served from
keys nobody else reads (use that shard's gateway).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from city.config import CityConfig
from queues.keys import Keys
from queues.partition import group_keys, local_shard
from workers.gateway.problem import Problem

MISDIRECTED = 421


@dataclass(frozen=True)
class Homes:
    keys: Keys  # this process's
    # Departments served under other keys than `keys` (their slot group's).
    elsewhere: Mapping[str, Keys] = field(default_factory=dict)
    # Departments this process cannot serve (at home on another URL shard) -> that shard.
    unreachable: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def for_city(cls, config: CityConfig, keys: Keys) -> Homes:
        parts = config.partitions
        local = local_shard(config, prefix=keys.prefix)  # refuses a process that does not say
        if parts is None or local is None:
            return cls(keys)
        groups = group_keys(parts)
        homes = {dept: parts.home(dept) for dept in config.department_ids}
        if groups:
            return cls(keys, elsewhere={d: groups[h] for d, h in homes.items() if h != local})
        return cls(keys, unreachable={d: h for d, h in homes.items() if h != local})

    def keys_for(self, dept: str, what: str = "publishes") -> Keys:
        """The keys `dept` is served under; 421 naming its shard when this process cannot
        reach them (`what` it tried, for the message)."""
        found = self.elsewhere.get(dept)
        if found is not None:
            return found
        shard = self.unreachable.get(dept)
        if shard is not None:
            raise Problem(
                MISDIRECTED,
                "misdirected",
                f"department {dept!r} is at home on shard {shard!r}: it {what} through that "
                "shard's gateway",
                home=shard,
            )
        return self.keys
