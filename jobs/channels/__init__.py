"""Fallback channels: how an unacknowledged emergency reaches a department another way. A
department's ``fallback:`` section (`config`) is a list of channels tried in order (`fallback`):
``webhook`` (HTTP POST of the notification as JSON), ``sms`` (an SMS gateway's HTTP API),
``email`` (SMTP) and ``file`` (an atomic file drop), one module each; the HTTP sending (`http`),
retries with backoff and jitter (`retry`) and per-endpoint circuit breakers (`breaker`) stand on
their own so other senders can reuse them. Every channel answers ``send(notification) ->
DeliveryResult`` (`base`) and never raises for a failed delivery. Modules here import only the
standard library, requests, pydantic and each other (never `queues`, `workers` or this
``__init__``).
"""

from jobs.channels.base import Channel, DeliveryResult, Notification
from jobs.channels.breaker import BREAKERS, BreakerRegistry, CircuitBreaker
from jobs.channels.config import (
    E164,
    EMAIL,
    ENV_NAME,
    BreakerConfig,
    ChannelConfig,
    ChannelConfigError,
    EmailConfig,
    EnvName,
    FileDropConfig,
    HttpUrl,
    RetryConfig,
    SmsConfig,
    WebhookConfig,
    parse_channels,
)
from jobs.channels.email import EmailChannel
from jobs.channels.fallback import FallbackOutcome, build_channel, channels_from_config, notify
from jobs.channels.filedrop import FileDropChannel
from jobs.channels.retry import backoff_delay
from jobs.channels.sms import SmsChannel
from jobs.channels.webhook import WebhookChannel

__all__ = [
    "BREAKERS",
    "E164",
    "EMAIL",
    "ENV_NAME",
    "BreakerConfig",
    "BreakerRegistry",
    "Channel",
    "ChannelConfig",
    "ChannelConfigError",
    "CircuitBreaker",
    "DeliveryResult",
    "EmailChannel",
    "EmailConfig",
    "EnvName",
    "FallbackOutcome",
    "FileDropChannel",
    "FileDropConfig",
    "HttpUrl",
    "Notification",
    "RetryConfig",
    "SmsChannel",
    "SmsConfig",
    "WebhookChannel",
    "WebhookConfig",
    "backoff_delay",
    "build_channel",
    "channels_from_config",
    "notify",
    "parse_channels",
]
