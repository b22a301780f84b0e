"""Standard Webhooks (standardwebhooks.com) signing, and `SignedWebhook`: a POST signed that way,
sent with the HTTP channel's retries behind the endpoint's circuit breaker (`http`).

Every request carries ``webhook-id`` (the same for every retry of one payload, so a receiver
drops repeats), ``webhook-timestamp`` (Unix seconds, fresh per send, so a receiver's replay
window holds) and ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` under
the secret ``whsec_<base64 key>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from jobs.channels.base import DeliveryResult, Notification
from jobs.channels.breaker import BREAKERS, BreakerRegistry
from jobs.channels.config import BreakerConfig, RetryConfig, WebhookConfig
from jobs.channels.http import _HttpChannel

SECRET_PREFIX = "whsec_"


class SecretError(ValueError):
    """A webhook secret that is missing or not ``whsec_`` + base64."""


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` prefix optional)."""
    text = secret.strip()
    text = text[len(SECRET_PREFIX) :] if text.startswith(SECRET_PREFIX) else text
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError("the webhook secret is not whsec_ + base64") from None
    if len(key) < 16:
        raise SecretError("the webhook secret is shorter than 16 bytes")
    return key


def load_secret(secret_env: str | None, secret_file: str | None, base_dir: Path | None) -> bytes:
    """Read the secret a config names (an environment variable or a file)."""
    if secret_env:
        value = os.environ.get(secret_env)
        if not value:
            raise SecretError(f"environment variable {secret_env} is not set")
        return decode_secret(value)
    if not secret_file:
        raise SecretError("no secret configured")
    path = Path(secret_file)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        return decode_secret(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SecretError(f"cannot read {path}: {exc.strerror or exc}") from None


def new_secret() -> str:
    """A fresh secret in the Standard Webhooks form (24 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(24)).decode()


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of id.timestamp.body."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(
    key: bytes, msg_id: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, msg_id, timestamp, body),
    }


class SignedWebhook(_HttpChannel):
    """POSTs JSON signed per Standard Webhooks; a 2xx is success, 429/5xx/timeouts are retried
    (`retry`), other 4xx are permanent; the endpoint's breaker is shared by the process."""

    kind = "webhook"

    def __init__(
        self,
        url: str,
        key: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        retry: RetryConfig | None = None,
        breaker: BreakerConfig | None = None,
        breakers: BreakerRegistry = BREAKERS,
        sleep: Callable[[float], None] = time.sleep,
    ):
        config = WebhookConfig(
            kind="webhook",
            url=url,
            headers=dict(headers or {}),
            timeout_s=timeout_s,
            retry=retry or RetryConfig(),
            breaker=breaker or BreakerConfig(),
        )
        super().__init__(config, breakers, sleep)
        self.key = key
        self.extra_headers = dict(config.headers)

    def post_signed(self, msg_id: str, body: bytes) -> DeliveryResult:
        headers = {
            **self.extra_headers,
            "Content-Type": "application/json",
            "User-Agent": "cityrelay",
            **signed_headers(self.key, msg_id, body),
        }
        return self._post(body, headers)

    def send(self, notification: Notification) -> DeliveryResult:
        body = json.dumps(notification.to_json(), separators=(",", ":")).encode()
        return self.post_signed("msg_" + notification.idempotency_key, body)
