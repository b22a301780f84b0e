"""The ``email`` channel: SMTP (optionally STARTTLS/SSL and login), retried on transient (4xx)
failures, with a deterministic Message-ID so a retried send is recognisably the same message.
"""

from __future__ import annotations

import hashlib
import json
import os
import smtplib
import time
from collections.abc import Callable
from email.message import EmailMessage

from jobs.channels.base import Channel, DeliveryResult, Notification, _missing_env
from jobs.channels.config import EmailConfig
from jobs.channels.retry import _Attempt, _run_with_retries


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
