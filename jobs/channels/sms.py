"""The ``sms`` channel: an SMS gateway's HTTP API (same retry, key and breaker machinery as the
webhook), the text cut to the configured length.
"""

from __future__ import annotations

import json
import os

from jobs.channels.base import DeliveryResult, Notification, _missing_env
from jobs.channels.config import SmsConfig
from jobs.channels.http import _HttpChannel


class SmsChannel(_HttpChannel):
    kind = "sms"

    config: SmsConfig

    def text(self, notification: Notification) -> str:
        text = f"{notification.subject}\n{notification.body}"
        limit = self.config.max_chars
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def send(self, notification: Notification) -> DeliveryResult:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": notification.idempotency_key,
        }
        if self.config.token_env:
            token = os.environ.get(self.config.token_env)
            if not token:
                return _missing_env(self.kind, self.target, self.config.token_env)
            headers["Authorization"] = f"Bearer {token}"
        body = {
            "to": self.config.to,
            "text": self.text(notification),
            "reference": notification.idempotency_key,
        }
        return self._post(json.dumps(body).encode(), headers)
