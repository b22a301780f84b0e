"""Building channels from a ``fallback:`` section and using them: try each channel in order until
one delivers (or every one), collecting the results for the escalation job to audit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.channels.base import Channel, DeliveryResult, Notification
from jobs.channels.breaker import BREAKERS, BreakerRegistry
from jobs.channels.config import (
    ChannelConfig,
    EmailConfig,
    SmsConfig,
    WebhookConfig,
    parse_channels,
)
from jobs.channels.email import EmailChannel
from jobs.channels.filedrop import FileDropChannel
from jobs.channels.sms import SmsChannel
from jobs.channels.webhook import WebhookChannel


def build_channel(
    config: ChannelConfig | Mapping[str, Any],
    *,
    base_dir: Path | None = None,
    breakers: BreakerRegistry = BREAKERS,
    sleep: Callable[[float], None] = time.sleep,
) -> Channel:
    """The channel for one config: a validated model or a raw dict such as
    ``{"kind": "webhook", "url": ...}`` (relative file-drop directories from `base_dir`)."""
    if isinstance(config, Mapping):
        (config,) = parse_channels([config])
    if isinstance(config, WebhookConfig):
        return WebhookChannel(config, breakers, sleep)
    if isinstance(config, SmsConfig):
        return SmsChannel(config, breakers, sleep)
    if isinstance(config, EmailConfig):
        return EmailChannel(config, sleep)
    return FileDropChannel(config, base_dir)


def channels_from_config(raw: Any, **kwargs: Any) -> list[Channel]:
    """Validate a ``fallback:`` section and build its channels, in order."""
    return [build_channel(config, **kwargs) for config in parse_channels(raw)]


@dataclass
class FallbackOutcome:
    delivered: bool
    results: list[DeliveryResult] = field(default_factory=list)


def notify(
    channels: Sequence[Channel] | Iterable[Channel],
    notification: Notification,
    *,
    all_channels: bool = False,
) -> FallbackOutcome:
    """Try channels in order until one delivers (or every one, with `all_channels`)."""
    outcome = FallbackOutcome(delivered=False)
    for channel in channels:
        result = channel.send(notification)
        outcome.results.append(result)
        if result.ok:
            outcome.delivered = True
            if not all_channels:
                break
    return outcome
