"""What `cityrelay status` adds on Redis Cluster: the nodes, and the city's slot groups.

Per node: primary or replica (of which primary), the slot ranges it serves, whether it is
failing. Per slot group (a shard of ``partitions:`` with ``prefix:``, or the process's own
prefix when the city has none): its slot and the primary serving it, its departments' ingest
backlog (``lag``: not yet read by ingest, ``pending``: read and not yet handed on) and its
outboxes to each other group (``length`` waiting, ``pending``: read by a relay, not yet
acknowledged). A growing outbox is a relay that is down or cannot write; a growing lag, a group
whose ingest is down or whose primary is saturated (then move groups apart, see
docs/operations.md "Growing past one machine").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from redis import Redis
from redis.crc import key_slot

from city.config import CityConfig
from queues.keys import Keys
from queues.partition import group_keys
from queues.relay import outbox_backlog
from queues.snapshot import ingest_backlog
from queues.streams import LANES


@dataclass(frozen=True)
class NodeState:
    address: str
    role: str  # "primary" or "replica"
    primary: str | None  # a replica's primary (its address)
    slots: list[tuple[int, int]]  # inclusive ranges
    failing: bool  # flagged fail / pfail by the cluster, or disconnected

    @property
    def slot_count(self) -> int:
        return sum(end - start + 1 for start, end in self.slots)

    def serves(self, slot: int) -> bool:
        return any(start <= slot <= end for start, end in self.slots)


def nodes_of(reply: Mapping[str, Mapping[str, Any]]) -> list[NodeState]:
    """The nodes from redis-py's parsed ``CLUSTER NODES`` (address -> details), primaries
    first, each in address order."""
    ids = {details["node_id"]: address.split("@")[0] for address, details in reply.items()}
    nodes = []
    for address, details in reply.items():
        flags = set(str(details.get("flags", "")).split(","))
        replica = "slave" in flags or "replica" in flags
        slots = [(int(r[0]), int(r[-1])) for r in details.get("slots", [])]
        nodes.append(
            NodeState(
                address=address.split("@")[0],
                role="replica" if replica else "primary",
                primary=ids.get(details.get("master_id", "")) if replica else None,
                slots=sorted(slots),
                failing=bool(flags & {"fail", "fail?"}) or not details.get("connected", True),
            )
        )
    return sorted(nodes, key=lambda n: (n.role != "primary", n.address))


def groups_of(config: CityConfig | None, keys: Keys) -> dict[str, Keys]:
    """The city's slot groups by shard name; one unnamed group (``""``) for a city without
    ``partitions:`` slot groups: the process's own prefix."""
    groups = group_keys(config.partitions if config is not None else None)
    return groups or {"": keys}


def group_figures(
    redis: Redis,
    config: CityConfig | None,
    keys: Keys,
    departments: Sequence[str],
    nodes: Sequence[NodeState] = (),
) -> dict[str, dict[str, Any]]:
    """Per slot group: prefix, slot, serving primary, departments, ingest backlog, outboxes.
    Plain per-key reads (each in its group's slot), so any client will do."""
    groups = groups_of(config, keys)
    parts = config.partitions if config is not None else None
    figures: dict[str, dict[str, Any]] = {}
    for name, there in groups.items():
        homes = parts.departments_on(name, list(departments)) if name and parts else departments
        slot = key_slot(there.stats.encode())
        primary = next((n.address for n in nodes if n.role == "primary" and n.serves(slot)), None)
        streams = [there.ingest(dept, lane) for dept in homes for lane in LANES]
        figures[name] = {
            "prefix": there.prefix,
            "slot": slot,
            "primary": primary,
            "departments": list(homes),
            "ingest": ingest_backlog(redis, streams),
            "outboxes": {
                dest: outbox_backlog(redis, there, dest) for dest in groups if dest and dest != name
            },
        }
    return figures


def cluster_report(
    redis: Redis, config: CityConfig | None, keys: Keys, departments: Sequence[str]
) -> dict[str, Any]:
    """`cityrelay status --json`'s ``cluster`` section: ``nodes`` and ``groups``."""
    nodes = nodes_of(redis.cluster_nodes())
    return {
        "nodes": [asdict(n) | {"slot_count": n.slot_count} for n in nodes],
        "groups": group_figures(redis, config, keys, departments, nodes),
    }


def render_cluster(data: Mapping[str, Any]) -> list[str]:
    """The ``cluster`` section as lines: one per node, one per group."""
    lines = [f"{'node':22s} {'role':8s} {'slots':>6s}  ranges / primary"]
    for node in data["nodes"]:
        ranges = ",".join(f"{a}-{b}" if a != b else str(a) for a, b in node["slots"])
        where = ranges if node["role"] == "primary" else f"of {node['primary']}"
        state = "  FAILING" if node["failing"] else ""
        lines.append(
            f"{node['address']:22s} {node['role']:8s} {node['slot_count']:>6}  {where}{state}"
        )
    lines.append(
        f"{'slot group':18s} {'slot':>5s} {'primary':22s} {'ingest lag':>10s} "
        f"{'pending':>8s}  outboxes (waiting/pending)"
    )
    for name, group in data["groups"].items():
        outboxes = ", ".join(
            f"->{dest} {o['length']}/{o['pending']}" for dest, o in group["outboxes"].items()
        )
        lines.append(
            f"{(name or group['prefix']):18s} {group['slot']:>5} {group['primary'] or '?':22s} "
            f"{group['ingest']['lag']:>10} {group['ingest']['pending']:>8}  {outboxes or '-'}"
        )
    return lines
