"""RFC 9457 problem details: every refusal is ``application/problem+json`` with a reason.

A body carries ``type`` (``urn:cityrelay:problem:{reason}``), ``title``, ``status``,
``detail`` and ``reason`` (the short code counted in the metrics, the same code as the
dead-letter stream where an event was refused), plus members of the refusal (``refused``,
``accepted``...). `Problem` is raised anywhere in a handler and turned into the response by
the app's exception handler.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """A refusal: HTTP `status`, a `reason` code and a `detail` for people."""

    def __init__(
        self,
        status: int,
        reason: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **members: Any,
    ):
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers or {}
        self.members = members

    def body(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": f"urn:cityrelay:problem:{self.reason}",
            "title": HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
            "reason": self.reason,
        }
        doc.update(self.members)
        return doc

    def response(self) -> Response:
        return problem_response(self.status, self.body(), self.headers)


def problem_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, media_type=PROBLEM_JSON)


# Starlette's own HTTP errors (404 unknown path, 405 wrong method) -> the same shape.
HTTP_REASONS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    415: "unsupported_media_type",
}


def reason_for_status(status: int) -> str:
    return HTTP_REASONS.get(status, "http_error")
