"""The PIA store, the quarantine stream and the alerts (Redis side of `city/privacy/pia.py`).

PIAs live in one hash (``dept/type`` -> JSON) with a version counter bumped in the same
transaction as every change, so a router reloads them only when something changed (one GET
per batch). Quarantined events go to ``{p}:quarantine`` with the reason; each batch raises
one alert per (integration, reason) on ``{p}:alerts``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from redis import Redis
from redis.client import Pipeline

from city.privacy.pia import Pia
from queues.keys import Keys

QUARANTINE_MAXLEN = 1_000_000
ALERTS_MAXLEN = 100_000


class PiaStore:
    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys
        self._cache: tuple[int, dict[str, Pia]] | None = None

    def put(self, pia: Pia) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.pia, pia.integration, pia.model_dump_json())
        pipe.incr(self.keys.pia_version)
        pipe.execute()

    def get(self, integration: str) -> Pia | None:
        raw = self.redis.hget(self.keys.pia, integration)
        return None if raw is None else Pia.model_validate_json(raw)

    def all(self) -> dict[str, Pia]:
        return {
            (k.decode() if isinstance(k, bytes) else k): Pia.model_validate_json(v)
            for k, v in self.redis.hgetall(self.keys.pia).items()
        }

    def load(self) -> tuple[int, dict[str, Pia]]:
        """All PIAs, re-read only when the version moved (one GET otherwise)."""
        version = int(self.redis.get(self.keys.pia_version) or 0)
        if self._cache is None or self._cache[0] != version:
            self._cache = (version, self.all())
        return self._cache


def quarantine(
    pipe: Redis | Pipeline,
    keys: Keys,
    items: Iterable[tuple[dict[str, Any], str, str]],
) -> int:
    """Queue (event, reason, detail) into the quarantine stream and one alert per
    (integration, reason); returns how many events were queued."""
    count = 0
    alerts: dict[tuple[str, str, str], tuple[int, str]] = {}
    for event, reason, detail in items:
        dept, etype = str(event.get("department", "")), str(event.get("type", ""))
        pipe.xadd(
            keys.quarantine,
            {
                "reason": reason,
                "detail": detail,
                "dept": dept,
                "type": etype,
                "id": str(event.get("id", "")),
                "e": json.dumps(event, separators=(",", ":")),
            },
            maxlen=QUARANTINE_MAXLEN,
            approximate=True,
        )
        n, _ = alerts.get((dept, etype, reason), (0, detail))
        alerts[(dept, etype, reason)] = (n + 1, detail)
        count += 1
    for (dept, etype, reason), (n, detail) in alerts.items():
        pipe.xadd(
            keys.alerts,
            {
                "kind": "privacy.quarantine",
                "reason": reason,
                "integration": f"{dept}/{etype}",
                "events": str(n),
                "detail": detail,
                "ts": f"{time.time():.3f}",
            },
            maxlen=ALERTS_MAXLEN,
            approximate=True,
        )
    if count:
        pipe.hincrby(keys.stats, "quarantined", count)
    return count
