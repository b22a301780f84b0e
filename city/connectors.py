"""The config of the ways in and out beside Redis: a department's ``delivery:`` (signed webhook
push of its inbox), its ``csv:`` drops (column mappings for `cityrelay publish --csv`) and the
city's ``mqtt:`` section (topic patterns -> department and event type, for
`cityrelay mqtt-bridge`); plus the retry and circuit-breaker settings and the URL and
environment-variable types they share with the fallback channels (jobs/channels/config.py).

Secrets are never in the YAML: a config names an environment variable or a file holding one.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from city.mapping import FieldMapping

ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


def _env_name(value: str) -> str:
    if not ENV_NAME.match(value):
        raise ValueError(f"{value!r} is not an environment variable name (UPPER_CASE)")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
EnvName = Annotated[str, AfterValidator(_env_name)]


class RetryConfig(_Strict):
    max_attempts: int = Field(default=4, ge=1, le=20)
    base_delay_s: float = Field(default=0.5, gt=0, le=60)
    max_delay_s: float = Field(default=30.0, gt=0, le=3600)


class BreakerConfig(_Strict):
    failure_threshold: int = Field(default=5, ge=1, le=1000)
    reset_timeout_s: float = Field(default=30.0, gt=0, le=86400)


class _SecretRef(_Strict):
    """A secret named, never written: an environment variable or a file."""

    secret_env: EnvName | None = None
    secret_file: str | None = Field(default=None, min_length=1)


class WebhookDelivery(_SecretRef):
    """Push the department's inbox to an HTTPS endpoint, signed per Standard Webhooks.

    The secret is ``whsec_`` + base64 (the Standard Webhooks form). A batch is acknowledged
    in the inbox (XACK in the department's group) only after a 2xx; an emergency in it counts
    as acknowledged (stopping its escalation) only with `ack_on_2xx`.
    """

    webhook: HttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    ack_on_2xx: bool = Field(default=False, description="a 2xx acknowledges emergencies too")
    batch_max: int = Field(default=100, ge=1, le=1000, description="messages per POST")
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookDelivery:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("give exactly one of `secret_env:` or `secret_file:`")
        return self


class CsvMapping(_Strict):
    """One kind of CSV file a department drops: its event type and where the columns go."""

    type: str
    columns: FieldMapping
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    remember_days: int = Field(
        default=30, ge=1, le=3650, description="how long a published row is remembered"
    )


class MqttTopic(_Strict):
    """Messages on topics matching `pattern` (MQTT wildcards + and #) become `type` events of
    `department`. Without `mapping` the payload must be a CloudEvent in JSON."""

    pattern: str = Field(min_length=1, max_length=512)
    department: str
    type: str
    mapping: FieldMapping | None = None


class MqttConfig(_Strict):
    """The broker the bridge subscribes to (QoS 1, persistent session under `client_id`)."""

    url: str | None = Field(default=None, description="mqtt://host:port")
    url_env: EnvName | None = None
    client_id: str = Field(default="cityrelay-bridge", min_length=1, max_length=64)
    username: str | None = None
    password_env: EnvName | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    batch_max: int = Field(default=500, ge=1, le=10_000, description="messages per XADD batch")
    batch_max_ms: int = Field(default=20, ge=1, le=10_000)
    topics: list[MqttTopic] = Field(min_length=1)
    transport: Literal["tcp", "websockets"] = "tcp"

    @model_validator(mode="after")
    def _one_url(self) -> MqttConfig:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of `url:` or `url_env:`")
        if self.url is not None:
            broker_address(self.url)
        return self


def broker_address(url: str) -> tuple[str, int]:
    """``mqtt://host[:port]`` -> (host, port); 1883 by default."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ValueError(f"{url!r} is not an mqtt://host:port URL")
    return parts.hostname, parts.port or 1883


def check_connectors(
    departments: dict[str, tuple[WebhookDelivery | None, list[CsvMapping]]],
    mqtt: MqttConfig | None,
    known_types: set[str],
) -> list[tuple[str, str]]:
    """Cross-references: MQTT topics name departments and types the city has; CSV types too."""
    problems: list[tuple[str, str]] = []
    for i, (_, (_, drops)) in enumerate(departments.items()):
        for j, drop in enumerate(drops):
            if drop.type not in known_types:
                problems.append((f"departments[{i}].csv[{j}].type", f"unknown type {drop.type!r}"))
    for i, topic in enumerate(mqtt.topics if mqtt else []):
        where = f"mqtt.topics[{i}]"
        if topic.department not in departments:
            problems.append((f"{where}.department", f"no department {topic.department!r}"))
        if topic.type not in known_types:
            problems.append((f"{where}.type", f"unknown type {topic.type!r}"))
        if "#" in topic.pattern[:-1] or any(
            "+" in level and level != "+" for level in topic.pattern.split("/")
        ):
            problems.append((f"{where}.pattern", "+ and # stand alone in a level; # only last"))
    return problems
