"""An HTTP POST with retries behind a per-URL circuit breaker (429 and 5xx are retried, honouring
``Retry-After``; other 4xx are permanent): what the webhook and SMS gateway channels send with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import requests

from jobs.channels.base import Channel, DeliveryResult
from jobs.channels.breaker import BREAKERS, BreakerRegistry
from jobs.channels.config import SmsConfig, WebhookConfig
from jobs.channels.retry import _Attempt, _run_with_retries


class _HttpChannel(Channel):
    """Webhook and SMS gateway: an HTTP POST with retries behind a per-URL circuit breaker."""

    def __init__(
        self,
        config: WebhookConfig | SmsConfig,
        breakers: BreakerRegistry = BREAKERS,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
    ):
        self.config = config
        self.url = self.target = config.url
        self.timeout_s, self.retry = config.timeout_s, config.retry
        self.breaker = breakers.for_url(config.url, config.breaker)
        self.sleep = sleep
        self.session = session or requests.Session()

    def _post(self, body: bytes, headers: Mapping[str, str]) -> DeliveryResult:
        def attempt() -> _Attempt:
            try:
                response = self.session.post(
                    self.url, data=body, headers=dict(headers), timeout=self.timeout_s
                )
            except requests.RequestException as exc:
                return _Attempt(False, f"{type(exc).__name__}: {exc}")
            status = f"HTTP {response.status_code}"
            if 200 <= response.status_code < 300:
                return _Attempt(True, status)
            if response.status_code == 429 or response.status_code >= 500:
                return _Attempt(False, status, retry_after=_retry_after(response))
            return _Attempt(False, f"{status}: {response.text[:200]}", retryable=False)

        return _run_with_retries(
            self.kind, self.target, attempt, self.retry, self.sleep, self.breaker
        )


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.replace(".", "", 1).isdigit() else None
