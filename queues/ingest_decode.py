"""One ingest stream entry -> the wire events it carries, or `InvalidEvent` with a reason.

An entry holds exactly one of two fields:

- ``e``: one event as CloudEvents JSON (`Producer.publish*`), validated by `EventCatalog.accept`;
- ``cap``: one raw CAP 1.2 alert as XML bytes (`Producer.publish_cap`, for bridges relaying
  NWS/IPAWS feeds). Its size is checked before any parsing, then `city.cap.events_from_cap`
  parses it safely and turns each ``<info>`` into one event with a deterministic id (so a
  re-sent alert dedupes), and every event still passes `EventCatalog.accept` like JSON ones.
  Its XML-DSig signature is checked against the catalog's `cap_trust` (the city config's
  ``cap:`` section) and recorded on every event as the ``signature`` extension attribute.

Only ingest vouches for a signature: a ``signature`` attribute on a JSON event is dropped (the
department did not send the signed alert, so nothing here checked it), and when the city
requires valid signatures (``cap.require_signature``) ``cap.*`` JSON events are refused:
signed alerts must come as the alert itself.

Kept out of workers/ingest.py so the ingest loop stays about batching and transactions.
"""

from __future__ import annotations

import logging
from typing import Any

from city.cap import MAX_CAP_BYTES, CapError, SignatureStatus, events_from_cap
from city.catalog import EventCatalog, InvalidEvent
from queues.streams import CAP_FIELD, EVENT_FIELD, Entry

# A dead letter keeps the original bytes for whoever fixes the producer, but not unbounded:
# the dead-letter stream is never trimmed. Real alerts and events are far below this.
MAX_DEAD_LETTER_BODY = 256 * 1024

log = logging.getLogger("cityrelay.ingest")


def decode_entry(entry: Entry, catalog: EventCatalog) -> list[dict[str, Any]]:
    """The validated wire events of one entry (several for a CAP alert with several infos).

    Raises only `InvalidEvent`. Validation should refuse every bad input with a precise reason;
    should it raise anything else on some input nobody foresaw, that entry is refused as
    ``decode_failed`` (logged with its traceback) instead of failing the whole read batch,
    which would be redelivered until every entry in it, good or bad, is dead-lettered as poison.
    """
    try:
        return _decode(entry, catalog)
    except InvalidEvent:
        raise
    except Exception as exc:  # noqa: BLE001 - kept in the dead letter and the log, not dropped
        log.exception("ingest: entry %s on %s could not be decoded", entry.id, entry.stream)
        raise InvalidEvent(
            "decode_failed", f"validation failed unexpectedly: {type(exc).__name__}: {exc}"
        ) from exc


def _decode(entry: Entry, catalog: EventCatalog) -> list[dict[str, Any]]:
    event, cap = entry.fields.get(EVENT_FIELD), entry.fields.get(CAP_FIELD)
    if (event is None) == (cap is None):
        names = ", ".join(sorted(repr(k.decode(errors="replace")) for k in entry.fields))
        raise InvalidEvent(
            "malformed_entry",
            "stream entry needs exactly one of 'e' (an event as JSON) or 'cap' (a CAP alert)"
            f"; it has fields [{names}]",
        )
    if event is not None:
        return [json_wire(event, entry.dept, catalog)]
    assert cap is not None
    return cap_wires(cap, entry.dept, catalog)


def json_wire(raw: bytes, department: str, catalog: EventCatalog) -> dict[str, Any]:
    """The wire event of a JSON entry, without a ``signature`` ingest did not check."""
    wire = catalog.accept(raw, department)
    wire.pop("signature", None)
    if catalog.cap_trust.require_signature and str(wire["type"]).startswith("cap."):
        raise InvalidEvent(
            f"signature_{SignatureStatus.UNVERIFIED}",
            "cap signature unverified: a CAP event published as JSON carries no signature"
            " ingest can check (cap.require_signature is true); publish the signed alert"
            " itself (`cityrelay publish --cap FILE --raw`, Producer.publish_cap)",
        )
    return wire


def cap_wires(xml: bytes, department: str, catalog: EventCatalog) -> list[dict[str, Any]]:
    """The wire events of a raw CAP alert published on `department`'s stream, each with the
    alert's ``signature`` result."""
    if len(xml) > MAX_CAP_BYTES:  # before parsing: a huge document costs nothing to refuse
        raise InvalidEvent(
            "too_large", f"CAP alert is {len(xml)} bytes; the limit is {MAX_CAP_BYTES}"
        )
    try:
        events = events_from_cap(xml, department=department, trust=catalog.cap_trust)
    except CapError as exc:
        raise InvalidEvent(exc.reason, str(exc)) from None
    return [
        catalog.accept(event.model_dump_json(exclude_none=True), department) for event in events
    ]


def dead_letter_body(entry: Entry, message: str) -> tuple[bytes | str, str]:
    """(body, message) for the dead letter of a refused entry: the original bytes, cut to
    `MAX_DEAD_LETTER_BODY` with the cut stated at the start of the message."""
    body = entry.fields.get(EVENT_FIELD)
    if body is None:
        body = entry.fields.get(CAP_FIELD)
    if body is None or (EVENT_FIELD in entry.fields and CAP_FIELD in entry.fields):
        return repr(entry.fields)[:MAX_DEAD_LETTER_BODY], message
    if len(body) <= MAX_DEAD_LETTER_BODY:
        return body, message
    note = f"[body truncated to the first {MAX_DEAD_LETTER_BODY} of {len(body)} bytes] "
    return body[:MAX_DEAD_LETTER_BODY], note + message
