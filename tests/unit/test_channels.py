"""Fallback channels against real servers on loopback: an HTTP server that fails before it
succeeds, an SMTP server (aiosmtpd), a directory for file drops."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from jobs.channels import (
    BreakerConfig,
    BreakerRegistry,
    ChannelConfigError,
    CircuitBreaker,
    EmailChannel,
    FileDropChannel,
    Notification,
    RetryConfig,
    SmsChannel,
    WebhookChannel,
    backoff_delay,
    build_channel,
    channels_from_config,
    notify,
    parse_channels,
)

NOTE = Notification(
    event_id="e1",
    department="fire",
    subject="Gas main rupture, 2nd Ave",
    body="Evacuate 2nd Ave between Pike and Pine. Acknowledge in cityrelay.",
    level=1,
    deadline="2026-11-25T18:05:00Z",
    event={"id": "e1", "type": "utility.meter_alarm"},
)
FAST = {"max_attempts": 4, "base_delay_s": 0.001, "max_delay_s": 0.01}


# --- a real HTTP server ----------------------------------------------------------------------


class Endpoint:
    """Answers the scripted statuses in order, then 200; records every request."""

    def __init__(self, statuses: list[int] | None = None, delay_s: float = 0.0):
        self.statuses = list(statuses or [])
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                endpoint.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                time.sleep(endpoint.delay_s)
                status = endpoint.statuses.pop(0) if endpoint.statuses else 200
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no" if status >= 300 else b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    e = Endpoint()
    yield e
    e.close()


def webhook(url: str, registry: BreakerRegistry | None = None, **extra: Any) -> WebhookChannel:
    (config,) = parse_channels([{"kind": "webhook", "url": url, "retry": FAST, **extra}])
    channel = build_channel(config, breakers=registry or BreakerRegistry())
    assert isinstance(channel, WebhookChannel)
    return channel


def test_webhook_delivers_json_with_idempotency_key(endpoint: Endpoint) -> None:
    result = webhook(endpoint.url, headers={"X-Team": "oem"}).send(NOTE)
    assert result.ok and result.attempts == 1 and result.detail == "HTTP 200"
    (request,) = endpoint.requests
    assert request["headers"]["Idempotency-Key"] == "e1:fire:1"
    assert request["headers"]["X-Team"] == "oem"
    assert json.loads(request["body"])["event"] == {"id": "e1", "type": "utility.meter_alarm"}


def test_webhook_retries_server_errors_with_the_same_key(endpoint: Endpoint) -> None:
    endpoint.statuses = [503, 500, 429]
    result = webhook(endpoint.url).send(NOTE)
    assert result.ok and result.attempts == 4
    assert {r["headers"]["Idempotency-Key"] for r in endpoint.requests} == {"e1:fire:1"}
    assert len({r["body"] for r in endpoint.requests}) == 1


def test_webhook_gives_up_after_max_attempts(endpoint: Endpoint) -> None:
    endpoint.statuses = [502] * 10
    result = webhook(endpoint.url).send(NOTE)
    assert not result.ok and not result.permanent
    assert result.attempts == 4 and len(endpoint.requests) == 4 and result.detail == "HTTP 502"


def test_webhook_does_not_retry_a_client_error(endpoint: Endpoint) -> None:
    endpoint.statuses = [404]
    result = webhook(endpoint.url).send(NOTE)
    assert not result.ok and result.permanent and result.attempts == 1
    assert result.detail.startswith("HTTP 404")


def test_webhook_retries_timeouts_and_refused_connections() -> None:
    slow = Endpoint(delay_s=0.3)
    try:
        result = webhook(slow.url, timeout_s=0.05, retry={**FAST, "max_attempts": 2}).send(NOTE)
        assert not result.ok and result.attempts == 2 and "Timeout" in result.detail
    finally:
        slow.close()
    result = webhook(f"http://127.0.0.1:{closed_port()}/x").send(NOTE)
    assert not result.ok and result.attempts == 4 and "ConnectionError" in result.detail


def test_webhook_signs_the_body(endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    channel = webhook(endpoint.url, secret_env="HOOK_SECRET")
    missing = channel.send(NOTE)
    assert not missing.ok and missing.permanent and "HOOK_SECRET" in missing.detail
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    assert channel.send(NOTE).ok
    (request,) = endpoint.requests
    expected = hmac.new(b"s3cret", request["body"], hashlib.sha256).hexdigest()
    assert request["headers"]["X-Cityrelay-Signature"] == f"sha256={expected}"


def test_backoff_is_exponential_with_full_jitter(endpoint: Endpoint) -> None:
    endpoint.statuses = [500] * 5
    slept: list[float] = []
    (config,) = parse_channels(
        [{"kind": "webhook", "url": endpoint.url,
          "retry": {"max_attempts": 6, "base_delay_s": 0.5, "max_delay_s": 3},
          "breaker": {"failure_threshold": 10}}]
    )  # fmt: skip
    channel = build_channel(config, breakers=BreakerRegistry(), sleep=slept.append)
    assert channel.send(NOTE).ok
    caps = [0.5, 1.0, 2.0, 3.0, 3.0]
    assert len(slept) == 5 and all(0 <= d <= cap for d, cap in zip(slept, caps, strict=True))
    samples = [backoff_delay(3, 0.5, 3.0) for _ in range(500)]
    assert max(samples) <= 3.0 and min(samples) < 0.3 and max(samples) > 2.7  # spread over [0, cap]


def test_circuit_breaker_stops_calling_a_dead_endpoint(endpoint: Endpoint) -> None:
    endpoint.statuses = [500] * 100
    now = [0.0]
    registry = BreakerRegistry(clock=lambda: now[0])
    breaker = {"failure_threshold": 3, "reset_timeout_s": 10}
    first = webhook(endpoint.url, registry, breaker=breaker).send(NOTE)
    assert not first.ok and first.attempts == 3 and "circuit open" in first.detail
    # another channel to the same endpoint shares the breaker: refused without a request
    again = webhook(endpoint.url + "?other", registry, breaker=breaker).send(NOTE)
    assert not again.ok and again.attempts == 0 and len(endpoint.requests) == 3
    # after the reset timeout one trial goes through; the endpoint has recovered
    now[0] = 10.0
    endpoint.statuses = []
    recovered = webhook(endpoint.url, registry, breaker=breaker).send(NOTE)
    assert recovered.ok and len(endpoint.requests) == 4


def test_circuit_breaker_states() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout_s=5, clock=lambda: now[0])
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 5.0
    assert breaker.state == "half-open"
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.record_failure()  # the trial failed: open again for another timeout
    assert breaker.state == "open"
    now[0] = 10.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow()


def test_sms_gateway_gets_numbers_text_and_token(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    (config,) = parse_channels(
        [{"kind": "sms", "url": endpoint.url, "to": ["+12065550100", "+12065550101"],
          "token_env": "SMS_TOKEN", "max_chars": 40, "retry": FAST}]
    )  # fmt: skip
    channel = build_channel(config, breakers=BreakerRegistry())
    assert isinstance(channel, SmsChannel)
    assert channel.send(NOTE).permanent  # no token in the environment yet
    monkeypatch.setenv("SMS_TOKEN", "tok")
    endpoint.statuses = [503]
    result = channel.send(NOTE)
    assert result.ok and result.attempts == 2
    body = json.loads(endpoint.requests[-1]["body"])
    assert body["to"] == ["+12065550100", "+12065550101"]
    assert len(body["text"]) == 40 and body["text"].endswith("…")
    assert body["reference"] == "e1:fire:1"
    assert endpoint.requests[-1]["headers"]["Authorization"] == "Bearer tok"


def test_short_sms_text_is_not_cut(endpoint: Endpoint) -> None:
    (config,) = parse_channels([{"kind": "sms", "url": endpoint.url, "to": ["+12065550100"]}])
    channel = build_channel(config, breakers=BreakerRegistry())
    assert isinstance(channel, SmsChannel)
    assert channel.text(NOTE) == f"{NOTE.subject}\n{NOTE.body}"
    assert channel.send(NOTE).ok


# --- a real SMTP server ----------------------------------------------------------------------


class Mailbox:
    def __init__(self, data_codes: list[str] | None = None, refuse: set[str] | None = None):
        self.messages: list[Any] = []
        self.data_codes = list(data_codes or [])
        self.refuse = refuse or set()

    async def handle_RCPT(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]  # noqa: N802
        if address in self.refuse:
            return "550 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]  # noqa: N802
        if self.data_codes:
            return self.data_codes.pop(0)
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 Message accepted"


def authenticate(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
    ok = auth_data.login == b"oem" and auth_data.password == b"pw"
    return AuthResult(success=ok, handled=False)  # not handled: the server answers 535


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = closed_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticate,
        auth_require_tls=False,
        auth_exclude_mechanism=["LOGIN"],  # PLAIN only: one clear 535 for a wrong password
    )
    controller.start()
    yield mailbox, port
    controller.stop()


def email(port: int, **extra: Any) -> EmailChannel:
    raw = {"kind": "email", "host": "127.0.0.1", "port": port, "sender": "relay@seattle.gov",
           "to": ["duty@fire.seattle.gov"], "retry": FAST, **extra}  # fmt: skip
    channel = build_channel(parse_channels([raw])[0])
    assert isinstance(channel, EmailChannel)
    return channel


def test_email_is_sent_with_a_stable_message_id(smtp_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    mailbox, port = smtp_server
    monkeypatch.setenv("SMTP_PASSWORD", "pw")
    channel = email(port, username="oem", password_env="SMTP_PASSWORD")
    assert channel.send(NOTE).ok and channel.send(NOTE).ok
    (to1, first), (_, second) = mailbox.messages
    assert to1 == ["duty@fire.seattle.gov"]
    assert first["Subject"] == "[emergency] Gas main rupture, 2nd Ave"
    assert first["Idempotency-Key"] == "e1:fire:1"
    assert first["Message-ID"] == second["Message-ID"]  # a repeat is recognisably the same
    assert '"type": "utility.meter_alarm"' in first.get_payload()


def test_email_retries_transient_and_not_permanent_failures(smtp_server) -> None:  # type: ignore[no-untyped-def]
    mailbox, port = smtp_server
    mailbox.data_codes = ["451 try again later"]
    result = email(port).send(NOTE)
    assert result.ok and result.attempts == 2
    mailbox.data_codes = ["554 rejected"]
    result = email(port).send(NOTE)
    assert not result.ok and result.permanent and "554" in result.detail


def test_email_refused_recipients(smtp_server) -> None:  # type: ignore[no-untyped-def]
    mailbox, port = smtp_server
    mailbox.refuse = {"gone@fire.seattle.gov"}
    partly = email(port, to=["duty@fire.seattle.gov", "gone@fire.seattle.gov"]).send(NOTE)
    assert partly.ok and "gone@fire.seattle.gov" in partly.detail
    none = email(port, to=["gone@fire.seattle.gov"]).send(NOTE)
    assert not none.ok and none.permanent and none.attempts == 1


def test_email_wrong_password_and_missing_secret(smtp_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _, port = smtp_server
    missing = email(port, username="oem", password_env="SMTP_PASSWORD").send(NOTE)
    assert not missing.ok and "SMTP_PASSWORD" in missing.detail
    monkeypatch.setenv("SMTP_PASSWORD", "wrong")
    bad = email(port, username="oem", password_env="SMTP_PASSWORD").send(NOTE)
    assert not bad.ok and bad.permanent and "535" in bad.detail


def test_email_to_an_unreachable_server_is_retried() -> None:
    result = email(closed_port()).send(NOTE)
    assert not result.ok and result.attempts == 4 and "ConnectionRefusedError" in result.detail


def test_email_over_starttls(tmp_path: Path) -> None:
    import ssl

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    mailbox = Mailbox()
    port = closed_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True)  # fmt: skip
    controller.start()
    try:
        assert not email(port, retry={"max_attempts": 1}).send(NOTE).ok  # server insists on TLS
        assert email(port, starttls=True).send(NOTE).ok
        assert len(mailbox.messages) == 1
    finally:
        controller.stop()


# --- file drop, fallback order, config -------------------------------------------------------


def test_file_drop_writes_atomically_and_idempotently(tmp_path: Path) -> None:
    (config,) = parse_channels([{"kind": "file", "directory": "drop"}])
    channel = build_channel(config, base_dir=tmp_path)
    assert isinstance(channel, FileDropChannel) and channel.directory == tmp_path / "drop"
    assert channel.send(NOTE).ok and channel.send(NOTE).ok
    (only,) = list((tmp_path / "drop").iterdir())  # one file, no temp leftovers
    assert only.name == "e1_fire_1.json"
    assert json.loads(only.read_text())["idempotency_key"] == "e1:fire:1"


def test_file_drop_reports_an_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    result = FileDropChannel(parse_channels([{"kind": "file", "directory": str(blocker)}])[0]).send(
        NOTE
    )
    assert not result.ok and "Error" in result.detail


def test_file_drop_cleans_up_when_writing_fails(tmp_path: Path) -> None:
    channel = FileDropChannel(parse_channels([{"kind": "file", "directory": str(tmp_path)}])[0])
    unserialisable = Notification("e2", "fire", "s", "b", event={"when": object()})
    with pytest.raises(TypeError):
        channel.send(unserialisable)
    assert list(tmp_path.iterdir()) == []


def test_notify_falls_back_in_order(tmp_path: Path, endpoint: Endpoint) -> None:
    channels = channels_from_config(
        [
            {
                "kind": "webhook",
                "url": f"http://127.0.0.1:{closed_port()}/x",
                "retry": {"max_attempts": 1},
            },
            {"kind": "file", "directory": str(tmp_path)},
            {"kind": "webhook", "url": endpoint.url},
        ],
        breakers=BreakerRegistry(),
    )
    outcome = notify(channels, NOTE)
    assert outcome.delivered and [r.ok for r in outcome.results] == [False, True]
    assert endpoint.requests == []
    everything = notify(channels, NOTE, all_channels=True)
    assert [r.ok for r in everything.results] == [False, True, True]
    assert not notify([], NOTE).delivered


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ChannelConfigError) as caught:
        parse_channels(
            [
                {"kind": "webhook", "url": "ftp://x"},
                {"kind": "sms", "url": "https://sms.example", "to": ["2065550100"]},
                {"kind": "email", "host": "mx", "sender": "nobody", "to": []},
                {"kind": "pigeon"},
                {"kind": "webhook", "url": "https://h", "secret_env": "lower", "extra": 1},
            ]
        )
    paths = [where for where, _ in caught.value.problems]
    assert "fallback[0].url" in paths
    assert "fallback[1].to" in paths
    assert "fallback[2].sender" in paths and "fallback[2].to" in paths
    assert "fallback[3]" in paths
    assert "fallback[4].secret_env" in paths and "fallback[4].extra" in paths
    assert "not an http(s) URL" in str(caught.value)
    assert parse_channels(None) == []
    with pytest.raises(ChannelConfigError, match="departments.fire.fallback"):
        parse_channels([{"kind": "file"}], where="departments.fire.fallback")


def test_a_channel_from_a_raw_dict(endpoint: Endpoint) -> None:
    channel = build_channel({"kind": "webhook", "url": endpoint.url}, breakers=BreakerRegistry())
    assert isinstance(channel, WebhookChannel) and channel.send(NOTE).ok
    with pytest.raises(ChannelConfigError, match=r"fallback\[0\]\.url"):
        build_channel({"kind": "webhook"})


def test_defaults_are_sane() -> None:
    (config,) = parse_channels([{"kind": "webhook", "url": "https://hooks.example/x"}])
    assert config.retry == RetryConfig() and config.breaker == BreakerConfig()
    assert config.timeout_s == 5.0


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
