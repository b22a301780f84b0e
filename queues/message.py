"""A delivered event as a department reads it from its inbox: `Message` and `parse_message` (one
inbox entry -> Message). Its own module because both the inbox (which reads messages) and the
acknowledgements (whose inbox hook takes them) use it, and neither should import the other's
module for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


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


def parse_message(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Message:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return Message(
        entry_id=eid,
        event=json.loads(fields[b"e"]),
        via=json.loads(fields.get(b"via", b"{}")),
        ingested_ms=int(fields.get(b"ing", b"0").split(b"-", 1)[0]),
    )
