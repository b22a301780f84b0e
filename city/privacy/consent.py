"""Consent records and receipts (pure; the Redis registry is `queues/consent.py`).

A citizen is known to the registry only by a keyed pseudonym (`city.privacy.consent_id`).
Per purpose the registry keeps the last change: given or withdrawn, when, and until when a
given consent lasts. Every change returns a consent receipt with the fields of the Kantara
Consent Receipt specification v1.1 / ISO/IEC TS 27560 (consent record information
structure), so the citizen holds proof of what they agreed to or withdrew.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from city.privacy.config import ControllerConfig

State = Literal["given", "withdrawn"]


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """The current consent of one citizen (pseudonym) for one purpose."""

    subject: str
    purpose: str
    state: State
    changed_at: float  # epoch seconds
    given_at: float | None = None
    withdrawn_at: float | None = None
    expires_at: float | None = None
    receipt: str = ""

    def status(self, now: float) -> str:
        """``given`` only while given and unexpired; else ``withdrawn`` or ``expired``."""
        if self.state == "withdrawn":
            return "withdrawn"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "given"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ConsentRecord:
        return cls(**json.loads(text))


def change(
    previous: ConsentRecord | None,
    subject: str,
    purpose: str,
    state: State,
    now: float,
    days: int,
) -> ConsentRecord:
    """The record after giving (for `days`) or withdrawing consent at `now`."""
    receipt = "cr-" + uuid.uuid4().hex
    if state == "given":
        return ConsentRecord(
            subject=subject,
            purpose=purpose,
            state="given",
            changed_at=now,
            given_at=now,
            withdrawn_at=None,
            expires_at=(datetime.fromtimestamp(now, UTC) + timedelta(days=days)).timestamp(),
            receipt=receipt,
        )
    return ConsentRecord(
        subject=subject,
        purpose=purpose,
        state="withdrawn",
        changed_at=now,
        given_at=previous.given_at if previous else None,
        withdrawn_at=now,
        expires_at=None,
        receipt=receipt,
    )


def status_of(records: Mapping[str, ConsentRecord], purpose: str, now: float) -> str:
    """``given``/``withdrawn``/``expired``/``absent`` for `purpose` among a citizen's records."""
    record = records.get(purpose)
    return "absent" if record is None else record.status(now)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def receipt(
    record: ConsentRecord,
    controller: ControllerConfig,
    service: str,
    pii_categories: list[str],
    sensitive: bool,
    method: str = "cityrelay consent cli",
) -> dict[str, Any]:
    """A consent receipt (Kantara CR v1.1 names; ISO/IEC TS 27560 equivalents in comments)."""
    return {
        "version": "KI-CR-v1.1.0",
        "jurisdiction": controller.jurisdiction,
        "consentTimestamp": int(record.changed_at),  # TS 27560: consent event time
        "collectionMethod": method,
        "consentReceiptID": record.receipt,  # TS 27560: record identifier
        "language": "en",
        "piiPrincipalId": record.subject,  # a pseudonym, never the raw identifier
        "piiControllers": [
            {
                "piiController": controller.name,
                "contact": controller.contact,
                "email": controller.email,
                "piiControllerUrl": controller.policy_url,
            }
        ],
        "policyUrl": controller.policy_url,
        "services": [
            {
                "service": service,
                "purposes": [
                    {
                        "purpose": record.purpose,
                        "consentType": "EXPLICIT",
                        "purposeCategory": [record.purpose],
                        "piiCategory": pii_categories,
                        "primaryPurpose": False,
                        "termination": _iso(record.expires_at) or "withdrawn",
                        "thirdPartyDisclosure": False,
                    }
                ],
            }
        ],
        "sensitive": sensitive,
        "spiCat": [],
        # TS 27560 event fields: what happened and its validity.
        "event": {
            "type": record.state,
            "time": _iso(record.changed_at),
            "validUntil": _iso(record.expires_at),
        },
    }
