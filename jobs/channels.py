"""Fallback channels: how an unacknowledged emergency reaches a department another way.

A department's ``fallback:`` config section is a list of channels, tried in order:

- ``webhook``: HTTP POST of the notification as JSON, retried with exponential backoff and full
  jitter, an ``Idempotency-Key`` header (the same for every retry of one notification, so the
  receiver can drop repeats), optional HMAC-SHA256 body signature, and a circuit breaker per
  endpoint so a dead endpoint does not hold up escalation;
- ``sms``: an SMS gateway's HTTP API (same retry, key and breaker machinery);
- ``email``: SMTP (optionally STARTTLS/SSL and login), retried on transient (4xx) failures;
- ``file``: an atomic file drop into a directory (air-gapped systems pick it up).

Every channel answers ``send(notification) -> DeliveryResult`` and never raises for a failed
delivery: the result says what happened, for the escalation job to audit. Secrets are never in
the YAML: configs name environment variables (``secret_env``, ``token_env``, ``password_env``).
Circuit breakers live in the process (each RQ worker keeps its own).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import re
import smtplib
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import requests
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

# --- what is sent, what came back ------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """One message to one department about one event, at one escalation level."""

    event_id: str
    department: str
    subject: str
    body: str
    level: int = 0
    priority: str = "emergency"
    deadline: str | None = None
    event: Mapping[str, Any] | None = None  # the department's view of the event (wire form)

    @property
    def idempotency_key(self) -> str:
        """Same for every retry of this notification; differs per department and level."""
        return f"{self.event_id}:{self.department}:{self.level}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["event"] = dict(self.event) if self.event is not None else None
        data["idempotency_key"] = self.idempotency_key
        return data


@dataclass(frozen=True)
class DeliveryResult:
    channel: str
    target: str
    ok: bool
    attempts: int
    detail: str
    elapsed_s: float = 0.0
    permanent: bool = False  # retrying later will not help (bad address, 4xx, missing secret)


# --- config (the department's `fallback:` section) -------------------------------------------

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryConfig(_Strict):
    max_attempts: int = Field(default=4, ge=1, le=20)
    base_delay_s: float = Field(default=0.5, gt=0, le=60)
    max_delay_s: float = Field(default=30.0, gt=0, le=3600)


class BreakerConfig(_Strict):
    failure_threshold: int = Field(default=5, ge=1, le=1000)
    reset_timeout_s: float = Field(default=30.0, gt=0, le=86400)


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


# --- retries and circuit breakers ------------------------------------------------------------


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (attempt counts from 0)."""
    return (rng or random).uniform(0, min(cap, base * 2**attempt))


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


# --- channels --------------------------------------------------------------------------------


class Channel(ABC):
    kind: str
    target: str

    @abstractmethod
    def send(self, notification: Notification) -> DeliveryResult:
        """Deliver, retrying as configured; never raises for a delivery failure."""


def _missing_env(channel: str, target: str, name: str) -> DeliveryResult:
    return DeliveryResult(
        channel, target, False, 0, f"environment variable {name} is not set", permanent=True
    )


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


class EmailChannel(Channel):
    kind = "email"

    def __init__(self, config: EmailConfig, sleep: Callable[[float], None] = time.sleep):
        self.config, self.sleep = config, sleep
        self.target = ",".join(config.to)

    def message(self, notification: Notification) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.config.sender
        msg["To"] = ", ".join(self.config.to)
        msg["Subject"] = f"[{notification.priority}] {notification.subject}"
        # deterministic Message-ID: a retried send is recognisably the same message
        digest = hashlib.sha256(notification.idempotency_key.encode()).hexdigest()[:32]
        msg["Message-ID"] = f"<{digest}@cityrelay>"
        msg["Idempotency-Key"] = notification.idempotency_key
        body = notification.body
        if notification.event is not None:
            body += "\n\n" + json.dumps(dict(notification.event), indent=2, sort_keys=True)
        msg.set_content(body)
        return msg

    def send(self, notification: Notification) -> DeliveryResult:
        password = None
        if self.config.password_env:
            password = os.environ.get(self.config.password_env)
            if not password:
                return _missing_env(self.kind, self.target, self.config.password_env)
        message = self.message(notification)
        cfg = self.config

        def attempt() -> _Attempt:
            try:
                smtp_class = smtplib.SMTP_SSL if cfg.ssl else smtplib.SMTP
                with smtp_class(cfg.host, cfg.port, timeout=cfg.timeout_s) as smtp:
                    if cfg.starttls:
                        smtp.starttls()
                    if cfg.username and password:
                        smtp.login(cfg.username, password)
                    refused = smtp.send_message(message)
            except smtplib.SMTPRecipientsRefused as exc:
                return _Attempt(False, f"all recipients refused: {exc.recipients}", retryable=False)
            except smtplib.SMTPResponseException as exc:
                detail = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
                return _Attempt(False, detail, retryable=exc.smtp_code < 500)
            except (smtplib.SMTPException, OSError) as exc:
                return _Attempt(False, f"{type(exc).__name__}: {exc}")
            if refused:
                return _Attempt(True, f"sent; refused by server: {sorted(refused)}")
            return _Attempt(True, "sent")

        return _run_with_retries(self.kind, self.target, attempt, cfg.retry, self.sleep)


class FileDropChannel(Channel):
    """Writes ``<idempotency key>.json`` atomically (temp file, fsync, rename, fsync dir)."""

    kind = "file"

    def __init__(self, config: FileDropConfig, base_dir: Path | None = None):
        directory = Path(config.directory)
        self.directory = (
            directory if directory.is_absolute() else (base_dir or Path.cwd()) / directory
        )
        self.target = str(self.directory)

    def path_for(self, notification: Notification) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", notification.idempotency_key)
        return self.directory / f"{safe}.json"

    def send(self, notification: Notification) -> DeliveryResult:
        started = time.monotonic()
        final = self.path_for(notification)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(notification.to_json(), handle, indent=2, sort_keys=True)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, final)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            return DeliveryResult(self.kind, self.target, False, 1, f"{type(exc).__name__}: {exc}",
                                  time.monotonic() - started)  # fmt: skip
        return DeliveryResult(self.kind, self.target, True, 1, f"wrote {final.name}",
                              time.monotonic() - started)  # fmt: skip


# --- building and using channels -------------------------------------------------------------


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
