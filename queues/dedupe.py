"""Ingest's dedupe markers: claim ``seen:{dept}:{event id}`` for a batch in one script call.

Each marker is ``SET key <ingest entry id> NX EX <window> GET``: the previous value says whether
the event was seen (another entry's id: a duplicate publish; this entry's id: a redelivery after
a crash, which must go through; ``delivered``: the route script set it). Sent as one script per
`CHUNK` markers instead of one command each: redis-py packs every argument in Python, so 500
pipelined SETs of seven arguments cost ingest more CPU than validating the events, while the
script takes two arguments per marker. A chunk stays well under a millisecond of Redis time.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis

CLAIM_LUA = """
local ttl = ARGV[1]
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('SET', key, ARGV[i + 1], 'NX', 'EX', ttl, 'GET') or ''
end
return out
"""

CHUNK = 250


class SeenMarkers:
    def __init__(self, redis: Redis, ttl_s: int):
        self.redis = redis
        self.ttl = ttl_s
        self._script = redis.register_script(CLAIM_LUA)

    def claim(self, keys: Sequence[str], entry_ids: Sequence[str]) -> list[bytes | None]:
        """Set each marker to its entry id unless it exists; the previous values (None: new)."""
        if len(keys) <= CHUNK:
            replies = self._script(keys=list(keys), args=[self.ttl, *entry_ids])
        else:
            pipe = self.redis.pipeline(transaction=False)
            for start in range(0, len(keys), CHUNK):
                chunk = slice(start, start + CHUNK)
                self._script(
                    keys=list(keys[chunk]), args=[self.ttl, *entry_ids[chunk]], client=pipe
                )
            replies = [value for chunk_replies in pipe.execute() for value in chunk_replies]
        return [value or None for value in replies]
