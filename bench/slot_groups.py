"""The Seattle city split into slot groups of one Redis Cluster, for the benches.

A partitioned city (``partitions:`` with a ``prefix:`` per shard, queues/partition.py) keeps
each department's keys under its group's hash tag; a delivery to a department of another group
goes through the routing group's outbox and that group's relay. `Layout` tells a bench where a
department's keys are (one prefix, or its home group's); `partitions_section` writes the
config section for N groups whose slots are on different primaries (`group_prefixes`), with
departments that talk to each other in one group (`DEPARTMENT_GROUPS`), as
tests/integration/test_cluster_slot_groups.py writes its two-group city.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from city.config import PartitionsConfig
from queues.keys import Keys
from workers.standin_cluster import LocalRedisCluster, tag_in_slot

# Departments that mostly deliver to each other, in the order the groups are made: public
# safety (the emergencies: ems, fire, police, emergency management), mobility, utilities and
# environment. A department listed nowhere (parks, schools, council...) is on the first group.
DEPARTMENT_GROUPS: tuple[tuple[str, ...], ...] = (
    ("spd-north", "spd-east", "spd-south", "spd-southwest", "spd-west", "fire", "ems",
     "emergency-management"),
    ("sdot", "traffic-management", "transit"),
    ("spu-water", "city-light", "gas-utility", "spu-waste", "public-health", "environment"),
)  # fmt: skip
MAX_GROUPS = len(DEPARTMENT_GROUPS)
NAMES = "abc"


@dataclass(frozen=True)
class Layout:
    """Each slot group's keys by name, and the group a department is at home on."""

    groups: dict[str, Keys]
    home: Callable[[str], str]

    def keys_of(self, dept: str) -> Keys:
        return self.groups[self.home(dept)]

    @classmethod
    def single(cls, keys: Keys) -> Layout:
        """One prefix for every department (one Redis, or one slot group)."""
        return cls({"": keys}, lambda dept: "")

    @classmethod
    def of(cls, parts: PartitionsConfig) -> Layout:
        return cls({name: Keys(str(s.prefix)) for name, s in parts.shards.items()}, parts.home)


def group_prefixes(cluster: LocalRedisCluster, n: int, stem: str) -> list[str]:
    """`n` hash-tag prefixes ``{stem-a<k>}``... whose slots are each on a different primary
    (the lowest slot of each), so each group is written by its own primary."""
    primaries = sorted(cluster.primary_ports())
    if n > len(primaries):
        raise ValueError(f"{n} groups on {len(primaries)} primaries: one group per primary")
    return [
        "{" + tag_in_slot(cluster.lowest_slot(port), f"{stem}-{NAMES[i]}") + "}"
        for i, port in enumerate(primaries[:n])
    ]


def partitions_section(prefixes: list[str], departments: list[str]) -> dict[str, Any]:
    """The ``partitions:`` section for ``len(prefixes)`` slot groups: group i > 0 holds
    `DEPARTMENT_GROUPS[i]` (those of `departments`), group a the rest (its default)."""
    if not 1 <= len(prefixes) <= MAX_GROUPS:
        raise ValueError(f"1 to {MAX_GROUPS} slot groups, not {len(prefixes)}")
    shards: dict[str, dict[str, Any]] = {"a": {"prefix": prefixes[0]}}
    for i, prefix in enumerate(prefixes[1:], start=1):
        members = [d for d in DEPARTMENT_GROUPS[i] if d in departments]
        shards[NAMES[i]] = {"prefix": prefix, "departments": members}
    return {"default": "a", "shards": shards}
