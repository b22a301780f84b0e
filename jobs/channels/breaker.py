"""Circuit breakers: one per endpoint (scheme://host:port), so a dead endpoint does not hold up
escalation. Breakers live in the process (each RQ worker keeps its own).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from jobs.channels.config import BreakerConfig


class CircuitBreaker:
    """Closed -> open after `failure_threshold` consecutive failures; open refuses calls for
    `reset_timeout_s`, then lets one trial through (half-open): success closes, failure reopens."""

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.failure_threshold, self.reset_timeout_s, self.clock = (
            failure_threshold,
            reset_timeout_s,
            clock,
        )
        self.failures = 0
        self.opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.reset_timeout_s else "open"

    def allow(self) -> bool:
        with self._lock:
            state = self.state
            if state == "closed":
                return True
            if state == "half-open" and not self._trial:
                self._trial = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self.failures, self.opened_at, self._trial = 0, None, False

    def record_failure(self) -> None:
        with self._lock:
            self.failures += 1
            if self._trial or self.failures >= self.failure_threshold:
                self.opened_at, self._trial = self.clock(), False


class BreakerRegistry:
    """One breaker per endpoint (scheme://host:port), shared by every channel of the process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def for_url(self, url: str, config: BreakerConfig) -> CircuitBreaker:
        parts = urlsplit(url)
        endpoint = f"{parts.scheme}://{parts.hostname}:{parts.port or ''}"
        with self._lock:
            if endpoint not in self._breakers:
                self._breakers[endpoint] = CircuitBreaker(
                    config.failure_threshold, config.reset_timeout_s, self.clock
                )
            return self._breakers[endpoint]


BREAKERS = BreakerRegistry()
