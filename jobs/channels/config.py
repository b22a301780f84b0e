"""The department's ``fallback:`` config section: one pydantic model per channel kind, the retry
and breaker settings they share, and `parse_channels` (problems as (path, message) pairs).
Secrets are never in the YAML: configs name environment variables (``secret_env``,
``token_env``, ``password_env``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

# Shared with the push delivery config (city/connectors.py), defined there (the lower floor).
from city.connectors import ENV_NAME, BreakerConfig, EnvName, HttpUrl, RetryConfig

__all__ = [
    "E164",
    "EMAIL",
    "ENV_NAME",
    "BreakerConfig",
    "ChannelConfig",
    "ChannelConfigError",
    "EmailConfig",
    "EnvName",
    "FileDropConfig",
    "HttpUrl",
    "RetryConfig",
    "SmsConfig",
    "WebhookConfig",
    "parse_channels",
]

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookConfig(_Strict):
    kind: Literal["webhook"]
    url: HttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    secret_env: EnvName | None = Field(
        default=None, description="HMAC-SHA256 key for the signature"
    )
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()


class SmsConfig(_Strict):
    kind: Literal["sms"]
    url: HttpUrl
    to: list[str] = Field(min_length=1)
    token_env: EnvName | None = Field(default=None, description="bearer token for the gateway")
    max_chars: int = Field(default=480, ge=20, le=1600)
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()

    @field_validator("to")
    @classmethod
    def _numbers_are_e164(cls, values: list[str]) -> list[str]:
        for value in values:
            if not E164.match(value):
                raise ValueError(f"{value!r} is not an E.164 number like +12065550100")
        return values


class EmailConfig(_Strict):
    kind: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(default=25, ge=1, le=65535)
    sender: str
    to: list[str] = Field(min_length=1)
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password_env: EnvName | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    retry: RetryConfig = RetryConfig()

    @field_validator("to", "sender")
    @classmethod
    def _addresses(cls, value: str | list[str]) -> str | list[str]:
        for address in [value] if isinstance(value, str) else value:
            if not EMAIL.match(address):
                raise ValueError(f"{address!r} is not an e-mail address")
        return value


class FileDropConfig(_Strict):
    kind: Literal["file"]
    directory: str = Field(min_length=1)


ChannelConfig = Annotated[
    WebhookConfig | SmsConfig | EmailConfig | FileDropConfig, Field(discriminator="kind")
]
_CHANNEL_LIST = TypeAdapter(list[ChannelConfig])


class ChannelConfigError(ValueError):
    """Problems in a ``fallback:`` section, as (path inside the file, message) pairs; the same
    shape as `city.config.ConfigError`'s, so the loader can report them with the file name."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("\n".join(f"{where}: {what}" for where, what in problems))


def parse_channels(raw: Any, where: str = "fallback") -> list[ChannelConfig]:
    """Validate a ``fallback:`` section (a list of channel dicts, each with a ``kind``)."""
    try:
        return _CHANNEL_LIST.validate_python(raw if raw is not None else [])
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = where
            for part in err["loc"]:
                if isinstance(part, int):
                    path += f"[{part}]"
                elif part not in ("webhook", "sms", "email", "file"):  # union tag, not a field
                    path += f".{part}"
            problems.append((path, err["msg"]))
        raise ChannelConfigError(problems) from None
