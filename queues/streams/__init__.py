"""Ingest streams: each department writes its own streams, one per lane (`entries`: lanes, the
entry's fields, `Entry`), through `Producer` (`producer`: XADD per department and lane,
chunking, backpressure, WAIT for replicas); the router reads them all through one consumer
group (`consumer`: `IngestStreams` read, reclaim, trim, ack) and sends what it refuses to the
dead-letter stream (`deadletter`). Modules here import `city`, the rest of `queues` and each
other, never `jobs`, `workers` or this ``__init__``.
"""

from queues.streams.consumer import IngestStreams, consumer_name
from queues.streams.deadletter import dead_letter
from queues.streams.entries import CAP_FIELD, EVENT_FIELD, LANES, Entry
from queues.streams.producer import PUBLISH_CHUNK, NotReplicatedError, Producer

__all__ = [
    "CAP_FIELD",
    "EVENT_FIELD",
    "LANES",
    "PUBLISH_CHUNK",
    "Entry",
    "IngestStreams",
    "NotReplicatedError",
    "Producer",
    "consumer_name",
    "dead_letter",
]
