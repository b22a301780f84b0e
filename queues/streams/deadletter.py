"""The dead-letter stream: every refused input with its reason, its stage and the original
payload, for operators (``cityrelay deadletters``).
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.client import Pipeline

from queues.keys import Keys


def dead_letter(
    pipe: Pipeline | Redis,
    keys: Keys,
    *,
    reason: str,
    message: str,
    stage: str,
    dept: str,
    stream: str = "",
    entry_id: str = "",
    body: bytes | str | None = None,
    extra: dict[str, str] | None = None,
) -> None:
    """Record a refused input with its reason and the original payload. Never trimmed.
    `extra` adds where it came from outside a stream (an MQTT topic, a CSV file and line)."""
    fields: dict[str, Any] = {
        "reason": reason,
        "message": message[:2000],
        "stage": stage,
        "dept": dept,
        "stream": stream,
        "entry": entry_id,
    }
    if extra:
        fields.update(extra)
    if body is not None:
        fields["body"] = body
    pipe.xadd(keys.deadletter, fields)
    pipe.hincrby(keys.stats, f"deadletter:{reason}", 1)
