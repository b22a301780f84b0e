"""The ``webhook`` channel: HTTP POST of the notification as JSON, with an ``Idempotency-Key``
header (the same for every retry of one notification, so the receiver can drop repeats) and an
optional HMAC-SHA256 body signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

from jobs.channels.base import DeliveryResult, Notification, _missing_env
from jobs.channels.config import WebhookConfig
from jobs.channels.http import _HttpChannel


class WebhookChannel(_HttpChannel):
    kind = "webhook"

    config: WebhookConfig

    def send(self, notification: Notification) -> DeliveryResult:
        body = json.dumps(notification.to_json(), separators=(",", ":")).encode()
        headers = {
            **self.config.headers,
            "Content-Type": "application/json",
            "Idempotency-Key": notification.idempotency_key,
            "User-Agent": "cityrelay",
        }
        if self.config.secret_env:
            secret = os.environ.get(self.config.secret_env)
            if not secret:
                return _missing_env(self.kind, self.target, self.config.secret_env)
            digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Cityrelay-Signature"] = f"sha256={digest}"
        return self._post(body, headers)
