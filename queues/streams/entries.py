"""What an ingest entry is: the lanes (``ingest:{dept}`` for routine traffic,
``ingest:{dept}:emergency`` for emergencies, which therefore never queue behind routine backlog),
the entry's one field (``e``: the event as JSON, or ``cap``: a raw CAP alert from a feed bridge,
decoded by queues/ingest_decode.py), and `Entry`, one entry as the router reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

EVENT_FIELD = b"e"
CAP_FIELD = b"cap"  # a raw CAP alert (Producer.publish_cap), decoded by queues/ingest_decode.py
LANES = ("emergency", "routine")


@dataclass(frozen=True)
class Entry:
    """One ingest stream entry as read by the router."""

    stream: str
    dept: str
    id: str
    fields: dict[bytes, bytes]

    @property
    def body(self) -> bytes | None:
        return self.fields.get(EVENT_FIELD)

    @property
    def millis(self) -> int:
        """Redis time (ms) when the entry was accepted."""
        return int(self.id.split("-", 1)[0])


def _is_emergency(stream: str) -> bool:
    return stream.endswith(":emergency")
