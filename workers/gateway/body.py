"""Request bodies read against a size limit and a time limit.

A declared ``Content-Length`` above the limit is refused before one byte of the body is read;
a chunked (or lying) body is counted while it streams and refused as soon as it passes the
limit, so no request makes the process hold more than the limit. A client that sends its body
too slowly gets 408 once `timeout_s` has passed (uvicorn's keep-alive timeout bounds idle
connections; this bounds a trickling body).
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

from workers.gateway.problem import Problem


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Problem(400, "bad_content_length", f"Content-Length {declared[:40]!r}")
        if int(declared) > limit:
            raise Problem(
                413, "too_large", f"the body is {int(declared)} bytes; the limit is {limit}"
            )
    try:
        async with asyncio.timeout(timeout_s):
            return await _read(request, limit)
    except TimeoutError:
        raise Problem(
            408, "request_timeout", f"the body did not arrive within {timeout_s:g} s"
        ) from None
    except ClientDisconnect:
        raise Problem(400, "client_disconnected", "the client went away mid-body") from None


async def _read(request: Request, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, "too_large", f"the body passed the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)
