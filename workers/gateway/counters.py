"""The gateway's counters: accepted events per department and refusals per reason.

Counted in memory on the request path (no Redis round trip per request) and added to the
stats hash (`Keys.stats`: ``gateway_in:{dept}``, ``gateway_refused:{reason}``, see
queues/metrics.py) by `flush`, which the app runs about once a second and at shutdown, so
`cityrelay status` and the exporter show them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from queues.keys import Keys
from queues.metrics import GATEWAY_IN, GATEWAY_REFUSED


class GatewayCounters:
    def __init__(self, keys: Keys):
        self.keys = keys
        self._pending: Counter[str] = Counter()

    def accepted(self, dept: str, n: int) -> None:
        if n:
            self._pending[f"{GATEWAY_IN}:{dept}"] += n

    def refused(self, reason: str, n: int = 1) -> None:
        if n:
            self._pending[f"{GATEWAY_REFUSED}:{reason}"] += n

    async def flush(self, redis: Any) -> None:
        """HINCRBY what was counted since the last flush (one pipeline); on failure the counts
        are kept for the next flush."""
        from workers.gateway.protocol import REFUSED  # refusals before the app saw a request

        for reason, n in list(REFUSED.items()):
            self.refused(reason, n)
            REFUSED[reason] -= n
        if not self._pending:
            return
        batch, self._pending = self._pending, Counter()
        try:
            pipe = redis.pipeline(transaction=False)
            for name, value in batch.items():
                pipe.hincrby(self.keys.stats, name, value)
            await pipe.execute()
        except Exception:
            self._pending.update(batch)
            raise
