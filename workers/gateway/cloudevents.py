"""The CloudEvents 1.0 HTTP protocol binding: a request -> the event objects it carries.

Three modes (https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md):

- structured: ``Content-Type: application/cloudevents+json``, the body is one event object;
- batch: ``application/cloudevents-batch+json``, the body is an array of event objects (at most
  the configured number);
- binary: the attributes in ``ce-*`` headers (values percent-decoded), the body is ``data`` and
  ``Content-Type`` its ``datacontenttype``; cityrelay events carry JSON data.

Where extension attributes must be strings (headers, events made with the CloudEvents SDK) the
city's ``location`` travels as a JSON string (``ce-location: {"lat": 47.62, "lon": -122.35}``);
it is decoded here into the object `EventCatalog.accept` validates. Nothing else is checked
here: every event then passes the same `accept` as at ingest.

A body that is not what its Content-Type says (not JSON, not an object or an array) refuses the
whole request (`Problem` 400); a batch element that is not an event object is refused alone
(`Candidate.error`), like an event `accept` refuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson

from city.catalog import InvalidEvent
from workers.gateway.problem import Problem

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
JSON_DATA = ("application/json", "text/json")
MODES = ("structured", "binary", "batch")


@dataclass
class Candidate:
    """One event of a request: its object (or the refusal of it) and the bytes received."""

    index: int
    doc: dict[str, Any] | None
    raw: bytes
    error: InvalidEvent | None = None
    json: bytes | None = None  # the event as JSON for `accept` (None: dump `doc`)

    @property
    def id(self) -> str | None:
        value = self.doc.get("id") if self.doc else None
        return value if isinstance(value, str) else None


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json_media(media: str) -> bool:
    return media in JSON_DATA or media.endswith("+json")


def parse(headers: Mapping[str, str], body: bytes, batch_max: int) -> tuple[str, list[Candidate]]:
    """(mode, candidates) of a POST /v1/events request; `Problem` if the request is not one."""
    media = media_type(headers.get("content-type"))
    if "ce-specversion" in headers:
        return "binary", [_binary(headers, body, media)]
    if media == STRUCTURED:
        doc = _json(body, "structured mode needs one JSON event object")
        if not isinstance(doc, dict):
            raise Problem(400, "malformed_json", "structured mode: the body must be a JSON object")
        return "structured", [_candidate(0, doc, body)]
    if media == BATCH:
        docs = _json(body, "batch mode needs a JSON array of event objects")
        if not isinstance(docs, list):
            raise Problem(400, "malformed_json", "batch mode: the body must be a JSON array")
        if len(docs) > batch_max:
            raise Problem(
                413,
                "batch_too_large",
                f"the batch has {len(docs)} events; the limit is {batch_max}",
                limit=batch_max,
            )
        return "batch", [_candidate(i, doc, None) for i, doc in enumerate(docs)]
    raise Problem(
        415,
        "unsupported_media_type",
        f"Content-Type {media or '(none)'!r}: send {STRUCTURED}, {BATCH}, or binary mode "
        "(ce-specversion, ce-id, ce-source, ce-type headers and a JSON body)",
    )


def _json(body: bytes, what: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "malformed_json", f"{what}: {exc}") from None


def _candidate(index: int, doc: Any, raw: bytes | None) -> Candidate:
    if not isinstance(doc, dict):
        text = orjson.dumps(doc) if raw is None else raw
        return Candidate(
            index,
            None,
            text,
            InvalidEvent("invalid_envelope", f"batch element {index} is not an event object"),
        )
    received = raw if raw is not None else orjson.dumps(doc)
    try:
        changed = decode_extensions(doc)
    except InvalidEvent as exc:
        return Candidate(index, None, received, exc)
    return Candidate(index, doc, received, json=None if changed else received)


def decode_extensions(doc: dict[str, Any]) -> bool:
    """City extensions sent as strings (SDK events, binary mode) -> their JSON values; returns
    whether `doc` changed."""
    location = doc.get("location")
    if isinstance(location, str):
        try:
            value = orjson.loads(location)
        except orjson.JSONDecodeError:
            raise InvalidEvent(
                "invalid_envelope",
                'location: a string location must be JSON, e.g. {"lat": 47.62, "lon": -122.35}',
            ) from None
        if not isinstance(value, dict):
            raise InvalidEvent("invalid_envelope", "location: must be a JSON object")
        doc["location"] = value
        return True
    return False


def _binary(headers: Mapping[str, str], body: bytes, media: str) -> Candidate:
    doc: dict[str, Any] = {}
    for name, value in headers.items():
        if name.startswith("ce-") and len(name) > 3:
            doc[name[3:]] = unquote(value)
    doc.pop("datacontenttype", None)  # binary mode: Content-Type is the data's type
    raw_of = _binary_raw(doc, body)
    if media:
        doc["datacontenttype"] = media
    if body:
        if media and not is_json_media(media):
            raise Problem(
                415,
                "unsupported_media_type",
                f"binary mode: data of type {media!r}; cityrelay events carry JSON data "
                "(Content-Type: application/json)",
            )
        try:
            doc["data"] = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return Candidate(0, None, raw_of, InvalidEvent("malformed_json", f"data: {exc}"))
    candidate = _candidate(0, doc, raw_of)
    candidate.json = None  # raw_of is for people (data as text), not the event
    return candidate


def _binary_raw(attributes: dict[str, Any], body: bytes) -> bytes:
    """What a binary-mode event looked like, for its dead letter: attributes + data as text."""
    return orjson.dumps({**attributes, "data": body.decode("utf-8", errors="replace")})
