"""Limits that keep Redis memory bounded: producer backpressure and inbox alarms.

Redis holds everything in memory, so one party that misbehaves - a department that stops
reading its inbox, a producer flooding the city - must not exhaust it for everyone:

- Inboxes are bounded inside the delivery script (`queues.inbox.StreamBound`); this module
  turns what the script reports into counters (``inbox_trimmed:{dept}``) and alerts on
  ``{p}:alerts`` (kind ``inbox.backlog``), at most one per department per `ALARM_PERIOD_S`.
- `MemoryGuard` (run by every ingest process about once a second) compares Redis's used memory
  with the high watermark and sets or clears ``{p}:backpressure``. The flag expires by itself
  when no guard refreshes it, so a stopped guard can never leave producers refused.
- `PressureGauge` is the producer's side: it reads the flag at most every `interval` seconds
  (one GET, not one per event) and refuses routine publishes with `Backpressure` while it is set.
  Emergencies are never refused. Redis's own ``maxmemory`` with ``noeviction`` stays the hard
  stop; its OOM error reaches producers as `Backpressure` too.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import OutOfMemoryError, ResponseError

from queues.inbox import Backlog, StreamBound
from queues.keys import Keys

if TYPE_CHECKING:  # the producer side must not import the whole config (geometry libraries)
    from city.config import CityConfig, LimitsConfig

log = logging.getLogger("cityrelay.limits")

ALARM_PERIOD_S = 300
BACKPRESSURE_TTL_S = 10
ALERTS_MAXLEN = 100_000
MB = 1024 * 1024


class Backpressure(RuntimeError):
    """Redis memory is high: routine publishes are refused for now. Retry after
    `retry_after_s`; nothing of the refused call was accepted (or, for a batch cut off by
    Redis's OOM error, part of it was: publishing it again is safe, ingest drops duplicates)."""

    retry_after_s = 1.0

    def __init__(self, detail: str, accepted: Sequence[str] = (), refused: Sequence[str] = ()):
        super().__init__(f"Redis memory is high, routine events are refused for now: {detail}")
        self.detail = detail
        self.accepted = list(accepted)  # ids published anyway (emergencies)
        self.refused = list(refused)  # ids not published: send them again later


def is_oom(error: ResponseError) -> bool:
    """Redis's own refusal at ``maxmemory`` (policy ``noeviction``)."""
    return isinstance(error, OutOfMemoryError) or str(error).startswith("OOM")


def inbox_bounds(keys: Keys, config: CityConfig) -> dict[str, StreamBound]:
    """The bound of every department inbox."""
    ratio = config.limits.inbox_alarm_ratio
    bounds = {}
    for dept in config.department_ids:
        cap = config.inbox_max_len(dept)
        bounds[keys.inbox(dept)] = StreamBound(cap, max(1, int(cap * ratio)))
    return bounds


class InboxAlarms:
    """Counts trimmed inbox entries and raises rate-limited backlog alerts.

    The alarm marker (``SET NX EX``) is shared by every worker, so the city gets one alert per
    department per period however many workers see the backlog; a per-process memo spares the
    round trip while an alarm is known to be raised.
    """

    def __init__(self, keys: Keys, period_s: int = ALARM_PERIOD_S):
        self.keys = keys
        self.period_s = period_s
        self._quiet_until: dict[str, float] = {}
        self._dept_of: dict[str, str] = {}  # inbox key -> department

    def _dept(self, key: str) -> str:
        dept = self._dept_of.get(key)
        if dept is None:
            dept = self._dept_of[key] = key.removeprefix(self.keys.inbox(""))
        return dept

    def count(self, pipe: Pipeline, backlogs: Sequence[Backlog]) -> None:
        """Trimmed entries into the stats hash (in the caller's counters pipeline)."""
        for backlog in backlogs:
            if backlog.trimmed:
                pipe.hincrby(self.keys.stats, f"inbox_trimmed:{self._dept(backlog.key)}",
                             backlog.trimmed)  # fmt: skip

    def raise_alarms(self, redis: Redis, backlogs: Sequence[Backlog]) -> list[str]:
        """Alert for each department whose inbox is at or above its alarm length (or was just
        trimmed) unless one was raised within the period; returns the departments alerted."""
        now = time.monotonic()
        due = [b for b in backlogs if self._quiet_until.get(self._dept(b.key), 0.0) <= now]
        if not due:
            return []
        pipe = redis.pipeline(transaction=False)
        for backlog in due:
            pipe.set(self.keys.alarm(f"inbox:{self._dept(backlog.key)}"), "1", nx=True,
                     ex=self.period_s)  # fmt: skip
        claimed = pipe.execute()
        alerted = []
        for backlog, mine in zip(due, claimed, strict=True):
            dept = self._dept(backlog.key)
            self._quiet_until[dept] = now + min(self.period_s, 30)
            if not mine:
                continue
            pipe.xadd(
                self.keys.alerts,
                {
                    "kind": "inbox.backlog",
                    "dept": dept,
                    "length": backlog.length,
                    "max_len": backlog.bound.max_len,
                    "trimmed": backlog.trimmed,
                    "detail": (
                        f"inbox of {dept} holds {backlog.length} entries (bound "
                        f"{backlog.bound.max_len}); is the department consuming?"
                    ),
                    "ts": f"{time.time():.3f}",
                },
                maxlen=ALERTS_MAXLEN,
                approximate=True,
            )
            alerted.append(dept)
        if alerted:
            pipe.execute()
        return alerted


@dataclass(frozen=True)
class MemoryState:
    used: int
    high: int | None  # bytes; None: no watermark (no maxmemory and no memory_high_mb)
    low: int | None
    pressure: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "used_mb": round(self.used / MB, 1),
            "high_mb": None if self.high is None else round(self.high / MB, 1),
            "low_mb": None if self.low is None else round(self.low / MB, 1),
            "backpressure": self.pressure,
        }


def watermarks(limits: LimitsConfig, maxmemory: int) -> tuple[int | None, int | None]:
    """(high, low) in bytes: ratios of Redis's maxmemory, else from `memory_high_mb`."""
    if maxmemory > 0:
        return int(maxmemory * limits.memory_high_ratio), int(maxmemory * limits.memory_low_ratio)
    if limits.memory_high_mb is not None:
        high = limits.memory_high_mb * MB
        return high, int(high * limits.memory_low_ratio / limits.memory_high_ratio)
    return None, None


class MemoryGuard:
    """Sets ``{p}:backpressure`` above the high watermark, clears it below the low one, and
    keeps it (refreshing its expiry) in between, so the flag does not flap around one value."""

    def __init__(self, redis: Redis, keys: Keys, limits: LimitsConfig):
        self.redis = redis
        self.keys = keys
        self.limits = limits
        self.unavailable: str | None = None  # why the server gives no memory figures

    def check(self) -> MemoryState:
        if self.unavailable is not None:
            return MemoryState(0, None, None, False)
        try:
            info = self.redis.info("memory")
        except ResponseError as exc:  # a stand-in without INFO, or INFO denied by an ACL
            self.unavailable = str(exc)
            log.warning("no producer backpressure: the server refuses INFO memory (%s)", exc)
            return MemoryState(0, None, None, False)
        used = int(info["used_memory"])
        high, low = watermarks(self.limits, int(info.get("maxmemory", 0)))
        key = self.keys.backpressure
        if high is None or low is None:  # no watermark: a flag left from before expires
            return MemoryState(used, None, None, False)
        if used >= high:
            state = json.dumps(
                {"used_mb": round(used / MB, 1), "high_mb": round(high / MB, 1), "ts": time.time()}
            )
            self.redis.set(key, state, ex=BACKPRESSURE_TTL_S)
            return MemoryState(used, high, low, True)
        if used < low:
            self.redis.delete(key)
            return MemoryState(used, high, low, False)
        kept = bool(self.redis.expire(key, BACKPRESSURE_TTL_S))
        return MemoryState(used, high, low, kept)


def read_pressure(redis: Redis, keys: Keys) -> dict[str, Any] | None:
    """The backpressure state as the guard wrote it, or None when producers are admitted."""
    raw = redis.get(keys.backpressure)
    return json.loads(raw) if raw else None


class PressureGauge:
    """The producer's view of the flag, read at most every `interval` seconds."""

    def __init__(self, redis: Redis, keys: Keys, interval: float = 0.5):
        self.redis = redis
        self.keys = keys
        self.interval = interval
        self._checked_at = float("-inf")
        self._state: dict[str, Any] | None = None

    def check(self) -> None:
        """Raise `Backpressure` while the flag is set."""
        now = time.monotonic()
        if now - self._checked_at >= self.interval:
            self._state = read_pressure(self.redis, self.keys)
            self._checked_at = now
        if self._state is not None:
            raise Backpressure(
                f"{self._state.get('used_mb')} MB used, high watermark "
                f"{self._state.get('high_mb')} MB"
            )
