"""Retries with exponential backoff and full jitter, optionally behind a circuit breaker; one
attempt says whether it worked, whether retrying can help and how long the far side asked to wait.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from jobs.channels.base import DeliveryResult
from jobs.channels.breaker import CircuitBreaker
from jobs.channels.config import RetryConfig


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (attempt counts from 0)."""
    return (rng or random).uniform(0, min(cap, base * 2**attempt))


@dataclass
class _Attempt:
    ok: bool
    detail: str
    retryable: bool = True
    retry_after: float | None = None


def _run_with_retries(
    channel: str,
    target: str,
    attempt: Callable[[], _Attempt],
    retry: RetryConfig,
    sleep: Callable[[float], None],
    breaker: CircuitBreaker | None = None,
) -> DeliveryResult:
    started = time.monotonic()
    detail = "not attempted"
    for n in range(retry.max_attempts):
        if breaker is not None and not breaker.allow():
            return DeliveryResult(
                channel, target, False, n, f"circuit open ({detail})", time.monotonic() - started
            )
        result = attempt()
        detail = result.detail
        if result.ok:
            if breaker is not None:
                breaker.record_success()
            return DeliveryResult(channel, target, True, n + 1, detail, time.monotonic() - started)
        if not result.retryable:
            if breaker is not None:
                breaker.record_success()  # the endpoint answered: it is up, the request was wrong
            return DeliveryResult(
                channel, target, False, n + 1, detail, time.monotonic() - started, permanent=True
            )
        if breaker is not None:
            breaker.record_failure()
        if n + 1 < retry.max_attempts:
            delay = backoff_delay(n, retry.base_delay_s, retry.max_delay_s)
            if result.retry_after is not None:
                delay = min(max(delay, result.retry_after), retry.max_delay_s)
            sleep(delay)
    return DeliveryResult(
        channel, target, False, retry.max_attempts, detail, time.monotonic() - started
    )
