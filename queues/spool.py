"""A durable local spool: the producer keeps accepting events while Redis is unreachable.

When an XADD fails with a connection error, the producer appends the entry here (SQLite in WAL
mode, ``synchronous=FULL``: an append that returned survives a process crash or power loss) and
returns at once. A background `SpoolFlusher` replays the spool into Redis, oldest first, when
Redis is back, and deletes entries only after Redis accepted them.

Replay is one Lua call per batch (one round trip, in order, stopping at the first entry Redis
refuses) and idempotent per event id: an entry with an id is skipped if its replay marker
exists, and the marker is set after its XADD, so a replay repeated after a crash (XADD done,
delete not) adds nothing twice. An XADD whose reply was lost before
the event was spooled is a duplicate the ingest consumer drops (it dedupes by event id).

Order: while the spool has entries, `xadd_or_spool` spools new events too, so nothing
overtakes what is waiting.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from queues.keys import Keys
from queues.replicas import write_then_wait

log = logging.getLogger(__name__)

FieldValue = str | bytes | int | float
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
DEFAULT_MARKER_TTL_S = 7 * 24 * 3600

# One call per batch, in order, stopping at the first entry Redis refuses.
# KEYS: stream, marker for each entry. ARGV: marker ttl, then per entry:
# has-marker flag, maxlen ('' for none), number of field/value items, the items.
# Returns {entries done, error message or ''}.
_REPLAY_LUA = """
local a, done = 2, 0
for k = 1, #KEYS, 2 do
  local use_marker, maxlen, n = ARGV[a] == '1', ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  if not (use_marker and redis.call('EXISTS', KEYS[k + 1]) == 1) then
    local args = {'XADD', KEYS[k]}
    if maxlen ~= '' then
      table.insert(args, 'MAXLEN'); table.insert(args, '~'); table.insert(args, maxlen)
    end
    table.insert(args, '*')
    for i = a, a + n - 1 do table.insert(args, ARGV[i]) end
    local id = redis.pcall(unpack(args))
    if type(id) == 'table' and id.err then return {done, id.err} end
    if use_marker then redis.call('SET', KEYS[k + 1], id, 'EX', ARGV[1]) end
  end
  a = a + n
  done = done + 1
end
return {done, ''}
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    stream     TEXT NOT NULL,
    fields     TEXT NOT NULL,
    event_id   TEXT,
    maxlen     INTEGER,
    spooled_at REAL NOT NULL
)
"""


def _replay_arguments(entries: list[SpoolEntry], marker_ttl_s: int) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of `_REPLAY_LUA` for a batch."""
    keys: list[str] = []
    args: list[Any] = [marker_ttl_s]
    for entry in entries:
        keys += [entry.stream, Keys.replay_marker(entry.stream, entry.event_id or "")]
        args += ["1" if entry.event_id else "0", entry.maxlen or "", 2 * len(entry.fields)]
        for key, value in entry.fields.items():
            args += [key, value]
    return keys, args


class SpoolReplayError(RuntimeError):
    """Redis refused a spooled entry (not a connection problem); the entry stays spooled."""


@dataclass(frozen=True)
class SpoolEntry:
    seq: int
    stream: str
    fields: dict[str, FieldValue]
    event_id: str | None
    maxlen: int | None
    spooled_at: float


def _encode(fields: Mapping[str, FieldValue]) -> str:
    items = []
    for key, value in fields.items():
        if isinstance(value, bytes):
            items.append([key, base64.b64encode(value).decode("ascii"), "b"])
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            items.append([key, str(value), "s"])
        else:
            raise TypeError(f"field {key!r}: {type(value).__name__} is not a str, bytes or number")
    return json.dumps(items, separators=(",", ":"))


def _decode(text: str) -> dict[str, FieldValue]:
    return {
        key: base64.b64decode(value) if kind == "b" else value
        for key, value, kind in json.loads(text)
    }


class Spool:
    """An append-only, ordered, crash-safe queue of pending XADDs in one SQLite file.

    One instance may be shared by threads (a lock serialises use of its connection); several
    processes may open the same file (SQLite WAL locking), though one flusher per file is enough.
    """

    def __init__(self, path: str | Path, *, marker_ttl_s: int = DEFAULT_MARKER_TTL_S):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.marker_ttl_s = marker_ttl_s
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit
        self._db.execute(_SCHEMA)
        self._scripts: dict[int, Any] = {}

    def append(
        self,
        stream: str,
        fields: Mapping[str, FieldValue],
        *,
        event_id: str | None = None,
        maxlen: int | None = None,
    ) -> int:
        """Durably record one pending XADD; returns its sequence number."""
        return self.append_many([(stream, fields, event_id)], maxlen=maxlen)[0]

    def append_many(
        self,
        entries: Iterable[tuple[str, Mapping[str, FieldValue], str | None]],
        *,
        maxlen: int | None = None,
    ) -> list[int]:
        """Record several pending XADDs (stream, fields, event id) in one durable commit."""
        rows = [
            (stream, _encode(fields), event_id, maxlen, time.time())
            for stream, fields, event_id in entries
        ]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seqs = [
                    self._db.execute(
                        "INSERT INTO spool (stream, fields, event_id, maxlen, spooled_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        row,
                    ).lastrowid
                    for row in rows
                ]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return [int(seq) for seq in seqs if seq is not None]

    def pending(self, limit: int | None = None) -> list[SpoolEntry]:
        """The waiting entries, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, stream, fields, event_id, maxlen, spooled_at FROM spool"
                " ORDER BY seq LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
        return [SpoolEntry(r[0], r[1], _decode(r[2]), r[3], r[4], r[5]) for r in rows]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM spool").fetchone()[0])

    def has_pending(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM spool LIMIT 1").fetchone() is not None

    def replay(
        self, redis: Redis, batch: int = 500, min_replicas: int = 0, replica_timeout_ms: int = 1000
    ) -> int:
        """Move every waiting entry into Redis in order, `batch` per pipelined round trip.

        Returns how many were replayed. Connection errors propagate (nothing is deleted that
        Redis did not confirm); a command Redis refuses raises `SpoolReplayError` after the
        entries before it have been confirmed and deleted. With `min_replicas`, a batch counts
        as confirmed only once that many replicas hold it (``WAIT`` after the script, same
        round trip); otherwise `SpoolReplayError` and the batch stays spooled (its replay
        markers make the next attempt add nothing twice).
        """
        script = self._script(redis)
        total = 0
        while entries := self.pending(limit=batch):
            keys, args = _replay_arguments(entries, self.marker_ttl_s)
            if min_replicas:  # the script and WAIT in one round trip, on one connection

                def replay_batch(pipe: Any, keys: list[str] = keys, args: list[Any] = args) -> None:
                    script(keys=keys, args=args, client=pipe)

                (done, error), replicas = write_then_wait(
                    redis, keys[0], replay_batch, min_replicas, replica_timeout_ms
                )
                if int(replicas) < min_replicas:
                    raise SpoolReplayError(
                        f"{done} spooled entries reached {replicas} of {min_replicas} replica(s)"
                        f" within {replica_timeout_ms} ms; they stay in {self.path}"
                    )
            else:
                done, error = script(keys=keys, args=args)
            if done:
                self._delete(entries[0].seq, entries[done - 1].seq)
                total += done
            if error:
                bad = entries[done]
                message = error.decode() if isinstance(error, bytes) else error
                raise SpoolReplayError(
                    f"Redis refused spooled entry {bad.seq} for {bad.stream} (event"
                    f" {bad.event_id}): {message}; it stays in {self.path}"
                )
        return total

    def _script(self, redis: Redis) -> Any:
        key = id(redis)
        if key not in self._scripts:
            self._scripts[key] = redis.register_script(_REPLAY_LUA)
        return self._scripts[key]

    def _delete(self, first: int, last: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM spool WHERE seq BETWEEN ? AND ?", (first, last))

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass(frozen=True)
class Published:
    """Where `xadd_or_spool` put an entry: the Redis stream id, or the spool sequence number."""

    where: Literal["redis", "spool"]
    ref: str


def xadd_or_spool(
    redis: Redis,
    spool: Spool,
    stream: str,
    fields: Mapping[str, FieldValue],
    *,
    event_id: str | None = None,
    maxlen: int | None = None,
    flusher: SpoolFlusher | None = None,
) -> Published:
    """XADD, or spool when Redis is unreachable or the spool already holds older entries."""
    if not spool.has_pending():
        try:
            entry_id = redis.xadd(stream, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
            return Published(
                "redis", entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            )
        except REDIS_DOWN:
            pass  # fall through to the spool: the caller gets its answer promptly either way
    seq = spool.append(stream, fields, event_id=event_id, maxlen=maxlen)
    if flusher is not None:
        flusher.wake()
    return Published("spool", str(seq))


class SpoolFlusher:
    """A daemon thread that replays the spool whenever it has entries and Redis answers.

    It polls every `interval` seconds (or at once after `wake()`); after a failure it waits an
    exponential backoff with full jitter (up to `backoff_cap`). The last failure is kept in
    `last_error` and logged, never swallowed silently.
    """

    def __init__(
        self,
        spool: Spool,
        redis: Redis,
        *,
        batch: int = 500,
        interval: float = 1.0,
        backoff_base: float = 0.1,
        backoff_cap: float = 30.0,
        min_replicas: int = 0,
        replica_timeout_ms: int = 1000,
    ):
        self.spool, self.redis, self.batch = spool, redis, batch
        self.min_replicas, self.replica_timeout_ms = min_replicas, replica_timeout_ms
        self.interval, self.backoff_base, self.backoff_cap = interval, backoff_base, backoff_cap
        self.replayed = 0
        self.failures = 0
        self.last_error: BaseException | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spool-flusher", daemon=True)

    def start(self) -> SpoolFlusher:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def flush_once(self) -> int:
        """One replay attempt; returns the number replayed (0 after a failure)."""
        try:
            count = self.spool.replay(
                self.redis, self.batch, self.min_replicas, self.replica_timeout_ms
            )
        except (SpoolReplayError, *REDIS_DOWN) as exc:
            self.failures += 1
            self.last_error = exc
            log.warning(
                "spool %s: replay failed (%s attempt): %s", self.spool.path, self.failures, exc
            )
            return 0
        self.failures = 0
        self.replayed += count
        return count

    def next_delay(self) -> float:
        if self.failures == 0:
            return self.interval
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**self.failures))

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.spool.has_pending():
                try:
                    self.flush_once()
                except Exception as exc:  # noqa: BLE001 - a dead flusher would strand the spool
                    # Not a known replay failure (a refusal, a bug): the entries stay spooled,
                    # so log it and try again after the same backoff instead of ending here.
                    self.failures += 1
                    self.last_error = exc
                    log.exception(
                        "spool %s: replay failed unexpectedly (%s attempt)",
                        self.spool.path,
                        self.failures,
                    )
            self._wake.wait(self.next_delay())
            self._wake.clear()
