"""Uvicorn's httptools protocol with the two guards it lacks: a header deadline and a header size.

Uvicorn times out idle keep-alive connections, but a client that opens a connection and
sends nothing, or trickles its request line and headers a byte at a time (slowloris), holds
a connection for ever, and httptools accepts headers of any size. Here every connection must
deliver a request's headers within `header_timeout_s` of being ready for it (connection made,
or the previous response sent) and in at most `max_header_bytes`; otherwise it gets a 408 or
431 and is closed. Uvicorn's own 400 for unparsable HTTP (bad header syntax, CR/LF injection,
conflicting lengths) becomes problem+json like every other refusal. Each is counted in
`REFUSED`, which the app's counters flush with its own.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from http import HTTPStatus

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from workers.gateway.settings import GatewaySettings

REFUSED: Counter[str] = Counter()


def _problem_bytes(status: int, reason: str, detail: str) -> bytes:
    body = orjson.dumps({
        "type": f"urn:cityrelay:problem:{reason}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "reason": reason,
    })  # fmt: skip
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    # the settings' values, read once per process (uvicorn workers get them by environment)
    header_timeout_s = GatewaySettings.from_env().header_timeout_s
    max_header_bytes = GatewaySettings.from_env().max_header_bytes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._await_headers()

    def _await_headers(self) -> None:
        self._waiting = True
        self._header_bytes = 0
        self._oversize = False
        self._cancel_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _cancel_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        REFUSED[reason] += 1
        self._cancel_timer()
        if not self.transport.is_closing():
            self.transport.write(_problem_bytes(status, reason, detail))
            self.transport.close()

    def _too_slow(self) -> None:
        self._header_timer = None
        if self._waiting:
            within = f"{self.header_timeout_s:g} s"
            self._refuse(408, "request_timeout", f"the request headers took more than {within}")

    def on_message_begin(self) -> None:
        self._header_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.max_header_bytes:
            self._oversize = True
            raise ValueError("headers too large")  # httptools stops: send_400_response

    def on_headers_complete(self) -> None:
        self._waiting = False
        self._cancel_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        if self._oversize:
            limit = self.max_header_bytes
            self._refuse(431, "headers_too_large", f"request line and headers pass {limit} bytes")
        else:
            self._refuse(400, "invalid_http", msg)
